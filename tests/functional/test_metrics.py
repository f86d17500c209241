"""GET /metrics, the counters the handlers keep for it, and ws.clients' rows, over a real socket.

An unstarted Engine supplies the registry (its hub, stream and counters are the app's);
eauth is the harness's fake. Exposition is parsed with prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families

from salt_ws import wire
from salt_ws.acl import Permissions
from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.handlers import CLIENT_READY, Services
from salt_ws.hub import Channel
from salt_ws.status import CLIENT_COLUMNS

from .harness import ALICE, GOOD_TOKEN, UNKNOWN_TOKEN, FakeAuthenticator, Site, serve_services


class MetricsSite(Site):
    engine: Engine

    def closed(self, endpoint: str, reason: str) -> int:
        return self.services.traffic.closed[(endpoint, reason)]

    async def until_closed(self, endpoint: str, reason: str, count: int = 1) -> None:
        while self.closed(endpoint, reason) < count:
            await asyncio.sleep(0.005)

    async def metrics(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.fetch("/metrics", headers=headers)
        assert response.code == 200, response.body
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return {f.name: f for f in text_string_to_metric_families(response.body.decode())}


@contextlib.asynccontextmanager
async def metrics_site(admit: Any = None, **raw: Any) -> AsyncIterator[MetricsSite]:
    config = parse({"disable_ssl": True, "metrics": True, **raw})
    engine = Engine({}, config)
    services = Services(
        config, engine.hub, FakeAuthenticator(), engine.counters, admit=admit, stream=engine.stream
    )
    engine.services = services
    services.exposition = engine.metrics.exposition
    engine.listening = True
    try:
        async with serve_services(services, MetricsSite) as site:
            site.engine = engine
            yield site
    finally:
        for pool in (engine._grains_pool, engine._admit_pool):
            pool.shutdown(wait=False)


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = name[: -len("_total")] if name.endswith("_total") else name
    [found] = [s.value for s in families[family].samples if s.labels == labels]
    return found


def the_handler(site: MetricsSite) -> Any:
    [handler] = list(site.services.sockets)
    return handler


# -- GET /metrics: off, allowed addresses, tokens --------------------------------------------------


async def test_metrics_off_is_404():
    async with metrics_site(metrics=False) as site:
        assert (await site.fetch("/metrics")).code == 404


async def test_an_allowed_address_needs_no_token():
    async with metrics_site() as site:
        found = await site.metrics()
        assert value(found, "salt_ws_up") == 1
        assert value(found, "salt_ws_clients", endpoint="all_events") == 0


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 403),
        ({"X-Auth-Token": UNKNOWN_TOKEN}, 403),
        ({"X-Auth-Token": "not a token"}, 403),
        ({"Cookie": f"session_id={GOOD_TOKEN}"}, 403),  # the header only
        ({"X-Auth-Token": GOOD_TOKEN}, 200),  # an administrator's
    ],
    ids=["no-token", "unknown", "malformed", "cookie", "admin-token"],
)
async def test_elsewhere_an_administrators_token_is_needed(headers, code):
    async with metrics_site(metrics_allow=[]) as site:
        response = await site.fetch("/metrics", headers=headers)
        assert response.code == code, response.body
        if code == 403:
            assert json.loads(response.body)["status"] == "403 Forbidden"
            assert b"salt_ws_up" not in response.body


async def test_a_limited_users_token_is_403():
    async def limited(session: dict[str, Any]) -> Permissions:
        return Permissions([{"minion-1": ["test.*"]}])

    async with metrics_site(admit=limited, metrics_allow=[]) as site:
        response = await site.fetch("/metrics", headers={"X-Auth-Token": GOOD_TOKEN})
        assert response.code == 403


async def test_a_trusted_proxys_client_is_judged_not_the_proxy():
    async with metrics_site(trusted_proxies=["127.0.0.1"]) as site:
        outside = {"X-Forwarded-For": "203.0.113.9"}
        assert (await site.fetch("/metrics", headers=outside)).code == 403
        inside = {"X-Forwarded-For": "127.0.0.1"}
        assert (await site.fetch("/metrics", headers=inside)).code == 200


# -- what the handlers count -----------------------------------------------------------------------


async def test_messages_bytes_and_connections_per_endpoint():
    async with metrics_site() as site:
        conn = await site.ready()
        published = [wire.encode_event(f"t/{n}", {"n": n}) for n in range(3)]
        site.publish(published)
        assert [await conn.read_message() for _ in published] == published
        frames = sum(len(site.services.frames.frame(m)) for m in published)
        found = await site.metrics()
        assert value(found, "salt_ws_messages_sent_total", endpoint="all_events") == 3
        assert value(found, "salt_ws_bytes_sent_total", endpoint="all_events") == frames
        assert value(found, "salt_ws_connections_total", endpoint="all_events") == 1
        assert value(found, "salt_ws_clients", endpoint="all_events") == 1
        assert value(found, "salt_ws_messages_sent_total", endpoint="formatted_events") == 0


async def test_a_client_that_closes_is_counted_as_client():
    async with metrics_site() as site:
        conn = await site.ready()
        conn.close()
        await site.until_closed("all_events", "client")
        assert sum(site.services.traffic.closed.values()) == 1


async def test_logout_and_expiry_and_shutdown_are_told_apart():
    async with metrics_site() as site:
        await site.ready()
        site.services.revoke(GOOD_TOKEN)
        await site.until_closed("all_events", "logout")

        await site.ready()
        site.services.close_expired(3e9)  # past the fake session's expiry
        await site.until_closed("all_events", "token_expired")

        await site.ready(channel=Channel.FORMATTED_EVENTS)
        the_handler(site).close(wire.CLOSE_GOING_AWAY, "salt master shutting down")
        await site.until_closed("formatted_events", "shutdown")
        assert sum(site.services.traffic.closed.values()) == 3


async def test_a_client_cut_by_the_hub_is_too_slow():
    async with metrics_site() as site:
        conn = await site.ready()
        sub = next(iter(site.hub.subscribers(Channel.ALL_EVENTS)))
        site.hub.unsubscribe(sub)
        sub.cut(wire.CLOSE_TOO_SLOW, "client too slow: more than 10 messages waiting")
        assert await conn.read_message() is None
        await site.until_closed("all_events", "too_slow")


async def test_a_missing_ready_is_a_handshake_timeout():
    async with metrics_site(handshake_timeout=0.1) as site:
        conn = await site.connect()
        assert await conn.read_message() is None
        assert conn.close_code == wire.CLOSE_HANDSHAKE_TIMEOUT
        await site.until_closed("all_events", "handshake_timeout")


async def test_a_binary_message_is_policy():
    async with metrics_site() as site:
        conn = await site.ready()
        await conn.write_message(b"\x00", binary=True)
        assert await conn.read_message() is None
        await site.until_closed("all_events", "policy")


async def test_an_unanswered_ping_is_a_ping_timeout():
    async with metrics_site(ping_interval=1, ping_timeout=1) as site:
        # a raw websocket client that never answers a ping
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /all_events/{GOOD_TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        close_frame = None
        while close_frame is None:
            head = await reader.readexactly(2)
            data = await reader.readexactly(head[1] & 0x7F)
            if head[0] & 0x0F == 0x8:
                close_frame = data
        assert b"ping timed out" in close_frame
        writer.transport.abort()
        await site.until_closed("all_events", "ping_timeout")
        assert sum(site.services.traffic.closed.values()) == 1


async def test_sse_streams_are_counted_as_events():
    async with metrics_site() as site:
        chunks: list[bytes] = []
        request = tornado.httpclient.HTTPRequest(
            site.url("/events"),
            headers={"X-Auth-Token": GOOD_TOKEN},
            streaming_callback=chunks.append,
            request_timeout=10,
        )
        fetching = asyncio.ensure_future(site.http.fetch(request, raise_error=False))
        await site.subscribed(1)
        site.publish(["tag: t\nid: x:1\ndata: {}\n\n"])
        while b"data: {}" not in b"".join(chunks):
            await asyncio.sleep(0.005)
        status = site.engine.metrics.status()
        assert status["salt_ws_clients"]["events"] == 1
        assert status["salt_ws_clients"]["all_events"] == 0
        assert status["salt_ws_connections_total"]["events"] == 1
        assert status["salt_ws_messages_sent_total"]["events"] == 1
        site.services.revoke(GOOD_TOKEN)
        await fetching
        await site.until_closed("events", "logout")


# -- POST /login results ---------------------------------------------------------------------------


async def test_logins_are_counted_by_result():
    async with metrics_site(login_max_failures=1) as site:
        assert (await site.post_json("/login", ALICE)).code == 200
        assert (await site.post_json("/login", {"username": "alice"})).code == 400
        assert (await site.post_json("/login", {**ALICE, "password": "no"})).code == 401
        assert (await site.post_json("/login", {**ALICE, "password": "no"})).code == 429
        found = await site.metrics()
        assert {
            result: value(found, "salt_ws_logins_total", result=result)
            for result in ("ok", "bad_credentials", "throttled", "malformed")
        } == {"ok": 1, "bad_credentials": 1, "throttled": 1, "malformed": 1}


# -- ws.clients ------------------------------------------------------------------------------------


async def test_ws_clients_lists_each_open_stream_without_its_token():
    async with metrics_site() as site:
        plain = await site.ready()
        site.engine.consume([("t/1", {"n": 1})])  # numbered by the stream: id <epoch>:1
        assert await plain.read_message()
        request = tornado.httpclient.HTTPRequest(
            site.url("/all_events?tag=salt/job/*&envelope=1", "ws"),
            headers={"X-Auth-Token": GOOD_TOKEN},
        )
        filtered = await tornado.websocket.websocket_connect(request)
        site.websockets.append(filtered)
        waiting = await site.connect("")  # no token yet
        await filtered.write_message(CLIENT_READY)
        await site.subscribed(2)
        while len(site.services.sockets) < 3:
            await asyncio.sleep(0.005)

        answer = site.engine.clients()
        rows = answer["clients"]
        assert [r["state"] for r in rows] == ["streaming", "streaming", "awaiting token"]
        for row in rows:
            assert tuple(row) == CLIENT_COLUMNS
            assert row["address"] == "127.0.0.1"
            assert row["endpoint"] == "all_events"
        first, second, third = rows
        assert (first["user"], first["eauth"], first["filters"]) == ("alice", "pam", [])
        assert first["messages_sent"] == 1
        assert first["last_id"] == site.engine.stream.id_of(1)
        assert second["filters"] == ["salt/job/*"]
        assert (third["user"], third["last_id"], third["queue"]) == (None, None, 0)
        assert GOOD_TOKEN not in json.dumps(answer)
        waiting.close()
