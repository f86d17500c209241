"""The real app, hub and handlers on a loopback socket; only eauth is faked.

:class:`FakeAuthenticator` has the interface of :class:`salt_ws.auth.Authenticator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, Callable

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.websocket

from salt_ws.app import make_server
from salt_ws.auth import LoginFailed, Session
from salt_ws.config import parse
from salt_ws.engine import Counters
from salt_ws.handlers import CLIENT_READY, Services
from salt_ws.hub import Channel, Hub

GOOD_TOKEN = "5a1f" * 16  # 64 hex digits: a live session
UNKNOWN_TOKEN = "bad0" * 16  # well-formed, but no such session
ALICE = {"username": "alice", "password": "secret", "eauth": "pam"}


class FakeAuthenticator:
    """Eauth for the handlers: fixed accounts and sessions, every call recorded.

    Same interface as :class:`salt_ws.auth.Authenticator`; ``run`` calls the function on the
    loop instead of on a worker thread.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {
            GOOD_TOKEN: Session(name="alice", eauth="pam", token=GOOD_TOKEN, expire=2e9)
        }
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        return func(*args)

    async def run_login(self, func: Callable[..., Any], *args: Any, user: str = "") -> Any:
        return await self.run(func, *args)

    def well_formed(self, token: str) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{64}", token or ""))

    def login(
        self, username: str, password: str, eauth: str, token_expire: float | None = None
    ) -> dict[str, Any]:
        self.calls.append(("login", (username, password, eauth)))
        self.token_expire = token_expire
        if (username, password, eauth) != (ALICE["username"], ALICE["password"], ALICE["eauth"]):
            raise LoginFailed("could not authenticate using the provided credentials")
        return login_payload()

    def session(self, token: str) -> Session | None:
        self.calls.append(("session", (token,)))
        return self.sessions.get(token)

    def logout(self, token: str) -> bool:
        self.calls.append(("logout", (token,)))
        return self.well_formed(token)

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]


def login_payload() -> dict[str, Any]:
    return {
        "perms": [".*", "@runner"],
        "start": 1_700_000_000.0,
        "token": GOOD_TOKEN,
        "expire": 1_700_043_200.0,
        "user": "alice",
        "eauth": "pam",
    }


class Site:
    """A running app: its address, its shared objects and small client helpers."""

    def __init__(self, port: int, services: Services) -> None:
        self.port = port
        self.services = services
        self.hub: Hub = services.hub
        self.auth: FakeAuthenticator = services.auth
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self.websockets: list[tornado.websocket.WebSocketClientConnection] = []

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def fetch(
        self,
        path: str,
        method: str = "GET",
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tornado.httpclient.HTTPResponse:
        """An HTTP request; error statuses are returned, not raised."""
        return await self.http.fetch(
            self.url(path),
            method=method,
            body=body,
            headers=headers,
            raise_error=False,
            allow_nonstandard_methods=True,
        )

    async def post_json(
        self, path: str, data: Any, headers: dict[str, str] | None = None
    ) -> tornado.httpclient.HTTPResponse:
        headers = {"Content-Type": "application/json", **(headers or {})}
        return await self.fetch(path, "POST", json.dumps(data), headers)

    async def post_form(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> tornado.httpclient.HTTPResponse:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self.fetch(path, "POST", urllib.parse.urlencode(data), headers)

    async def connect(
        self,
        token: str = GOOD_TOKEN,
        headers: dict[str, str] | None = None,
        channel: Channel = Channel.ALL_EVENTS,
    ) -> tornado.websocket.WebSocketClientConnection:
        """Open ``/<channel>/<token>`` (raises HTTPClientError if refused)."""
        request = tornado.httpclient.HTTPRequest(
            self.url(f"/{channel.value}/{token}", "ws"), headers=headers
        )
        conn = await tornado.websocket.websocket_connect(request)
        self.websockets.append(conn)
        return conn

    async def subscribed(self, count: int, channel: Channel = Channel.ALL_EVENTS) -> None:
        """Wait until exactly ``count`` clients are subscribed to ``channel``."""
        while self.hub.count(channel) != count:
            await asyncio.sleep(0.005)

    async def ready(
        self, token: str = GOOD_TOKEN, channel: Channel = Channel.ALL_EVENTS
    ) -> tornado.websocket.WebSocketClientConnection:
        """Connect and say ``websocket client ready``; returns once subscribed."""
        before = self.hub.count(channel)
        conn = await self.connect(token, channel=channel)
        await conn.write_message(CLIENT_READY)
        await self.subscribed(before + 1, channel)
        return conn

    def publish(self, messages: list[str], channel: Channel = Channel.ALL_EVENTS) -> None:
        self.hub.publish(channel, messages)


@contextlib.asynccontextmanager
async def serving(
    cors_origin: Any = None,
    queue_limit: int = 1000,
    auth: Any = None,
    snapshot: Callable[[Channel], list[str]] | None = None,
) -> AsyncIterator[Site]:
    """Serve make_app() on 127.0.0.1, on an ephemeral port, for the duration of the block."""
    raw: dict[str, Any] = {"disable_ssl": True}
    if cors_origin is not None:
        raw["cors_origin"] = cors_origin
    config = parse(raw)
    services = Services(config, Hub(queue_limit), auth or FakeAuthenticator(), Counters())
    if snapshot is not None:
        services.snapshot = lambda channel, audience: snapshot(channel)
    async with serve_services(services) as site:
        yield site


@contextlib.asynccontextmanager
async def serve_services(services: Services, site_class: type = Site) -> AsyncIterator[Any]:
    """Serve make_server(services) on 127.0.0.1, on an ephemeral port; a ``site_class`` for it."""
    server = make_server(services)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    site = site_class(sock.getsockname()[1], services)
    try:
        yield site
    finally:
        for conn in site.websockets:
            conn.close()
        server.stop()
        site.http.close()
        await asyncio.sleep(0.01)  # let close frames and on_close run
        await server.close_all_connections()
