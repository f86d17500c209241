"""Security behaviour of the app over a real loopback socket.

Token transports (URL, ``X-Auth-Token``, ``session_id`` cookie, first message), the
handshake's time and message limits, connection limits, live token expiry, /logout
revocation, the login throttle and the audience a session is admitted with. Real app, hub
and handlers; eauth is harness.FakeAuthenticator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.websocket

from salt_ws import wire
from salt_ws.auth import Session
from salt_ws.config import parse
from salt_ws.engine import Counters
from salt_ws.handlers import CLIENT_READY, Services
from salt_ws.hub import Channel, Hub

from .harness import ALICE, GOOD_TOKEN, UNKNOWN_TOKEN, FakeAuthenticator, Site, serve_services

OTHER_TOKEN = "0b0b" * 16  # bob's live session
OLD_TOKEN = "01d0" * 16  # a session that expires at EXPIRES
EXPIRES = 1_800_000_000.0
HANDSHAKE_TIMEOUT = 0.5
MAX_MESSAGE_SIZE = 128


class Auth(FakeAuthenticator):
    """Three sessions; ``delay`` makes every eauth call take that long (a slow backend)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.sessions[OTHER_TOKEN] = Session(name="bob", eauth="pam", token=OTHER_TOKEN, expire=2e9)
        self.sessions[OLD_TOKEN] = Session(
            name="carol", eauth="pam", token=OLD_TOKEN, expire=EXPIRES
        )

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        return func(*args)


@dataclasses.dataclass(frozen=True)
class Audience:
    """What Services.admit returns (the engine returns salt_ws.acl.Permissions)."""

    key: str
    admin: bool = False


class SecureSite(Site):
    """harness.Site plus connections to the bare endpoints (no token in the URL)."""

    async def open(
        self,
        path: str = "/all_events",
        headers: dict[str, str] | None = None,
    ) -> tornado.websocket.WebSocketClientConnection:
        request = tornado.httpclient.HTTPRequest(self.url(path, "ws"), headers=headers)
        conn = await tornado.websocket.websocket_connect(request)
        self.websockets.append(conn)
        return conn

    async def closed(self, conn: tornado.websocket.WebSocketClientConnection) -> tuple[int, str]:
        """Read until the server closes; (code, reason). Nothing may arrive before."""
        assert await conn.read_message() is None
        return conn.close_code, conn.close_reason

    async def sockets(self, count: int) -> None:
        while len(self.services.sockets) != count:
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serving(
    auth: Auth | None = None,
    admit: Callable[[dict[str, Any]], Any] | None = None,
    snapshot: Callable[[Channel, Any], list[str]] | None = None,
    **options: Any,
) -> AsyncIterator[SecureSite]:
    """Serve make_app() with these engine options on an ephemeral loopback port."""
    config = parse(
        {
            "disable_ssl": True,
            "handshake_timeout": HANDSHAKE_TIMEOUT,
            "max_message_size": MAX_MESSAGE_SIZE,
            **options,
        }
    )
    services = Services(config, Hub(1000), auth or Auth(), Counters(), admit=admit)
    if snapshot is not None:
        services.snapshot = snapshot
    async with serve_services(services, SecureSite) as site:
        yield site


async def stream_works(site: SecureSite, conn, count: int = 1) -> None:
    """After ready: a published message reaches ``conn``."""
    await site.subscribed(count)
    message = wire.encode_event("salt/job/1/new", {"n": count})
    site.publish([message])
    assert await conn.read_message() == message


# -- token transports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"X-Auth-Token": GOOD_TOKEN}, {"Cookie": f"session_id={GOOD_TOKEN}"}],
    ids=["header", "cookie"],
)
@pytest.mark.parametrize("path", ["/all_events", "/all_events/"])
async def test_a_token_in_a_header_or_cookie_opens_the_bare_endpoint(headers, path):
    async with serving() as site:
        conn = await site.open(path, headers)
        assert site.auth.called("session") == [(GOOD_TOKEN,)]
        await conn.write_message(CLIENT_READY)
        await stream_works(site, conn)


@pytest.mark.parametrize(
    "headers",
    [{"X-Auth-Token": UNKNOWN_TOKEN}, {"Cookie": f"session_id={UNKNOWN_TOKEN}"}],
    ids=["header", "cookie"],
)
async def test_a_bad_token_in_a_header_or_cookie_is_refused_before_the_upgrade(headers):
    async with serving() as site:
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await site.open("/all_events", headers)
        assert err.value.code == 401
        assert site.services.sockets == set()


async def test_the_url_token_wins_over_the_header():
    async with serving() as site:
        await site.open(f"/all_events/{GOOD_TOKEN}", {"X-Auth-Token": UNKNOWN_TOKEN})
        assert site.auth.called("session") == [(GOOD_TOKEN,)]


@pytest.mark.parametrize("channel", list(Channel))
async def test_a_first_token_message_then_ready_subscribes(channel):
    async with serving() as site:
        conn = await site.open(f"/{channel.value}")
        assert site.auth.called("session") == []
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
        while not site.auth.called("session"):
            await asyncio.sleep(0.005)
        await conn.write_message(CLIENT_READY)
        await site.subscribed(1, channel)
        message = wire.encode_event("t", {})
        site.publish([message], channel)
        assert await conn.read_message() == message


async def test_ready_right_after_the_token_message_waits_for_the_auth():
    async with serving(auth=Auth(delay=0.2)) as site:
        conn = await site.open()
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
        await conn.write_message(CLIENT_READY)  # the session lookup is still running
        await asyncio.sleep(0.05)
        assert site.hub.count(Channel.ALL_EVENTS) == 0
        await stream_works(site, conn)


@pytest.mark.parametrize(
    ("first", "code", "says"),
    [
        (json.dumps({"token": UNKNOWN_TOKEN}), wire.CLOSE_TOKEN_INVALID, "invalid or expired"),
        (json.dumps({"token": ""}), wire.CLOSE_TOKEN_INVALID, "authenticate first"),
        (json.dumps({"token": 5}), wire.CLOSE_TOKEN_INVALID, "authenticate first"),
        (json.dumps([GOOD_TOKEN]), wire.CLOSE_TOKEN_INVALID, "authenticate first"),
        (GOOD_TOKEN, wire.CLOSE_TOKEN_INVALID, "authenticate first"),
        ("{not json", wire.CLOSE_TOKEN_INVALID, "authenticate first"),
    ],
    ids=["unknown", "empty", "int", "list", "bare-token", "broken-json"],
)
async def test_a_bad_first_message_closes_with_4401(first, code, says):
    async with serving() as site:
        conn = await site.open()
        await conn.write_message(first)
        close_code, reason = await site.closed(conn)
        assert close_code == code
        assert says in reason
        assert site.hub.count(Channel.ALL_EVENTS) == 0


async def test_a_second_message_while_authenticating_must_be_ready():
    async with serving(auth=Auth(delay=0.2)) as site:
        conn = await site.open()
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
        await conn.write_message("hello")
        assert await site.closed(conn) == (
            wire.CLOSE_POLICY,
            "unexpected message while authenticating",
        )


# -- the handshake's limits --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/all_events", f"/all_events/{GOOD_TOKEN}"])
async def test_a_silent_client_is_closed_after_the_handshake_timeout(path):
    async with serving() as site:
        started = asyncio.get_running_loop().time()
        conn = await site.open(path)
        code, reason = await site.closed(conn)
        waited = asyncio.get_running_loop().time() - started
        assert code == wire.CLOSE_HANDSHAKE_TIMEOUT
        assert reason.endswith(f"within {HANDSHAKE_TIMEOUT:g}s")
        assert ("token" in reason) is (path == "/all_events")
        assert HANDSHAKE_TIMEOUT * 0.9 <= waited < HANDSHAKE_TIMEOUT + 2


async def test_a_ready_client_is_not_closed_by_the_handshake_timeout():
    async with serving() as site:
        conn = await site.ready()
        await asyncio.sleep(HANDSHAKE_TIMEOUT + 0.1)
        await stream_works(site, conn)


@pytest.mark.parametrize("path", ["/all_events", f"/all_events/{GOOD_TOKEN}"])
async def test_a_binary_message_closes_with_1003(path):
    async with serving() as site:
        conn = await site.open(path)
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}).encode(), binary=True)
        code, reason = await site.closed(conn)
        assert code == wire.CLOSE_UNSUPPORTED
        assert "binary" in reason


@pytest.mark.parametrize("garbage", ["hello", "", "\x00\x01", '{"token": "x"}'])
async def test_garbage_after_authentication_closes_with_1008(garbage):
    async with serving() as site:
        conn = await site.open(f"/all_events/{GOOD_TOKEN}")
        await conn.write_message(garbage)
        code, reason = await site.closed(conn)
        assert code == wire.CLOSE_POLICY
        assert CLIENT_READY in reason


@pytest.mark.parametrize("path", ["/all_events", f"/all_events/{GOOD_TOKEN}"])
async def test_an_oversized_message_closes_with_1009(path):
    async with serving() as site:
        conn = await site.open(path)
        await conn.write_message(json.dumps({"token": GOOD_TOKEN, "pad": "x" * MAX_MESSAGE_SIZE}))
        code, _ = await site.closed(conn)
        assert code == wire.CLOSE_TOO_BIG
        assert site.auth.called("session") == ([(GOOD_TOKEN,)] if GOOD_TOKEN in path else [])


async def test_a_message_of_max_message_size_is_accepted():
    async with serving() as site:
        conn = await site.open()
        message = json.dumps({"token": GOOD_TOKEN, "pad": ""})
        message = message[:-2] + "x" * (MAX_MESSAGE_SIZE - len(message)) + '"}'
        assert len(message.encode()) == MAX_MESSAGE_SIZE
        await conn.write_message(message)
        await conn.write_message(CLIENT_READY)
        await stream_works(site, conn)


# -- connection limits -------------------------------------------------------------------------


async def test_max_connections_refuses_with_503_counting_authenticated_sockets_only():
    async with serving(max_connections=2) as site:
        await site.ready(GOOD_TOKEN)
        await site.open()  # no token yet: its own budget (issue 9, finding 4)
        await site.ready(OTHER_TOKEN)
        calls = len(site.auth.called("session"))
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await site.connect(OTHER_TOKEN)
        assert err.value.code == 503
        assert "max_connections: 2" in json.loads(err.value.response.body)["return"]
        assert len(site.auth.called("session")) == calls  # refused before any eauth


async def test_a_closed_socket_frees_its_connection_slot():
    async with serving(max_connections=1) as site:
        first = await site.ready()
        first.close()
        await site.sockets(0)
        await site.ready(OTHER_TOKEN)


async def test_max_connections_per_token_refuses_with_429():
    async with serving(max_connections_per_token=1) as site:
        await site.ready(GOOD_TOKEN)
        with pytest.raises(tornado.httpclient.HTTPClientError) as err:
            await site.open("/all_events", {"X-Auth-Token": GOOD_TOKEN})
        assert err.value.code == 429
        assert "max_connections_per_token: 1" in json.loads(err.value.response.body)["return"]
        await site.ready(OTHER_TOKEN)  # another token is not affected


async def test_max_connections_per_token_also_holds_for_first_message_tokens():
    async with serving(max_connections_per_token=1) as site:
        await site.ready(GOOD_TOKEN)
        conn = await site.open()
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
        code, reason = await site.closed(conn)
        assert code == wire.CLOSE_TRY_AGAIN_LATER
        assert "too many connections" in reason
        assert site.hub.count(Channel.ALL_EVENTS) == 1


# -- live expiry and revocation ----------------------------------------------------------------


async def test_close_expired_closes_only_expired_sessions_with_4401():
    async with serving() as site:
        old = await site.ready(OLD_TOKEN)
        live = await site.ready(GOOD_TOKEN)
        waiting = await site.open(f"/all_events/{OLD_TOKEN}")  # authenticated, not yet ready
        anonymous = await site.open()  # no session yet: nothing to expire
        await site.sockets(4)
        assert site.services.close_expired(EXPIRES - 1) == 0
        assert site.services.close_expired(EXPIRES) == 2
        assert await site.closed(old) == (wire.CLOSE_TOKEN_INVALID, "token expired")
        assert await site.closed(waiting) == (wire.CLOSE_TOKEN_INVALID, "token expired")
        await site.subscribed(1)
        await stream_works(site, live)
        assert anonymous.close_code is None


async def test_logout_closes_the_tokens_sockets_and_no_other():
    async with serving() as site:
        mine = [await site.ready(GOOD_TOKEN), await site.ready(GOOD_TOKEN)]
        theirs = await site.ready(OTHER_TOKEN)
        response = await site.fetch("/logout", "POST", "", {"X-Auth-Token": GOOD_TOKEN})
        assert response.code == 200
        for conn in mine:
            assert await site.closed(conn) == (wire.CLOSE_TOKEN_INVALID, "token revoked by /logout")
        await site.subscribed(1)
        await stream_works(site, theirs)


async def test_revoke_counts_the_sockets_it_closed():
    async with serving() as site:
        await site.ready(GOOD_TOKEN)
        await site.open(f"/all_events/{GOOD_TOKEN}")
        await site.sockets(2)
        assert site.services.connections_for(GOOD_TOKEN) == 2
        assert site.services.connections_for(OTHER_TOKEN) == 0
        assert site.services.revoke(OTHER_TOKEN) == 0
        assert site.services.revoke(GOOD_TOKEN) == 2
        await site.sockets(0)


# -- the login throttle ------------------------------------------------------------------------


async def test_failed_logins_from_one_address_are_throttled_with_429():
    async with serving(login_max_failures=3, login_failure_window=60) as site:
        wrong = {**ALICE, "password": "wrong"}
        for _ in range(3):
            assert (await site.post_json("/login", wrong)).code == 401
        for body in (wrong, ALICE):  # the right password is refused too, unchecked
            response = await site.post_json("/login", body)
            assert response.code == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 61
            reply = json.loads(response.body)
            assert reply["status"] == "429 Too Many Requests"
            assert "127.0.0.1" in reply["return"]
        assert len(site.auth.called("login")) == 3


async def test_a_successful_login_withdraws_only_its_own_attempt():
    async with serving(login_max_failures=2) as site:
        wrong = {**ALICE, "password": "wrong"}
        assert (await site.post_json("/login", wrong)).code == 401
        assert (await site.post_json("/login", ALICE)).code == 200  # not counted ...
        assert (await site.post_json("/login", wrong)).code == 401
        assert (await site.post_json("/login", ALICE)).code == 429  # ... nor clearing the rest


async def test_malformed_logins_do_not_count_as_failures():
    async with serving(login_max_failures=1) as site:
        for _ in range(3):
            assert (await site.post_json("/login", {"username": "alice"})).code == 400
        assert (await site.post_json("/login", ALICE)).code == 200


# -- the audience of a session -----------------------------------------------------------------


async def test_admit_is_awaited_and_its_key_names_the_hub_subscription():
    admitted: list[Any] = []
    snapshots: list[tuple[Channel, Any]] = []

    async def admit(session: dict[str, Any]) -> Audience:
        await asyncio.sleep(0.01)
        admitted.append(session)
        return Audience("ops" if session["name"] == "alice" else "dev")

    def snapshot(channel: Channel, audience: Any) -> list[str]:
        snapshots.append((channel, audience))
        return [f'{{"minions":{{"for":"{audience.key}"}}}}']

    async with serving(admit=admit, snapshot=snapshot) as site:
        alice = await site.ready(GOOD_TOKEN, Channel.FORMATTED_EVENTS)
        bob = await site.open("/formatted_events")
        await bob.write_message(json.dumps({"token": OTHER_TOKEN}))
        await bob.write_message(CLIENT_READY)
        await site.subscribed(2, Channel.FORMATTED_EVENTS)

        assert [s["name"] for s in admitted] == ["alice", "bob"]
        assert snapshots == [
            (Channel.FORMATTED_EVENTS, Audience("ops")),
            (Channel.FORMATTED_EVENTS, Audience("dev")),
        ]
        subs = site.hub.subscribers(Channel.FORMATTED_EVENTS)
        assert sorted(sub.audience for sub in subs) == ["dev", "ops"]
        assert site.hub.audiences(Channel.FORMATTED_EVENTS) == {"dev", "ops"}
        assert await alice.read_message() == '{"minions":{"for":"ops"}}'
        assert await bob.read_message() == '{"minions":{"for":"dev"}}'

        site.hub.publish(Channel.FORMATTED_EVENTS, ['{"jobs":{"ops":1}}'], "ops")
        site.hub.publish(Channel.FORMATTED_EVENTS, ['{"jobs":{"dev":1}}'], "dev")
        assert await alice.read_message() == '{"jobs":{"ops":1}}'
        assert await bob.read_message() == '{"jobs":{"dev":1}}'


async def test_without_admit_every_client_is_in_the_admin_audience():
    async with serving() as site:
        await site.ready(GOOD_TOKEN)
        assert site.hub.audiences(Channel.ALL_EVENTS) == {"admin"}
