"""The engine's bus link on a real master: a discarded engine resubscribes, a dead publisher
does not make it flap (issue 9, finding 11).

Own master (its EventPublisher is killed by the last test). ``publish_drain_timeout: 3``
lets the publisher discard a stalled engine within seconds.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import salt.utils.event

from tests.integration.conftest import Collector, EngineMaster, start_master, wait_listening

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def link_master(salt_factories, users_file):
    engine = {"disable_ssl": True}
    factory, port = start_master(salt_factories, users_file, engine, publish_drain_timeout=3)
    with factory.started(start_timeout=120):
        wait_listening(port)
        yield EngineMaster(factory, port)


def bus_notices(client: Collector) -> list[str]:
    return [m["tag"] for m in client.tagged("salt_ws/bus/")]


def bus_warnings(master: EngineMaster, since: int) -> list[str]:
    lines = master.log_text().splitlines()[since:]
    return [line for line in lines if "[salt_ws.bus" in line and "WARNING" in line]


def test_a_discarded_engine_tells_its_clients_and_resubscribes(link_master):
    client = Collector(f"{link_master.ws_url}/all_events/{link_master.login()['token']}")
    pid = link_master.run("ws.status").data["pid"]
    opts = link_master.opts()
    bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            pad = "x" * 100_000
            for n in range(600):  # 60 MB the stopped engine cannot read
                bus.fire_event({"n": n, "pad": pad}, f"flood/{n}")
            time.sleep(6)  # > publish_drain_timeout: the publisher discards the engine
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        for k in range(40):
            bus.fire_event({"k": k}, f"after/{k}")
            time.sleep(0.05)
            if client.tagged("after/"):
                break
        client.wait_for(lambda m: m["tag"].startswith("after/"), timeout=5)
        assert time.monotonic() - resumed < 2.0
    finally:
        bus.destroy()
        client.close()
    assert "Publisher discarding slow subscriber" in link_master.log_text()
    lost, restored = client.tagged("salt_ws/bus/")
    assert (lost["tag"], restored["tag"]) == ("salt_ws/bus/lost", "salt_ws/bus/restored")
    assert lost["data"]["missed"] is restored["data"]["missed"] is True
    assert not client.tagged("salt_ws/probe/")  # the engine's probes stay hidden
    status = link_master.run("ws.status").data
    assert status["bus_connected"] is True
    assert status["bus_probes_answered"] >= 2


def event_publisher(master: EngineMaster) -> psutil.Process:
    """The master's EventPublisher: the process listening on ``master_event_pub.ipc``.

    (Process titles are not set under salt-factories, so it is found by its socket.)
    """
    path = os.path.join(master.opts()["sock_dir"], "master_event_pub.ipc")
    found = []
    for child in psutil.Process(master.factory.pid).children(recursive=True):
        try:
            sockets = child.net_connections(kind="unix")
        except psutil.Error:
            continue
        if any(conn.laddr == path for conn in sockets):  # the server end (clients: raddr)
            found.append(child)
    assert len(found) == 1, found
    return found[0]


def test_a_dead_publisher_is_one_lost_no_restored_and_a_quiet_log(link_master):
    client = Collector(f"{link_master.ws_url}/all_events/{link_master.login()['token']}")
    try:
        time.sleep(0.5)
        before = len(bus_notices(client))
        log_start = len(link_master.log_text().splitlines())
        event_publisher(link_master).kill()  # Salt 3008.4 does not bring it back
        time.sleep(25)
        notices = bus_notices(client)[before:]
        status = link_master.run("ws.status").data
    finally:
        client.close()
    assert notices == ["salt_ws/bus/lost"]  # was: a lost and a restored every second
    assert status["bus_connected"] is False
    assert status["bus_state"] == "down"
    assert status["bus_probes_sent"] - status["bus_probes_answered"] <= 8  # backed off
    assert len(bus_warnings(link_master, log_start)) == 1  # was: one a second
