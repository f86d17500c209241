"""Streams over a real loopback socket: envelope ids, resume, gaps, filters, ticks, SSE.

Real app, hub, handlers and pipeline (epoch ``e1``); eauth is the harness' fake. Bus events
are fed to the pipeline and published per group exactly as ``Engine.publish`` does
(:func:`fire`). SSE is read over a raw socket (HTTP/1.1, chunked), as a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from salt_ws.acl import Permissions
from salt_ws.config import parse
from salt_ws.engine import Counters
from salt_ws.handlers import CLIENT_READY, KEEPALIVE, Services
from salt_ws.hub import Channel, Hub
from salt_ws.pipeline import GAP_TAG, SUBSCRIBED_TAG, TICK_TAG, Group, Pipeline

from .harness import GOOD_TOKEN, UNKNOWN_TOKEN, FakeAuthenticator, Site, serve_services

EPOCH = "e1"
WAIT = 0.3  # seconds a message that should not come is waited for


@contextlib.asynccontextmanager
async def streaming(auth: Any = None, **options: Any) -> AsyncIterator[Site]:
    """The app with engine ``options`` and a pipeline of epoch ``e1``."""
    config = parse({"disable_ssl": True, **options})
    stream = Pipeline(
        epoch=EPOCH,
        history_size=config.history_size,
        history_max_bytes=config.history_max_bytes,
    )
    hub = Hub(config.client_queue_size, config.client_queue_bytes)
    services = Services(config, hub, auth or FakeAuthenticator(), Counters(), stream=stream)
    async with serve_services(services) as site:
        yield site


def fire(site: Site, *items: Any) -> None:
    """Feed bus items to the pipeline and publish them per group (as Engine.publish)."""
    stream, hub = site.services.stream, site.hub
    batch = stream.feed(items, time.time())
    groups = [key for key in hub.keys(Channel.ALL_EVENTS) if isinstance(key, Group)]
    for group, messages in stream.fan_out(batch.entries, groups).items():
        hub.publish(Channel.ALL_EVENTS, messages, key=group)


def ev(n: int, tag: str = "custom/tag") -> tuple[str, dict[str, Any]]:
    return tag, {"n": n}


def envelope(n: int, tag: str = "custom/tag") -> str:
    return json.dumps({"id": f"{EPOCH}:{n}", "tag": tag, "data": {"n": n}}, separators=(",", ":"))


async def connect(
    site: Site, path: str, headers: dict[str, str] | None = None
) -> tornado.websocket.WebSocketClientConnection:
    request = tornado.httpclient.HTTPRequest(site.url(path, "ws"), headers=headers)
    conn = await tornado.websocket.websocket_connect(request)
    site.websockets.append(conn)
    return conn


async def ready(site: Site, path: str) -> tornado.websocket.WebSocketClientConnection:
    before = site.hub.count(Channel.ALL_EVENTS)
    conn = await connect(site, path)
    await conn.write_message(CLIENT_READY)
    await site.subscribed(before + 1)
    return conn


async def read(conn: tornado.websocket.WebSocketClientConnection, count: int) -> list[str]:
    return [await conn.read_message() for _ in range(count)]


async def silent(conn: tornado.websocket.WebSocketClientConnection, wait: float = WAIT) -> bool:
    """Nothing arrives within ``wait`` seconds (the read is then abandoned)."""
    try:
        message = await asyncio.wait_for(conn.read_message(), wait)
    except asyncio.TimeoutError:
        return True
    raise AssertionError(f"unexpected message {message!r}")


# -- websockets --------------------------------------------------------------------------------


async def test_envelope_messages_carry_ids():
    async with streaming() as site:
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?envelope=1")
        plain = await ready(site, f"/all_events/{GOOD_TOKEN}")
        fire(site, ev(1), ev(2, "salt/key"))
        assert await read(conn, 2) == [envelope(1), envelope(2, "salt/key")]
        assert await read(plain, 2) == [
            '{"tag":"custom/tag","data":{"n":1}}',
            '{"tag":"salt/key","data":{"n":2}}',
        ]


async def test_since_replays_what_was_missed_then_the_live_stream():
    async with streaming() as site:
        fire(site, *[ev(n) for n in range(1, 6)])
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?since={EPOCH}:2")
        assert await read(conn, 3) == [envelope(3), envelope(4), envelope(5)]
        fire(site, ev(6), ev(7))
        assert await read(conn, 2) == [envelope(6), envelope(7)]
        assert await silent(conn)


async def test_events_between_connect_and_ready_are_replayed_once():
    async with streaming() as site:
        fire(site, ev(1))
        conn = await connect(site, f"/all_events/{GOOD_TOKEN}?since={EPOCH}:1")
        fire(site, ev(2), ev(3))  # after the upgrade, before "websocket client ready"
        await conn.write_message(CLIENT_READY)
        await site.subscribed(1)
        fire(site, ev(4))
        assert await read(conn, 3) == [envelope(2), envelope(3), envelope(4)]
        assert await silent(conn)


async def test_a_replay_longer_than_client_queue_size_is_not_cut():
    async with streaming(client_queue_size=10) as site:
        fire(site, *[ev(n) for n in range(1, 51)])
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?since={EPOCH}:0")
        fire(site, *[ev(n) for n in range(51, 56)])  # live ones behind the replay
        assert await read(conn, 55) == [envelope(n) for n in range(1, 56)]
        assert site.hub.stats.clients_cut == 0


async def test_a_first_message_token_resumes_too():
    async with streaming() as site:
        fire(site, ev(1), ev(2))
        conn = await connect(site, f"/all_events?since={EPOCH}:1")
        await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
        await conn.write_message(CLIENT_READY)  # may come while the token is checked
        await site.subscribed(1)
        fire(site, ev(3))
        assert await read(conn, 2) == [envelope(2), envelope(3)]


async def test_since_latest_gets_only_the_live_stream():
    async with streaming() as site:
        fire(site, ev(1), ev(2))
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?since={EPOCH}:2")
        assert await silent(conn)
        fire(site, ev(3))
        assert await read(conn, 1) == [envelope(3)]


async def test_a_since_older_than_the_history_gets_the_gap_message():
    async with streaming(history_size=2) as site:
        fire(site, *[ev(n) for n in range(1, 6)])  # 4 and 5 kept
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?since={EPOCH}:1")
        gap, *rest = await read(conn, 3)
        assert json.loads(gap) == {
            "id": "e1:3",
            "tag": GAP_TAG,
            "data": {"since": "e1:1", "resumed_from": "e1:4", "reason": "too old", "missed": True},
        }
        assert rest == [envelope(4), envelope(5)]
        fire(site, ev(6))
        assert await read(conn, 1) == [envelope(6)]


async def test_a_since_of_another_epoch_is_an_engine_restart():
    async with streaming() as site:
        fire(site, ev(1))
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?since=e0:99")
        gap, first = await read(conn, 2)
        assert json.loads(gap)["data"] == {
            "since": "e0:99",
            "resumed_from": "e1:1",
            "reason": "engine restarted",
            "missed": True,
        }
        assert first == envelope(1)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=garbage", "malformed 'since' 'garbage'"),
        ("since=", "malformed 'since' ''"),
        ("since=e1:7", "id e1:7 is ahead of this stream"),
        ("envelope=maybe", "parameter 'envelope' must be 1 or 0"),
        ("tag=", "a tag filter is a non-empty string"),
        ("colour=red", "unknown parameter 'colour' for /all_events"),
    ],
)
async def test_a_malformed_request_is_400_before_the_upgrade(query, says):
    async with streaming() as site:
        fire(site, ev(1))
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await connect(site, f"/all_events/{GOOD_TOKEN}?{query}")
        assert caught.value.code == 400
        response = await site.fetch(
            f"/all_events/{GOOD_TOKEN}?{query}",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert response.code == 400
        assert says in json.loads(response.body)["return"]
        assert site.auth.called("session") == []  # refused before the token was looked at
        assert site.hub.count(Channel.ALL_EVENTS) == 0


async def test_tag_filters_and_subscribe_unsubscribe_while_connected():
    async with streaming() as site:
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?envelope=1&tag=a/*")
        fire(site, ev(1, "a/1"), ev(2, "b/2"))
        assert await read(conn, 1) == [envelope(1, "a/1")]
        await conn.write_message(json.dumps({"subscribe": ["b/*"]}))
        [answer] = await read(conn, 1)
        assert json.loads(answer) == {"tag": SUBSCRIBED_TAG, "data": {"tags": ["a/*", "b/*"]}}
        fire(site, ev(3, "a/3"), ev(4, "b/4"), ev(5, "c/5"))
        assert await read(conn, 2) == [envelope(3, "a/3"), envelope(4, "b/4")]
        await conn.write_message(json.dumps({"unsubscribe": ["a/*"]}))
        assert json.loads((await read(conn, 1))[0])["data"] == {"tags": ["b/*"]}
        fire(site, ev(6, "a/6"), ev(7, "b/7"))
        assert await read(conn, 1) == [envelope(7, "b/7")]
        await conn.write_message(json.dumps({"unsubscribe": ["b/*"]}))
        assert json.loads((await read(conn, 1))[0])["data"] == {"tags": []}
        fire(site, ev(8, "z/8"))  # no filter left: everything
        assert await read(conn, 1) == [envelope(8, "z/8")]


async def test_a_filtered_plain_client_gets_saltnados_shape_and_engine_notices():
    from salt_ws.pipeline import LinkChange

    async with streaming() as site:
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?tag=salt/key&tag=salt/job/*/ret/*")
        fire(site, ev(1, "salt/auth"), ev(2, "salt/key"), LinkChange(False, time.time()))
        fire(site, ev(3, "salt/job/1/ret/m1"), ev(4, "salt_ws/bus/lost"))
        messages = [json.loads(m) for m in await read(conn, 3)]
        assert [m["tag"] for m in messages] == ["salt/key", "salt_ws/bus/lost", "salt/job/1/ret/m1"]
        assert "id" not in messages[0]
        assert messages[1]["data"]["missed"] is True  # the engine's own notice
        assert await silent(conn)  # the forged salt_ws/bus/lost does not pass the filter


async def test_a_bad_subscribe_closes_1008():
    async with streaming(max_filters=2) as site:
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?tag=a")
        await conn.write_message(json.dumps({"subscribe": ["b", "c"]}))
        assert await conn.read_message() is None
        assert conn.close_code == 1008
        assert conn.close_reason == "at most 2 tag filters (max_filters)"


async def test_a_limited_users_filter_cannot_widen_what_they_see():
    limited = Permissions([{"web-1": ["test.*"]}], resolved={"web-1": {"web-1"}})

    async def admit(session: dict[str, Any]) -> Permissions:
        return limited

    async with streaming() as site:
        site.services.admit = admit
        site.services.stream.audiences[limited.key] = limited
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?envelope=1&tag=*")
        ret = {"fun": "test.ping", "id": "web-1", "jid": "1", "return": True}
        fire(
            site,
            ("salt/auth", {"id": "web-1"}),
            ("salt/key", {"id": "web-1"}),
            ("salt_ws/stream/gap", {"forged": True}),
            ("salt/job/1/ret/web-1", ret),
            ("salt/job/1/ret/web-2", {**ret, "id": "web-2"}),
        )
        [message] = await read(conn, 1)
        assert json.loads(message) == {"id": "e1:4", "tag": "salt/job/1/ret/web-1", "data": ret}
        assert await silent(conn)


async def test_a_quiet_envelope_client_gets_a_tick_with_the_latest_id():
    async with streaming(tick_interval=1) as site:
        conn = await ready(site, f"/all_events/{GOOD_TOKEN}?envelope=1&tag=nothing")
        plain = await ready(site, f"/all_events/{GOOD_TOKEN}")
        fire(site, ev(1), ev(2))
        assert await read(plain, 2)
        now = time.monotonic()
        site.services.tick(now)  # first look: quiet from now
        site.services.tick(now + 0.9)
        assert await silent(conn, 0.1)
        site.services.tick(now + 1)
        [tick] = await read(conn, 1)
        assert tick == '{"id":"e1:2","tag":"salt_ws/stream/tick","data":{}}'
        assert json.loads(tick)["tag"] == TICK_TAG
        site.services.tick(now + 1.5)
        assert await silent(conn, 0.1)
        site.services.tick(now + 2)  # the tick was seen queued at now + 1.5
        assert await silent(conn, 0.1)
        site.services.tick(now + 2.5)  # another interval of silence since
        assert await read(conn, 1) == [tick]
        assert await silent(plain, 0.1)  # saltnado's clients get none


# -- SSE ---------------------------------------------------------------------------------------


class SSE:
    """An HTTP/1.1 client of ``GET /events`` on a raw socket (chunked body decoded)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = ""  # the decoded body so far
        self.ended = False

    @classmethod
    async def open(cls, site: Site, path: str = "/events", **headers: str) -> SSE:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        client = cls(reader, writer)
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = await reader.readline()
        client.status = int(status.split()[1])
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            client.headers[name.strip().lower()] = value.strip()
        if "content-length" in client.headers:
            client.body = (await reader.readexactly(int(client.headers["content-length"]))).decode()
            client.ended = True
        return client

    async def _chunk(self) -> None:
        size = int((await self.reader.readline()).strip() or b"0", 16)
        if size == 0:
            self.ended = True
            return
        self.body += (await self.reader.readexactly(size)).decode()
        await self.reader.readexactly(2)

    async def blocks(self, count: int) -> list[str]:
        """The next ``count`` blocks (events, comments, retry) of the stream, each with its
        final blank line."""
        while self.body.count("\n\n") < count and not self.ended:
            await self._chunk()
        parts = self.body.split("\n\n")
        found, self.body = parts[:count], "\n\n".join(parts[count:])
        return [part + "\n\n" for part in found]

    async def end(self) -> str:
        """What is left of the body once the server ends it."""
        while not self.ended:
            await self._chunk()
        return self.body

    async def quiet(self, wait: float = WAIT) -> bool:
        try:
            await asyncio.wait_for(self._chunk(), wait)
        except asyncio.TimeoutError:
            return not self.body
        return False

    def close(self) -> None:
        self.writer.close()


def sse_event(n: int, tag: str = "custom/tag") -> str:
    data = json.dumps({"tag": tag, "data": {"n": n}}, separators=(",", ":"))
    return f"tag: {tag}\nid: {EPOCH}:{n}\ndata: {data}\n\n"


AUTH = {"X-Auth-Token": GOOD_TOKEN}


@contextlib.asynccontextmanager
async def sse(site: Site, path: str = "/events", **headers: str) -> AsyncIterator[SSE]:
    client = await SSE.open(site, path, **headers)
    try:
        yield client
    finally:
        client.close()


async def started(site: Site, count: int = 1) -> None:
    await site.subscribed(count)


@pytest.mark.parametrize(
    "headers",
    [AUTH, {"Cookie": f"session_id={GOOD_TOKEN}"}],
    ids=["header", "cookie"],
)
async def test_sse_sends_retry_then_tag_id_and_data_lines(headers):
    async with streaming() as site, sse(site, **headers) as client:
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert client.headers["cache-control"] == "no-store"
        assert await client.blocks(1) == ["retry: 400\n\n"]
        await started(site)
        fire(site, ev(1), ev(2, "salt/key"))
        assert await client.blocks(2) == [sse_event(1), sse_event(2, "salt/key")]
        assert site.auth.called("session") == [(GOOD_TOKEN,)]


async def test_sse_a_tag_with_line_breaks_stays_one_event():
    async with streaming() as site, sse(site, **AUTH) as client:
        await client.blocks(1)
        await started(site)
        fire(site, ("evil\n\nid: e1:999\ndata: forged", {"n": 1}))
        [block] = await client.blocks(1)
        assert block.startswith("tag: evil\\n\\nid: e1:999\\ndata: forged\nid: e1:1\ndata: {")
        assert block.count("\n") == 4


@pytest.mark.parametrize(
    ("path", "headers", "code", "says"),
    [
        (f"/events?token={GOOD_TOKEN}", {}, 400, "a token in the query string is refused"),
        (f"/events?token={GOOD_TOKEN}", AUTH, 400, "a token in the query string is refused"),
        ("/events?since=nope", AUTH, 400, "malformed 'since' 'nope'"),
        ("/events?envelope=1", AUTH, 400, "unknown parameter 'envelope' for /events"),
        ("/events", {"Last-Event-ID": "e1:9"}, 400, "id e1:9 is ahead of this stream"),
        ("/events", {}, 401, "send X-Auth-Token or the session_id cookie"),
        ("/events", {"X-Auth-Token": UNKNOWN_TOKEN}, 401, "invalid or expired token"),
    ],
)
async def test_sse_refusals(path, headers, code, says):
    async with streaming() as site, sse(site, path, **headers) as client:
        assert client.status == code
        assert says in json.loads(client.body)["return"]
        assert site.hub.count(Channel.ALL_EVENTS) == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/events", {"Last-Event-ID": f"{EPOCH}:2"}),
        (f"/events?since={EPOCH}:2", {}),
        (f"/events?since={EPOCH}:2", {"Last-Event-ID": f"{EPOCH}:1"}),  # ?since= wins
    ],
    ids=["last-event-id", "since", "since-wins"],
)
async def test_sse_resumes_after_the_last_event_id(path, headers):
    async with streaming() as site:
        fire(site, ev(1), ev(2), ev(3, "salt/key"))
        async with sse(site, path, **AUTH, **headers) as client:
            assert await client.blocks(2) == ["retry: 400\n\n", sse_event(3, "salt/key")]
            await started(site)
            fire(site, ev(4))
            assert await client.blocks(1) == [sse_event(4)]
            assert await client.quiet()


async def test_sse_filters_and_gap():
    async with streaming(history_size=2) as site:
        fire(site, ev(1, "a/1"), ev(2, "b/2"), ev(3, "a/3"), ev(4, "b/4"))
        async with sse(site, f"/events?tag=a/*&since={EPOCH}:0", **AUTH) as client:
            _, gap, event = await client.blocks(3)
            assert gap.startswith(f"tag: {GAP_TAG}\nid: {EPOCH}:2\ndata: ")
            data = json.loads(gap.split("data: ", 1)[1])["data"]
            assert data == {
                "since": "e1:0",
                "resumed_from": "e1:3",
                "reason": "too old",
                "missed": True,
            }
            assert event == sse_event(3, "a/3")
            await started(site)
            fire(site, ev(5, "b/5"), ev(6, "a/6"))
            assert await client.blocks(1) == [sse_event(6, "a/6")]


async def test_sse_keepalive_after_tick_interval_of_silence():
    async with streaming(tick_interval=1) as site, sse(site, **AUTH) as client:
        await client.blocks(1)
        await started(site)
        now = time.monotonic()
        site.services.tick(now)
        site.services.tick(now + 0.5)
        assert await client.quiet(0.1)
        site.services.tick(now + 1)
        assert await client.blocks(1) == [KEEPALIVE]


async def test_sse_ends_when_its_token_is_revoked_by_logout():
    async with streaming() as site, sse(site, **AUTH) as client:
        await client.blocks(1)
        await started(site)
        response = await site.fetch("/logout", "POST", "", AUTH)
        assert response.code == 200
        assert await client.end() == ""
        assert site.hub.count(Channel.ALL_EVENTS) == 0
        assert not site.services.sockets


async def test_sse_ends_when_its_token_expires():
    async with streaming() as site, sse(site, **AUTH) as client:
        await client.blocks(1)
        await started(site)
        assert site.services.close_expired(2e9 + 1) == 1
        assert await client.end() == ""
        assert not site.services.sockets


async def test_sse_counts_toward_max_connections():
    async with streaming(max_connections=1) as site, sse(site, **AUTH) as first:
        await first.blocks(1)
        await started(site)
        async with sse(site, **AUTH) as second:
            assert second.status == 503
            assert "max_connections: 1" in json.loads(second.body)["return"]
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await connect(site, f"/all_events/{GOOD_TOKEN}")
        assert caught.value.code == 503
        assert site.services.refused["max_connections"] == 2


async def test_sse_does_not_count_toward_max_http_connections():
    async with streaming(max_http_connections=1) as site:
        async with sse(site, **AUTH) as first, sse(site, **AUTH) as second:
            for client in (first, second):
                assert client.status == 200
                assert await client.blocks(1) == ["retry: 400\n\n"]
            await started(site, 2)
            assert len(site.services.http) == 0
            response = await site.fetch("/login")  # a plain HTTP request still has its slot
            assert response.code == 401
            fire(site, ev(1))
            assert await first.blocks(1) == await second.blocks(1) == [sse_event(1)]
        assert site.services.refused["max_http_connections"] == 0


class SlowAuthenticator(FakeAuthenticator):
    """Token lookups wait until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def run(self, func: Any, *args: Any) -> Any:
        self.waiting.set()
        await self.release.wait()
        return func(*args)


async def test_an_sse_client_that_leaves_while_its_token_is_checked_holds_nothing():
    auth = SlowAuthenticator()
    async with streaming(auth=auth) as site:
        _, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(
            f"GET /events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {GOOD_TOKEN}\r\n\r\n".encode()
        )
        await auth.waiting.wait()
        writer.close()
        await asyncio.sleep(0.05)  # the server sees the connection close
        auth.release.set()
        await asyncio.sleep(0.05)
        assert not site.services.sockets
        assert site.services.authenticated() == 0
        assert site.hub.count(Channel.ALL_EVENTS) == 0
