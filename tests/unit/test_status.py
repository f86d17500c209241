"""salt_ws.status: the engine's Unix status socket and what ``salt-run ws.status`` reports.

The server runs on an asyncio loop in a background thread, as it does in the engine; the
test thread plays the runner and uses the blocking client, as the runner does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from salt_ws.status import StatusServer, ask, query, report, socket_path, view


class LoopThread:
    """An asyncio loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def sock_dir(tmp_path) -> Iterator[str]:
    """tmp_path, unless it is too long for an AF_UNIX path (108 bytes on Linux)."""
    if len(str(tmp_path / "salt_ws.65535.sock")) < 100:
        yield str(tmp_path)
        return
    short = tempfile.mkdtemp(prefix="sws-")
    yield short
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def opts(sock_dir) -> dict[str, Any]:
    return {"sock_dir": sock_dir}


@pytest.fixture
def engines(opts) -> Iterator[Callable[..., StatusServer]]:
    """Starts status servers ("engines") on a background loop; stops them afterwards."""
    loop = LoopThread()
    servers: list[StatusServer] = []

    def start(
        port: int,
        answer: dict[str, Any] | Callable[[], dict[str, Any]],
        tables: dict[str, Any] | None = None,
    ) -> StatusServer:
        commands = {"status": answer if callable(answer) else (lambda: answer)}
        if tables is not None:
            commands["view"] = lambda: tables
        server = StatusServer(socket_path(opts, port), commands)
        loop.call(server.start())
        servers.append(server)
        return server

    yield start
    for server in servers:
        loop.call(server.stop())
    loop.close()


def stale_socket(path: str) -> None:
    """Leave a socket file behind with nothing listening, as a killed engine does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)


def test_socket_path_is_named_after_the_port(opts, sock_dir):
    assert socket_path(opts, 8000) == os.path.join(sock_dir, "salt_ws.8000.sock")


def test_query_and_report_round_trip(engines, opts):
    answer = {"running": True, "state": "serving", "port": 8000, "clients": {"all_events": 2}}
    server = engines(8000, answer)
    assert query(server.path) == answer
    assert report(opts) == answer


def test_the_status_is_computed_per_query(engines, opts):
    calls = iter(range(1, 100))
    engines(8000, lambda: {"running": True, "n": next(calls)})
    assert report(opts)["n"] == 1
    assert report(opts)["n"] == 2


def test_an_unknown_command_gets_an_error(engines):
    server = engines(8000, {"running": True})
    assert query(server.path, "reboot") == {"error": "unknown command 'reboot'"}


def test_values_json_cannot_express_are_stringified(engines):
    server = engines(8000, lambda: {"running": True, "since": b"x", "ids": frozenset()})
    assert query(server.path) == {"running": True, "since": "b'x'", "ids": "frozenset()"}


def test_an_answer_without_running_counts_as_running(engines, opts):
    engines(8000, {"state": "serving"})
    assert report(opts) == {"state": "serving", "running": True}


def test_a_parked_engine_reports_not_running(engines, opts):
    failed = {"running": False, "state": "failed", "message": "not started: option 'port'"}
    engines(8000, failed)
    assert report(opts) == failed


def test_no_socket_means_not_running(opts, sock_dir):
    result = report(opts)
    assert result["running"] is False
    assert "not running" in result["message"]
    assert sock_dir in result["message"]


def test_a_missing_sock_dir_means_not_running(tmp_path):
    result = report({"sock_dir": str(tmp_path / "gone")})
    assert result["running"] is False
    assert "not running" in result["message"]


def test_a_stale_socket_means_not_running(opts):
    stale_socket(socket_path(opts, 8000))
    result = report(opts)
    assert result["running"] is False
    assert "message" in result


def test_a_stale_socket_next_to_a_live_engine_is_ignored(engines, opts):
    stale_socket(socket_path(opts, 8001))
    engines(8000, {"running": True, "port": 8000})
    assert report(opts) == {"running": True, "port": 8000}


def test_other_files_in_sock_dir_are_ignored(engines, opts, sock_dir):
    for name in ("master_event_pub.ipc", "salt_ws.txt", "other.8000.sock"):
        stale_socket(os.path.join(sock_dir, name))
    engines(8000, {"running": True})
    assert report(opts) == {"running": True}


@pytest.mark.parametrize(
    ("second_running", "overall"), [(True, True), (False, False)], ids=["both-up", "one-parked"]
)
def test_two_engines_are_reported_by_port(engines, opts, second_running, overall):
    engines(8000, {"running": True, "port": 8000})
    engines(8443, {"running": second_running, "port": 8443})
    assert report(opts) == {
        "running": overall,
        "engines": {
            "8000": {"running": True, "port": 8000},
            "8443": {"running": second_running, "port": 8443},
        },
    }


def test_the_socket_is_for_the_masters_user_only(engines):
    server = engines(8000, {"running": True})
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_start_restores_the_process_umask(engines):
    before = os.umask(0o022)
    os.umask(before)
    engines(8000, {"running": True})
    after = os.umask(before)
    assert after == before


def test_start_replaces_a_stale_socket(engines, opts):
    path = socket_path(opts, 8000)
    stale_socket(path)
    engines(8000, {"running": True, "fresh": True})
    assert query(path) == {"running": True, "fresh": True}


def test_stop_removes_the_socket_file(opts):
    loop = LoopThread()
    try:
        server = StatusServer(socket_path(opts, 8000), {"status": lambda: {"running": True}})
        loop.call(server.start())
        assert os.path.exists(server.path)
        loop.call(server.stop())
        assert not os.path.exists(server.path)
        loop.call(server.stop())  # idempotent
    finally:
        loop.close()
    assert report(opts)["running"] is False


def test_query_raises_oserror_when_nothing_listens(opts):
    with pytest.raises(OSError):
        query(socket_path(opts, 8000))


def test_query_times_out_on_a_silent_peer(opts):
    path = socket_path(opts, 8000)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)  # accepts (in the backlog) but never answers
        with pytest.raises(OSError):
            query(path, timeout=0.2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# -- ask: every engine instance ----------------------------------------------------------------


def test_ask_collects_the_answers_of_live_engines_by_port(engines, opts):
    engines(8000, {"running": True, "port": 8000})
    engines(8001, {"running": False})
    stale_socket(socket_path(opts, 8002))
    assert ask(opts, "status") == {
        "8000": {"running": True, "port": 8000},
        "8001": {"running": False},
    }


def test_ask_without_a_sock_dir_is_empty(tmp_path):
    assert ask({"sock_dir": str(tmp_path / "gone")}, "status") == {}


# -- view: what salt-run ws.view shows ---------------------------------------------------------

JID = "20240101120000123456"
JOB = {"fun": "test.ping", "state": "complete"}
TABLES = {
    "minions": {"web1": {"id": "web1", "os": "Debian"}, "db1": {"id": "db1"}},
    "jobs": {JID: JOB},
}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, TABLES),
        ({"minion": "web1"}, {"minions": {"web1": {"id": "web1", "os": "Debian"}}}),
        ({"jid": JID}, {"jobs": {JID: JOB}}),
        ({"jid": int(JID)}, {"jobs": {JID: JOB}}),
        ({"minion": "nope"}, {"error": "minion 'nope' is not in the view"}),
        ({"jid": "1"}, {"error": "job '1' is not in the view"}),
    ],
    ids=["all", "one-minion", "one-job", "jid-as-int", "unknown-minion", "unknown-job"],
)
def test_view_shows_the_tables_or_one_entry(engines, opts, kwargs, expected):
    engines(8000, {"running": True}, TABLES)
    assert view(opts, **kwargs) == expected


def test_view_skips_an_engine_that_cannot_show_one(engines, opts):
    engines(8000, {"running": False, "state": "failed"})  # parked: answers status only
    engines(8001, {"running": True}, TABLES)
    assert view(opts) == TABLES


@pytest.mark.parametrize("parked", [False, True], ids=["nothing-running", "only-parked"])
def test_view_without_a_serving_engine_says_not_running(engines, opts, parked):
    if parked:
        engines(8000, {"running": False, "state": "failed"})
    result = view(opts)
    assert result["running"] is False
    assert "not running" in result["message"]


# -- clients: what salt-run ws.clients shows ----------------------------------------------------


class FakeStream:
    """The attributes client_rows reads from a handler's stream."""

    def __init__(self, opened_at: float, **kwargs: Any) -> None:
        import types

        from salt_ws.hub import Outbox
        from salt_ws.session import Session, State

        self.opened_at = opened_at
        self.endpoint = kwargs.get("endpoint", "all_events")
        self.address = kwargs.get("address", "192.0.2.7")
        user = kwargs.get("user", "alice")
        self.session = (
            None
            if user is None
            else {"name": user, "eauth": "pam", "token": "f" * 64, "expire": 2e9}
        )
        self.client = Session(self.endpoint)
        self.client.filters = list(kwargs.get("filters", []))
        self.client.state = kwargs.get("state", State.STREAMING)
        self.client.token = "f" * 64
        outbox = Outbox(100)
        outbox.push(["a", "b"][: kwargs.get("queued", 0)])
        self.subscription = types.SimpleNamespace(outbox=outbox, active=True)
        self.delivered = kwargs.get("delivered")
        self.sent = kwargs.get("sent", 0)


def test_client_rows_show_each_stream_oldest_first_and_never_a_token():
    from salt_ws.session import State
    from salt_ws.status import CLIENT_COLUMNS, client_rows

    streams = [
        FakeStream(1_700_000_010.0, endpoint="events", filters=["salt/job/*"], delivered=7),
        FakeStream(1_700_000_000.0, queued=2, sent=12, delivered=5),
        FakeStream(1_700_000_020.0, user=None, state=State.AWAITING_TOKEN),
    ]
    rows = client_rows(streams, lambda seq: f"ep:{seq}", now=1_700_000_030.5)
    assert [tuple(row) for row in rows] == [CLIENT_COLUMNS] * 3
    first, second, third = rows
    assert first == {
        "endpoint": "all_events",
        "user": "alice",
        "eauth": "pam",
        "address": "192.0.2.7",
        "connected_since": "2023-11-14T22:13:20+00:00",
        "connected_for": 30.5,
        "state": "streaming",
        "filters": [],
        "last_id": "ep:5",
        "queue": 2,
        "messages_sent": 12,
    }
    assert (second["endpoint"], second["filters"], second["last_id"]) == (
        "events",
        ["salt/job/*"],
        "ep:7",
    )
    assert second["connected_for"] == 20.5
    assert (third["user"], third["eauth"], third["state"], third["last_id"]) == (
        None,
        None,
        "awaiting token",
        None,
    )
    assert "f" * 64 not in repr(rows)


@pytest.fixture
def client_engines(engines):
    def start(port: int, rows: list[dict[str, Any]] | None) -> StatusServer:
        server = engines(port, {"running": True})
        if rows is not None:
            server.commands["clients"] = lambda: {"clients": rows}
        return server

    return start


def test_clients_returns_the_rows_of_the_engine(client_engines, opts):
    from salt_ws.status import clients

    rows = [{"endpoint": "all_events", "user": "alice"}]
    client_engines(8000, rows)
    assert clients(opts) == rows


def test_clients_of_several_engines_name_their_port(client_engines, opts):
    from salt_ws.status import clients

    client_engines(8000, [{"user": "alice"}])
    client_engines(8443, [{"user": "bob"}, {"user": "carol"}])
    client_engines(8444, None)  # parked: answers status only
    assert clients(opts) == [
        {"user": "alice", "port": "8000"},
        {"user": "bob", "port": "8443"},
        {"user": "carol", "port": "8443"},
    ]


def test_clients_without_a_serving_engine_says_not_running(opts):
    from salt_ws.status import clients

    result = clients(opts)
    assert result["running"] is False
    assert "not running" in result["message"]
