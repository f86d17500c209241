"""/formatted_events, ws.view and ws.status against a real master with two real minions.

Each minion connects from its own loopback address (``loopback_minion``) so
that Salt's presence detection can tell them apart. The tests run in order:
the last ones stop a minion and delete a key.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integration.conftest import (
    EngineMaster,
    formatted,
    latest,
    loopback_minion,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

MINIONS = {"minion-a": "127.0.0.3", "minion-b": "127.0.0.4"}


@pytest.fixture(scope="module")
def fleet(salt_factories, users_file):
    factory, port = start_master(
        salt_factories, users_file, {"disable_ssl": True, "job_timeout": 30}, loop_interval=1
    )
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port)
        minions = {}
        started = []
        try:
            for mid, address in MINIONS.items():
                minion = loopback_minion(factory, mid, address)
                minion.start(start_timeout=120)
                started.append(minion)
                minions[mid] = minion
            yield master, minions
        finally:
            for minion in started:
                minion.terminate()


def test_fresh_client_gets_both_minions_with_grains_and_no_job(fleet):
    master, _ = fleet
    # the engine learns grains from the master's cache: wait until both are there
    wait_until(
        lambda: set(master.run("ws.view").data.get("minions", {})) == set(MINIONS),
        60,
        "both minions in the view",
    )
    with formatted(master) as client:
        first, second = client.messages[:2]
        assert set(first) == {"minions"} and set(second) == {"jobs"}
        assert set(first["minions"]) == set(MINIONS)
        for mid, entry in first["minions"].items():
            assert entry["id"] == mid
            assert entry["grains"]["id"] == mid
            assert entry["grains"]["os"]
            assert entry["grains"]["kernel"] == "Linux"
        # no job was run to learn the grains (saltnado ran grains.items on '*')
        assert second["jobs"] == {}


def test_ping_shows_running_then_complete(fleet):
    master, _ = fleet
    with formatted(master) as client:
        ret = master.factory.salt_cli(timeout=60).run("test.ping", minion_tgt="*")
        assert ret.returncode == 0, ret
        jobs = wait_until(
            lambda: [
                j
                for m in list(client.messages)
                if "jobs" in m
                for j in m["jobs"].values()
                if j["fun"] == "test.ping"
            ],
            30,
            "test.ping in the jobs view",
        )
        jid = jobs[0]["jid"]
        states = [j["state"] for j in jobs if j["jid"] == jid]
        assert states[0] == "running"

        def complete() -> dict | None:
            job = latest(client, "jobs").get(jid)
            return job if job and job["state"] == "complete" else None

        job = wait_until(complete, 30, "the job to complete")
        assert job["tgt"] == "*"
        assert job["tgt_type"] == "glob"
        assert job["success"] is True
        assert job["minions"] == {
            mid: {"return": True, "retcode": 0, "success": True} for mid in MINIONS
        }


def test_job_with_one_failing_minion_completes_with_per_minion_success(fleet):
    master, _ = fleet
    with formatted(master) as client:
        marker = uuid.uuid4().hex[:8]
        cmd = f'echo {marker}; exit {{{{ 0 if grains["id"] == "minion-a" else 3 }}}}'
        master.factory.salt_cli(timeout=60).run(
            "cmd.run", cmd, "template=jinja", "python_shell=True", minion_tgt="*"
        )

        def complete() -> dict | None:
            for job in latest(client, "jobs").values():
                if job["fun"] == "cmd.run" and job["state"] == "complete":
                    return job
            return None

        job = wait_until(complete, 30, "the cmd.run job to complete")
        assert job["success"] is False
        assert job["minions"]["minion-a"] == {"return": marker, "retcode": 0, "success": True}
        assert job["minions"]["minion-b"]["retcode"] == 3
        assert job["minions"]["minion-b"]["success"] is False


def test_runners_show_the_same_view_as_the_websocket(fleet):
    master, _ = fleet
    with formatted(master) as client:
        time.sleep(1.5)  # let presence re-send the minions table once
        status = master.run("ws.status")
        assert status.returncode == 0
        data = status.data
        assert data["running"] is True
        assert data["minions"] == 2
        assert data["jobs"] >= 2
        assert data["clients"]["formatted_events"] >= 1
        assert data["events_received"] > 0
        view = master.run("ws.view")
        assert view.returncode == 0
        assert view.data["minions"] == latest(client, "minions")
        assert view.data["jobs"] == latest(client, "jobs")
        one = master.run("ws.view", "minion=minion-a").data
        assert one == {"minions": {"minion-a": latest(client, "minions")["minion-a"]}}
        missing = master.run("ws.view", "jid=1")
        assert missing.returncode == 1
        assert "not in the view" in missing.data["error"]


def test_stopped_minion_leaves_after_presence_detects_it(fleet):
    master, minions = fleet
    with formatted(master) as client:
        minions["minion-b"].terminate()
        wait_until(lambda: set(latest(client, "minions")) == {"minion-a"}, 30, "minion-b to drop")


def test_deleting_a_key_removes_the_minion(fleet):
    master, _ = fleet
    with formatted(master) as client:
        wait_until(lambda: "minion-a" in latest(client, "minions"), 10, "minion-a")
        ret = master.factory.salt_key_cli(timeout=60).run("-d", "minion-a", "-y")
        assert ret.returncode == 0, ret
        wait_until(lambda: latest(client, "minions") == {}, 30, "minion-a to go")


def test_status_with_the_engine_stopped(fleet):
    master, _ = fleet
    master.factory.terminate()
    ret = master.run("ws.status")
    assert ret.returncode == 1
    assert ret.data["running"] is False
    assert "not running" in ret.data["message"]
