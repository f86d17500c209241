"""Syndic: master of masters (engine) <- salt-syndic + its master <- minions; plus a direct minion.

The engine runs on the master of masters only. It must list the minions
behind the syndic (marked with it) beside its own, never the syndic itself,
and complete jobs with the returns the syndic forwards.

Two Salt quirks are worked around here, not in the product:

* the syndic subscribes to the publish port in its own opts, which it
  inherits from its master's config, so it is told the master of masters'
  (``publish_port`` in the syndic's own minion file);
* salt-syndic 3008.4 stops forwarding after its first request: the syndic
  process runs through ``run_salt_syndic.py``, which mends that (see there).

Each minion connects from its own loopback address (``loopback_minion``) so
that Salt's presence detection can tell them apart.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest
import salt.version

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    formatted,
    latest,
    loopback_minion,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

SALT_VERSION = salt.version.__saltstack_version__.info
SYNDIC = "syndic-1"
BEHIND = {"behind-1": "127.0.0.3", "behind-2": "127.0.0.4"}
DIRECT = {"direct-1": "127.0.0.5"}


@pytest.fixture(scope="module")
def topology(salt_factories, users_file):
    factory, port = start_master(
        salt_factories,
        users_file,
        {"disable_ssl": True, "job_timeout": 60},
        order_masters=True,
        auto_accept=True,
        syndic_wait=3,
    )
    with factory.started(start_timeout=120), contextlib.ExitStack() as stack:
        wait_listening(port)
        mom = EngineMaster(factory, port)
        syndic = factory.salt_syndic_daemon(
            SYNDIC,
            master_overrides={"auto_accept": True, "presence_events": True, "loop_interval": 1},
            minion_overrides={"publish_port": factory.config["publish_port"]},
        )
        syndic.script_name = str(Path(__file__).with_name("run_salt_syndic.py"))
        stack.enter_context(syndic.started(start_timeout=120))
        minions = {}
        for mid, address in BEHIND.items():
            minions[mid] = loopback_minion(syndic.master, mid, address)
        for mid, address in DIRECT.items():
            minions[mid] = loopback_minion(factory, mid, address)
        for minion in minions.values():
            minion.start(start_timeout=120)
            stack.callback(minion.terminate)
        yield mom, {**minions, SYNDIC: syndic}


def publish(mom: EngineMaster, *args: str, tgt: str) -> str:
    """Publish a job from the master of masters without waiting for it; its jid."""
    ret = mom.factory.salt_cli(timeout=60).run("--async", *args, minion_tgt=tgt)
    found = re.search(r"\b(\d{20})\b", ret.stdout)
    assert found, ret
    return found.group(1)


def completed(client: Collector, jid: str, timeout: float = 60) -> dict:
    def complete() -> dict | None:
        job = latest(client, "jobs").get(jid)
        return job if job and job["state"] == "complete" else None

    try:
        return wait_until(complete, timeout, f"job {jid} to complete")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {latest(client, 'jobs').get(jid)}") from None


def test_the_view_lists_minions_behind_the_syndic_and_not_the_syndic(topology):
    mom, _ = topology
    with formatted(mom) as client:

        def all_listed() -> dict | None:
            table = latest(client, "minions")
            return table if set(table) == {*BEHIND, *DIRECT} else None

        table = wait_until(all_listed, 90, "every minion in the master of masters' view")
        for mid in BEHIND:
            assert table[mid]["id"] == mid
            assert table[mid]["syndic"] == SYNDIC
        assert "syndic" not in table["direct-1"]
        assert table["direct-1"]["grains"]["id"] == "direct-1"  # from this master's cache
        # the syndic connects like a minion, and Salt counts it as present: not a minion
        assert SYNDIC not in latest(client, "minions")


def test_a_job_from_the_top_completes_with_the_returns_the_syndic_forwards(topology):
    mom, _ = topology
    events = Collector(f"{mom.ws_url}/all_events/{mom.login()['token']}")
    try:
        with formatted(mom) as client:
            jid = publish(mom, "test.ping", tgt="*")
            job = completed(client, jid)
            assert job["fun"] == "test.ping" and job["success"] is True, job
            # the minions behind the syndic replace the syndic in the job
            assert job["minions"] == {
                mid: {"return": True, "retcode": 0, "success": True} for mid in {*BEHIND, *DIRECT}
            }
            running = next(
                m["jobs"][jid] for m in list(client.messages) if jid in m.get("jobs", {})
            )
            assert running["state"] == "running"
        # on the wire: returns as from any minion, and the syndic's own new event
        returned = events.wait_for(lambda m: m["tag"] == f"salt/job/{jid}/ret/behind-1")
        assert returned["data"]["return"] is True
        announced = f"syndic/{SYNDIC}/salt/job/{jid}/new"
        if SALT_VERSION < (3008,):  # Salt 3007 drops it on the MoM (README, Scaling out)
            assert not events.tagged(announced)
        else:
            new = events.wait_for(lambda m: m["tag"] == announced)
            # (salt-factories also runs a minion named like the syndic on the syndic's master)
            assert set(BEHIND) <= set(new["data"]["minions"]) <= {*BEHIND, SYNDIC}
    finally:
        events.close()


def test_a_failing_job_behind_the_syndic_completes_with_its_retcode(topology):
    mom, _ = topology
    with formatted(mom) as client:
        jid = publish(mom, "cmd.run", "exit 3", "python_shell=True", tgt="behind-1")
        job = completed(client, jid)
        # the master of masters itself matched nobody: the syndic's master did
        assert set(job["minions"]) == {"behind-1"}
        assert job["success"] is False
        assert job["minions"]["behind-1"]["retcode"] == 3
        assert job["minions"]["behind-1"]["success"] is False


def test_status_and_view_runners_show_the_syndic_and_its_minions(topology):
    mom, _ = topology
    status = mom.run("ws.status").data
    assert status["syndics"] == [SYNDIC]
    view = mom.run("ws.view", "minion=behind-2").data
    assert view["minions"]["behind-2"]["syndic"] == SYNDIC


def test_a_minion_stopped_behind_the_syndic_drops_out(topology):
    mom, minions = topology
    with formatted(mom) as client:
        wait_until(lambda: "behind-2" in latest(client, "minions"), 60, "behind-2 listed")
        minions["behind-2"].terminate()
        stopped = time.monotonic()
        wait_until(
            lambda: set(latest(client, "minions")) == {"behind-1", *DIRECT},
            60,
            "behind-2 to drop out through the syndic's presence events",
        )
        assert time.monotonic() - stopped < 60


def test_minions_behind_a_stopped_syndic_drop_out(topology):
    """The master of masters sees the syndic connected like a minion; once it is gone,
    nothing behind it is reachable from here.

    salt-factories also runs a salt-minion with the syndic's id and config file, which
    therefore subscribes to this master's publish port too: it goes as well.
    """
    mom, daemons = topology
    with formatted(mom) as client:
        wait_until(lambda: "behind-1" in latest(client, "minions"), 60, "behind-1 listed")
        daemons[SYNDIC].terminate()
        daemons[SYNDIC].minion.terminate()
        wait_until(
            lambda: set(latest(client, "minions")) == set(DIRECT),
            60,
            "the minions behind the stopped syndic to drop out",
        )
