"""Compat coalescing and delta mode end to end: a real Engine's view, the real app.

Events go through :meth:`salt_ws.engine.Engine.consume` (the bus path without the
bus); ``/formatted_events`` clients read them over a loopback socket. Compat clients
get complete tables at most once per ``view_interval`` with the latest state, no
later than ``view_interval`` after the first unsent change (``Coalescer`` and the
engine's timer); a ``?delta=1`` client gets one patch per change at once.

The engine's coalescer reads ``time.monotonic()`` itself, so these tests measure
arrival times against it (its own logic is tested with ``now`` in
``tests/unit/test_view_delta.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import tornado.httpclient
import tornado.websocket

from salt_ws.acl import Permissions
from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.handlers import CLIENT_READY, Services
from salt_ws.hub import Channel

from .harness import GOOD_TOKEN, FakeAuthenticator, Site, serve_services

MINIONS = [f"m-{i:02d}" for i in range(20)]
SLACK = 0.25  # seconds a loaded machine may add to a timer and a loopback write


def jid_of(n: int) -> str:
    return datetime.datetime.now().strftime("%Y%m%d%H%M%S") + f"{n:06d}"


def new(jid: str, minions: list[str]) -> tuple[str, dict[str, Any]]:
    data = {"jid": jid, "fun": "test.ping", "tgt": "m-*", "tgt_type": "glob", "user": "root"}
    return f"salt/job/{jid}/new", {**data, "minions": minions}


def ret(jid: str, mid: str) -> tuple[str, dict[str, Any]]:
    data = {"jid": jid, "fun": "test.ping", "id": mid, "return": True, "retcode": 0}
    return f"salt/job/{jid}/ret/{mid}", {**data, "success": True}


class Reader:
    """A ``/formatted_events`` client that records each message with its arrival time."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            text = await self.conn.read_message()
            if text is None:
                return
            self.messages.append((time.monotonic(), json.loads(text)))

    async def count(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            assert time.monotonic() < deadline, f"{len(self.messages)} messages, not {n}"
            await asyncio.sleep(0.005)

    def tables(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, m[name]) for at, m in self.messages if name in m]

    def close(self) -> None:
        self._task.cancel()


@contextlib.asynccontextmanager
async def engine_site(view_interval: float) -> AsyncIterator[tuple[Engine, Site]]:
    config = parse({"disable_ssl": True, "view_interval": view_interval})
    engine = Engine({}, config)
    engine.view.set_accepted(MINIONS)
    services = Services(
        config, engine.hub, FakeAuthenticator(), engine.counters, engine.snapshot,
        stream=engine.stream,
    )  # fmt: skip
    services.delta_snapshot = engine.delta_snapshot
    engine.services = services
    try:
        async with serve_services(services) as site:
            yield engine, site
    finally:
        if engine._compat_timer is not None:
            engine._compat_timer.cancel()
        for pool in (engine._grains_pool, engine._admit_pool):
            pool.shutdown(wait=False)


async def reader(site: Site, delta: bool = False) -> Reader:
    before = site.hub.count(Channel.FORMATTED_EVENTS)
    path = f"/formatted_events/{GOOD_TOKEN}" + ("?delta=1" if delta else "")
    conn = await tornado.websocket.websocket_connect(site.url(path, "ws"))
    site.websockets.append(conn)
    await conn.write_message(CLIENT_READY)
    await site.subscribed(before + 1, Channel.FORMATTED_EVENTS)
    return Reader(conn)


def patched(client: Reader) -> tuple[dict[str, Any], list[int]]:
    (_, first), *rest = client.messages
    doc, seqs = copy.deepcopy(first["snapshot"]), [first["seq"]]
    for _, message in rest:
        doc = jsonpatch.apply_patch(doc, message["patch"])
        seqs.append(message["seq"])
    return doc, seqs


async def test_a_burst_of_changes_is_one_compat_table_with_the_latest_state():
    interval = 0.4
    async with engine_site(interval) as (engine, site):
        compat, delta = await reader(site), await reader(site, delta=True)
        await compat.count(2)  # the snapshot: minions, jobs
        await delta.count(1)
        jid = jid_of(1)
        first = time.monotonic()
        engine.consume([new(jid, MINIONS)])  # nothing sent for a while: sent at once
        await compat.count(3)
        at, running = compat.tables("jobs")[-1]
        assert at - first < SLACK
        assert running[jid]["state"] == "running"
        assert {e["return"] for e in running[jid]["minions"].values()} == {None}  # pending

        unsent = time.monotonic()  # the first change not sent
        for mid in MINIONS:  # 20 changes within the interval, one consume() each
            engine.consume([ret(jid, mid)])
        await compat.count(4, timeout=interval + 2)
        at, latest = compat.tables("jobs")[-1]
        assert first + interval - 0.02 <= at <= unsent + interval + SLACK
        assert latest[jid]["state"] == "complete"
        assert {mid: e["return"] for mid, e in latest[jid]["minions"].items()} == dict.fromkeys(
            MINIONS, True
        )
        await asyncio.sleep(interval + 0.1)  # nothing more is due
        assert len(compat.messages) == 4
        assert len(compat.tables("minions")) == 1  # (the snapshot's: no minion changed)
        stats = engine.coalescer.stats()
        assert stats == {"sent": 2, "coalesced": 19, "waiting": 0}
        assert engine.status()["view_tables"] == stats

        # the delta client had one patch per change, at once, and the same document
        await delta.count(1 + 1 + len(MINIONS))
        doc, seqs = patched(delta)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert doc == {"minions": compat.tables("minions")[-1][1], "jobs": latest}
        assert delta.messages[-1][0] < unsent + SLACK
        compat.close()
        delta.close()


async def test_the_last_state_always_arrives_and_sends_are_an_interval_apart():
    interval = 0.2
    async with engine_site(interval) as (engine, site):
        compat = await reader(site)
        await compat.count(2)
        jid = jid_of(2)
        presence = {"new": MINIONS[:3], "lost": []}
        engine.consume([("salt/presence/change", presence)])  # the minions table too
        engine.consume([new(jid, MINIONS)])
        changes = [time.monotonic()]
        for mid in MINIONS:  # changes spread over ~3 intervals; the last one a job's
            await asyncio.sleep(0.03)
            engine.consume([ret(jid, mid)])
            changes.append(time.monotonic())
        await asyncio.sleep(interval + SLACK)  # nothing else comes to send it
        jobs, minions = compat.tables("jobs"), compat.tables("minions")
        assert jobs[-1][1][jid]["state"] == "complete"  # the last state arrived
        assert {e["return"] for e in jobs[-1][1][jid]["minions"].values()} == {True}
        assert set(minions[-1][1]) == set(MINIONS[:3])
        sends = [at for at, _ in jobs[1:]]  # after the snapshot's
        assert 3 <= len(sends) < len(MINIONS) // 2  # coalesced, about once per interval
        for before, after in itertools.pairwise(sends):
            assert after - before >= interval - 0.02
        # no change waited more than an interval (and the machine's slack) to be sent
        for at in changes:
            assert any(at <= sent <= at + interval + SLACK for sent in sends), at
        compat.close()


async def test_view_interval_zero_sends_every_change():
    async with engine_site(0) as (engine, site):
        compat = await reader(site)
        await compat.count(2)
        jid = jid_of(3)
        engine.consume([new(jid, MINIONS[:5])])
        for mid in MINIONS[:5]:
            engine.consume([ret(jid, mid)])
        await compat.count(2 + 6)
        states = [
            sum(e["return"] is True for e in jobs[jid]["minions"].values())
            for _, jobs in compat.tables("jobs")[1:]
        ]  # returns shown, message by message
        assert states == [0, 1, 2, 3, 4, 5]
        assert engine.coalescer.stats()["coalesced"] == 0
        compat.close()


# -- ACL targets re-resolved (Engine._refresh_audiences, every acl_refresh_interval) ----------

WEB = "G@role:web"
LIMITED_ACL = [{WEB: ["test.*"]}]


class TargetsFleet:
    """The engine's Fleet as far as these tests need it: target resolution, no grains."""

    def __init__(self, web: set[str]) -> None:
        self.web = web

    def resolve(self, targets: Any) -> dict[str, set[str]]:
        return {t: set(self.web) if t == WEB else set() for t in targets}

    def load_grains(self, mids: Any) -> dict[str, None]:
        return dict.fromkeys(mids)


@contextlib.asynccontextmanager
async def limited_site(web: set[str]) -> AsyncIterator[tuple[Engine, Site, TargetsFleet]]:
    async with engine_site(0.2) as (engine, site):
        fleet = TargetsFleet(web)
        engine.fleet = fleet  # type: ignore[assignment]
        perms = Permissions(LIMITED_ACL, resolved=fleet.resolve([WEB]))
        engine.audiences[perms.key] = perms

        async def admit(session: dict[str, Any]) -> Permissions:
            return perms

        site.services.admit = admit
        engine.consume([("salt/presence/change", {"new": MINIONS[:4], "lost": []})])
        jid = jid_of(4)
        engine.consume([new(jid, MINIONS[:4]), *(ret(jid, mid) for mid in MINIONS[:4])])
        yield engine, site, fleet


async def test_a_re_resolved_audience_gets_its_compat_tables_again():
    # Found: after a re-resolution that changes what a limited audience sees, its delta
    # clients got a resync at once but its compat clients kept the tables of the old
    # resolution until the next change of each table (jobs: the next job event), so the
    # two modes disagreed, and compat clients showed minions the user may no longer see.
    async with limited_site({"m-00", "m-01"}) as (engine, site, fleet):
        compat, delta = await reader(site), await reader(site, delta=True)
        await compat.count(2)
        await delta.count(1)
        assert set(compat.tables("minions")[-1][1]) == {"m-00", "m-01"}
        fleet.web = {"m-01", "m-02"}  # a grain changed on two minions
        await engine._refresh_audiences()
        await delta.count(2)
        doc, _ = patched(delta)
        assert set(doc["minions"]) == {"m-01", "m-02"}
        await asyncio.sleep(0.2 + SLACK)
        now = {"minions": compat.tables("minions")[-1][1], "jobs": compat.tables("jobs")[-1][1]}
        assert now == doc
        compat.close()
        delta.close()


async def test_an_unchanged_re_resolution_sends_nothing():
    # Found: every acl_refresh_interval (30 s), each limited audience followed in delta
    # mode got a resync (both tables whole, as a patch) even when its targets resolved
    # to the same minions: the per-fleet cost delta mode exists to avoid.
    async with limited_site({"m-00", "m-01"}) as (engine, site, _):
        delta = await reader(site, delta=True)
        await delta.count(1)
        for _ in range(3):
            await engine._refresh_audiences()
        await asyncio.sleep(0.1)
        assert len(delta.messages) == 1
        assert engine.deltas.stats()["resyncs"] == 0
        delta.close()


# -- events Salt trimmed (max_event_size) ------------------------------------------------------


async def test_a_new_whose_minions_salt_trimmed_does_not_show_the_job_complete():
    # Found by bench/bench_fleet.py at 50,000 minions: Salt replaces the largest values
    # of any event over max_event_size (1 MiB by default) with "VALUE_TRIMMED", so the
    # master's own salt/job/<jid>/new for a job on ~35,000 or more minions (ids of ~27
    # characters) arrives with "minions": "VALUE_TRIMMED". It was parsed as a job
    # targeting nobody: shown complete with success true at once, and every return then
    # added to a job already complete (the compat client saw it complete 7-11 s before
    # the last return was fired).
    async with engine_site(0) as (engine, site):
        delta = await reader(site, delta=True)
        await delta.count(1)
        jid = jid_of(5)
        tag, data = new(jid, MINIONS)
        engine.consume([(tag, {**data, "minions": "VALUE_TRIMMED"})])
        engine.consume([ret(jid, MINIONS[0])])
        await delta.count(3)
        doc, _ = patched(delta)
        job = doc["jobs"][jid]
        assert job["minions"][MINIONS[0]]["return"] is True
        assert job["state"] == "running"  # who else was targeted is not known
        assert job["success"] is None
        delta.close()
