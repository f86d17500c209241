"""Fan-out: connected clients, per-client bounded queues, slow-client policy.

No socket I/O here. A handler subscribes with two callbacks: ``wake`` (its
writer has something to send) and ``cut`` (the client fell too far behind
and must be closed). The hub appends each already-encoded message to every
subscriber's :class:`Outbox`; the same ``str`` object is shared by all
queues, so an event costs its encoded size once however many clients there
are. The policy is strict: a client receives every message in order, or it
is cut with :data:`salt_ws.wire.CLOSE_TOO_SLOW` once its queue bound is exceeded. Nothing
is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
from typing import Callable, Iterable, Sequence

from salt_ws.wire import CLOSE_TOO_SLOW

__all__ = [
    "Channel",
    "Hub",
    "Outbox",
    "Subscription",
]


class Channel(str, enum.Enum):
    """A stream clients can subscribe to (one per websocket endpoint)."""

    ALL_EVENTS = "all_events"
    FORMATTED_EVENTS = "formatted_events"


class Outbox:
    """A bounded FIFO of encoded messages for one client (pure).

    Args:
        limit: the most messages that may wait; one more is an overflow.
    """

    __slots__ = ("_items", "high_water", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.high_water = 0
        self._items: collections.deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, messages: Sequence[str]) -> bool:
        """Append ``messages``; False (and nothing appended) if the bound would be exceeded."""
        size = len(self._items) + len(messages)
        if size > self.limit:
            return False
        self._items.extend(messages)
        if size > self.high_water:
            self.high_water = size
        return True

    def take(self, most: int) -> list[str]:
        """Remove and return up to ``most`` messages, oldest first."""
        items = self._items
        if len(items) <= most:
            batch = list(items)
            items.clear()
            return batch
        return [items.popleft() for _ in range(most)]

    def clear(self) -> None:
        """Drop everything queued (the client is being closed)."""
        self._items.clear()


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


@dataclasses.dataclass
class HubStats:
    """Counters reported by ``salt-run ws.status``."""

    messages_published: int = 0
    messages_queued: int = 0
    clients_cut: int = 0
    queue_high_water: int = 0


class Hub:
    """Connected clients per channel and the fan-out to them.

    Args:
        queue_limit: the per-client bound (option ``client_queue_size``).
    """

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.stats = HubStats()
        self._ids = itertools.count(1)
        self._subs: dict[Channel, dict[int, Subscription]] = {c: {} for c in Channel}

    def subscribe(
        self,
        channel: Channel,
        wake: Callable[[], None],
        cut: Callable[[int, str], None],
        initial: Sequence[str] = (),
        audience: str = "admin",
    ) -> Subscription:
        """Add a client; ``initial`` messages (e.g. a snapshot) are queued first.

        ``audience`` groups clients that may see the same messages (see
        :mod:`salt_ws.acl`); :meth:`publish` addresses one audience.
        """
        sub = Subscription(next(self._ids), channel, Outbox(self.queue_limit), wake, cut, audience)
        self._subs[channel][sub.id] = sub
        if initial:
            self._offer(sub, initial)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a client (idempotent) and free its queue."""
        sub.active = False
        sub.outbox.clear()
        self._subs[sub.channel].pop(sub.id, None)

    def publish(
        self, channel: Channel, messages: Sequence[str], audience: str | None = None
    ) -> None:
        """Queue ``messages`` for the subscribers of ``channel`` (only ``audience``'s if given).

        Subscribers that overflow their bound are cut.
        """
        if not messages:
            return
        self.stats.messages_published += len(messages)
        for sub in list(self._subs[channel].values()):
            if audience is None or sub.audience == audience:
                self._offer(sub, messages)

    def audiences(self, channel: Channel) -> set[str]:
        """The audiences with at least one subscriber on ``channel``."""
        return {sub.audience for sub in self._subs[channel].values()}

    def subscribers(self, channel: Channel) -> Iterable[Subscription]:
        """The current subscribers of ``channel``."""
        return tuple(self._subs[channel].values())

    def count(self, channel: Channel) -> int:
        """How many clients are subscribed to ``channel``."""
        return len(self._subs[channel])

    def _offer(self, sub: Subscription, messages: Sequence[str]) -> None:
        if sub.outbox.push(messages):
            self.stats.messages_queued += len(messages)
            if sub.outbox.high_water > self.stats.queue_high_water:
                self.stats.queue_high_water = sub.outbox.high_water
            sub.wake()
            return
        self.stats.clients_cut += 1
        self.unsubscribe(sub)
        sub.cut(
            CLOSE_TOO_SLOW,
            f"client too slow: more than {self.queue_limit} messages waiting",
        )
