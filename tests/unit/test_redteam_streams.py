"""Red team of the stream pipeline (issue 10): a hostile minion, a limited eauth user.

Each test is the smallest reproduction of one finding, sans I/O: a :class:`Pipeline` (or
the engine with fakes for Salt) fed what an attacker controls.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
import salt.auth
import salt.utils.event

import salt_ws.engine
from salt_ws.acl import ADMIN, Permissions
from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.pipeline import MAX_FILTERED_TAG, Cursor, Format, Group, Pipeline, TagFilter
from salt_ws.session import RequestError, check_tags
from salt_ws.view import FormattedView

NOW = 1_700_000_000.0
ACCEPTED = frozenset({"web-1", "web-2", "db-1"})
ACL = [{"web-*": ["test.*"]}]
LIMITED = Permissions(ACL, resolved={"web-*": {"web-1", "web-2"}})


def jid(n: int, now: float = NOW) -> str:
    return datetime.datetime.fromtimestamp(now).strftime("%Y%m%d%H%M%S") + f"{n:06d}"


def make(**kwargs: Any) -> Pipeline:
    kwargs.setdefault("epoch", "e1")
    kwargs.setdefault("accepted", lambda: ACCEPTED)
    pipe = Pipeline(**kwargs)
    pipe.audiences[LIMITED.key] = LIMITED
    pipe.job_funs.watch(NOW - 60)
    return pipe


# -- a minion: payloads whose objects outweigh their JSON --------------------------------------

JUNK = 100_000  # empty lists: 1 byte each in msgpack, 3 in JSON, ~64 as Python objects


def _hostile(kind: str, n: int) -> tuple[str, dict[str, Any]]:
    junk = msgpack.unpackb(msgpack.packb([[] for _ in range(JUNK)]))  # as the bus unpacks it
    if kind == "custom":
        return f"evil/{n}", {"junk": junk}
    if kind == "ret":  # a minion's return for its own id (always shown to whoever may see it)
        data = {"jid": jid(n), "fun": "test.ping", "id": "web-1", "return": junk}
        return f"salt/job/{jid(n)}/ret/web-1", data
    data = {"jid": jid(n), "fun": "test.ping", "minions": ["web-1"], "junk": junk}
    return f"salt/job/{jid(n)}/new", data  # a forged new


@pytest.mark.parametrize("kind", ["custom", "ret", "new"])
def test_the_history_holds_no_more_memory_than_history_max_bytes_says(kind):
    """A 1 MiB event of empty lists is ~3 MB of JSON but ~64 MB of Python objects: the
    history counted only the JSON and kept the objects (22x history_max_bytes held)."""
    bound = 2 * 2**20
    pipe = make(history_max_bytes=bound)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(12):
            batch = pipe.feed([_hostile(kind, n)], NOW)
            for fmt in Format:  # every encoding a live client or a replay may ask for
                pipe.fan_out(
                    batch.entries, [Group(ADMIN, None, fmt), Group(LIMITED.key, None, fmt)]
                )
            del batch
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(pipe.history) >= 1
    assert pipe.history_bytes <= bound
    assert held <= 2 * bound, f"{held} bytes held for a history of {pipe.history_bytes}"


def test_a_limited_audience_still_gets_a_new_cut_to_its_minions_from_the_kept_history():
    pipe = make()
    tag = f"salt/job/{jid(1)}/new"
    data = {"jid": jid(1), "fun": "test.ping", "tgt": "*", "tgt_type": "glob"}
    data |= {"minions": ["web-1", b"web-2", "db-1", "ghost"], "missing": [b"db-1", "web-2"]}
    pipe.feed([(tag, data)], NOW)
    [shown] = pipe.replay(Cursor("e1", 0), Group(LIMITED.key, None, Format.ENVELOPE))
    # bytes ids are no ids (the ACL looks at strings only), the ghost has no key
    assert json.loads(shown)["data"] | {"jid": None} == {
        "jid": None,
        "fun": "test.ping",
        "tgt": ["web-1", "web-2"],
        "tgt_type": "list",
        "minions": ["web-1"],
        "missing": ["web-2"],
    }
    admin = pipe.replay(Cursor("e1", 0), Group(ADMIN, None, Format.PLAIN))
    assert json.loads(admin[0])["data"]["minions"] == ["web-1", "web-2", "db-1", "ghost"]


# -- limited users: filter sets that the cache could not hold ----------------------------------


def _sets(count: int) -> list[frozenset[str]]:
    """``count`` distinct sets of 64 filters of 64 characters (4096: one client's most)."""
    return [
        frozenset(f"u{u:04d}/{i:02d}/" + "a" * 54 + "*" for i in range(64)) for u in range(count)
    ]


def test_filter_sets_of_live_clients_are_compiled_once_however_many():
    """300 clients x 4096 characters exceed the cache's 1 MiB: each fan-out (every bus
    batch) compiled every set again (0.3-2.5 s of loop time per batch)."""
    pipe = make()
    groups = [Group(LIMITED.key, tags, Format.ENVELOPE) for tags in _sets(300)]
    batch = pipe.feed([("salt/job/1/ret/web-1", {"fun": "test.ping"})], NOW)
    pipe.fan_out(batch.entries, groups)
    assert pipe.status()["filter_sets"] == 300  # (the cache kept 248: 1 MiB of characters)
    compiled = pipe.filter_stats()["compiles"]
    assert compiled == 300
    pipe.fan_out(batch.entries, groups)
    pipe.replay(Cursor("e1", 0), groups[0])
    assert pipe.filter_stats()["compiles"] == compiled
    assert pipe.status()["filter_sets"] == 300
    # once those clients are gone, the cache shrinks back to its bound at the next compile
    pipe.fan_out(batch.entries, [Group(ADMIN, frozenset({"x/*"}), Format.PLAIN)])
    assert pipe.filter_stats()["chars"] <= 2**20


# -- a minion and a user together: a huge tag against long literal filters ----------------------


def test_a_tag_longer_than_max_filtered_tag_matches_no_filter():
    """Matching costs the tag's length times the filters' literal characters: 64 filters
    ``*aaa...aNN`` took 4 s per 1 MB tag of ``a``s, for each distinct filter set."""
    hostile = TagFilter(["*" + "a" * 58 + f"{i:02d}" for i in range(64)])
    everything = TagFilter(["*"])
    long_tag = "a" * (MAX_FILTERED_TAG + 1)
    assert everything.matches("a" * MAX_FILTERED_TAG)
    assert not everything.matches(long_tag)
    started = time.process_time()
    assert not hostile.matches("a" * 1_000_000)
    assert time.process_time() - started < 0.05
    # unfiltered clients still get it
    pipe = make()
    batch = pipe.feed([(long_tag, {"x": 1})], NOW)
    out = pipe.fan_out(
        batch.entries,
        [Group(ADMIN, None, Format.PLAIN), Group(ADMIN, frozenset({"*"}), Format.PLAIN)],
    )
    assert list(out) == [Group(ADMIN, None, Format.PLAIN)]


# -- a limited user: control characters in filters reach the admin's terminal -------------------


@pytest.mark.parametrize("tag", ["\x1b]0;owned\x07*", "a/\x1b[2J", "x\x9b31m", "x\x7f", "x\x00"])
def test_a_filter_with_control_characters_is_refused(tag):
    """``salt-run ws.clients`` prints every client's filters (``--out=table`` or nested):
    a limited user's ``?tag=\\x1b]...`` wrote escape sequences to the admin's terminal."""
    with pytest.raises(RequestError, match="control characters"):
        check_tags([tag], 64, 1024)


# -- a limited user: a replay after their ACL targets were re-resolved ---------------------------


class _Fleet:
    def __init__(self, resolved: dict[str, set[str]]) -> None:
        self.resolved = resolved

    def resolve(self, targets: Any) -> dict[str, set[str]]:
        return {t: set(self.resolved.get(t, ())) for t in targets}


@pytest.fixture
def engine(monkeypatch) -> Engine:
    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no I/O expected")

    monkeypatch.setattr(salt.utils.event, "get_master_event", no_io)
    monkeypatch.setattr(salt.auth, "LoadAuth", no_io)
    for name in ("BusReader", "StatusServer", "Authenticator", "Fleet"):
        monkeypatch.setattr(salt_ws.engine, name, no_io)
    engine = Engine(opts={}, config=parse({"disable_ssl": True}))
    engine.view.set_accepted(["web-1", "web-2"])
    return engine


def test_a_replay_after_an_acl_refresh_shows_only_what_the_user_may_see_now(engine):
    """The view re-renders an audience after its targets are re-resolved; the history
    kept the encodings judged before, so ``?since=`` replayed web-2's returns to a user
    who may no longer target web-2 (and the view no longer shows them)."""
    perms = Permissions(ACL, resolved={"web-*": {"web-1", "web-2"}})
    engine.audiences[perms.key] = perms
    now = time.time()
    job = jid(1, now)
    for mid in ("web-1", "web-2"):
        data = {"jid": job, "fun": "test.ping", "id": mid, "return": True, "success": True}
        engine.consume([(f"salt/job/{job}/ret/{mid}", data)])
    group = Group(perms.key, None, Format.ENVELOPE)
    since = Cursor(engine.stream.epoch, 0)
    seen = [json.loads(m)["data"]["id"] for m in engine.stream.replay(since, group)]
    assert seen == ["web-1", "web-2"]  # (and each encoding is now kept in the history)
    engine.fleet = _Fleet({"web-*": {"web-1"}})  # type: ignore[assignment]
    asyncio.run(engine._refresh_audiences())
    assert not perms.may("test.ping", "web-2")
    seen = [json.loads(m)["data"]["id"] for m in engine.stream.replay(since, group)]
    assert seen == ["web-1"]
    assert engine.stream.history_bytes == sum(e.size for e in engine.stream.history)


# -- a minion: its returns' objects in the formatted view ----------------------------------------


def test_the_formatted_view_holds_no_more_memory_than_its_jobs_bytes_say():
    """The jobs table counts each return's encoding against ``max_jobs_bytes`` and kept the
    return's objects as well: 60 returns of empty lists from one accepted minion held 1.2 GB
    for 54 MB of table."""
    view = FormattedView(accepted=["web-1"])
    now = time.time()
    view.apply("salt/minion/web-1/start", {"id": "web-1"}, now)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(10):
            data = _hostile("ret", n)[1]
            data["jid"] = jid(n, now)
            view.apply(f"salt/job/{data['jid']}/ret/web-1", data, now)
            del data
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert view.job_count == 10
    assert held <= 2 * view.jobs_bytes, f"{held} bytes held for {view.jobs_bytes} of table"
