"""What ``salt-run ws.status`` reports, and how the runner reaches the engine.

The engine listens on a Unix socket in the master's ``sock_dir``
(``salt_ws.sock``, mode 0600: only the master's user can ask). The protocol
is one line each way: the runner sends a command (``status``), the engine
answers one JSON object. Nothing is opened to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from typing import Any, Callable, Mapping

__all__ = ["SOCKET_NAME", "StatusServer", "query", "report", "socket_path"]

log = logging.getLogger(__name__)

SOCKET_NAME = "salt_ws.sock"


def socket_path(opts: Mapping[str, Any]) -> str:
    """Where the engine of the master with these opts listens."""
    return os.path.join(opts["sock_dir"], SOCKET_NAME)


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
    return json.loads(b"".join(chunks).decode("utf-8"))


def report(opts: Mapping[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """The engine's live state, or ``{"running": False, "message": ...}``."""
    path = socket_path(opts)
    try:
        answer = query(path, "status", timeout)
    except FileNotFoundError:
        return {"running": False, "message": f"the ws engine is not running (no {path})"}
    except (OSError, ValueError) as exc:
        return {"running": False, "message": f"the ws engine is not running ({path}: {exc})"}
    answer.setdefault("running", True)
    return answer
