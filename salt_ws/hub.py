"""Fan-out: connected clients, per-client bounded queues, slow-client policy.

No socket I/O here. A handler subscribes with two callbacks: ``wake`` (its
writer has something to send) and ``cut`` (the client fell too far behind
and must be closed). The hub appends each already-encoded message to every
subscriber's :class:`Outbox`; the same ``str`` object is shared by all
queues, so an event costs its encoded size once however many clients there
are. The policy is strict: a client receives every message in order, or it
is cut with :data:`salt_ws.wire.CLOSE_TOO_SLOW` once a bound of its queue is
exceeded, and the reason names that bound. Nothing is dropped silently.

Each queue has two bounds: messages (option ``client_queue_size``) and bytes
(option ``client_queue_bytes``). A message's size is its text's in-memory
size (:func:`size_of`), measured once per publish, not once per client.

Messages larger than the bytes bound: a push into an **empty** queue is
admitted whatever its size (the message bound still applies), and a push
into a queue that holds anything must fit within the bytes bound. So a
client that keeps up (its queue drained between publishes) is never cut by
one large formatted table or snapshot, and a client that does not keep up
holds at most ``client_queue_bytes`` plus one publish, whose strings are the
ones the engine just encoded and shares with every other client.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
from typing import Callable, Hashable, Iterable, Sequence

from salt_ws.config import DEFAULTS
from salt_ws.wire import CLOSE_TOO_SLOW, text_size

__all__ = [
    "Bound",
    "Channel",
    "Hub",
    "Outbox",
    "Subscription",
    "size_of",
]

size_of = text_size  # the bytes a queued message holds (measured once per publish)


class Channel(str, enum.Enum):
    """A stream clients can subscribe to (one per websocket endpoint)."""

    ALL_EVENTS = "all_events"
    FORMATTED_EVENTS = "formatted_events"


class Bound(str, enum.Enum):
    """Which bound of an :class:`Outbox` a push would exceed (valued by its option)."""

    MESSAGES = "client_queue_size"
    BYTES = "client_queue_bytes"


class Outbox:
    """A FIFO of encoded messages for one client, bounded in messages and bytes (pure).

    Args:
        limit: the most messages that may wait; one more is an overflow.
        max_bytes: the most bytes that may wait behind anything else (see the
            module docstring for a push into an empty queue).
    """

    __slots__ = (
        "_items",
        "_sizes",
        "bytes",
        "bytes_high_water",
        "credit",
        "credit_bytes",
        "high_water",
        "limit",
        "max_bytes",
    )

    def __init__(self, limit: int, max_bytes: int = DEFAULTS.client_queue_bytes) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.limit = limit
        self.max_bytes = max_bytes
        self.high_water = 0
        self.bytes = 0
        self.bytes_high_water = 0
        # the first messages of a resume (see push_initial), not counted against the bounds
        self.credit = 0
        self.credit_bytes = 0
        self._items: collections.deque[str] = collections.deque()
        self._sizes: collections.deque[int] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def refusal(self, count: int, nbytes: int) -> Bound | None:
        """The bound that ``count`` more messages of ``nbytes`` in all would exceed, if any."""
        if len(self._items) - self.credit + count > self.limit:
            return Bound.MESSAGES
        if len(self._items) > self.credit and self.bytes - self.credit_bytes + nbytes > (
            self.max_bytes
        ):
            return Bound.BYTES
        return None

    def push_initial(self, messages: Sequence[str], sizes: Sequence[int]) -> None:
        """Queue a new client's first messages (a snapshot, or what a resume replays).

        They are admitted whatever their number and size, and do not count
        against the bounds until they are taken: a resume replays at most the
        history (``history_size``, ``history_max_bytes``, shared strings), and the
        live messages behind it get the whole queue. Only into an empty queue.
        """
        if self._items:
            raise ValueError("initial messages go into an empty queue")
        self._items.extend(messages)
        self._sizes.extend(sizes)
        self.credit = len(messages)
        self.credit_bytes = self.bytes = sum(sizes)

    def push(self, messages: Sequence[str], sizes: Sequence[int] | None = None) -> bool:
        """Append ``messages`` (of ``sizes`` bytes, measured if not given).

        Returns False, and appends nothing, if a bound would be exceeded.
        """
        if sizes is None:
            sizes = [size_of(message) for message in messages]
        nbytes = sum(sizes)
        if self.refusal(len(messages), nbytes) is not None:
            return False
        self._items.extend(messages)
        self._sizes.extend(sizes)
        self.bytes += nbytes
        if len(self._items) > self.high_water:
            self.high_water = len(self._items)
        if self.bytes > self.bytes_high_water:
            self.bytes_high_water = self.bytes
        return True

    def take(self, most: int) -> list[str]:
        """Remove and return up to ``most`` messages, oldest first."""
        items, sizes = self._items, self._sizes
        if len(items) <= most:
            batch = list(items)
            items.clear()
            sizes.clear()
            self.bytes = self.credit = self.credit_bytes = 0
            return batch
        taken = 0
        batch = []
        credit = self.credit
        for index in range(most):
            batch.append(items.popleft())
            size = sizes.popleft()
            taken += size
            if index < credit:
                self.credit_bytes -= size
        self.credit = max(0, credit - most)
        self.bytes -= taken
        return batch

    def clear(self) -> None:
        """Drop everything queued (the client is being closed)."""
        self._items.clear()
        self._sizes.clear()
        self.bytes = self.credit = self.credit_bytes = 0


@dataclasses.dataclass(eq=False)
class Subscription:
    """One client's place in the hub: its queue and how to reach its writer."""

    id: int
    channel: Channel
    outbox: Outbox
    wake: Callable[[], None]
    cut: Callable[[int, str], None]
    audience: str = "admin"
    active: bool = True
    key: Hashable = "admin"  # what publish addresses (the audience, or a pipeline Group)
    pushed: int = 0  # messages queued for it so far (ticks look for quiet clients)


@dataclasses.dataclass
class HubStats:
    """Counters reported by ``salt-run ws.status``."""

    messages_published: int = 0
    messages_queued: int = 0
    clients_cut: int = 0  # for either bound
    clients_cut_bytes: int = 0  # of which for client_queue_bytes
    queue_high_water: int = 0
    queue_bytes_high_water: int = 0
    large_admitted: int = 0  # pushes beyond client_queue_bytes admitted into an empty queue


class Hub:
    """Connected clients per channel and the fan-out to them.

    Args:
        queue_limit: the per-client bound in messages (option ``client_queue_size``).
        queue_bytes: the per-client bound in bytes (option ``client_queue_bytes``).
    """

    def __init__(self, queue_limit: int, queue_bytes: int = DEFAULTS.client_queue_bytes) -> None:
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.stats = HubStats()
        self._ids = itertools.count(1)
        self._subs: dict[Channel, dict[int, Subscription]] = {c: {} for c in Channel}
        # the same subscriptions by key: a publish to one key visits only its clients
        self._by_key: dict[Channel, dict[Hashable, dict[int, Subscription]]] = {
            c: {} for c in Channel
        }

    def subscribe(
        self,
        channel: Channel,
        wake: Callable[[], None],
        cut: Callable[[int, str], None],
        initial: Sequence[str] = (),
        audience: str = "admin",
        key: Hashable | None = None,
    ) -> Subscription:
        """Add a client; ``initial`` messages (a snapshot, a replay) are queued first.

        ``audience`` groups clients that may see the same messages (see
        :mod:`salt_ws.acl`); ``key`` (default: the audience) groups those that
        receive the same messages (e.g. a :class:`salt_ws.pipeline.Group`:
        audience, tag filters, format). :meth:`publish` addresses one audience
        or one key. ``initial`` messages are admitted whatever their number
        and size (:meth:`Outbox.push_initial`).
        """
        outbox = Outbox(self.queue_limit, self.queue_bytes)
        sub = Subscription(
            next(self._ids),
            channel,
            outbox,
            wake,
            cut,
            audience,
            key=audience if key is None else key,
        )
        self._subs[channel][sub.id] = sub
        self._by_key[channel].setdefault(sub.key, {})[sub.id] = sub
        if initial:
            sizes = [size_of(message) for message in initial]
            outbox.push_initial(initial, sizes)
            sub.pushed += len(initial)
            self.stats.messages_queued += len(initial)
            sub.wake()
        return sub

    def regroup(self, sub: Subscription, key: Hashable) -> None:
        """Move a client to another key (its filters changed); its queue stays as it is."""
        if not sub.active:
            return
        self._unkey(sub)
        sub.key = key
        self._by_key[sub.channel].setdefault(key, {})[sub.id] = sub

    def _unkey(self, sub: Subscription) -> None:
        keyed = self._by_key[sub.channel]
        group = keyed.get(sub.key)
        if group is not None:
            group.pop(sub.id, None)
            if not group:
                del keyed[sub.key]

    def push(self, sub: Subscription, messages: Sequence[str]) -> None:
        """Queue ``messages`` for one client (e.g. an answer to its request), or cut it."""
        if messages and sub.active:
            sizes = [size_of(message) for message in messages]
            self._offer(sub, messages, sizes, sum(sizes))

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a client (idempotent) and free its queue."""
        sub.active = False
        sub.outbox.clear()
        if self._subs[sub.channel].pop(sub.id, None) is not None:
            self._unkey(sub)

    def publish(
        self,
        channel: Channel,
        messages: Sequence[str],
        audience: str | None = None,
        key: Hashable | None = None,
    ) -> None:
        """Queue ``messages`` for the subscribers of ``channel`` (only ``audience``'s, or
        only ``key``'s, if given).

        Subscribers that overflow their bound are cut.
        """
        if not messages:
            return
        self.stats.messages_published += len(messages)
        sizes: list[int] | None = None
        nbytes = 0
        if key is not None:
            subs = list(self._by_key[channel].get(key, {}).values())
        else:
            subs = list(self._subs[channel].values())
        for sub in subs:
            if audience is None or sub.audience == audience:
                if sizes is None:  # measured once per publish, for every client
                    sizes = [size_of(message) for message in messages]
                    nbytes = sum(sizes)
                self._offer(sub, messages, sizes, nbytes)

    def audiences(self, channel: Channel) -> set[str]:
        """The audiences with at least one subscriber on ``channel``."""
        return {sub.audience for sub in self._subs[channel].values()}

    def keys(self, channel: Channel) -> set[Hashable]:
        """The keys with at least one subscriber on ``channel``."""
        return set(self._by_key[channel])

    def subscribers(self, channel: Channel) -> Iterable[Subscription]:
        """The current subscribers of ``channel``."""
        return tuple(self._subs[channel].values())

    def count(self, channel: Channel) -> int:
        """How many clients are subscribed to ``channel``."""
        return len(self._subs[channel])

    def _offer(
        self, sub: Subscription, messages: Sequence[str], sizes: Sequence[int], nbytes: int
    ) -> None:
        outbox, stats = sub.outbox, self.stats
        over = outbox.refusal(len(messages), nbytes)
        if over is None:
            if nbytes > outbox.max_bytes:
                stats.large_admitted += 1
            outbox.push(messages, sizes)
            sub.pushed += len(messages)
            stats.messages_queued += len(messages)
            if outbox.high_water > stats.queue_high_water:
                stats.queue_high_water = outbox.high_water
            if outbox.bytes_high_water > stats.queue_bytes_high_water:
                stats.queue_bytes_high_water = outbox.bytes_high_water
            sub.wake()
            return
        stats.clients_cut += 1
        if over is Bound.BYTES:
            stats.clients_cut_bytes += 1
            reason = f"client too slow: more than {outbox.max_bytes} bytes waiting"
        else:
            reason = f"client too slow: more than {outbox.limit} messages waiting"
        self.unsubscribe(sub)
        sub.cut(CLOSE_TOO_SLOW, reason)
