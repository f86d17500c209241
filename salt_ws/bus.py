"""The master event bus, read on a thread of its own.

This is the only module that touches :mod:`salt.utils.event`. Salt's event
publisher disconnects a subscriber that falls behind (``"Publisher discarding
slow subscriber"``), so the bus is read on a dedicated thread running its own
asyncio loop, doing nothing but unpack and hand over. Websocket writes happen
on the engine's loop in another thread and can never hold up the read.

One subscription serves every client. Events reach the consumer in bus order
as ``(tag, data)`` batches through :class:`Handoff`, which holds at most
``bus_queue_bytes`` of raw events: beyond, events are dropped until the
engine loop catches up, and one :class:`Dropped` marker takes their place.
The engine loop takes them at most :data:`DRAIN_CHUNK_BYTES` at a time.

The link (:class:`Link`, pure) is up only while the subscription is known to
deliver: after a (re)connection the engine fires a probe event tagged
``salt_ws/probe/<random nonce>`` and the link is up when that probe, or any
event, comes back. Salt's client reconnects by itself, and a publisher that
died and is not restarted (Salt 3008.4) accepts and drops connections every
second; the link reports one loss, probes with a back-off (1 s doubling to
30 s), logs once and then every 10 minutes, and reports one restore when
events flow again. Only the engine's own probes are hidden from clients.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import secrets
import threading
import time
from typing import Any, Callable

from salt_ws.config import DEFAULTS
from salt_ws.pipeline import Dropped, LinkChange

__all__ = [
    "DRAIN_CHUNK_BYTES",
    "PROBE_PREFIX",
    "Actions",
    "BusReader",
    "Dropped",
    "Handoff",
    "Link",
    "LinkChange",
    "LinkState",
    "Packed",
]

log = logging.getLogger(__name__)

PROBE_PREFIX = "salt_ws/probe/"  # + a nonce; only the engine's own nonces are hidden
_PROBE_PREFIX = PROBE_PREFIX.encode()
TAGEND = b"\n\n"  # Salt's separator of tag and payload in a raw event (salt.utils.event)
DRAIN_CHUNK_BYTES = 4 * 2**20  # raw bytes one Handoff.drain call unpacks and hands over, at most


class Packed:
    """A bus event in its raw bytes, unpacked by :meth:`Handoff.drain` on the engine loop."""

    __slots__ = ("raw", "unpack")

    def __init__(self, raw: bytes, unpack: Callable[[bytes], Any]) -> None:
        self.raw = raw
        self.unpack = unpack

    def open(self) -> tuple[str, Any] | None:
        """``(tag, data)``, or None (logged) if the payload cannot be unpacked."""
        try:
            tag, data = self.unpack(self.raw)
        except Exception:  # pylint: disable=broad-except
            log.warning("salt_ws: skipped an event that could not be unpacked", exc_info=True)
            return None
        return tag, data


FIRST_RETRY = 1.0  # seconds before the second probe of an outage; doubles each time
MAX_RETRY = 30.0  # the longest interval between probes
START_GRACE = 5.0  # how long the first probe may take before the link counts as lost
REMIND_EVERY = 600.0  # seconds between WARNING lines while the link stays down
RECENT_PROBES = 8  # nonces remembered: a late answer to an earlier probe still counts


class Handoff:
    """Thread-safe, ordered handover from the bus thread to the engine loop, bounded in bytes.

    The producer appends; the first append after a drain schedules one
    ``drain`` call on the consumer loop, so a burst costs one wake-up, not one
    per event. A drain takes (and unpacks) items from the front up to
    ``chunk_bytes`` of raw size, at least one, and while items remain
    schedules itself again, so the loop runs between chunks; order is kept.
    Events count their raw size; markers count nothing and are never
    dropped. An event that would take the held bytes beyond ``max_bytes`` is
    dropped, and so is every event after it until a drain takes the
    :class:`Dropped` marker the first drop appended (the consumer caught
    up), which counts them all. One event larger than the bound is admitted
    into an empty handoff (its raw bytes exist already).

    Args:
        schedule: thread-safe "run this on the consumer loop"
            (``loop.call_soon_threadsafe``).
        consume: called on the consumer loop with the list of pending items.
        max_bytes: the bound (option ``bus_queue_bytes``).
        chunk_bytes: the raw bytes one drain call takes at most (beyond its first item).
    """

    def __init__(
        self,
        schedule: Callable[[Callable[[], None]], Any],
        consume: Callable[[list[Any]], None],
        max_bytes: int = DEFAULTS.bus_queue_bytes,
        chunk_bytes: int = DRAIN_CHUNK_BYTES,
    ) -> None:
        self._schedule = schedule
        self._consume = consume
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self._items: collections.deque[tuple[Any, int]] = collections.deque()  # (item, size)
        self._lock = threading.Lock()
        self._scheduled = False
        self._gap: Dropped | None = None  # the marker of the drops, until a drain takes it
        self.bytes = 0
        self.received = 0
        self.backlog_high_water = 0
        self.bytes_high_water = 0
        self.dropped_events = 0
        self.dropped_bytes = 0
        self.gaps = 0

    def put(self, item: Any, size: int = 0, now: float | None = None) -> bool:
        """Append one item of ``size`` raw bytes (bus thread); False if it was dropped."""
        with self._lock:
            if size and self._full(size):
                wake = self._drop(size, now)
                accepted = False
            else:
                self._items.append((item, size))
                self.bytes += size
                if self.bytes > self.bytes_high_water:
                    self.bytes_high_water = self.bytes
                wake = not self._scheduled
                accepted = True
            if wake:
                self._scheduled = True
        if wake:
            self._schedule(self.drain)
        return accepted

    def reject(self, size: int, now: float | None = None) -> bool:
        """True (the drop counted) if an event of ``size`` bytes must be dropped now.

        The reader asks before unpacking, so a full handoff costs no unpacking.
        """
        with self._lock:
            if not self._full(size):
                return False
            wake = self._drop(size, now)
            if wake:
                self._scheduled = True
        if wake:
            self._schedule(self.drain)
        return True

    def _full(self, size: int) -> bool:
        return self._gap is not None or (self.bytes > 0 and self.bytes + size > self.max_bytes)

    def _drop(self, size: int, now: float | None) -> bool:
        """Count a drop (lock held); True if a drain must be scheduled for the new marker."""
        at = time.time() if now is None else now
        self.dropped_events += 1
        self.dropped_bytes += size
        if self._gap is None:
            self._gap = Dropped(at)
            self._items.append((self._gap, 0))
            self.gaps += 1
        self._gap.add(size, at)
        return not self._scheduled

    def drain(self) -> None:
        """Hand the next chunk of pending items to the consumer (consumer loop).

        At most ``chunk_bytes`` of raw events (at least one item); if items
        remain, another drain is scheduled before this chunk is consumed.
        """
        pending, taken = self._items, 0
        items: list[Any] = []
        with self._lock:
            backlog = len(pending)
            while pending and (not items or taken + pending[0][1] <= self.chunk_bytes):
                item, size = pending.popleft()
                items.append(item)
                taken += size
                if item is self._gap:
                    self._gap = None  # dropped until the consumer caught up: it has
            self.bytes -= taken
            more = self._scheduled = bool(pending)
        if more:
            self._schedule(self.drain)
        if items:
            self.received += len(items)
            if backlog > self.backlog_high_water:
                self.backlog_high_water = backlog
            opened = []
            for item in items:
                if isinstance(item, Packed):
                    item = item.open()
                    if item is None:
                        continue
                opened.append(item)
            if opened:
                self._consume(opened)

    def stats(self) -> dict[str, int]:
        """Counters for ``salt-run ws.status``."""
        return {
            "limit_bytes": self.max_bytes,
            "bytes": self.bytes,
            "bytes_high_water": self.bytes_high_water,
            "backlog_high_water": self.backlog_high_water,
            "received": self.received,
            "dropped_events": self.dropped_events,
            "dropped_bytes": self.dropped_bytes,
            "gaps": self.gaps,
        }


class LinkState(str, enum.Enum):
    """Whether the bus subscription is known to deliver."""

    STARTING = "starting"  # subscribed; the first probe has not come back yet
    UP = "up"  # a probe or event came back since the last (re)connection
    DOWN = "down"  # disconnected, failed, or probes unanswered


@dataclasses.dataclass
class Actions:
    """What the driver must do after an input to :class:`Link`."""

    notices: list[LinkChange] = dataclasses.field(default_factory=list)
    probes: list[str] = dataclasses.field(default_factory=list)  # tags to fire on the bus
    logs: list[tuple[int, str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)

    def log(self, level: int, message: str, *args: Any) -> None:
        self.logs.append((level, message, args))


def _nonce() -> str:
    return secrets.token_urlsafe(16)


class Link:
    """The bus link's state machine: probes, back-off and log throttling (pure).

    Inputs are the transport's edges (:meth:`subscribed`, :meth:`dropped`,
    :meth:`failed`), deliveries (:meth:`delivered`, :meth:`is_probe`) and
    time (:meth:`tick`, due at :meth:`wake_at`); each returns the
    :class:`Actions` to carry out. Clients get one ``lost`` per outage and one
    ``restored`` when events flow again; the log says so at WARNING once each
    way, and every :data:`REMIND_EVERY` seconds while the outage lasts.

    Args:
        now: when the reader started.
        nonce: source of unguessable probe nonces.
    """

    def __init__(self, now: float, nonce: Callable[[], str] = _nonce) -> None:
        self.state = LinkState.STARTING
        self.started = now
        self.down_since: float | None = None
        self.reported = False  # clients were told "lost" and not yet "restored"
        self.probes_sent = 0
        self.probes_answered = 0
        self.outages = 0
        self._nonce = nonce
        self._recent: collections.deque[str] = collections.deque(maxlen=RECENT_PROBES)
        self._delay = FIRST_RETRY
        self._next_probe: float | None = None
        self._probe_on_connect = True  # the first (re)connection of an outage probes at once
        self._unanswered = 0
        self._last_warning = now

    @property
    def connected(self) -> bool:
        """True while the subscription is known to deliver."""
        return self.state is LinkState.UP

    def subscribed(self, now: float) -> Actions:
        """The transport (re)connected; events may or may not flow."""
        acts = Actions()
        if self.state is LinkState.UP:
            return acts
        if self._probe_on_connect:
            self._probe_on_connect = False
            self._probe(now, acts)
        else:
            acts.log(logging.DEBUG, "salt_ws: event bus transport reconnected; probing on schedule")
        return acts

    def dropped(self, now: float) -> Actions:
        """The transport lost its connection (Salt's client reconnects by itself)."""
        acts = Actions()
        if self.state is LinkState.UP:
            self._go_down(
                now,
                acts,
                "salt_ws: lost the master event bus connection; reconnecting "
                "(probes back off from %gs to %gs)",
                FIRST_RETRY,
                MAX_RETRY,
            )
            self._next_probe = now + FIRST_RETRY  # in case no reconnection is reported
        else:
            acts.log(logging.DEBUG, "salt_ws: event bus transport dropped again")
        return acts

    def failed(self, now: float) -> Actions:
        """Subscribing raised; the reader retries with its own back-off."""
        acts = Actions()
        self._probe_on_connect = True
        if not self.reported:
            self._go_down(now, acts, "salt_ws: the master event bus subscription failed; retrying")
        return acts

    def delivered(self, now: float) -> Actions:
        """An event (a probe or any other) came through the subscription."""
        acts = Actions()
        if self.state is LinkState.UP:
            return acts
        if self.reported:
            assert self.down_since is not None
            acts.notices.append(LinkChange(True, now))
            acts.log(
                logging.WARNING,
                "salt_ws: the master event bus delivers again after %.1fs; "
                "events of that interval were missed",
                now - self.down_since,
            )
        else:
            acts.log(logging.DEBUG, "salt_ws: the master event bus delivers")
        self.state = LinkState.UP
        self.reported = False
        self.down_since = None
        self._next_probe = None
        self._delay = FIRST_RETRY
        self._probe_on_connect = True
        self._unanswered = 0
        return acts

    def is_probe(self, tag: str) -> bool:
        """True if ``tag`` is one of this engine's recent probes (then hidden, once)."""
        if not tag.startswith(PROBE_PREFIX):
            return False
        nonce = tag[len(PROBE_PREFIX) :]
        if nonce not in self._recent:
            return False
        self._recent.remove(nonce)
        self.probes_answered += 1
        return True

    def tick(self, now: float) -> Actions:
        """Timers: the start grace, the next probe, the reminder in the log."""
        acts = Actions()
        if self.state is LinkState.STARTING and now >= self.started + START_GRACE:
            self._go_down(
                now,
                acts,
                "salt_ws: no events from the master event bus %.1fs after subscribing; retrying",
                now - self.started,
                reset=False,
            )
        if self.state is LinkState.UP:
            return acts
        if self._next_probe is not None and now >= self._next_probe:
            self._probe(now, acts)
        if self.reported and now - self._last_warning >= REMIND_EVERY:
            self._last_warning = now
            acts.log(
                logging.WARNING,
                "salt_ws: still no events from the master event bus after %.0fs "
                "(%d probes unanswered); retrying every %gs",
                now - (self.down_since or now),
                self._unanswered,
                self._delay,
            )
        return acts

    def wake_at(self) -> float | None:
        """When :meth:`tick` is next due (None: nothing to time)."""
        if self.state is LinkState.UP:
            return None
        times = [] if self._next_probe is None else [self._next_probe]
        if self.state is LinkState.STARTING:
            times.append(self.started + START_GRACE)
        elif self.reported:
            times.append(self._last_warning + REMIND_EVERY)
        return min(times) if times else None

    def stats(self) -> dict[str, Any]:
        """Counters for ``salt-run ws.status``."""
        return {
            "state": self.state.value,
            "down_since": self.down_since,
            "outages": self.outages,
            "probes_sent": self.probes_sent,
            "probes_answered": self.probes_answered,
        }

    def _go_down(
        self, now: float, acts: Actions, message: str, *args: Any, reset: bool = True
    ) -> None:
        self.state = LinkState.DOWN
        self.down_since = now
        self.reported = True
        self.outages += 1
        self._last_warning = now
        if reset:
            self._delay = FIRST_RETRY
            self._probe_on_connect = True
            self._unanswered = 0
        acts.notices.append(LinkChange(False, now))
        acts.log(logging.WARNING, message, *args)

    def _probe(self, now: float, acts: Actions) -> None:
        if self._unanswered:
            acts.log(
                logging.DEBUG,
                "salt_ws: %d event bus probes unanswered; next in %gs",
                self._unanswered,
                self._delay,
            )
        nonce = self._nonce()
        self._recent.append(nonce)
        self.probes_sent += 1
        self._unanswered += 1
        acts.probes.append(PROBE_PREFIX + nonce)
        self._next_probe = now + self._delay
        self._delay = min(self._delay * 2, MAX_RETRY)


class BusReader(threading.Thread):
    """Subscribes to the master event bus and feeds a :class:`Handoff`.

    Args:
        opts: the master's opts (``sock_dir``, ``ipc_mode``, transport options).
        handoff: where ``(tag, data)`` tuples and :class:`LinkChange` markers go.
    """

    def __init__(self, opts: dict[str, Any], handoff: Handoff) -> None:
        super().__init__(name="salt_ws-bus", daemon=True)
        self._opts = opts
        self._handoff = handoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None  # the link's timers changed
        self._stopping = False
        self._wake = threading.Event()  # interrupts the retry back-off on stop()
        self._ready = threading.Event()
        self._firing: threading.Thread | None = None
        self.probes_skipped = 0  # a probe was due while the previous one was still firing
        self.link = Link(time.time())

    @property
    def connected(self) -> bool:
        """True while the subscription is known to deliver (a probe or event came back)."""
        return self.link.connected

    def run(self) -> None:
        """Subscribe; if the subscription itself fails, retry with back-off (never silently)."""
        delay, reported = 1.0, False
        while not self._stopping:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._main())
            except Exception:  # pylint: disable=broad-except
                if not reported:
                    log.exception("salt_ws: the event bus subscription failed; retrying")
                    reported = True
                else:
                    log.debug("salt_ws: the event bus subscription failed again", exc_info=True)
            finally:
                loop.close()
            if self._stopping:
                break
            self._apply(self.link.failed(time.time()))
            self._ready.set()  # the engine serves on; clients were told of the gap
            self._wake.wait(delay)
            delay = min(delay * 2, MAX_RETRY)

    def wait_started(self, timeout: float) -> bool:
        """Block until the first subscription delivers or is known not to (or ``timeout``)."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the reader to unsubscribe and end; joins the thread."""
        self._stopping = True
        self._wake.set()
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self.join(timeout)

    def stats(self) -> dict[str, Any]:
        """The link's and the handoff's counters, as ``salt-run ws.status`` shows them."""
        link, queue = self.link.stats(), self._handoff.stats()
        return {
            "bus_state": link["state"],
            "bus_down_since": link["down_since"],
            "bus_outages": link["outages"],
            "bus_probes_sent": link["probes_sent"],
            "bus_probes_answered": link["probes_answered"],
            "bus_queue_bytes": queue["limit_bytes"],
            "bus_backlog_bytes": queue["bytes"],
            "bus_backlog_bytes_high_water": queue["bytes_high_water"],
            "bus_backlog_high_water": queue["backlog_high_water"],
            "bus_dropped_events": queue["dropped_events"],
            "bus_dropped_bytes": queue["dropped_bytes"],
            "bus_drop_episodes": queue["gaps"],
            "bus_probes_skipped": self.probes_skipped,
        }

    def _apply(self, acts: Actions) -> None:
        """Carry out what the link asked for (bus thread)."""
        for level, message, args in acts.logs:
            log.log(level, message, *args)
        if not self._stopping:
            for change in acts.notices:
                self._handoff.put(change)
        for tag in acts.probes:
            self._launch(tag)
        if self.link.connected or self.link.reported:
            self._ready.set()
        if self._kick is not None:
            self._kick.set()

    def _launch(self, tag: str) -> None:
        """Fire a probe on a thread of its own (firing blocks; a dead bus may make it hang)."""
        if self._stopping:
            return
        if self._firing is not None and self._firing.is_alive():
            self.probes_skipped += 1
            log.debug("salt_ws: the previous event bus probe is still being fired")
            return
        self._firing = threading.Thread(
            target=self._fire, args=(tag,), name="salt_ws-probe", daemon=True
        )
        self._firing.start()

    def _fire(self, tag: str) -> None:
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        try:
            with salt.utils.event.get_master_event(
                self._opts, self._opts["sock_dir"], listen=False
            ) as bus:
                if not bus.fire_event({}, tag):
                    log.debug("salt_ws: an event bus probe could not be fired")
        except Exception:  # pylint: disable=broad-except
            log.debug("salt_ws: an event bus probe could not be fired", exc_info=True)

    def _receive(self, raw: bytes, unpack: Callable[[bytes], Any], now: float) -> None:
        """One raw event from the publisher (bus thread).

        The event stays in its raw bytes until the engine loop takes it
        (:class:`Packed`): what waits in the :class:`Handoff` is exactly what
        ``bus_queue_bytes`` counts, not the many times larger Python objects
        unpacking makes of it.
        """
        link = self.link
        if link.state is not LinkState.UP:
            self._apply(link.delivered(now))  # anything that arrives proves delivery
        size = len(raw)
        handoff = self._handoff
        if handoff.reject(size, now):
            return
        tag = raw.partition(TAGEND)[0]
        if tag.startswith(_PROBE_PREFIX) and link.is_probe(tag.decode("utf-8", "replace")):
            return  # the engine's own probe: not for clients
        handoff.put(Packed(raw, unpack), size, now)

    async def _main(self) -> None:
        import salt.utils.event  # pylint: disable=import-outside-toplevel
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        self._stop_event = asyncio.Event()
        self._kick = asyncio.Event()
        # A tornado IOLoop (wrapping this asyncio loop): what Salt 3007 needs, 3008 accepts.
        event = salt.utils.event.get_master_event(
            self._opts, self._opts["sock_dir"], listen=True, io_loop=tornado.ioloop.IOLoop.current()
        )
        unpack = event.unpack
        receive = self._receive

        async def on_message(raw: bytes) -> None:
            receive(raw, unpack, time.time())

        timers: asyncio.Task[None] | None = None
        try:
            event.set_event_handler(on_message)
            self._watch_link(event)
            self._apply(self.link.subscribed(time.time()))
            timers = asyncio.ensure_future(self._timers())
            await self._stop_event.wait()
        finally:
            if timers is not None:
                timers.cancel()
            self._kick = None
            event.destroy()

    async def _timers(self) -> None:
        """Run the link's timers when they are due (or when an input changed them)."""
        kick = self._kick
        assert kick is not None
        while True:
            self._apply(self.link.tick(time.time()))
            kick.clear()
            wake = self.link.wake_at()
            timeout = None if wake is None else max(0.05, wake - time.time())
            try:
                await asyncio.wait_for(kick.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _watch_link(self, event: Any) -> None:
        """Hook the publish client's connect/disconnect callbacks (Salt >= 3007)."""
        subscriber = getattr(event, "subscriber", None)
        if subscriber is None or not hasattr(subscriber, "disconnect_callback"):
            log.warning("salt_ws: cannot watch the event bus link with this Salt version")
            return

        async def on_disconnect(*_: Any) -> None:
            self._apply(self.link.dropped(time.time()))

        async def on_connect(*_: Any) -> None:
            self._apply(self.link.subscribed(time.time()))

        subscriber.disconnect_callback = on_disconnect
        subscriber.connect_callback = on_connect
