"""salt_ws.hub: bounded per-client queues and the fan-out to them.

The policy under test: a client receives every message of its channel, in order, or it is
cut with CLOSE_TOO_SLOW once its queue bound would be exceeded. Nothing is dropped silently.
"""

from __future__ import annotations

import pytest

import salt_ws.hub
from salt_ws import wire
from salt_ws.hub import Bound, Channel, Hub, Outbox, size_of
from salt_ws.wire import CLOSE_TOO_SLOW


class Writer:
    """Stands in for a handler's writer: records the hub's ``wake`` and ``cut`` calls."""

    def __init__(self) -> None:
        self.wakes = 0
        self.cuts: list[tuple[int, str]] = []

    def wake(self) -> None:
        self.wakes += 1

    def cut(self, code: int, reason: str) -> None:
        self.cuts.append((code, reason))


def subscribe(hub: Hub, channel: Channel = Channel.ALL_EVENTS, initial=()):
    writer = Writer()
    return writer, hub.subscribe(channel, writer.wake, writer.cut, initial)


# -- Outbox ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1])
def test_outbox_needs_a_positive_limit(limit):
    with pytest.raises(ValueError):
        Outbox(limit)


def test_outbox_accepts_up_to_its_limit():
    box = Outbox(3)
    assert box.push(["a", "b"]) is True
    assert box.push(["c"]) is True
    assert len(box) == 3


@pytest.mark.parametrize(
    ("queued", "batch"),
    [(["a", "b", "c"], ["d"]), (["a"], ["b", "c", "d"]), ([], ["a", "b", "c", "d"])],
    ids=["full", "batch-too-big-for-room", "batch-bigger-than-limit"],
)
def test_outbox_refuses_a_push_that_would_exceed_the_limit_and_appends_nothing(queued, batch):
    box = Outbox(3)
    box.push(queued)
    assert box.push(batch) is False
    assert len(box) == len(queued)
    assert box.take(10) == queued


def test_outbox_is_first_in_first_out_across_pushes():
    box = Outbox(10)
    box.push(["1", "2"])
    box.push(["3"])
    box.push(["4", "5"])
    assert box.take(10) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(
    ("most", "taken", "left"),
    [
        (0, [], 3),
        (1, ["a"], 2),
        (2, ["a", "b"], 1),
        (3, ["a", "b", "c"], 0),
        (99, ["a", "b", "c"], 0),
    ],
    ids=["none", "one", "some", "exactly-all", "more-than-all"],
)
def test_outbox_take_returns_the_oldest(most, taken, left):
    box = Outbox(5)
    box.push(["a", "b", "c"])
    assert box.take(most) == taken
    assert len(box) == left


def test_outbox_take_from_empty_is_empty():
    assert Outbox(1).take(5) == []


def test_outbox_high_water_is_the_largest_size_reached():
    box = Outbox(4)
    assert box.high_water == 0
    box.push(["a", "b", "c"])
    box.take(3)
    box.push(["d"])
    assert box.high_water == 3
    box.push(["e", "f", "g", "h"])  # refused: would be 5
    assert box.high_water == 3


def test_outbox_clear_drops_everything():
    box = Outbox(3)
    box.push(["a", "b"])
    box.clear()
    assert len(box) == 0
    assert box.take(3) == []


# -- Hub: fan-out ------------------------------------------------------------------------------


def test_a_subscriber_gets_its_channel_in_order():
    hub = Hub(queue_limit=10)
    writer, sub = subscribe(hub)
    hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    hub.publish(Channel.ALL_EVENTS, ["e3"])
    assert sub.outbox.take(10) == ["e1", "e2", "e3"]
    assert writer.wakes == 2
    assert writer.cuts == []


def test_a_subscriber_gets_nothing_from_other_channels():
    hub = Hub(queue_limit=10)
    events_writer, events = subscribe(hub, Channel.ALL_EVENTS)
    formatted_writer, formatted = subscribe(hub, Channel.FORMATTED_EVENTS)
    hub.publish(Channel.FORMATTED_EVENTS, ["f1"])
    assert len(events.outbox) == 0
    assert events_writer.wakes == 0
    assert formatted.outbox.take(10) == ["f1"]
    assert formatted_writer.wakes == 1


def test_every_subscriber_shares_the_same_encoded_string():
    hub = Hub(queue_limit=10)
    subs = [subscribe(hub)[1] for _ in range(3)]
    message = "".join(["{", '"tag":"big"', "}"])  # a fresh object, not an interned literal
    hub.publish(Channel.ALL_EVENTS, [message])
    for sub in subs:
        [queued] = sub.outbox.take(1)
        assert queued is message


def test_publishing_nothing_wakes_nobody():
    hub = Hub(queue_limit=10)
    writer, _ = subscribe(hub)
    hub.publish(Channel.ALL_EVENTS, [])
    assert writer.wakes == 0
    assert hub.stats.messages_published == 0


def test_publishing_to_nobody_is_counted_but_queues_nothing():
    hub = Hub(queue_limit=10)
    hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    assert hub.stats.messages_published == 2
    assert hub.stats.messages_queued == 0


def test_subscriptions_have_distinct_ids():
    hub = Hub(queue_limit=10)
    ids = {subscribe(hub, channel)[1].id for channel in (*Channel, *Channel)}
    assert len(ids) == 4


def test_initial_messages_come_before_anything_published():
    hub = Hub(queue_limit=10)
    writer, sub = subscribe(hub, initial=["snapshot"])
    assert writer.wakes == 1
    hub.publish(Channel.ALL_EVENTS, ["e1"])
    assert sub.outbox.take(10) == ["snapshot", "e1"]


def test_initial_messages_beyond_the_bound_are_admitted_and_not_counted():
    # a resume replays up to history_size messages: the live stream behind them gets
    # the whole queue, and the replay stops counting as it is taken
    hub = Hub(queue_limit=2)
    writer, sub = subscribe(hub, initial=["s1", "s2", "s3"])
    assert writer.cuts == [] and sub.active
    hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    assert writer.cuts == []
    assert sub.outbox.take(2) == ["s1", "s2"]
    assert sub.outbox.credit == 1
    hub.publish(Channel.ALL_EVENTS, ["e3"])  # 3 live waiting: over the bound of 2
    assert writer.cuts == [(CLOSE_TOO_SLOW, "client too slow: more than 2 messages waiting")]


def test_initial_credit_counts_bytes_too():
    outbox = Outbox(limit=100, max_bytes=200)
    big = "x" * 400
    outbox.push_initial([big, big], [size_of(big), size_of(big)])
    assert outbox.refusal(1, 150) is None  # the replay's bytes are not counted
    assert outbox.push(["a"], [150])
    assert outbox.refusal(1, 100) is Bound.BYTES  # 150 live + 100 > 200
    outbox.take(1)
    assert outbox.credit == 1 and outbox.credit_bytes == size_of(big)
    outbox.take(2)
    assert outbox.credit == 0 and outbox.credit_bytes == 0 and outbox.bytes == 0


def test_initial_messages_only_into_an_empty_queue():
    outbox = Outbox(limit=10)
    outbox.push(["a"])
    with pytest.raises(ValueError):
        outbox.push_initial(["b"], [size_of("b")])


def test_publish_by_key_and_regroup():
    hub = Hub(queue_limit=10)
    a = hub.subscribe(Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key=("admin", "x"))
    b = hub.subscribe(Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key=("admin", "y"))
    assert hub.keys(Channel.ALL_EVENTS) == {("admin", "x"), ("admin", "y")}
    assert hub.audiences(Channel.ALL_EVENTS) == {"admin"}
    hub.publish(Channel.ALL_EVENTS, ["m1"], key=("admin", "x"))
    hub.regroup(b, ("admin", "x"))
    hub.publish(Channel.ALL_EVENTS, ["m2"], key=("admin", "x"))
    assert a.outbox.take(10) == ["m1", "m2"]
    assert b.outbox.take(10) == ["m2"]
    assert (a.pushed, b.pushed) == (2, 1)


# -- Hub: the slow-client policy ---------------------------------------------------------------


class Crowd:
    """A hub with queue_limit 3: one client that reads (fast) and one that does not (slow)."""

    def __init__(self) -> None:
        self.hub = Hub(queue_limit=3)
        self.slow_writer, self.slow = subscribe(self.hub)
        self.fast_writer, self.fast = subscribe(self.hub)


@pytest.fixture
def crowd() -> Crowd:
    return Crowd()


def test_a_client_within_its_bound_is_not_cut(crowd):
    crowd.hub.publish(Channel.ALL_EVENTS, ["e1", "e2", "e3"])
    assert crowd.slow_writer.cuts == []
    assert crowd.slow.active is True
    assert len(crowd.slow.outbox) == 3


def test_overflow_cuts_the_slow_client_once_with_a_reason(crowd):
    crowd.hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    assert crowd.fast.outbox.take(10) == ["e1", "e2"]
    crowd.hub.publish(Channel.ALL_EVENTS, ["e3", "e4"])  # slow would hold 4 > 3
    crowd.hub.publish(Channel.ALL_EVENTS, ["e5"])

    [(code, reason)] = crowd.slow_writer.cuts
    assert code == CLOSE_TOO_SLOW
    assert "too slow" in reason
    assert "3 messages" in reason  # the bound is named
    assert crowd.slow.active is False
    assert len(crowd.slow.outbox) == 0  # its queue is freed
    assert crowd.slow not in crowd.hub.subscribers(Channel.ALL_EVENTS)
    assert crowd.hub.count(Channel.ALL_EVENTS) == 1


def test_overflow_of_one_client_does_not_disturb_the_others(crowd):
    received = []
    for n in range(10):
        crowd.hub.publish(Channel.ALL_EVENTS, [f"e{n}"])
        received += crowd.fast.outbox.take(10)
    assert received == [f"e{n}" for n in range(10)]
    assert crowd.fast_writer.cuts == []
    assert crowd.fast_writer.wakes == 10
    assert len(crowd.slow_writer.cuts) == 1


def test_a_cut_callback_may_unsubscribe_again(crowd):
    """A handler's cut closes its socket, whose on_close unsubscribes: must be harmless."""
    cuts = []

    def cut_and_leave(code: int, reason: str) -> None:
        cuts.append(code)
        crowd.hub.unsubscribe(crowd.slow)

    crowd.slow.cut = cut_and_leave
    crowd.hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    crowd.fast.outbox.take(10)
    crowd.hub.publish(Channel.ALL_EVENTS, ["e3", "e4"])
    assert cuts == [CLOSE_TOO_SLOW]
    assert crowd.fast.outbox.take(10) == ["e3", "e4"]
    assert crowd.hub.subscribers(Channel.ALL_EVENTS) == (crowd.fast,)


def test_stats_count_messages_cuts_and_high_water(crowd):
    crowd.hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])  # queued for 2 clients
    crowd.fast.outbox.take(10)
    crowd.hub.publish(Channel.ALL_EVENTS, ["e3"])  # queued for both; slow now at 3
    crowd.hub.publish(Channel.ALL_EVENTS, ["e4"])  # fast queued; slow cut
    stats = crowd.hub.stats
    assert stats.messages_published == 4
    assert stats.messages_queued == 2 + 2 + 1 + 1 + 1
    assert stats.clients_cut == 1
    assert stats.queue_high_water == 3


# -- Hub: leaving ------------------------------------------------------------------------------


def test_unsubscribe_frees_the_queue_and_stops_delivery():
    hub = Hub(queue_limit=10)
    writer, sub = subscribe(hub)
    hub.publish(Channel.ALL_EVENTS, ["e1"])
    hub.unsubscribe(sub)
    hub.publish(Channel.ALL_EVENTS, ["e2"])
    assert sub.active is False
    assert len(sub.outbox) == 0
    assert writer.wakes == 1
    assert writer.cuts == []
    assert hub.count(Channel.ALL_EVENTS) == 0


def test_unsubscribe_is_idempotent():
    hub = Hub(queue_limit=10)
    _, sub = subscribe(hub)
    _, other = subscribe(hub)
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)
    assert hub.subscribers(Channel.ALL_EVENTS) == (other,)


def test_unsubscribe_after_a_cut_is_harmless(crowd):
    crowd.hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    crowd.fast.outbox.take(10)
    crowd.hub.publish(Channel.ALL_EVENTS, ["e3", "e4"])
    crowd.hub.unsubscribe(crowd.slow)
    assert len(crowd.slow_writer.cuts) == 1
    assert crowd.hub.stats.clients_cut == 1
    assert crowd.hub.subscribers(Channel.ALL_EVENTS) == (crowd.fast,)


# -- bounded in bytes too (issue 9, finding 8) ------------------------------------------------


def test_outbox_refuses_a_push_beyond_its_bytes_and_names_the_bound():
    box = Outbox(100, max_bytes=10)
    assert box.refusal(1, 6) is None
    assert box.push(["a"], [6]) is True
    assert box.refusal(1, 6) is Bound.BYTES
    assert box.push(["b"], [6]) is False
    assert box.bytes == 6
    assert box.take(10) == ["a"]


def test_outbox_names_the_message_bound_when_that_is_exceeded():
    box = Outbox(2, max_bytes=1000)
    box.push(["a", "b"], [1, 1])
    assert box.refusal(1, 1) is Bound.MESSAGES


def test_outbox_take_gives_back_the_bytes():
    box = Outbox(10, max_bytes=10)
    box.push(["a", "b", "c"], [3, 3, 3])
    box.take(1)
    assert box.bytes == 6
    assert box.push(["d"], [4]) is True
    assert box.take(10) == ["b", "c", "d"]
    assert box.bytes == 0
    assert box.bytes_high_water == 10


def test_a_message_larger_than_the_bytes_bound_enters_only_an_empty_outbox():
    box = Outbox(10, max_bytes=10)
    assert box.push(["table"], [50]) is True  # alone: admitted
    assert box.push(["x"], [1]) is False  # nothing more until it is taken
    box.take(1)
    box.push(["small"], [1])
    assert box.push(["table"], [50]) is False  # not behind anything


def test_sizes_default_to_the_texts_in_memory_size():
    box = Outbox(10, max_bytes=1 << 20)
    box.push(["abc"])
    assert box.bytes == wire.text_size("abc")


def test_a_client_over_the_bytes_bound_is_cut_with_4001_naming_it():
    hub = Hub(queue_limit=1000, queue_bytes=100_000)
    slow_writer, _ = subscribe(hub)
    fast_writer, fast = subscribe(hub)
    for n in range(5):
        hub.publish(Channel.ALL_EVENTS, [f"{n}" + "x" * 30_000])
        fast.outbox.take(10)
    [(code, reason)] = slow_writer.cuts
    assert code == CLOSE_TOO_SLOW
    assert reason == "client too slow: more than 100000 bytes waiting"
    assert fast_writer.cuts == []
    assert hub.stats.clients_cut == hub.stats.clients_cut_bytes == 1
    assert 90_000 < hub.stats.queue_bytes_high_water <= 100_000


def test_a_client_that_keeps_up_is_never_cut_by_large_tables():
    hub = Hub(queue_limit=1000, queue_bytes=65536)
    writer, sub = subscribe(hub)
    for n in range(20):
        hub.publish(Channel.ALL_EVENTS, [f"{n}" * 500_000])
        assert len(sub.outbox.take(10)) == 1
    assert writer.cuts == []
    assert hub.stats.large_admitted == 20


def test_a_large_snapshot_is_admitted_into_the_new_client_queue():
    hub = Hub(queue_limit=10, queue_bytes=65536)
    writer, sub = subscribe(hub, initial=["m" * 200_000, "j" * 200_000])
    assert writer.cuts == []
    assert len(sub.outbox) == 2


def test_each_message_is_measured_once_per_publish_not_once_per_client(monkeypatch):
    measured = []

    def size_of(text):
        measured.append(text)
        return len(text)

    monkeypatch.setattr(salt_ws.hub, "size_of", size_of)
    hub = Hub(queue_limit=10)
    subs = [subscribe(hub)[1] for _ in range(5)]
    hub.publish(Channel.ALL_EVENTS, ["e1", "e2"])
    assert measured == ["e1", "e2"]
    assert all(sub.outbox.bytes == 4 for sub in subs)


def test_keys_follow_unsubscribe_and_regroup():
    hub = Hub(queue_limit=10)
    a = hub.subscribe(Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key="k1")
    b = hub.subscribe(Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key="k1")
    hub.regroup(b, "k2")
    assert hub.keys(Channel.ALL_EVENTS) == {"k1", "k2"}
    hub.unsubscribe(a)
    assert hub.keys(Channel.ALL_EVENTS) == {"k2"}
    hub.unsubscribe(b)
    hub.unsubscribe(b)  # idempotent
    hub.regroup(b, "k3")  # a closed client joins nothing
    assert hub.keys(Channel.ALL_EVENTS) == set()
    hub.publish(Channel.ALL_EVENTS, ["m"], key="k3")
    assert len(b.outbox) == 0
