"""Fan-out bounded in bytes, through real sockets (issue 9, finding 8).

A stalled client is cut with 4001 once its queue holds more than ``client_queue_bytes``; a
reading client is never cut by messages larger than that bound; frames are built once for
all clients through the byte-bounded cache the handlers share (``Services.frames``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from salt_ws import wire
from salt_ws.config import parse
from salt_ws.engine import Counters
from salt_ws.handlers import Services
from salt_ws.hub import Hub

from .harness import FakeAuthenticator, Site, serve_services

QUEUE_BYTES = 1 << 20  # 1 MiB: per-client bound in bytes
PAD = "x" * (256 * 1024)  # a quarter of it per message


@contextlib.asynccontextmanager
async def bounded(**options: Any) -> AsyncIterator[Site]:
    config = parse({"disable_ssl": True, "client_queue_bytes": QUEUE_BYTES, **options})
    hub = Hub(config.client_queue_size, config.client_queue_bytes)
    services = Services(config, hub, FakeAuthenticator(), Counters())
    async with serve_services(services) as site:
        yield site


async def test_a_stalled_client_is_cut_by_the_bytes_bound_and_told_so():
    async with bounded() as site:
        slow = await site.ready()
        reader = await site.ready()
        published = []
        for n in range(2000):  # the count bound (10000) is never reached
            message = wire.encode_event(f"load/{n}", {"n": n, "pad": PAD})
            site.publish([message])
            published.append(message)
            assert await reader.read_message() == message
            if site.hub.stats.clients_cut:
                break
        assert site.hub.stats.clients_cut == site.hub.stats.clients_cut_bytes == 1
        received = []
        while (message := await slow.read_message()) is not None:
            received.append(message)
        assert received == published[: len(received)]
        assert slow.close_code == wire.CLOSE_TOO_SLOW
        assert slow.close_reason == f"client too slow: more than {QUEUE_BYTES} bytes waiting"


async def test_a_reading_client_gets_tables_larger_than_its_bound():
    async with bounded() as site:
        conn = await site.ready()
        for n in range(5):
            table = wire.encode({"minions": {"pad": PAD * 6, "n": n}})  # 1.5 MiB
            site.publish([table])
            assert await conn.read_message() == table
        assert site.hub.stats.clients_cut == 0
        assert site.hub.stats.large_admitted == 5


async def test_frames_are_built_once_for_all_clients():
    async with bounded() as site:
        clients = [await site.ready() for _ in range(3)]
        published = [wire.encode_event(f"t/{n}", {"n": n}) for n in range(4)]
        site.publish(published)
        for conn in clients:
            assert [await conn.read_message() for _ in published] == published
        stats = site.services.frames.stats()
        assert stats["misses"] == 4
        assert stats["hits"] == 8


async def test_a_zero_frame_cache_still_delivers():
    async with bounded(frame_cache_bytes=0) as site:
        clients = [await site.ready() for _ in range(2)]
        published = [wire.encode_event("t", {"n": 1})]
        site.publish(published)
        for conn in clients:
            assert await conn.read_message() == published[0]
        assert site.services.frames.stats()["entries"] == 0
