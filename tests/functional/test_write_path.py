"""The fan-out write path over real sockets (issue 10, benchmark: cheaper writes per client).

A batch the kernel takes whole goes out through the socket's own ``send`` (no tornado
buffer, no future); a partial send hands only the remainder to tornado, bytes in order;
TLS keeps tornado's path; publishes in one loop turn are one flush and one write per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from typing import Any

import tornado.httpclient
import tornado.netutil
import tornado.websocket

from salt_ws import wire
from salt_ws.app import make_server
from salt_ws.config import parse
from salt_ws.engine import Counters, Engine
from salt_ws.handlers import CLIENT_READY, Services
from salt_ws.hub import Channel, Hub
from tests.certs import self_signed

from .harness import GOOD_TOKEN, FakeAuthenticator, Site, serve_services, serving
from .test_hardening import until
from .test_redteam import non_reader


def handlers(site: Site) -> list[Any]:
    return sorted(site.services.sockets, key=id)


def count_calls(obj: Any, name: str) -> list[int]:
    """Count calls of ``obj.name`` (an instance attribute wrapping the bound method)."""
    calls = [0]
    original = getattr(obj, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(obj, name, counting)
    return calls


def text_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete unmasked server frames at the start of ``buf``: (opcode, payload), bytes used."""
    frames, pos = [], 0
    while len(buf) - pos >= 2:
        n, head = buf[pos + 1] & 0x7F, 2
        if n == 126:
            if len(buf) - pos < 4:
                break
            n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif n == 127:
            if len(buf) - pos < 10:
                break
            n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        if len(buf) - pos < head + n:
            break
        frames.append((buf[pos] & 0x0F, bytes(buf[pos + head : pos + head + n])))
        pos += head + n
    return frames, pos


async def test_a_batch_the_kernel_takes_skips_tornados_buffer():
    async with serving() as site:
        conn = await site.ready()
        [handler] = handlers(site)
        writes = count_calls(handler.ws_connection.stream, "write")
        message = wire.encode_event("salt/job/1/new", {"n": 1})
        site.publish([message])
        assert await conn.read_message() == message
        assert writes[0] == 0  # the socket took it: no IOStream.write, no future
        stats = site.services.writes.stats()
        assert stats["direct"] == 1
        assert stats["tornado"] == stats["partial"] == 0
        assert stats["direct_bytes"] == len(wire.frame(message))


async def test_publishes_in_one_loop_turn_are_one_write_per_client():
    async with serving() as site:
        clients = [await site.ready() for _ in range(3)]
        calls = [count_calls(handler, "_write") for handler in handlers(site)]
        before = site.services.writes.stats()
        published = [wire.encode_event(f"t/{n}", {"n": n}) for n in range(5)]
        for message in published:  # five publishes, no await between them
            site.publish([message])
        for conn in clients:
            assert [await conn.read_message() for _ in published] == published
        assert [c[0] for c in calls] == [1, 1, 1]  # was 5 each: one write per publish
        after = site.services.writes.stats()
        assert after["rounds"] - before["rounds"] == 1
        assert after["wakeups"] - before["wakeups"] == 15
        assert after["flushes"] - before["flushes"] == 3
        assert site.services.counters.messages_sent == 15


async def test_a_partial_send_hands_the_rest_to_tornado_in_order():
    async with serving() as site:
        sock = await non_reader(site.port)
        await site.subscribed(1)
        [handler] = handlers(site)
        published = []
        for n in range(64):  # the kernel's buffers take some MiB first
            published.append(wire.encode_event(f"big/{n}", {"n": n, "pad": "x" * 131072}))
            site.publish(published[-1:])
            await asyncio.sleep(0.001)
            if site.services.writes.stats()["partial"]:
                break
        assert site.services.writes.stats()["partial"] == 1
        assert len(handler.ws_connection.stream._write_buffer) > 0  # tornado holds the rest
        handler.close(wire.CLOSE_GOING_AWAY, "bye")  # tornado writes it after the remainder
        loop = asyncio.get_running_loop()
        buf, frames = bytearray(), []
        while not frames or frames[-1][0] != 0x8:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
            assert chunk, "closed before the close frame"
            buf += chunk
            got, used = text_frames(buf)
            del buf[:used]
            frames += got
        sock.close()
        assert [payload.decode() for op, payload in frames[:-1]] == published
        assert frames[-1] == (0x8, struct.pack("!H", wire.CLOSE_GOING_AWAY) + b"bye")


async def test_a_dead_peer_during_a_direct_send_closes_the_stream():
    async with serving() as site:
        sock = await non_reader(site.port)
        await site.subscribed(1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST: the next send fails
        await asyncio.sleep(0.05)
        for n in range(3):
            site.publish([wire.encode_event(f"t/{n}", {"n": n})])
            await asyncio.sleep(0.01)
        await until(lambda: not site.services.sockets)
        assert site.hub.count(Channel.ALL_EVENTS) == 0


@contextlib.asynccontextmanager
async def tls_site(tmp_path: Any) -> AsyncIterator[tuple[Site, ssl.SSLContext]]:
    cert, key = self_signed("127.0.0.1")
    crt_file, key_file = tmp_path / "crt.pem", tmp_path / "key.pem"
    crt_file.write_bytes(cert)
    key_file.write_bytes(key)
    config = parse({"ssl_crt": str(crt_file), "ssl_key": str(key_file)})
    services = Services(config, Hub(1000), FakeAuthenticator(), Counters())
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(crt_file), str(key_file))
    server = make_server(services, server_ctx)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    site = Site(sock.getsockname()[1], services)
    client_ctx = ssl.create_default_context(cafile=str(crt_file))
    try:
        yield site, client_ctx
    finally:
        server.stop()
        site.http.close()
        await asyncio.sleep(0.01)
        await server.close_all_connections()


async def test_tls_streams_keep_tornados_write_path(tmp_path):
    async with tls_site(tmp_path) as (site, client_ctx):
        request = tornado.httpclient.HTTPRequest(
            site.url(f"/all_events/{GOOD_TOKEN}", "wss"), ssl_options=client_ctx
        )
        conn = await tornado.websocket.websocket_connect(request)
        await conn.write_message(CLIENT_READY)
        await site.subscribed(1)
        published = [wire.encode_event(f"t/{n}", {"pad": os.urandom(8).hex()}) for n in range(3)]
        site.publish(published)
        assert [await conn.read_message() for _ in published] == published
        stats = site.services.writes.stats()
        assert stats["direct"] == stats["partial"] == 0
        assert stats["tornado"] == 1
        conn.close()


async def test_the_sse_stream_keeps_tornados_write_path():
    config = parse({"disable_ssl": True})
    services = Services(config, Hub(1000), FakeAuthenticator(), Counters())
    async with serve_services(services) as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(
            f"GET /events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {GOOD_TOKEN}\r\n\r\n".encode()
        )
        await site.subscribed(1)
        message = wire.encode_event("t/1", {"n": 1})
        site.publish([message])
        seen = b""
        while message.encode() not in seen:
            seen += await asyncio.wait_for(reader.read(65536), 5)
        stats = site.services.writes.stats()
        assert stats["direct"] == 0
        assert stats["tornado"] >= 1
        writer.close()


def test_ws_status_reports_the_write_counters():
    config = parse({"disable_ssl": True})
    engine = Engine({"id": "m"}, config)
    try:
        engine.services = Services(config, engine.hub, FakeAuthenticator(), engine.counters)
        engine.services.writes.direct = 3
        status = engine.status()
        assert status["writes"] == engine.services.writes.stats()
        assert status["writes"]["direct"] == 3
        assert "frame_cache" in status  # kept beside it
    finally:
        engine._grains_pool.shutdown()
        engine._admit_pool.shutdown()
