"""Real salt-master + salt-minion daemons on 127.0.0.1 running the ws engine.

The engine is found through the ``salt.loader`` entry point of the installed
package, as on a user's master. Every daemon is stopped by its fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Iterator

import pytest
import websocket

pytestmark = pytest.mark.integration

USERS = {"saltdev": "saltdev-pw", "limited": "limited-pw"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_listening(port: int, timeout: float = 60.0) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return True
        except OSError:
            return False

    wait_until(listening, timeout, f"the ws engine to listen on {port}")


def http(
    url: str,
    body: Any = None,
    *,
    form: bool = False,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A tiny HTTP client returning (status, headers, body) for errors too."""
    data = None
    hdrs = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            hdrs.setdefault("Content-Type", "application/json")
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Collector:
    """A websocket client that reads every message on a thread, timestamped."""

    def __init__(self, url: str, ready: bool = True, **kwargs: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=30, **kwargs)
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        if ready:
            self.ws.send("websocket client ready")
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(data) >= 2:
                        self.close_code = int.from_bytes(data[:2], "big")
                        self.close_reason = data[2:].decode()
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.messages.append(json.loads(data))
        except (websocket.WebSocketException, OSError):
            return

    def tagged(self, prefix: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if m.get("tag", "").startswith(prefix)]

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict:
        def find() -> dict | None:
            return next((m for m in list(self.messages) if pred(m)), None)

        return wait_until(find, timeout, "a matching websocket message")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self._thread.join(5)


@contextlib.contextmanager
def formatted(master: EngineMaster) -> Iterator[Collector]:
    """A /formatted_events client that has received its snapshot; closed afterwards."""
    client = Collector(f"{master.ws_url}/formatted_events/{master.login()['token']}")
    try:
        wait_until(lambda: len(client.messages) >= 2, 10, "the snapshot")
        yield client
    finally:
        client.close()


def latest(client: Collector, key: str) -> dict:
    """The newest ``key`` table the client received ({} before the first)."""
    return next((m[key] for m in reversed(list(client.messages)) if key in m), {})


def loopback_minion(master_factory: Any, mid: str, address: str) -> Any:
    """A minion connecting from its own loopback ``address`` (and reporting it as ``ipv4``).

    Salt detects presence by the source address of a minion's publish
    connection: without this it cannot tell two minions on one host apart.
    """
    return master_factory.salt_minion_daemon(
        mid, overrides={"source_address": address, "grains": {"ipv4": [address]}}
    )


class EngineMaster:
    """A started salt-factories master running the ws engine, with helpers."""

    def __init__(self, factory: Any, port: int, scheme: str = "http") -> None:
        self.factory = factory
        self.port = port
        self.scheme = scheme
        self.ssl_context: ssl.SSLContext | None = None
        self.cafile: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}"

    def login(self, user: str = "saltdev") -> dict[str, Any]:
        status, _, body = http(
            self.url + "/login",
            {"username": user, "password": USERS[user], "eauth": "file"},
            context=self.ssl_context,
        )
        assert status == 200, body
        return json.loads(body)["return"][0]

    def opts(self) -> dict[str, Any]:
        import salt.config

        return salt.config.master_config(self.factory.config_file)

    def fire(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Fire events on the master's real event bus, in order."""
        import salt.utils.event

        opts = self.opts()
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            for tag, data in events:
                assert bus.fire_event(data, tag), f"could not fire {tag}"

    def run(self, *args: str) -> Any:
        return self.factory.salt_run_cli(timeout=60).run(*args)

    def log_text(self) -> str:
        path = self.opts()["log_file"]
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


@pytest.fixture(scope="session")
def short_root():
    """A short root dir: Unix socket paths must stay under 108 bytes."""
    root = tempfile.mkdtemp(prefix="sws-", dir="/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_factories_config(short_root):
    return {"root_dir": short_root}


@pytest.fixture(scope="session")
def users_file(short_root):
    path = os.path.join(short_root, "users.txt")
    with open(path, "w") as fh:
        fh.writelines(f"{u}:{p}\n" for u, p in USERS.items())
    return path


def master_config(users_file: str, engines: list[dict[str, Any]], **extra: Any) -> dict:
    return {
        "engines": engines,
        "external_auth": {
            "file": {
                "^filename": users_file,
                "saltdev": [".*", "@runner", "@wheel", "@jobs"],
                "limited": [{"minion-1": ["test.*"]}],
            }
        },
        "presence_events": True,
        "loop_interval": 2,
        "log_level_logfile": "info",
        **extra,
    }


def start_master(salt_factories, users_file, engine: dict[str, Any], **extra: Any):
    port = engine.setdefault("port", free_port())
    engine.setdefault("address", "127.0.0.1")
    factory = salt_factories.salt_master_daemon(
        f"master-{uuid.uuid4().hex[:6]}",
        overrides=master_config(users_file, [{"ws": engine}], **extra),
    )
    return factory, port


@pytest.fixture(scope="module")
def master(salt_factories, users_file):
    engine = {"disable_ssl": True, "client_queue_size": 4000}
    factory, port = start_master(salt_factories, users_file, engine)
    with factory.started(start_timeout=120):
        wait_listening(port)
        yield EngineMaster(factory, port)


@pytest.fixture(scope="module")
def minion(master):
    factory = master.factory.salt_minion_daemon("minion-1")
    with factory.started(start_timeout=120):
        yield factory
