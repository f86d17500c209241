"""Red-team follow-up to issue 9 (engine/HTTP findings), over a real loopback socket.

A client that never reads pins at most one bounded write batch and is cut once the write
stalls; waiting HTTP connections make room for new ones; a response nobody reads is timed
out; a deeply nested JSON body is a 400. Each test failed against the code before its fix.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import socket
import struct
import threading
import time
from typing import Any

from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.handlers import CLIENT_READY, WRITE_BATCH_BYTES, WRITE_TIMEOUT

from .harness import ALICE, GOOD_TOKEN
from .test_hardening import closed_after, raw, refusals, stays_open, until
from .test_security_app import Auth, serving


def masked(text: str) -> bytes:
    """A client's (masked) text frame, short form."""
    data, mask = text.encode(), os.urandom(4)
    return (
        struct.pack("!BB", 0x81, 0x80 | len(data))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    )


async def non_reader(port: int) -> socket.socket:
    """A subscribed websocket client with a tiny receive buffer that never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET /all_events/{GOOD_TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(sock, 4096)
    assert response.startswith(b"HTTP/1.1 101")
    await loop.sock_sendall(sock, masked(CLIENT_READY))
    return sock


# -- red team f3: a client that never reads ----------------------------------------------------


async def test_a_client_that_never_reads_pins_one_batch_bounded_in_bytes():
    big = 256 * 1024
    async with serving(client_queue_bytes=64 * 2**20) as site:
        sock = await non_reader(site.port)
        await site.subscribed(1)
        [handler] = site.services.sockets
        site.publish([f'"{n}{"x" * big}"' for n in range(20)])
        await asyncio.sleep(0.2)
        pending = len(handler.ws_connection.stream._write_buffer)
        assert pending <= WRITE_BATCH_BYTES + big + 64  # was all 5 MiB, outside the outbox
        [sub] = site.hub.subscribers(handler.channel)
        assert sub.outbox.bytes > big  # the rest waits where the slow-client policy sees it
        assert site.services.stats()["open"]["write_pending_bytes"] > 0
        assert site.services.close_stalled(time.monotonic() + WRITE_TIMEOUT / 2) == 0
        assert site.services.close_stalled(time.monotonic() + WRITE_TIMEOUT + 1) == 1
        await until(lambda: not site.services.sockets)
        assert refusals(site)["write_stalled"] == 1
        assert site.hub.count(handler.channel) == 0
        sock.close()


async def test_a_client_that_keeps_up_is_never_stalled():
    async with serving() as site:
        conn = await site.ready()
        site.publish([f'"{n}"' for n in range(600)])  # more than one batch
        for n in range(600):
            assert await conn.read_message() == f'"{n}"'
        assert site.services.close_stalled(time.monotonic() + WRITE_TIMEOUT + 1) == 0


# -- finding 5 of the red team: nested JSON -----------------------------------------------------


async def test_deeply_nested_json_is_a_400_not_a_500(caplog):
    async with serving() as site:
        body = "[" * 30000 + "]" * 30000
        reply = await site.fetch("/login", "POST", body, {"Content-Type": "application/json"})
        assert reply.code == 400
        assert not [r for r in caplog.records if r.levelname == "ERROR"]


# -- red team a8: LoadGrains floods ------------------------------------------------------------


class GrainsFleet:
    """A Fleet whose reads are counted; ``block`` holds every default-executor worker."""

    data_cache = True

    def __init__(self) -> None:
        self.loads: list[list[str]] = []

    def load_grains(self, mids: dict[str, Any]) -> dict[str, Any]:
        self.loads.append(sorted(mids))
        time.sleep(0.002)
        return {mid: {"os": "x"} for mid in mids}

    def resolve(self, targets: Any) -> dict[str, set[str]]:
        return {target: {"m1"} for target in targets}


class ListAuth:
    async def run(self, func: Any, *args: Any) -> Any:
        return func(*args)

    def auth_list(self, session: Any) -> list[Any]:
        return [{"m1": [".*"]}]


def grains_engine() -> tuple[Engine, GrainsFleet]:
    engine = Engine(opts={}, config=parse({"disable_ssl": True}))
    fleet = GrainsFleet()
    engine.fleet = fleet  # type: ignore[assignment]
    engine.view.seed({"m1": {}, "m2": {}}, accepted=["m1", "m2"])
    return engine, fleet


async def test_refresh_floods_run_one_grains_loader_reading_each_id_at_most_once_a_second():
    engine, fleet = grains_engine()
    started = time.monotonic()
    for n in range(3000):
        engine.consume([("minion/refresh/m1", {}), ("minion/refresh/m2", {})])
        if n % 100 == 0:
            await asyncio.sleep(0)
            assert len(engine._tasks) <= 1  # was one task per drain
    await until(lambda: not engine._tasks, 5.0)
    seconds = time.monotonic() - started
    assert len(fleet.loads) <= 2 * (int(seconds) + 2)  # was one load per event
    assert fleet.loads[0] == ["m1", "m2"]  # ids coalesced into one read
    assert engine.status()["grains"]["loads"] == len(fleet.loads)


async def test_a_busy_default_executor_does_not_delay_admission():
    engine, _ = grains_engine()
    engine.auth = ListAuth()  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(pool)
    gate = threading.Event()
    blocked = loop.run_in_executor(None, gate.wait, 10.0)  # reseed, presence, key reloads ...
    try:
        perms = await asyncio.wait_for(engine.admit({"name": "bob", "eauth": "pam"}), 2.0)
        assert perms is not None
    finally:
        gate.set()
        await blocked


# -- red team f1, f2: HTTP connection slots ----------------------------------------------------


async def raw_from(site: Any, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", site.port, local_addr=(address, 0))


async def test_when_http_is_full_the_oldest_connection_waiting_for_headers_makes_room():
    async with serving(max_http_connections=4, max_http_connections_per_address=8) as site:
        held = []
        for _ in range(4):
            reader, writer = await raw_from(site, "127.0.0.2")
            writer.write(b"GET / HTTP/1.1\r\nHo")  # slowloris
            held.append((reader, writer))
            await asyncio.sleep(0.02)
        await until(lambda: site.services.stats()["open"]["http_connections"] == 4)
        assert (await site.post_json("/login", ALICE)).code == 200  # was closed at once
        conn = await site.connect(GOOD_TOKEN)
        assert conn is not None
        assert await closed_after(held[0][0], 1.0) < 1.0  # the oldest waiting one went
        assert refusals(site)["max_http_connections_evicted"] >= 1
        for _, writer in held:
            writer.close()


async def test_when_http_is_full_the_oldest_connection_dribbling_a_body_makes_room():
    # red team b2: bodies dribbled to POST /login held every slot for http_timeout each
    async with serving(max_http_connections=4, max_http_connections_per_address=8) as site:
        held = []
        for _ in range(4):
            reader, writer = await raw_from(site, "127.0.0.2")
            writer.write(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 60000\r\n\r\n{"
            )
            held.append((reader, writer))
            await asyncio.sleep(0.02)
        await until(lambda: site.services.stats()["open"]["http_connections"] == 4)
        await asyncio.sleep(0.05)  # every body has begun
        conn = await site.connect(GOOD_TOKEN)  # was refused: no slot was evictable
        assert conn is not None
        assert await closed_after(held[0][0], 1.0) < 1.0  # the oldest undispatched one went
        for reader, _ in held[1:]:
            assert await stays_open(reader, 0.05)
        assert refusals(site)["max_http_connections_evicted"] == 1
        assert refusals(site)["max_http_connections"] == 0
        for _, writer in held:
            writer.close()


async def test_an_address_at_its_own_cap_evicts_nobody_when_http_is_full():
    async with serving(max_http_connections=4, max_http_connections_per_address=2) as site:
        held = []
        for address in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
            reader, writer = await raw_from(site, address)
            writer.write(b"GET / HTTP/1.1\r\nHo")
            held.append((reader, writer))
            await asyncio.sleep(0.02)
        await until(lambda: site.services.stats()["open"]["http_connections"] == 4)
        reader, writer = await raw_from(site, "127.0.0.3")
        assert await closed_after(reader, 1.0) < 0.5
        assert refusals(site)["max_http_connections_evicted"] == 0  # was 1: 127.0.0.2's oldest
        assert refusals(site)["max_http_connections"] == 1
        for r, w in held:
            assert await stays_open(r, 0.05)
            w.close()
        writer.close()


async def test_when_http_is_full_of_requests_in_flight_a_newcomer_is_refused():
    async with serving(auth=Auth(delay=1.0), max_http_connections=2) as site:
        held = [await raw(site) for _ in range(2)]
        body = json.dumps(ALICE).encode()
        for _, writer in held:  # complete requests, handled by a slow eauth backend
            writer.write(
                b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        await asyncio.sleep(0.1)
        reader, writer = await raw(site)
        assert await closed_after(reader, 1.0) < 0.5
        assert refusals(site)["max_http_connections"] == 1
        for r, w in held:
            assert await stays_open(r, 0.05)
            w.close()
        writer.close()


async def test_a_response_nobody_reads_is_timed_out():
    async with serving(http_timeout=0.5) as site:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", site.port))
        requests = b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        sent, started = 0, time.monotonic()
        while time.monotonic() - started < 2.0:  # until the server's send buffer is full
            try:
                sent += sock.send(requests[sent % len(requests) :])
            except BlockingIOError:
                await asyncio.sleep(0.05)
            except OSError:
                break  # closed by the server
        await until(lambda: refusals(site)["http_write_timeout"] == 1, 4.0)
        assert site.services.stats()["open"]["http_connections"] == 0
        sock.close()
