"""The path from the bus thread to the clients' queues.

salt_ws.bus.Handoff: ordered, coalescing, thread-safe handover to the engine loop.
salt_ws.engine.Engine.consume: one encode per event, published on ALL_EVENTS in bus order,
with the bus link's edges turned into notices.
salt_ws.bus.Link: the bus link's state machine (probes, back-off, log throttling), pure.
salt_ws.bus.BusReader: what the bus thread does with one raw event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import pathlib
import threading
from typing import Any, Callable

import pytest
import salt.auth
import salt.utils.event

import salt_ws.engine
from salt_ws import wire
from salt_ws.bus import (
    PROBE_PREFIX,
    BusReader,
    Dropped,
    Handoff,
    Link,
    LinkChange,
    LinkState,
)
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
            restores += sum(
                isinstance(i, Dropped) or (isinstance(i, LinkChange) and i.up) for i in items
            )
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
    assert engine.stream.bus_reconnects == 1


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


# -- Handoff: bounded in bytes (issue 9, finding 8) --------------------------------------------


def bounded(loop: ManualLoop, consumer: Consumer, max_bytes: int = 100) -> Handoff:
    return Handoff(loop.call_soon_threadsafe, consumer, max_bytes)


def test_handoff_beyond_its_bytes_drops_and_leaves_one_marker(loop, consumer):
    handoff = bounded(loop, consumer)
    assert handoff.put(("e1", {}), 60, now=10.0) is True
    assert handoff.put(("e2", {}), 60, now=11.0) is False
    assert handoff.put(("e3", {}), 10, now=12.0) is False  # dropping lasts until the next drain
    assert handoff.reject(5, now=13.0) is True  # the reader's check before unpacking
    loop.run_once()
    [e1, marker] = consumer.items
    assert e1 == ("e1", {})
    assert isinstance(marker, Dropped)
    assert (marker.at, marker.until, marker.events, marker.bytes) == (11.0, 13.0, 3, 75)
    stats = handoff.stats()
    assert (stats["dropped_events"], stats["dropped_bytes"], stats["gaps"]) == (3, 75, 1)
    assert stats["limit_bytes"] == 100
    assert stats["bytes_high_water"] == 60
    assert stats["bytes"] == 0


def test_handoff_accepts_again_after_a_drain_and_a_new_episode_gets_its_own_marker(loop, consumer):
    handoff = bounded(loop, consumer)
    handoff.put("a", 90, now=1.0)
    handoff.put("b", 90, now=2.0)
    loop.run_once()
    assert handoff.put("c", 90, now=3.0) is True
    assert handoff.reject(90, now=4.0) is True
    loop.run_once()
    first, second = (i for i in consumer.items if isinstance(i, Dropped))
    assert (first.events, second.events) == (1, 1)
    assert [i for i in consumer.items if isinstance(i, str)] == ["a", "c"]
    assert handoff.stats()["gaps"] == 2


def test_one_event_larger_than_the_bound_is_admitted_into_an_empty_handoff(loop, consumer):
    handoff = bounded(loop, consumer)
    assert handoff.put("huge", 500) is True
    assert handoff.put("next", 1) is False
    loop.run_once()
    assert consumer.items[0] == "huge"


def test_markers_are_never_dropped(loop, consumer):
    handoff = bounded(loop, consumer)
    handoff.put("a", 100)
    lost = LinkChange(False, 1.0)
    assert handoff.put(lost) is True
    loop.run_once()
    assert consumer.items == ["a", lost]


def test_a_drop_on_an_idle_handoff_schedules_the_marker(loop, consumer):
    handoff = bounded(loop, consumer)
    handoff.put("a", 100)
    loop.run_once()
    handoff.put("b", 100)
    assert handoff.reject(1, now=5.0) is True
    assert len(loop.scheduled) == 1
    loop.run_once()
    assert isinstance(consumer.items[-1], Dropped)


def test_a_dropped_episode_becomes_one_notice_for_every_audience(engine, fleets):
    admin, limited = Client(engine), Client(engine, audience="limited-user")
    marker = Dropped(LOST_AT)
    marker.add(2048, LOST_AT)
    marker.add(1024, BACK_AT)
    consume_on_a_loop(engine, fleets, [("before", {}), marker, ("after", {})])
    tags = [json.loads(m)["tag"] for m in admin.received()]
    assert tags == ["before", wire.DROPPED_TAG, "after"]
    [notice] = [json.loads(m) for m in limited.received()]
    assert notice["tag"] == "salt_ws/bus/dropped"
    data = notice["data"]
    assert data["missed"] is True
    assert (data["dropped"], data["dropped_bytes"]) == (2, 3072)
    assert data["down_since"] == "2023-11-14T22:13:20.250000+00:00"
    assert data["_stamp"] == "2023-11-14T22:13:23.500000+00:00"
    assert "bus_queue_bytes" in data["reason"]
    assert [fleet.seeds for fleet in fleets] == [1]  # the view may have missed changes


# -- Handoff: drained in chunks capped in raw bytes (red team b1) -------------------------------

MiB = 2**20


def run_all(loop: ManualLoop) -> int:
    """Run drains until none is scheduled; how many rounds it took."""
    rounds = 0
    while loop.scheduled:
        loop.run_once()
        rounds += 1
    return rounds


def test_a_large_backlog_is_drained_in_chunks_of_at_most_4_mib_giving_the_loop_control_between(
    loop, consumer
):
    handoff = Handoff(loop.call_soon_threadsafe, consumer, 64 * MiB)
    for n in range(10):
        handoff.put(f"e{n}", MiB)
    loop.run_once()
    assert consumer.batches == [["e0", "e1", "e2", "e3"]]  # was all ten in one call
    assert loop.scheduled == [handoff.drain]  # the rest: through the same schedule, later
    assert handoff.bytes == 6 * MiB
    assert run_all(loop) == 2
    assert [len(batch) for batch in consumer.batches] == [4, 4, 2]
    assert consumer.items == [f"e{n}" for n in range(10)]
    assert handoff.bytes == 0
    assert handoff.received == 10
    assert handoff.backlog_high_water == 10


def test_a_chunk_takes_at_least_one_item_however_large(loop, consumer):
    handoff = Handoff(loop.call_soon_threadsafe, consumer, 64 * MiB)
    handoff.put("huge", 9 * MiB)
    handoff.put("next", MiB)
    loop.run_once()
    assert consumer.batches == [["huge"]]
    assert handoff.bytes == MiB
    run_all(loop)
    assert consumer.batches == [["huge"], ["next"]]


def test_items_not_yet_drained_stay_ahead_of_newly_put_ones(loop, consumer):
    handoff = Handoff(loop.call_soon_threadsafe, consumer, 64 * MiB)
    for n in range(6):
        handoff.put(f"e{n}", MiB)
    loop.run_once()
    handoff.put("late", 10)
    lost = LinkChange(False, 1.0)
    handoff.put(lost)
    assert loop.scheduled == [handoff.drain]  # no second drain is scheduled
    run_all(loop)
    assert consumer.items == [f"e{n}" for n in range(6)] + ["late", lost]
    assert handoff.bytes == 0


def test_dropping_lasts_until_the_marker_itself_is_drained(loop, consumer):
    handoff = Handoff(loop.call_soon_threadsafe, consumer, 10 * MiB)
    for n in range(10):
        assert handoff.put(f"e{n}", MiB, now=1.0)
    assert handoff.put("x1", MiB, now=2.0) is False
    loop.run_once()  # e0..e3: 6 MiB held, the marker not yet taken
    assert handoff.bytes == 6 * MiB
    assert handoff.put("x2", MiB, now=3.0) is False  # still dropping
    assert handoff.reject(10, now=4.0) is True
    loop.run_once()  # e4..e7
    assert handoff.put("x3", MiB, now=5.0) is False
    loop.run_once()  # e8, e9 and the marker: caught up
    [marker] = [i for i in consumer.items if isinstance(i, Dropped)]
    assert consumer.items[-1] is marker
    assert (marker.at, marker.until, marker.events, marker.bytes) == (2.0, 5.0, 4, 3 * MiB + 10)
    assert handoff.bytes == 0
    assert handoff.put("after", MiB, now=6.0) is True  # accepting again
    run_all(loop)
    assert consumer.items[-1] == "after"
    stats = handoff.stats()
    assert (stats["dropped_events"], stats["gaps"], stats["bytes"]) == (4, 1, 0)


def test_a_marker_not_reached_by_a_partial_drain_still_counts_new_drops(loop, consumer):
    handoff = Handoff(loop.call_soon_threadsafe, consumer, 5 * MiB)
    for n in range(5):
        handoff.put(f"e{n}", MiB, now=1.0)
    assert handoff.reject(MiB, now=2.0) is True
    loop.run_once()  # e0..e3; e4 and the marker remain
    assert handoff.reject(1, now=3.0) is True  # 1 MiB held, but the episode is not over
    loop.run_once()
    markers = [i for i in consumer.items if isinstance(i, Dropped)]
    assert len(markers) == 1 and markers[0].events == 2
    assert handoff.reject(1, now=4.0) is False


def test_events_wait_raw_and_are_unpacked_one_chunk_at_a_time():
    r = Reader(max_bytes=64 * MiB)
    raws = [f"t{n}\n\n".encode() + b"x" * (3 * MiB) for n in range(3)]
    for n, raw in enumerate(raws):
        r.receive(raw, float(n))
    r.loop.run_once()
    assert r.unpacked == raws[:1]  # was all three at once
    assert [tag for tag, _ in r.consumer.items] == ["t0"]
    run_all(r.loop)
    assert r.unpacked == raws
    assert [tag for tag, _ in r.consumer.items] == ["t0", "t1", "t2"]


# -- Link: the bus link's state machine (issue 9, finding 11) ----------------------------------


def nonces() -> Callable[[], str]:
    counter = iter(range(1, 1_000_000))
    return lambda: f"n{next(counter)}"


def warnings(actions_list) -> list[str]:
    return [msg for acts in actions_list for level, msg, _ in acts.logs if level >= logging.WARNING]


def started_link(now: float = 0.0) -> Link:
    """A link whose first probe came back at ``now``."""
    link = Link(now, nonce=nonces())
    [probe] = link.subscribed(now).probes
    assert link.is_probe(probe)
    link.delivered(now)
    assert link.state is LinkState.UP
    return link


def test_a_first_answered_probe_brings_the_link_up_quietly():
    link = Link(0.0, nonce=nonces())
    assert link.state is LinkState.STARTING
    assert not link.connected
    acts = link.subscribed(0.0)
    [probe] = acts.probes
    assert probe == PROBE_PREFIX + "n1"
    up = link.delivered(0.01)
    assert link.connected
    assert up.notices == [] and warnings([acts, up]) == []
    assert link.wake_at() is None  # nothing to time while up


def test_probe_tags_are_the_engines_own_nonces_only():
    link = Link(0.0)
    [probe] = link.subscribed(0.0).probes
    nonce = probe[len(PROBE_PREFIX) :]
    assert len(nonce) >= 22  # 128 random bits, urlsafe
    assert not link.is_probe(PROBE_PREFIX + "guessed")
    assert not link.is_probe("salt_ws/bus/lost")
    assert link.is_probe(probe)
    assert not link.is_probe(probe)  # hidden once; a replay is an ordinary event


def test_nothing_from_a_dead_publisher_at_start_is_one_lost_after_the_grace():
    link = Link(0.0, nonce=nonces())
    acts = [link.subscribed(0.0)]
    acts += [link.tick(t / 4) for t in range(1, 40)]  # 10 s
    notices = [n for a in acts for n in a.notices]
    assert [(n.up, n.at) for n in notices] == [(False, 5.0)]
    assert len(warnings(acts)) == 1
    assert link.state is LinkState.DOWN


def test_a_discarded_engine_is_told_lost_then_restored_within_two_seconds():
    link = started_link(0.0)
    lost = link.dropped(100.0)
    assert [(n.up, n.at) for n in lost.notices] == [(False, 100.0)]
    assert not link.connected
    again = link.subscribed(100.05)  # Salt's client reconnects at once
    assert len(again.probes) == 1
    assert link.is_probe(again.probes[0])
    back = link.delivered(100.06)
    assert [(n.up, n.at) for n in back.notices] == [(True, 100.06)]
    assert link.connected
    assert len(warnings([lost, again, back])) == 2  # lost, then delivering again


def test_any_event_proves_delivery():
    link = started_link(0.0)
    link.dropped(10.0)
    back = link.delivered(10.5)  # an ordinary event came through before the probe
    assert [n.up for n in back.notices] == [True]
    assert link.delivered(10.6).notices == []


def flap(link: Link, start: float, seconds: float):
    """A publisher restarted every second that accepts and closes at once (Salt 3008.4).

    Timers run exactly when the link asks (``wake_at``), as the reader does.
    Returns every Actions and the (time, tag) of every probe.
    """
    actions, probes = [], []
    next_flap, now, end = float(int(start) + 1), start, start + seconds
    while now < end:
        wake = link.wake_at()
        if wake is not None and wake < next_flap:
            now = wake
            steps = [(now, link.tick(now))]
        else:
            now, next_flap = next_flap, next_flap + 1
            steps = [
                (now + 0.001, link.subscribed(now + 0.001)),
                (now + 0.002, link.dropped(now + 0.002)),
            ]
        for at, acts in steps:
            actions.append(acts)
            probes += [(at, tag) for tag in acts.probes]
    return actions, probes


def test_a_dead_publisher_gives_one_lost_no_restored_and_backs_off_to_30s():
    link = started_link(0.0)
    actions = [link.dropped(1.0)]
    more, probes = flap(link, 1.0, 1900)  # over half an hour
    actions += more
    notices = [n for a in actions for n in a.notices]
    assert [n.up for n in notices] == [False]
    assert link.state is LinkState.DOWN
    times = [t for t, _ in probes]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert gaps[:5] == [1, 2, 4, 8, 16]
    assert set(gaps[5:]) == {30}
    assert len(probes) < 1900 / 25  # not one a second
    # the log: once, then a reminder every 10 minutes; nothing else above DEBUG
    assert len(warnings(actions)) == 1 + 3
    assert link.stats()["probes_sent"] == len(probes) + 1


def test_after_a_long_outage_a_returning_publisher_is_restored_once():
    link = started_link(0.0)
    actions = [link.dropped(1.0)]
    more, probes = flap(link, 1.0, 120)
    actions += more
    assert link.subscribed(130.0).probes == []  # a reconnect while down keeps the back-off
    assert link.is_probe(probes[-3][1])  # a late answer to an earlier probe counts too
    back = link.delivered(130.01)
    assert [n.up for n in back.notices] == [True]
    assert link.stats()["down_since"] is None
    # the next outage starts the back-off afresh, with an immediate probe on reconnect
    link.dropped(200.0)
    assert len(link.subscribed(200.01).probes) == 1


def test_a_failed_subscription_is_lost_at_once_and_probes_on_the_next_one():
    link = Link(0.0, nonce=nonces())
    failed = link.failed(0.5)
    assert [n.up for n in failed.notices] == [False]
    assert link.failed(1.5).notices == []  # said once
    assert len(link.subscribed(3.0).probes) == 1
    assert [n.up for n in link.delivered(3.01).notices] == [True]


def test_wake_at_is_the_next_timer():
    link = Link(0.0, nonce=nonces())
    link.subscribed(0.0)
    assert link.wake_at() == 1.0  # the next probe, before the 5 s grace
    link.tick(1.0)
    assert link.wake_at() == 3.0


def test_link_stats():
    link = started_link(0.0)
    link.dropped(5.0)
    stats = link.stats()
    assert stats["state"] == "down"
    assert stats["down_since"] == 5.0
    assert stats["outages"] == 1
    assert stats["probes_sent"] == 1
    assert stats["probes_answered"] == 1


# -- BusReader: one raw event on the bus thread --------------------------------------------------


class Reader:
    """A BusReader that is never started, fed raw events by hand."""

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.loop, self.consumer = ManualLoop(), Consumer()
        self.handoff = Handoff(self.loop.call_soon_threadsafe, self.consumer, max_bytes)
        self.reader = BusReader({}, self.handoff)
        self.fired: list[str] = []
        self.reader._launch = self.fired.append
        self.unpacked: list[bytes] = []

    def unpack(self, raw: bytes) -> tuple[str, Any]:
        self.unpacked.append(raw)
        tag, _, data = raw.decode().partition("\n\n")
        return tag, {"d": data}

    def receive(self, raw: bytes, now: float) -> None:
        self.reader._receive(raw, self.unpack, now)

    def items(self) -> list[Any]:
        self.loop.run_once()
        return self.consumer.items


def test_the_engines_own_probe_is_hidden_and_others_pass():
    r = Reader()
    r.reader._apply(r.reader.link.subscribed(0.0))
    [probe] = r.fired
    r.receive(f"{probe}\n\n".encode(), 0.01)
    r.receive(b"salt_ws/probe/forged\n\nx", 0.02)
    r.receive(b"salt/job/1/new\n\ny", 0.03)
    assert r.reader.connected
    assert r.items() == [("salt_ws/probe/forged", {"d": "x"}), ("salt/job/1/new", {"d": "y"})]


def test_events_beyond_the_bus_bound_are_dropped_before_unpacking():
    r = Reader(max_bytes=1 << 20)
    big = b"t\n\n" + b"x" * (1 << 20)
    r.receive(big, 1.0)
    r.receive(b"small\n\n1", 2.0)
    assert r.unpacked == []  # events wait in their raw bytes, unpacked on the engine loop
    assert r.handoff.bytes == len(big)
    [first, marker] = r.items()
    assert r.unpacked == [big]  # the dropped one never was
    assert first[0] == "t"
    assert isinstance(marker, Dropped) and marker.bytes == len(b"small\n\n1")


def test_the_reader_reports_a_restore_before_the_event_that_proves_it():
    r = Reader()
    link = r.reader.link
    r.reader._apply(link.subscribed(0.0))
    r.receive(f"{r.fired[0]}\n\n".encode(), 0.01)
    r.reader._apply(link.dropped(5.0))
    r.receive(b"salt/job/2/new\n\n", 5.5)
    items = r.items()
    assert [type(i).__name__ for i in items] == ["LinkChange", "LinkChange", "tuple"]
    assert [i.up for i in items[:2]] == [False, True]
    assert r.reader.stats()["bus_dropped_events"] == 0


def test_an_event_that_cannot_be_unpacked_is_skipped_on_the_engine_loop():
    r = Reader()

    def broken(raw: bytes) -> tuple[str, Any]:
        if raw.startswith(b"bad"):
            raise ValueError("truncated payload")
        return r.unpack(raw)

    r.reader._receive(b"bad\n\n\x00", broken, 1.0)
    r.reader._receive(b"good\n\nz", broken, 1.1)
    assert r.items() == [("good", {"d": "z"})]
