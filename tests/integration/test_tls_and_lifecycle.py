"""wss with a certificate made here, clean shutdown (1001), and misconfiguration handling."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import uuid

import pytest

from tests.certs import self_signed
from tests.integration.conftest import (
    Collector,
    EngineMaster,
    free_port,
    http,
    master_config,
    start_master,
    wait_listening,
    wait_until,
)

pytestmark = pytest.mark.integration


def make_cert(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, as two files."""
    cert_pem, key_pem = self_signed("127.0.0.1")
    crt = directory / "server.crt"
    keyfile = directory / "server.key"
    crt.write_bytes(cert_pem)
    keyfile.write_bytes(key_pem)
    return str(crt), str(keyfile)


@pytest.fixture(scope="module")
def tls_master(salt_factories, users_file, tmp_path_factory):
    crt, key = make_cert(tmp_path_factory.mktemp("pki"))
    factory, port = start_master(salt_factories, users_file, {"ssl_crt": crt, "ssl_key": key})
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port, scheme="https")
        master.ssl_context = ssl.create_default_context(cafile=crt)
        master.cafile = crt
        yield master


def test_wss_with_a_generated_certificate(tls_master):
    token = tls_master.login()["token"]
    # plain HTTP on the TLS port gets no answer in HTTP
    status, _, _ = _plain_http_status(tls_master.port)
    assert status is None
    client = Collector(
        f"{tls_master.ws_url}/all_events/{token}",
        sslopt={"ca_certs": tls_master.cafile},
    )
    try:
        run = uuid.uuid4().hex
        time.sleep(0.5)
        tls_master.fire([(f"sws/tls/{run}", {"secure": True})])
        msg = client.wait_for(lambda m: m["tag"] == f"sws/tls/{run}")
        assert msg["data"]["secure"] is True
        assert tls_master.run("ws.status").data["tls"] is True
    finally:
        client.close()


def test_master_shutdown_closes_clients_with_1001(tls_master):
    token = tls_master.login()["token"]
    client = Collector(
        f"{tls_master.ws_url}/all_events/{token}", sslopt={"ca_certs": tls_master.cafile}
    )
    time.sleep(0.5)
    tls_master.factory.terminate()
    wait_until(lambda: client.close_code is not None, 30, "the close frame")
    assert client.close_code == 1001
    assert "shutting down" in client.close_reason
    client.close()


def _plain_http_status(port: int):
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            data = b""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(match.group(1)) if match else None), None, data


@pytest.fixture(scope="module")
def busy_port():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def misconfigured_master(salt_factories, users_file, busy_port):
    """Two engine instances: one with an unknown option, one whose port is taken."""
    bad_port = free_port()
    engines = [
        {"ws_bad": {"engine_module": "ws", "port": bad_port, "disable_ssl": True, "bogus": 1}},
        {
            "ws_busy": {
                "engine_module": "ws",
                "port": busy_port.getsockname()[1],
                "address": "127.0.0.1",
                "disable_ssl": True,
                "bind_retry_interval": 1,
            }
        },
    ]
    factory = salt_factories.salt_master_daemon(
        f"master-{uuid.uuid4().hex[:6]}", overrides=master_config(users_file, engines)
    )
    with factory.started(start_timeout=120):
        yield EngineMaster(factory, busy_port.getsockname()[1]), bad_port


def test_misconfiguration_is_one_error_line_and_the_master_keeps_running(misconfigured_master):
    master, bad_port = misconfigured_master
    wait_until(lambda: "option 'bogus'" in master.log_text(), 30, "the config error")
    time.sleep(12)  # longer than Salt's ~10 s engine restart cadence
    text = master.log_text()
    errors = [line for line in text.splitlines() if "salt_ws" in line and "ERROR" in line]
    bogus = [line for line in errors if "option 'bogus'" in line]
    busy = [line for line in errors if "option 'port'" in line]
    assert len(bogus) == 1, errors
    assert "unknown option" in bogus[0]
    assert len(busy) == 1, errors
    assert "could not be started" not in text
    ret = master.run("ws.status")
    engines = ret.data["engines"]
    assert engines[str(bad_port)]["running"] is False
    assert "option 'bogus'" in engines[str(bad_port)]["message"]
    assert engines[str(master.port)]["state"] == "waiting for port"
    assert ret.returncode == 1


def test_engine_listens_once_the_port_is_freed(misconfigured_master, busy_port):
    master, _ = misconfigured_master
    busy_port.close()
    wait_listening(master.port, timeout=15)
    status, _, body = http(master.url + "/login")
    assert status == 401
    assert json.loads(body)["return"] == "Please log in"
    wait_until(
        lambda: master.run("ws.status").data["engines"][str(master.port)]["state"] == "serving",
        10,
        "the serving state",
    )
