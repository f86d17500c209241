"""Delta mode (issue 11) on a real master with two real minions.

Four ``/formatted_events`` clients are connected at once: the administrator's delta
(``?delta=1``) and compat streams, and a limited eauth user's (``limited``:
``minion-1`` ``test.*``, conftest's ``master_config``). ``salt '*' test.ping`` and a
failing ``cmd.run`` go through; then the patch stream, applied with the ``jsonpatch``
library to the snapshot, must equal that audience's compat tables, and the
administrator's also ``salt-run ws.view --out=json``. ``seq`` grows by exactly 1.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    latest,
    loopback_minion,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

MINIONS = {"minion-1": "127.0.0.5", "minion-2": "127.0.0.6"}
VIEW_INTERVAL = 0.5


@pytest.fixture(scope="module")
def fleet(salt_factories, users_file):
    engine = {"disable_ssl": True, "job_timeout": 30, "view_interval": VIEW_INTERVAL}
    factory, port = start_master(salt_factories, users_file, engine, loop_interval=1)
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port)
        started = []
        try:
            for mid, address in MINIONS.items():
                minion = loopback_minion(factory, mid, address)
                minion.start(start_timeout=120)
                started.append(minion)
            wait_until(
                lambda: set(master.run("ws.view").data.get("minions", {})) == set(MINIONS),
                60,
                "both minions in the view",
            )
            yield master
        finally:
            for minion in started:
                minion.terminate()


def document(client: Collector) -> tuple[dict[str, Any], list[int]]:
    """The client's snapshot with every patch it received applied, and the seqs seen."""
    messages = list(client.messages)
    first, rest = messages[0], messages[1:]
    assert set(first) == {"seq", "snapshot"}, first
    doc = copy.deepcopy(first["snapshot"])
    seqs = [first["seq"]]
    for message in rest:
        assert set(message) == {"seq", "patch"}, message
        doc = jsonpatch.apply_patch(doc, message["patch"])
        seqs.append(message["seq"])
    return doc, seqs


def tables(client: Collector) -> dict[str, Any]:
    return {"minions": latest(client, "minions"), "jobs": latest(client, "jobs")}


def jobs_of(doc: dict[str, Any], fun: str) -> list[dict[str, Any]]:
    return [job for job in doc["jobs"].values() if job["fun"] == fun]


def test_patched_documents_equal_the_compat_tables_and_ws_view(fleet: EngineMaster):
    master = fleet
    url = f"{master.ws_url}/formatted_events/"
    admin_delta = Collector(url + master.login()["token"] + "?delta=1")
    admin_compat = Collector(url + master.login()["token"])
    limited_delta = Collector(url + master.login("limited")["token"] + "?delta=1")
    limited_compat = Collector(url + master.login("limited")["token"])
    clients = (admin_delta, admin_compat, limited_delta, limited_compat)
    try:
        for client in clients:
            wait_until(lambda c=client: c.messages, 10, "the first message")
        for delta in (admin_delta, limited_delta):
            assert set(delta.messages[0]) == {"seq", "snapshot"}
        assert set(admin_delta.messages[0]["snapshot"]["minions"]) == set(MINIONS)
        assert set(limited_delta.messages[0]["snapshot"]["minions"]) == {"minion-1"}

        salt = master.factory.salt_cli(timeout=60)
        assert salt.run("test.ping", minion_tgt="*").returncode == 0
        salt.run("cmd.run", "exit 3", "python_shell=True", minion_tgt="*")

        def settled() -> bool:
            doc, _ = document(admin_delta)
            done = [j for j in doc["jobs"].values() if j["state"] == "complete"]
            return len(done) == 2 and tables(admin_compat) == doc

        wait_until(settled, 30, "both jobs complete, the admin's compat tables caught up")
        wait_until(
            lambda: (
                tables(limited_compat) == document(limited_delta)[0]
                and jobs_of(tables(limited_compat), "test.ping")
                and jobs_of(tables(limited_compat), "test.ping")[0]["state"] == "complete"
            ),
            10,
            "the limited user's compat tables to equal their patched document",
        )
        view = master.run("ws.view")
        assert view.returncode == 0

        doc, seqs = document(admin_delta)
        assert doc == tables(admin_compat) == view.data
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert len(seqs) > 2  # the jobs came as patches, not in the snapshot
        [ping] = jobs_of(doc, "test.ping")
        assert ping["success"] is True
        assert ping["minions"] == {
            mid: {"return": True, "retcode": 0, "success": True} for mid in MINIONS
        }
        [failed] = jobs_of(doc, "cmd.run")
        assert failed["success"] is False
        assert {m["retcode"] for m in failed["minions"].values()} == {3}
        # the delta client saw the job running first (a patch, then its completion)
        states = []
        for message in admin_delta.messages[1:]:
            for op in message["patch"]:
                if op["path"] == f"/jobs/{ping['jid']}" and op["op"] == "add":
                    states.append(op["value"]["state"])
                elif op["path"] == f"/jobs/{ping['jid']}/state":
                    states.append(op["value"])
        assert states[0] == "running" and states[-1] == "complete"

        mine, seqs = document(limited_delta)
        assert mine == tables(limited_compat)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert set(mine["minions"]) == {"minion-1"}
        [mine_ping] = mine["jobs"].values()  # test.ping only: no cmd.run for them
        assert mine_ping["fun"] == "test.ping"
        assert set(mine_ping["minions"]) == {"minion-1"}
        assert mine_ping["tgt"] == ["minion-1"] and mine_ping["tgt_type"] == "list"

        status = master.run("ws.status").data
        assert status["view_deltas"]["audiences"] == 2  # (resyncs: one per ACL refresh)
    finally:
        for client in clients:
            client.close()
