"""A real minion forges bus events with ``event.send``; the engine must not be fooled.

Issue 9's premise: any minion can put nearly any tag and payload on the master
bus. What Salt 3008.4 actually lands (checked against a bare bus subscriber):

* the single form (``salt-call event.send TAG ...``) fires TAG with **no
  blacklist at all** and the whole request load as payload: ``id`` (the
  sender's own: the request channel refuses another), ``cmd``, ``tag``,
  ``ts``, the minion's kwargs under ``data`` and every ``preload`` key at the
  top level, so ``preload={"new": [...], "lost": [...]}`` or
  ``preload={"fun": ..., "minions": [...]}`` give the master's own shapes;
* the ``events``-list form (``preload={"events": [...]}``) fires each event's
  ``data`` exactly as the minion wrote it (any ``id``), except tags on Salt's
  blacklist (``salt/job/*/new`` ...), which ``salt/job/*/ret/*``,
  ``salt/presence/*`` and ``salt_ws/*`` are not;
* ``pretag`` fires each listed event once more under ``<pretag>/<tag>``
  *before* the blacklist check: ``pretag: salt`` with a tag
  ``job/<jid>/new`` lands a ``salt/job/<jid>/new`` that is byte for byte the
  minion's data.

The module starts one master with the engine and one minion, puts canary
``.p`` files where path-like minion ids lead in the master's cache (watched
with inotify for the whole attack), runs two real jobs, forges every form
while they run, and records what an administrator and a limited user
(``{"minion-1": ["test.*"]}``) receive. The tests then check issue 9's
contract for findings 1, 2 and 9.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import time
import uuid
from typing import Any, Iterator

import pytest

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    latest,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

MID = "minion-1"
GHOSTS = ("ghost-minion", "minion-2")  # valid ids without an accepted key
PATH_IDS = ("../canary", "../../canary", f"../minions/{MID}/data")
SLEEP = 20  # seconds the real jobs run: they are running while every forgery lands


class FileWatch:
    """Linux inotify (IN_OPEN | IN_ACCESS) on a few files, read without blocking."""

    IN_ACCESS = 0x001
    IN_OPEN = 0x020

    def __init__(self, paths: list[str]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths: dict[int, str] = {}
        for path in paths:
            wd = self._libc.inotify_add_watch(
                self.fd, os.fsencode(path), self.IN_OPEN | self.IN_ACCESS
            )
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
            self.paths[wd] = path

    def read(self) -> list[tuple[str, str]]:
        """(path, "open" or "access") for every event since the last read."""
        found: list[tuple[str, str]] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            pos = 0
            while pos + 16 <= len(buf):
                wd, mask, _cookie, size = struct.unpack_from("iIII", buf, pos)
                pos += 16 + size
                kind = "open" if mask & self.IN_OPEN else "access"
                found.append((self.paths.get(wd, "?"), kind))

    def close(self) -> None:
        os.close(self.fd)


def plant_canaries(cachedir: str) -> tuple[list[str], list[str]]:
    """Canary cache files where the path-like ids lead: (their paths, the markers they hold)."""
    import salt.payload

    mark = uuid.uuid4().hex[:8]
    files = {
        # "../canary": cachedir/grains/../canary.p
        os.path.join(cachedir, "canary.p"): {"canary": f"CANARY-A-{mark}"},
        # "../../canary", and the Salt 3007 fallback bank "minions/../../canary" + ".p"
        os.path.join(os.path.dirname(cachedir), "canary.p"): {
            "canary": f"CANARY-B-{mark}",
            "data": {"grains": {"canary": f"CANARY-B-{mark}"}},
        },
        # "../minions/minion-1/data": a Salt 3007 data-cache file, pillar and all
        os.path.join(cachedir, "minions", MID, "data.p"): {
            "grains": {"id": MID, "os": f"CANARY-OS-{mark}"},
            "pillar": {"db_password": f"PILLAR-SECRET-{mark}"},
        },
    }
    for path, content in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(salt.payload.dumps(content))
    markers = [f"CANARY-A-{mark}", f"CANARY-B-{mark}", f"CANARY-OS-{mark}", f"PILLAR-SECRET-{mark}"]
    return list(files), markers


def forge(minion: Any, tag: str, *args: str, **preload: Any) -> None:
    """``salt-call event.send`` on the real minion (``preload`` as one JSON argument)."""
    cli = list(args)
    if preload:
        cli.append("preload=" + json.dumps(preload))
    ret = minion.salt_call_cli(timeout=60).run("event.send", tag, *cli)
    assert ret.returncode == 0 and ret.data is True, ret


def every_table(client: Collector, key: str) -> list[dict]:
    return [m[key] for m in list(client.messages) if key in m]


@pytest.fixture(scope="module")
def attack(salt_factories, users_file) -> Iterator[dict[str, Any]]:
    """Run the whole attack once; what every party saw, for the tests below."""
    factory, port = start_master(
        salt_factories, users_file, {"disable_ssl": True, "job_timeout": 90}
    )
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port)
        minion = factory.salt_minion_daemon(MID)
        with minion.started(start_timeout=120):
            yield run_attack(master, minion)


def run_attack(master: EngineMaster, minion: Any) -> dict[str, Any]:
    def view_grains() -> dict | None:
        entry = master.run("ws.view").data.get("minions", {}).get(MID)
        return entry["grains"] if entry and entry.get("grains", {}).get("os") else None

    real_grains = wait_until(view_grains, 60, "the real minion's grains in the view")
    cachedir = master.opts()["cachedir"]
    canaries, markers = plant_canaries(cachedir)
    watch = FileWatch(canaries)
    try:
        # the watch works: reading a canary ourselves is seen
        with open(canaries[0], "rb") as fh:
            fh.read()
        assert watch.read(), "inotify saw no open of a canary read by the test itself"

        admin = Collector(f"{master.ws_url}/all_events/{master.login()['token']}")
        limited = Collector(f"{master.ws_url}/all_events/{master.login('limited')['token']}")
        admin_view = Collector(f"{master.ws_url}/formatted_events/{master.login()['token']}")
        limited_view = Collector(
            f"{master.ws_url}/formatted_events/{master.login('limited')['token']}"
        )
        clients = [admin, limited, admin_view, limited_view]
        try:
            for client in (admin_view, limited_view):
                wait_until(lambda c=client: len(c.messages) >= 2, 10, "the snapshot")
            secret = f"CMD-OUTPUT-{uuid.uuid4().hex[:8]}"
            salt = master.factory.salt_cli(timeout=60)
            salt.run(
                "--async", "cmd.run", f"sleep {SLEEP}; echo {secret}", "python_shell=True",
                minion_tgt=MID,
            )  # fmt: skip
            salt.run("--async", "test.sleep", str(SLEEP), minion_tgt=MID)

            def new_of(fun: str) -> str | None:
                """The jid of the master's own new event for ``fun`` (none of the forged)."""
                for m in admin.tagged("salt/job/"):
                    data = m["data"]
                    if m["tag"].endswith("/new") and data.get("fun") == fun and "arg" in data:
                        if "cmd" not in data and data.get("jid") not in forged_jids:
                            return m["tag"].split("/")[2]
                return None

            forged_jids: set[str] = set()

            cmd_jid = wait_until(lambda: new_of("cmd.run"), 30, "the cmd.run job's new")
            sleep_jid = wait_until(lambda: new_of("test.sleep"), 30, "the test.sleep job's new")
            forged_jids.update((cmd_jid, sleep_jid))
            started = time.monotonic()

            def landed(tag: str, pred: Any = lambda d: True) -> None:
                admin.wait_for(lambda m: m["tag"] == tag and pred(m["data"]), 20)

            # 1. presence, single form: preload keys land at the payload's top level
            forge(minion, "salt/presence/change", new=[*PATH_IDS, *GHOSTS], lost=[])
            landed("salt/presence/change", lambda d: "../canary" in d.get("new", []))
            # 2. a second new for the running cmd.run job, claiming a test.* function
            forge(
                minion, f"salt/job/{cmd_jid}/new",
                jid=cmd_jid, fun="test.ping", arg=[], tgt=MID, tgt_type="glob",
                minions=[MID], user="root",
            )  # fmt: skip
            landed(f"salt/job/{cmd_jid}/new", lambda d: d.get("fun") == "test.ping")
            # 3. the events-list form: data exactly as written, any id
            notice = {"reason": "forged by a minion", "missed": True}
            forge(
                minion, "hostile/list",
                events=[
                    {"tag": "salt/presence/change", "data": {"new": list(PATH_IDS), "lost": []}},
                    {"tag": "salt/presence/present", "data": {"present": [MID, *GHOSTS]}},
                    {
                        "tag": f"salt/job/{sleep_jid}/ret/minion-2",
                        "data": {"id": "minion-2", "jid": sleep_jid, "fun": "test.sleep",
                                 "return": "forged", "retcode": 0, "success": True},
                    },
                    {"tag": "salt_ws/bus/lost", "data": notice},
                    {"tag": "salt_ws/stream/gap", "data": notice},
                    {"tag": "salt_ws/bus/restored", "data": notice},
                ],
            )  # fmt: skip
            landed("salt_ws/bus/restored")
            # 4. pretag: "salt" + "job/<jid>/new" lands salt/job/<jid>/new past the blacklist
            forge(
                minion, "hostile/pretag",
                pretag="salt",
                events=[
                    {
                        "tag": f"job/{sleep_jid}/new",
                        "data": {"jid": sleep_jid, "fun": "cmd.run", "arg": ["id"], "tgt": MID,
                                 "tgt_type": "glob", "minions": [MID], "user": "root"},
                    },
                    {
                        "tag": f"job/{cmd_jid}/ret/minion-2",
                        "data": {"id": "minion-2", "jid": cmd_jid, "fun": "test.ping",
                                 "return": "forged", "retcode": 0},
                    },
                    {"tag": "presence/change", "data": {"new": ["../canary"], "lost": []}},
                ],
            )  # fmt: skip
            landed(f"salt/job/{sleep_jid}/new", lambda d: d.get("fun") == "cmd.run")
            # 5. an engine notice, single form
            forge(minion, "salt_ws/bus/lost", "reason=forged", "missed=True")
            landed("salt_ws/bus/lost", lambda d: d.get("id") == MID)
            forging_took = time.monotonic() - started

            def real_ret(jid: str) -> bool:
                return any(
                    m["tag"] == f"salt/job/{jid}/ret/{MID}" and m["data"].get("cmd") == "_return"
                    for m in admin.tagged(f"salt/job/{jid}/ret/")
                )

            wait_until(lambda: real_ret(cmd_jid) and real_ret(sleep_jid), SLEEP + 30, "returns")
            # a last real test.* job: once its return reaches the limited user, everything
            # forged before it went through the engine too
            assert salt.run("test.ping", minion_tgt=MID).returncode == 0
            ping_new = wait_until(lambda: new_of("test.ping"), 20, "the test.ping job")
            limited.wait_for(lambda m: m["tag"] == f"salt/job/{ping_new}/ret/{MID}", 20)
            time.sleep(1.5)  # a presence tick re-sends the minions tables
            view = master.run("ws.view").data
            status = master.run("ws.status").data
            opened = watch.read()
        finally:
            for client in clients:
                client.close()
    finally:
        watch.close()
    return {
        "real_grains": real_grains,
        "markers": markers,
        "opened": opened,
        "secret": secret,
        "cmd_jid": cmd_jid,
        "sleep_jid": sleep_jid,
        "ping_jid": ping_new,
        "forging_took": forging_took,
        "admin": admin.messages,
        "limited": limited.messages,
        "admin_view": admin_view,
        "limited_view": limited_view,
        "view": view,
        "status": status,
    }


def test_the_jobs_were_running_while_the_forgeries_landed(attack):
    assert attack["forging_took"] < SLEEP  # every forged event hit a running job


def test_the_engine_reads_no_file_outside_the_cache_minion_entries(attack):
    assert attack["opened"] == []
    seen = json.dumps(
        [attack["view"], attack["admin_view"].messages, attack["limited_view"].messages]
    )
    leaked = [marker for marker in attack["markers"] if marker in seen]
    assert leaked == []


def test_a_limited_user_sees_nothing_new_on_all_events(attack):
    real_funs = {attack["sleep_jid"]: "test.sleep", attack["ping_jid"]: "test.ping"}
    got = attack["limited"]
    # the client works: it got the last test.ping job
    assert any(m["tag"].startswith(f"salt/job/{attack['ping_jid']}/ret/") for m in got)
    assert [m["tag"] for m in got if m["tag"].startswith("salt_ws/")] == []  # forged notices
    text = json.dumps(got)
    assert attack["secret"] not in text  # the cmd.run output
    assert "forged" not in text and "../" not in text
    for m in got:
        parts = m["tag"].split("/")
        assert parts[:2] == ["salt", "job"] and parts[2] in real_funs, m["tag"]
        assert m["data"].get("fun") == real_funs[parts[2]], m  # no forged job function
        assert m["data"].get("cmd") != "_minion_event", m  # no event.send payload at all


def test_a_limited_user_sees_nothing_new_in_formatted_events(attack):
    client = attack["limited_view"]
    real_funs = {attack["sleep_jid"]: "test.sleep", attack["ping_jid"]: "test.ping"}
    for table in every_table(client, "minions"):
        assert set(table) <= {MID}, table
    for table in every_table(client, "jobs"):
        for jid, job in table.items():
            assert real_funs.get(jid) == job["fun"], job
            assert set(job["minions"]) <= {MID}, job
    assert attack["cmd_jid"] not in json.dumps(client.messages)
    assert attack["secret"] not in json.dumps(client.messages)
    assert any(  # the view works for this user: the last test.ping job is there
        attack["ping_jid"] in table for table in every_table(client, "jobs")
    )


def test_the_view_stays_correct(attack):
    client = attack["admin_view"]
    cmd_jid, sleep_jid = attack["cmd_jid"], attack["sleep_jid"]
    # no forged id is listed, not even for a moment
    for table in every_table(client, "minions"):
        assert set(table) <= {MID}, sorted(table)
    # the real minion with its real grains
    assert set(attack["view"]["minions"]) == {MID}
    for grains in (
        attack["view"]["minions"][MID]["grains"],
        latest(client, "minions")[MID]["grains"],
    ):
        # each salt-call caches the grains again, with its own pid
        assert {**grains, "pid": None} == {**attack["real_grains"], "pid": None}
    # the jobs keep their functions, in every table sent, and complete with the real returns
    for table in every_table(client, "jobs"):
        for jid, fun in ((cmd_jid, "cmd.run"), (sleep_jid, "test.sleep")):
            if jid in table:
                assert table[jid]["fun"] == fun, table[jid]
    jobs = attack["view"]["jobs"]
    assert jobs[sleep_jid]["fun"] == "test.sleep"
    assert jobs[sleep_jid]["state"] == "complete"
    assert jobs[sleep_jid]["minions"] == {MID: {"return": True, "retcode": 0, "success": True}}
    assert jobs[cmd_jid]["fun"] == "cmd.run"
    assert jobs[cmd_jid]["state"] == "complete"
    assert jobs[cmd_jid]["minions"] == {
        MID: {"return": attack["secret"], "retcode": 0, "success": True}
    }
    assert jobs == latest(client, "jobs")


def test_status_shows_the_fleet_and_what_was_refused(attack):
    status = attack["status"]
    assert status["running"] is True
    assert status["minions"] == 1  # no forged id counted as a minion
    assert status["bus_connected"] is True
    assert status["bus_reconnects"] == 0  # forged salt_ws/bus/* notices changed nothing
    refused = status["view_refused"]  # the formatted view's refusals, by reason
    assert refused["invalid_id"] >= len(PATH_IDS)  # "../canary" & co.
    assert refused["not_accepted"] >= 1  # ghost-minion, minion-2: valid ids, no key
    assert refused["fun_conflict"] >= 2  # the second new of each running job
    assert status["acl_jobs"]["conflicts"] >= 2
