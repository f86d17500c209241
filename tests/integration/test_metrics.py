"""GET /metrics and salt-run ws.clients on a real salt-master (issue 12's "Must show").

One master, two engine instances: ``ws`` with ``metrics: True`` and ``ws_off`` with
``metrics: False``. The counters are read with prometheus_client's own parser and must
match what the test did: events fired, messages delivered to its clients, one client cut
as too slow, one failed login, one resume hit and one gap.
"""

from __future__ import annotations

import json
import socket
import uuid
from http.client import HTTPConnection
from typing import Any

import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    free_port,
    http,
    master_config,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration

N = 10  # events fired for the well-behaved clients (below client_queue_size: never cut)
QUEUE = 20  # client_queue_size


@pytest.fixture(scope="module")
def metrics_master(salt_factories, users_file):
    port, off_port = free_port(), free_port()
    common = {"engine_module": "ws", "address": "127.0.0.1", "disable_ssl": True}
    engines = [
        {
            "ws": {
                **common,
                "port": port,
                "metrics": True,
                "client_queue_size": QUEUE,
                "tick_interval": 0,  # no ticks: every message counted is one the test caused
            }
        },
        {"ws_off": {**common, "port": off_port, "metrics": False}},
    ]
    factory = salt_factories.salt_master_daemon(
        f"master-{uuid.uuid4().hex[:6]}", overrides=master_config(users_file, engines)
    )
    with factory.started(start_timeout=120):
        wait_listening(port)
        wait_listening(off_port)
        yield EngineMaster(factory, port), off_port


def scrape(master: EngineMaster, source: str | None = None, token: str | None = None) -> Any:
    """(status, parsed families or the body) of GET /metrics, from ``source`` if given."""
    conn = HTTPConnection(
        "127.0.0.1", master.port, timeout=30, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", "/metrics", headers={"X-Auth-Token": token} if token else {})
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        return response.status, body
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    return 200, {f.name: f for f in text_string_to_metric_families(body)}


def metrics(master: EngineMaster) -> dict[str, Any]:
    status, found = scrape(master)
    assert status == 200, found
    return found


def value(found: dict[str, Any], name: str, **labels: str) -> float:
    values = [
        s.value
        for family in found.values()
        for s in family.samples
        if s.name == name and s.labels == labels
    ]
    assert len(values) == 1, (name, labels)
    return values[0]


def delta(before: dict[str, Any], after: dict[str, Any], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_off_is_404(metrics_master):
    _, off_port = metrics_master
    status, _, _ = http(f"http://127.0.0.1:{off_port}/metrics")
    assert status == 404


def test_a_non_allowed_address_needs_an_administrators_token(metrics_master):
    master, _ = metrics_master
    status, body = scrape(master, source="127.0.0.2")  # loopback, but not in metrics_allow
    assert status == 403
    assert "salt_ws_up" not in body
    status, _ = scrape(master, source="127.0.0.2", token=master.login("limited")["token"])
    assert status == 403
    status, found = scrape(master, source="127.0.0.2", token=master.login()["token"])
    assert status == 200
    assert value(found, "salt_ws_up") == 1


def test_the_counters_match_what_the_clients_did(metrics_master):
    master, _ = metrics_master
    prefix = f"test/metrics/{uuid.uuid4().hex[:8]}"
    before = metrics(master)

    # one failed login, two good ones
    status, _, _ = http(
        master.url + "/login", {"username": "saltdev", "password": "wrong", "eauth": "file"}
    )
    assert status == 401
    tokens = [master.login()["token"], master.login()["token"]]

    # K = 2 clients, filtered to the test's events; N events fired
    plain = Collector(f"{master.ws_url}/all_events/{tokens[0]}?tag={prefix}/*")
    envelope = Collector(f"{master.ws_url}/all_events/{tokens[1]}?tag={prefix}/*&envelope=1")
    clients = (plain, envelope)
    try:
        wait_until(
            lambda: value(metrics(master), "salt_ws_clients", endpoint="all_events") == 2,
            10,
            "two subscribed clients",
        )
        master.fire([(f"{prefix}/{n}", {"n": n}) for n in range(N)])
        for client in clients:
            wait_until(lambda c=client: len(c.tagged(prefix)) == N, 30, "the events")
        ids = [m["id"] for m in envelope.messages]

        # ws.clients: exactly these two, with their users and filters, and no token
        ret = master.run("ws.clients")
        assert ret.returncode == 0, ret.stderr
        rows = [row for row in ret.data if row.get("port") == str(master.port)]
        assert len(rows) == 2, ret.data
        assert [(r["user"], r["eauth"], r["filters"], r["state"]) for r in rows] == [
            ("saltdev", "file", [f"{prefix}/*"], "streaming")
        ] * 2
        assert [r["messages_sent"] for r in rows] == [N, N]
        epoch, last = ids[-1].split(":")
        shown_epoch, shown = rows[1]["last_id"].split(":")  # everything up to here was sent
        assert (shown_epoch, int(shown) >= int(last)) == (epoch, True)
        table = master.run("ws.clients", "--out=table")
        assert "saltdev" in table.stdout
        for token in tokens:
            assert token not in ret.stdout
            assert token not in table.stdout

        middle = metrics(master)
        assert delta(before, middle, "salt_ws_events_received_total") >= N
        assert delta(before, middle, "salt_ws_messages_sent_total", endpoint="all_events") == 2 * N
        assert delta(before, middle, "salt_ws_connections_total", endpoint="all_events") == 2
        assert delta(before, middle, "salt_ws_bytes_sent_total", endpoint="all_events") > 0
        assert delta(before, middle, "salt_ws_fanout_seconds_count") >= 1

        # one client cut as too slow: it never reads, and a burst floods its queue
        burst = f"{prefix}-burst"
        slow = websocket.create_connection(
            f"{master.ws_url}/all_events/{tokens[0]}?tag={burst}/*",
            timeout=30,
            sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
        )
        slow.send("websocket client ready")
        wait_until(
            lambda: value(metrics(master), "salt_ws_clients", endpoint="all_events") == 3,
            10,
            "the slow client",
        )
        pad = "x" * 65536
        master.fire([(f"{burst}/{n}", {"n": n, "pad": pad}) for n in range(200)])
        wait_until(
            lambda: (
                value(
                    metrics(master),
                    "salt_ws_clients_closed_total",
                    endpoint="all_events",
                    reason="too_slow",
                )
                - value(
                    before, "salt_ws_clients_closed_total", endpoint="all_events", reason="too_slow"
                )
                == 1
            ),
            60,
            "the slow client's cut",
        )
        slow.close()

        # one resume hit (a kept id), one gap (an id of another engine start)
        hit = Collector(f"{master.ws_url}/all_events/{tokens[1]}?tag={prefix}/*&since={ids[4]}")
        gap = Collector(f"{master.ws_url}/all_events/{tokens[1]}?tag={prefix}/*&since=0abc:3")
        try:
            wait_until(lambda: len(hit.messages) == N - 5, 10, "the replay")
            assert [m["id"] for m in hit.messages] == ids[5:]
            wait_until(lambda: len(gap.messages) == N + 1, 10, "the gap notice and replay")
            assert gap.messages[0]["tag"] == "salt_ws/stream/gap"
        finally:
            hit.close()
            gap.close()
        assert all(not c.close_code for c in clients)  # the burst did not reach them
    finally:
        for client in clients:
            client.close()

    def closed(found: dict[str, Any], reason: str) -> float:
        return delta(
            before, found, "salt_ws_clients_closed_total", endpoint="all_events", reason=reason
        )

    after = wait_until(
        lambda: (found := metrics(master)) and closed(found, "client") == 4 and found,
        10,
        "four clients closed by themselves",
    )
    assert closed(after, "too_slow") == 1
    assert delta(before, after, "salt_ws_logins_total", result="bad_credentials") == 1
    assert delta(before, after, "salt_ws_logins_total", result="ok") == 2
    assert delta(before, after, "salt_ws_resume_total", result="hit") == 1
    assert delta(before, after, "salt_ws_resume_total", result="gap") == 1
    assert delta(before, after, "salt_ws_connections_total", endpoint="all_events") == 5
    assert value(after, "salt_ws_clients", endpoint="all_events") == 0
    assert value(after, "salt_ws_bus_connected") == 1
    assert value(after, "salt_ws_up") == 1

    # ws.status carries the same registry
    status = master.run("ws.status").data["engines"][str(master.port)]
    assert status["metrics"]["salt_ws_resume_total"]["gap"] >= 1
    assert status["metrics"]["salt_ws_clients_closed_total"]["all_events"]["too_slow"] >= 1
    assert json.dumps(status).count("salt_ws_fanout_seconds") == 1
