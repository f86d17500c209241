"""What ``salt-run ws.status``, ``ws.view`` and ``ws.clients`` report, and how the runner
reaches the engine.

Each engine instance listens on a Unix socket in the master's ``sock_dir``
named after its HTTP port (``salt_ws.8000.sock``; mode 0600: only the
master's user can ask). The protocol
is one line each way: the runner sends a command (``status``, ``view`` or
``clients``), the engine answers one JSON object (``clients``: ``{"clients":
[row, ...]}``, see :func:`client_rows`). Nothing is opened to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from typing import Any, Callable, Iterable, Mapping

from salt_ws.wire import stamp

__all__ = [
    "CLIENT_COLUMNS",
    "StatusServer",
    "ask",
    "client_rows",
    "clients",
    "query",
    "report",
    "socket_path",
    "view",
]

log = logging.getLogger(__name__)

_PREFIX, _SUFFIX = "salt_ws.", ".sock"


def socket_path(opts: Mapping[str, Any], port: object) -> str:
    """Where the engine instance serving ``port`` on this master answers."""
    return os.path.join(opts["sock_dir"], f"{_PREFIX}{port}{_SUFFIX}")


class StatusServer:
    """Answers status queries on the engine's loop.

    Args:
        path: the Unix socket path.
        commands: command name -> callable returning a JSON-able dict.
    """

    def __init__(self, path: str, commands: Mapping[str, Callable[[], dict[str, Any]]]) -> None:
        self.path = path
        self.commands = dict(commands)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (replacing a stale one), readable by the master's user only."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, self.path)
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        """Close the socket and remove its file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            command = line.decode("utf-8", "replace").strip()
            func = self.commands.get(command)
            if func is None:
                answer: dict[str, Any] = {"error": f"unknown command {command!r}"}
            else:
                answer = func()
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:  # pylint: disable=broad-except
            log.exception("salt_ws: status query failed")
        finally:
            writer.close()


def query(path: str, command: str = "status", timeout: float = 1.0) -> dict[str, Any]:
    """Ask the engine listening at ``path`` (blocking, used by the runner).

    Raises:
        OSError: nothing answers at ``path`` (engine not running), or it timed out.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer: dict[str, Any] = json.loads(b"".join(chunks).decode("utf-8"))
    return answer


def ask(opts: Mapping[str, Any], command: str, timeout: float = 1.0) -> dict[str, Any]:
    """Ask every engine instance of this master; ``{port: answer}`` of those that answer."""
    sock_dir = opts["sock_dir"]
    try:
        names = sorted(
            n for n in os.listdir(sock_dir) if n.startswith(_PREFIX) and n.endswith(_SUFFIX)
        )
    except OSError:
        return {}
    answers: dict[str, Any] = {}
    for name in names:
        try:
            answers[name[len(_PREFIX) : -len(_SUFFIX)]] = query(
                os.path.join(sock_dir, name), command, timeout
            )
        except (OSError, ValueError):
            continue  # a stale socket of a stopped engine
    return answers


def _not_running(opts: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "running": False,
        "message": f"the ws engine is not running on this master (no answer in {opts['sock_dir']})",
    }


def report(opts: Mapping[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """The live state of this master's engine.

    Returns:
        The engine's answer (``running: True``...), or ``{"running": False,
        "message": ...}`` when no engine answers. With several engine
        instances (``engine_module: ws``), ``{"running": ..., "engines":
        {port: answer}}``.
    """
    answers = ask(opts, "status", timeout)
    for answer in answers.values():
        answer.setdefault("running", True)
    if not answers:
        return _not_running(opts)
    if len(answers) == 1:
        return next(iter(answers.values()))
    return {"running": all(a["running"] for a in answers.values()), "engines": answers}


def view(
    opts: Mapping[str, Any],
    minion: str | None = None,
    jid: str | None = None,
    timeout: float = 1.0,
) -> dict[str, Any]:
    """The formatted view of the (first serving) engine, optionally one minion or one job.

    Returns:
        ``{"minions": ..., "jobs": ...}`` as the websocket shows them;
        ``{"minions": {mid: ...}}`` or ``{"jobs": {jid: ...}}`` when filtered;
        ``{"running": False, "message": ...}`` when no engine answers, or
        ``{"error": ...}`` for an unknown minion or job.
    """
    answers = [a for a in ask(opts, "view", timeout).values() if "minions" in a]
    if not answers:
        return _not_running(opts)
    tables: dict[str, Any] = answers[0]
    if minion is not None:
        if minion not in tables["minions"]:
            return {"error": f"minion {minion!r} is not in the view"}
        return {"minions": {minion: tables["minions"][minion]}}
    if jid is not None:
        jid = str(jid)
        if jid not in tables["jobs"]:
            return {"error": f"job {jid!r} is not in the view"}
        return {"jobs": {jid: tables["jobs"][jid]}}
    return tables


# What a ws.clients row holds (and nothing else: never a token, nor the token's other data).
CLIENT_COLUMNS = (
    "endpoint",  # all_events, formatted_events or events (SSE)
    "user",  # the token's user name (None while a websocket waits for its token message)
    "eauth",
    "address",  # the client's (a trusted proxy's X-Forwarded-For, else the peer)
    "connected_since",  # when the stream opened, as Salt stamps events
    "connected_for",  # seconds
    "state",  # awaiting token, authenticating, awaiting ready, streaming, closed
    "filters",  # its tag filters (none: every event)
    "last_id",  # it was handed every event up to this id (its filters and permissions
    # allowing); None on /formatted_events and before the first message
    "queue",  # messages waiting in its queue
    "messages_sent",  # messages handed to its socket
)


def client_rows(
    streams: Iterable[Any], id_of: Callable[[int], str], now: float
) -> list[dict[str, Any]]:
    """One :data:`CLIENT_COLUMNS` row per open stream, oldest first (pure).

    Args:
        streams: the handlers' open streams (``salt_ws.handlers._Stream``).
        id_of: the stream's id of a seq (:meth:`salt_ws.pipeline.Pipeline.id_of`).
        now: the time (``time.time()``).
    """
    rows = []
    for stream in sorted(streams, key=lambda s: s.opened_at):
        user = stream.session or {}
        sub = stream.subscription
        delivered = stream.delivered
        rows.append(
            {
                "endpoint": stream.endpoint,
                "user": user.get("name"),
                "eauth": user.get("eauth"),
                "address": stream.address,
                "connected_since": stamp(stream.opened_at),
                "connected_for": round(max(0.0, now - stream.opened_at), 3),
                "state": stream.client.state.value,
                "filters": list(stream.client.filters),
                "last_id": id_of(delivered) if delivered is not None else None,
                "queue": len(sub.outbox) if sub is not None and sub.active else 0,
                "messages_sent": stream.sent,
            }
        )
    return rows


def clients(opts: Mapping[str, Any], timeout: float = 1.0) -> list[dict[str, Any]] | dict[str, Any]:
    """The connected clients of this master's engine(s): a list of rows (:data:`CLIENT_COLUMNS`).

    Returns:
        The rows; with several engine instances each row also names its engine's
        ``port``. ``{"running": False, "message": ...}`` when no engine answers.
    """
    answers = {port: a for port, a in ask(opts, "clients", timeout).items() if "clients" in a}
    if not answers:
        return _not_running(opts)
    if len(answers) == 1:
        return list(next(iter(answers.values()))["clients"])
    return [{**row, "port": port} for port, answer in answers.items() for row in answer["clients"]]
