"""What ``salt-run ws.status`` and ``ws.view`` report, and how the runner reaches the engine.

Each engine instance listens on a Unix socket in the master's ``sock_dir``
named after its HTTP port (``salt_ws.8000.sock``; mode 0600: only the
master's user can ask). The protocol
is one line each way: the runner sends a command (``status`` or ``view``),
the engine answers one JSON object. Nothing is opened to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from typing import Any, Callable, Mapping

__all__ = ["StatusServer", "ask", "query", "report", "socket_path", "view"]

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
