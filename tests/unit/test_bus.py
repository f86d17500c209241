"""The path from the bus thread to the clients' queues.

salt_ws.bus.Handoff: ordered, coalescing, thread-safe handover to the engine loop.
salt_ws.engine.Engine.consume: one encode per event, published on ALL_EVENTS in bus order,
with the bus link's edges turned into notices.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
from typing import Any, Callable

import pytest
import salt.auth
import salt.utils.event

import salt_ws.engine
from salt_ws import wire
from salt_ws.bus import Handoff, LinkChange
from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.hub import Channel
from tests.unit.conftest import Client


class ManualLoop:
    """Stands in for ``loop.call_soon_threadsafe``: records callbacks, runs them when told."""

    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)

    def run_once(self) -> None:
        pending, self.scheduled = self.scheduled, []
        for callback in pending:
            callback()


class Consumer:
    """Records the batches a Handoff delivers."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __call__(self, items: list[Any]) -> None:
        self.batches.append(items)

    @property
    def items(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]


@pytest.fixture
def loop() -> ManualLoop:
    return ManualLoop()


@pytest.fixture
def consumer() -> Consumer:
    return Consumer()


@pytest.fixture
def handoff(loop: ManualLoop, consumer: Consumer) -> Handoff:
    return Handoff(loop.call_soon_threadsafe, consumer)


# -- Handoff -----------------------------------------------------------------------------------


def test_the_first_put_schedules_one_drain(handoff, loop, consumer):
    handoff.put(("tag", {}))
    assert loop.scheduled == [handoff.drain]
    assert consumer.batches == []  # nothing is consumed on the bus thread


def test_a_burst_costs_one_wakeup(handoff, loop, consumer):
    for n in range(100):
        handoff.put(("tag", n))
    assert len(loop.scheduled) == 1
    loop.run_once()
    assert consumer.batches == [[("tag", n) for n in range(100)]]


def test_a_drain_rearms_scheduling(handoff, loop, consumer):
    handoff.put(("a", 1))
    loop.run_once()
    handoff.put(("b", 2))
    handoff.put(("c", 3))
    assert len(loop.scheduled) == 1
    loop.run_once()
    assert consumer.batches == [[("a", 1)], [("b", 2), ("c", 3)]]


def test_order_is_preserved_across_puts_and_drains(handoff, loop, consumer):
    expected = []
    for burst in range(5):
        for n in range(burst + 1):
            item = (f"salt/job/{burst}/{n}", {"n": n})
            expected.append(item)
            handoff.put(item)
        loop.run_once()
    assert consumer.items == expected


def test_a_spurious_drain_consumes_nothing(handoff, consumer):
    handoff.drain()
    assert consumer.batches == []
    assert handoff.received == 0


def test_a_put_while_consuming_is_delivered_by_the_next_drain(loop):
    batches = []

    def consume(items):
        batches.append(items)
        if items == ["first"]:
            handoff.put("second")

    handoff = Handoff(loop.call_soon_threadsafe, consume)
    handoff.put("first")
    loop.run_once()
    assert loop.scheduled == [handoff.drain]
    loop.run_once()
    assert batches == [["first"], ["second"]]


def test_link_changes_pass_through_in_order(handoff, loop, consumer):
    lost, back = LinkChange(False, 10.0), LinkChange(True, 12.5)
    stream = [("e1", {}), lost, ("e2", {}), back, ("e3", {})]
    for item in stream:
        handoff.put(item)
    loop.run_once()
    assert consumer.batches == [stream]
    assert consumer.items[1] is lost
    assert consumer.items[3] is back


def test_counters(handoff, loop):
    for n in range(3):
        handoff.put(n)
    loop.run_once()
    handoff.put(3)
    loop.run_once()
    assert handoff.received == 4
    assert handoff.backlog_high_water == 3


def test_link_change_repr():
    assert repr(LinkChange(False, 1.5)) == "LinkChange(up=False, at=1.5)"


def test_concurrent_producers_lose_nothing_on_a_real_loop():
    producers, per_producer = 8, 2000
    total = producers * per_producer

    async def main() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        received: list[Any] = []
        done = asyncio.Event()
        schedules = 0

        def schedule(callback):
            nonlocal schedules
            schedules += 1
            loop.call_soon_threadsafe(callback)

        def consume(items):
            received.extend(items)
            if len(received) >= total:
                done.set()

        handoff = Handoff(schedule, consume)
        start = threading.Barrier(producers)

        def produce(producer: int) -> None:
            start.wait()
            for seq in range(per_producer):
                handoff.put((producer, seq))

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for thread in threads:
            thread.start()
        await asyncio.wait_for(done.wait(), 10)
        for thread in threads:
            thread.join()
        assert handoff.received == total
        return received, schedules

    received, schedules = asyncio.run(main())
    assert len(received) == total
    for producer in range(producers):
        assert [seq for p, seq in received if p == producer] == list(range(per_producer))
    assert schedules < total  # bursts were coalesced


# -- Engine.consume ----------------------------------------------------------------------------


class FakeFleet:
    """Stands in for salt_ws.fleet.Fleet (the master's keys, cache and presence)."""

    def __init__(self, opts: Any) -> None:
        self.data_cache = True
        self.seeds = 0

    def seed(self) -> dict[str, Any]:
        self.seeds += 1
        return {}

    def load_grains(self, mids: Any) -> dict[str, Any]:
        return dict.fromkeys(mids)

    def connected(self) -> set[str]:
        return set()


@pytest.fixture
def fleets() -> list[FakeFleet]:
    """Every Fleet the engine creates."""
    return []


@pytest.fixture
def engine(monkeypatch, fleets) -> Engine:
    """An Engine that must not touch Salt or the network to consume events."""

    def fleet(opts: Any) -> FakeFleet:
        fleets.append(FakeFleet(opts))
        return fleets[-1]

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Engine.consume must not do any I/O")

    monkeypatch.setattr(salt.utils.event, "get_master_event", no_io)
    monkeypatch.setattr(salt.auth, "LoadAuth", no_io)
    for name in ("BusReader", "StatusServer", "Authenticator"):
        monkeypatch.setattr(salt_ws.engine, name, no_io)
    monkeypatch.setattr(salt_ws.engine, "Fleet", fleet)
    return Engine(opts={}, config=parse({"disable_ssl": True}))


def consume_on_a_loop(engine: Engine, fleets: list[FakeFleet], *batches: list[Any]) -> None:
    """Consume on a running loop, as the engine does; wait for the reseeds a restore starts."""

    async def main() -> None:
        restores = 0
        for items in batches:
            engine.consume(items)
            restores += sum(isinstance(i, LinkChange) and i.up for i in items)
        while sum(fleet.seeds for fleet in fleets) < restores:
            await asyncio.sleep(0.005)

    asyncio.run(asyncio.wait_for(main(), 5))


def test_events_are_encoded_and_published_in_bus_order(engine):
    client = Client(engine)
    events = [
        ("salt/job/1/new", {"fun": "test.ping", "minions": ["m1"]}),
        ("salt/job/1/ret/m1", {"return": True, "id": "m1"}),
        ("salt/auth", {"act": "accept", "id": "m2"}),
    ]
    engine.consume(events)
    assert client.received() == [wire.encode_event(tag, data) for tag, data in events]
    assert engine.counters.events_received == 3


RECORDED = pathlib.Path(__file__).parent.parent / "files" / "events-salt-3008.4.json"


@pytest.mark.skipif(not RECORDED.is_file(), reason="no recorded events")
def test_recorded_master_events_reach_a_client_unchanged_and_in_order(engine):
    recorded = [tuple(event) for event in json.loads(RECORDED.read_text())]
    client = Client(engine)
    handoff = Handoff(lambda drain: drain(), engine.consume)  # drain at once, one per event
    for tag, data in recorded:
        handoff.put((tag, data))
    assert [tuple(json.loads(m).values()) for m in client.received()] == recorded


def test_raw_event_frames_go_to_all_events_only(engine):
    formatted = Client(engine, channel=Channel.FORMATTED_EVENTS)
    engine.consume([("salt/job/1/new", {"jid": "1"}), ("custom/tag", {"x": 1})])
    for message in formatted.received():  # the formatted view's tables, if anything
        assert set(json.loads(message)) != {"tag", "data"}


def test_each_event_is_encoded_once_for_all_clients(engine):
    first, second = Client(engine), Client(engine)
    engine.consume([("salt/job/1/new", {"jid": "1"})])
    [a], [b] = first.received(), second.received()
    assert a is b


def test_odd_payloads_do_not_break_the_batch(engine):
    client = Client(engine)
    engine.consume([("a", {"b": b"\xff"}), ("b", {1: {2}}), ("c", float("nan"))])
    assert [json.loads(m) for m in client.received()] == [
        {"tag": "a", "data": {"b": "\\xff"}},
        {"tag": "b", "data": {"1": [2]}},
        {"tag": "c", "data": "nan"},
    ]


def test_consecutive_batches_keep_order(engine):
    client = Client(engine)
    for n in range(3):
        engine.consume([(f"t/{n}/a", {}), (f"t/{n}/b", {})])
    assert [json.loads(m)["tag"] for m in client.received()] == [
        "t/0/a",
        "t/0/b",
        "t/1/a",
        "t/1/b",
        "t/2/a",
        "t/2/b",
    ]


LOST_AT = 1700000000.25  # 2023-11-14T22:13:20.25Z
BACK_AT = 1700000003.5


def test_a_lost_link_becomes_a_gap_notice(engine):
    client = Client(engine)
    engine.consume([LinkChange(False, LOST_AT)])
    [notice] = [json.loads(m) for m in client.received()]
    assert notice["tag"] == "salt_ws/bus/lost"
    assert notice["data"]["missed"] is True
    assert notice["data"]["_stamp"] == "2023-11-14T22:13:20.250000+00:00"
    assert "reason" in notice["data"]


def test_a_restored_link_says_since_when_events_were_missed(engine, fleets):
    client = Client(engine)
    consume_on_a_loop(engine, fleets, [LinkChange(False, LOST_AT)], [LinkChange(True, BACK_AT)])
    lost, restored = [json.loads(m) for m in client.received()]
    assert restored["tag"] == "salt_ws/bus/restored"
    assert restored["data"]["missed"] is True
    assert restored["data"]["down_since"] == lost["data"]["_stamp"]
    assert restored["data"]["_stamp"] == "2023-11-14T22:13:23.500000+00:00"
    assert engine.counters.bus_reconnects == 1


def test_a_restored_link_without_a_known_loss_has_no_down_since(engine, fleets):
    client = Client(engine)
    consume_on_a_loop(engine, fleets, [LinkChange(True, BACK_AT)])
    [restored] = [json.loads(m) for m in client.received()]
    assert restored["data"]["down_since"] is None
    assert restored["data"]["missed"] is True


def test_down_since_is_not_reused_by_a_later_restore(engine, fleets):
    client = Client(engine)
    consume_on_a_loop(
        engine,
        fleets,
        [LinkChange(False, LOST_AT), LinkChange(True, BACK_AT)],
        [LinkChange(True, BACK_AT + 1)],
    )
    *_, late = [json.loads(m) for m in client.received()]
    assert late["data"]["down_since"] is None


def test_notices_stay_in_place_among_events(engine, fleets):
    client = Client(engine)
    consume_on_a_loop(
        engine,
        fleets,
        [("before", {}), LinkChange(False, LOST_AT), LinkChange(True, BACK_AT), ("after", {})],
    )
    assert [json.loads(m)["tag"] for m in client.received()] == [
        "before",
        "salt_ws/bus/lost",
        "salt_ws/bus/restored",
        "after",
    ]


def test_a_restored_link_reloads_the_fleet(engine, fleets):
    consume_on_a_loop(engine, fleets, [LinkChange(False, LOST_AT), LinkChange(True, BACK_AT)])
    assert [fleet.seeds for fleet in fleets] == [1]


def test_handoff_feeds_engine_consume(engine, loop):
    client = Client(engine)
    handoff = Handoff(loop.call_soon_threadsafe, engine.consume)
    handoff.put(("salt/job/9/new", {"jid": "9"}))
    handoff.put(LinkChange(False, LOST_AT))
    assert client.received() == []
    loop.run_once()
    assert [json.loads(m)["tag"] for m in client.received()] == [
        "salt/job/9/new",
        "salt_ws/bus/lost",
    ]


def test_one_pathological_event_does_not_lose_its_neighbours(engine):
    client = Client(engine)
    deep: Any = b"\xff"
    for _ in range(600):
        deep = [deep]
    engine.consume([("a", {}), ("deep", deep), ("b", {})])
    tags = [json.loads(m)["tag"] for m in client.received()]
    assert tags == ["a", "deep", "b"]
