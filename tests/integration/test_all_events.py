"""/login and /all_events against a real salt-master running the engine, with a real minion."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import websocket

from tests.integration.conftest import USERS, Collector, http, wait_until

pytestmark = pytest.mark.integration


def test_login_answers_saltnado_shape(master):
    status, headers, body = http(
        master.url + "/login",
        {"username": "saltdev", "password": USERS["saltdev"], "eauth": "file"},
        form=True,
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    (ret,) = json.loads(body)["return"]
    assert set(ret) == {"perms", "start", "token", "expire", "user", "eauth"}
    assert ret["user"] == "saltdev"
    assert ret["eauth"] == "file"
    assert ret["perms"] == [".*", "@jobs", "@runner", "@wheel"]
    assert len(ret["token"]) == 64 and int(ret["token"], 16) >= 0
    assert ret["expire"] > ret["start"] > time.time() - 60
    assert "session_id=" + ret["token"] in headers["Set-Cookie"]
    assert "HttpOnly" in headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"username": "saltdev", "password": "wrong", "eauth": "file"}, 401, "authenticate"),
        ({"username": "nobody", "password": "x", "eauth": "file"}, 401, "authenticate"),
        ({"username": "saltdev", "password": USERS["saltdev"], "eauth": "pam2"}, 401, ""),
        ({"username": "saltdev", "eauth": "file"}, 400, "'password'"),
        ({"password": "x", "eauth": "file"}, 400, "'username'"),
        ({"username": "saltdev", "password": "x"}, 400, "'eauth'"),
        ('{"username": ', 400, "not valid JSON"),
        ("[1, 2]", 400, "must be an object"),
    ],
    ids=[
        "wrong-password",
        "unknown-user",
        "unknown-eauth",
        "no-password",
        "no-username",
        "no-eauth",
        "bad-json",
        "json-list",
    ],
)
def test_login_refusals(master, body, status, needle):
    got, headers, raw = http(master.url + "/login", body)
    assert got == status, raw
    assert headers["Content-Type"].startswith("application/json")
    payload = json.loads(raw)
    assert payload["status"].startswith(str(status))
    assert needle in payload["return"]


def test_logout_invalidates_the_token(master):
    token = master.login()["token"]
    status, _, _ = http(master.url + "/logout", {}, headers={"X-Auth-Token": token})
    assert status == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{master.ws_url}/all_events/{token}", timeout=10)
    assert err.value.status_code == 401


@pytest.mark.parametrize(
    "token",
    ["0" * 64, "abc", "g" * 64, "0" * 40],
    ids=["unknown", "short", "non-hex", "sha1-length"],
)
def test_bad_token_is_refused_before_upgrade(master, token):
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{master.ws_url}/all_events/{token}", timeout=10)
    assert err.value.status_code == 401


def test_job_events_arrive_with_their_data(master, minion):
    token = master.login()["token"]
    client = Collector(f"{master.ws_url}/all_events/{token}")
    try:
        time.sleep(0.5)  # the subscription starts with the ready message
        ret = master.factory.salt_cli(timeout=60).run("test.ping", minion_tgt=minion.id)
        assert ret.returncode == 0, ret
        new = client.wait_for(
            lambda m: m["tag"].endswith("/new") and m["data"].get("fun") == "test.ping"
        )
        jid = new["data"]["jid"]
        assert new["tag"] == f"salt/job/{jid}/new"
        assert new["data"]["tgt"] == minion.id
        assert new["data"]["minions"] == [minion.id]
        returned = client.wait_for(lambda m: m["tag"] == f"salt/job/{jid}/ret/{minion.id}")
        data = returned["data"]
        assert data["return"] is True
        assert data["success"] is True
        assert data["retcode"] == 0
        assert data["id"] == minion.id
        assert data["fun"] == "test.ping"
        # bus order: the job's new event precedes its return
        assert client.messages.index(new) < client.messages.index(returned)
    finally:
        client.close()


def test_nothing_is_sent_before_the_ready_message(master):
    token = master.login()["token"]
    run = uuid.uuid4().hex
    ws = websocket.create_connection(f"{master.ws_url}/all_events/{token}", timeout=10)
    try:
        master.fire([(f"sws/early/{run}", {"n": 0})])
        ws.settimeout(1.0)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
        ws.settimeout(30)
        ws.send("websocket client ready")
        master.fire([(f"sws/late/{run}", {"n": 1})])
        while True:
            msg = json.loads(ws.recv())
            assert msg["tag"] != f"sws/early/{run}"
            if msg["tag"] == f"sws/late/{run}":
                assert msg["data"]["n"] == 1
                break
    finally:
        ws.close()


def test_burst_arrives_complete_and_in_order(master):
    count = 3000
    run = uuid.uuid4().hex
    tokens = [master.login()["token"] for _ in range(3)]
    clients = [Collector(f"{master.ws_url}/all_events/{t}") for t in tokens]
    try:
        time.sleep(0.5)
        master.fire([(f"sws/burst/{run}/{n}", {"n": n, "pad": "x" * 100}) for n in range(count)])
        for client in clients:
            wait_until(lambda c=client: len(c.tagged(f"sws/burst/{run}/")) >= count, 60, "burst")
            got = [m["data"]["n"] for m in client.tagged(f"sws/burst/{run}/")]
            assert got == list(range(count))
            assert client.close_code is None
    finally:
        for client in clients:
            client.close()
    assert "discarding slow subscriber" not in master.log_text()


def test_stalled_client_is_cut_with_a_reason_while_live_one_loses_nothing(master):
    count = 15000
    run = uuid.uuid4().hex
    live = Collector(f"{master.ws_url}/all_events/{master.login()['token']}")
    stalled = websocket.create_connection(
        f"{master.ws_url}/all_events/{master.login()['token']}",
        timeout=30,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    try:
        stalled.send("websocket client ready")
        time.sleep(0.5)
        before = master.run("ws.status").data["clients_cut_slow"]
        pad = "y" * 1000
        master.fire([(f"sws/stall/{run}/{n}", {"n": n, "pad": pad}) for n in range(count)])
        wait_until(lambda: len(live.tagged(f"sws/stall/{run}/")) >= count, 90, "live client")
        assert [m["data"]["n"] for m in live.tagged(f"sws/stall/{run}/")] == list(range(count))
        assert live.close_code is None
        status = master.run("ws.status").data
        assert status["clients_cut_slow"] == before + 1
        assert status["queue_high_water"] <= 4000
        # The stalled client, reading at last, finds a prefix of the stream, then the reason.
        seen = []
        while True:
            opcode, data = stalled.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            msg = json.loads(data)
            if msg["tag"].startswith(f"sws/stall/{run}/"):
                seen.append(msg["data"]["n"])
        assert int.from_bytes(data[:2], "big") == 4001
        assert "too slow" in data[2:].decode()
        assert seen == list(range(len(seen))) and len(seen) < count
    finally:
        live.close()
        stalled.close()
    assert "discarding slow subscriber" not in master.log_text()


def test_status_runner_reports_live_numbers(master):
    token = master.login()["token"]
    client = Collector(f"{master.ws_url}/all_events/{token}")
    try:
        wait_until(lambda: master.run("ws.status").data["clients"]["all_events"] >= 1, 10, "client")
        ret = master.run("ws.status")
        assert ret.returncode == 0
        data = ret.data
        assert data["running"] is True
        assert data["state"] == "serving"
        assert data["port"] == master.port
        assert data["tls"] is False
        assert data["bus_connected"] is True
        assert data["events_received"] > 0
        assert data["messages_sent"] > 0
        assert data["uptime"] > 0
    finally:
        client.close()


def test_token_never_reaches_the_master_log(master):
    token = master.login()["token"]
    Collector(f"{master.ws_url}/all_events/{token}").close()
    http(master.url + "/all_events/" + token)  # a plain GET: tornado answers 400
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"{master.ws_url}/all_events/{'f' * 64}", timeout=10)
    time.sleep(0.5)
    text = master.log_text()
    assert token not in text
    assert "f" * 64 not in text
