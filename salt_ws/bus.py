"""The master event bus, read on a thread of its own.

This is the only module that touches :mod:`salt.utils.event`. Salt's event
publisher disconnects a subscriber that falls behind (``"Publisher discarding
slow subscriber"``), so the bus is read on a dedicated thread running its own
asyncio loop, doing nothing but unpack and hand over. Websocket writes happen
on the engine's loop in another thread and can never hold up the read.

One subscription serves every client. Events reach the consumer in bus order
as ``(tag, data)`` batches through :class:`Handoff`. When the connection to
the publisher drops (discarded, or the publisher restarted), Salt's client
reconnects by itself; the reader reports both edges to the consumer so that
clients are told that events may have been missed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any, Callable

__all__ = ["BusReader", "Handoff", "LinkChange"]

log = logging.getLogger(__name__)


class LinkChange:
    """A marker in the event stream: the bus link went down or came back."""

    __slots__ = ("at", "up")

    def __init__(self, up: bool, at: float) -> None:
        self.up = up
        self.at = at

    def __repr__(self) -> str:
        return f"LinkChange(up={self.up}, at={self.at})"


class Handoff:
    """Thread-safe, ordered handover from the bus thread to the engine loop.

    The producer appends; the first append after a drain schedules one
    ``drain`` call on the consumer loop, so a burst costs one wake-up, not one
    per event.

    Args:
        schedule: thread-safe "run this on the consumer loop"
            (``loop.call_soon_threadsafe``).
        consume: called on the consumer loop with the list of pending items.
    """

    def __init__(
        self,
        schedule: Callable[[Callable[[], None]], Any],
        consume: Callable[[list[Any]], None],
    ) -> None:
        self._schedule = schedule
        self._consume = consume
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self.received = 0
        self.backlog_high_water = 0

    def put(self, item: Any) -> None:
        """Append one item (bus thread)."""
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule(self.drain)

    def drain(self) -> None:
        """Hand every pending item to the consumer (consumer loop)."""
        with self._lock:
            self._scheduled = False
            items = list(self._items)
            self._items.clear()
        if items:
            self.received += len(items)
            if len(items) > self.backlog_high_water:
                self.backlog_high_water = len(items)
            self._consume(items)


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
        self._stopping = False
        self._wake = threading.Event()  # interrupts the retry back-off on stop()
        self._ready = threading.Event()
        self._down_since: float | None = None
        self.connected = False

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
            self._link(False)
            self._ready.set()  # the engine serves on; clients were told of the gap
            self._wake.wait(delay)
            delay = min(delay * 2, 30.0)

    def wait_started(self, timeout: float) -> bool:
        """Block until the first subscription attempt is done (or ``timeout``)."""
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

    def _link(self, up: bool) -> None:
        """Record a link state change; tell the consumer (and the log) on transitions only."""
        if up == self.connected or self._stopping:
            return
        now = time.time()
        self.connected = up
        if not up:
            self._down_since = now
            log.warning("salt_ws: lost the master event bus connection; reconnecting")
            self._handoff.put(LinkChange(False, now))
            return
        if self._down_since is None:  # the first connection: nothing was missed
            return
        log.warning(
            "salt_ws: reconnected to the master event bus after %.1fs; "
            "events of that interval were missed",
            now - self._down_since,
        )
        self._down_since = None
        self._handoff.put(LinkChange(True, now))

    async def _main(self) -> None:
        import salt.utils.event  # pylint: disable=import-outside-toplevel
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        self._stop_event = asyncio.Event()
        # A tornado IOLoop (wrapping this asyncio loop): what Salt 3007 needs, 3008 accepts.
        event = salt.utils.event.get_master_event(
            self._opts, self._opts["sock_dir"], listen=True, io_loop=tornado.ioloop.IOLoop.current()
        )
        unpack = event.unpack
        put = self._handoff.put

        async def on_message(raw: bytes) -> None:
            try:
                tag, data = unpack(raw)
            except Exception:  # pylint: disable=broad-except
                log.warning("salt_ws: skipped an event that could not be unpacked", exc_info=True)
                return
            put((tag, data))

        try:
            event.set_event_handler(on_message)
            self._watch_link(event)
            self._link(True)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            event.destroy()

    def _watch_link(self, event: Any) -> None:
        """Hook the publish client's connect/disconnect callbacks (Salt >= 3007)."""
        subscriber = getattr(event, "subscriber", None)
        if subscriber is None or not hasattr(subscriber, "disconnect_callback"):
            log.warning("salt_ws: cannot watch the event bus link with this Salt version")
            return

        async def on_disconnect(*_: Any) -> None:
            self._link(False)

        async def on_connect(*_: Any) -> None:
            self._link(True)

        subscriber.disconnect_callback = on_disconnect
        subscriber.connect_callback = on_connect
