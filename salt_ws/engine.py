"""Engine lifecycle: config, loops, wiring, shutdown.

:func:`run` is what the ``ws`` engine's ``start()`` calls in the engine
process the salt-master spawned. Two threads:

* the **bus thread** (:class:`salt_ws.bus.BusReader`) only reads the master
  event bus and hands events over;
* the **main thread** runs the asyncio/tornado loop: it encodes each event
  once, fans it out through :class:`salt_ws.hub.Hub`, and serves HTTP and
  websockets.

Salt's process manager restarts an engine whose ``start()`` returns or
raises, every ~10 s, forever. A configuration error therefore does not
return: it is logged once at ERROR, and the process then idles until the
master stops it. A port that is in use is retried quietly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any, Mapping

import tornado.httpserver
import tornado.netutil

from salt_ws import wire
from salt_ws.acl import ADMIN, JobFunctions, Permissions, audience_key, targets_of
from salt_ws.app import make_server
from salt_ws.auth import Authenticator, install_log_redaction
from salt_ws.bus import BusReader, Handoff
from salt_ws.config import DEFAULTS, Config, ConfigError, parse, ssl_context
from salt_ws.delta import Coalescer, DeltaFeed
from salt_ws.fleet import Fleet
from salt_ws.handlers import Services
from salt_ws.hub import Channel, Hub
from salt_ws.metrics import Histogram, Registry, require
from salt_ws.pipeline import Entry, Group, Pipeline
from salt_ws.status import StatusServer, client_rows, socket_path
from salt_ws.view import FormattedView, LoadGrains, ReloadKeys, Update, ViewLimits

__all__ = ["Counters", "Engine", "run"]

log = logging.getLogger(__name__)


def delta_key(audience: str | None) -> tuple[str, str]:
    """The hub key of an audience's ``?delta=1`` clients (compat clients: the audience)."""
    return ("delta", ADMIN if audience is None else audience)


SHUTDOWN_GRACE = 2.0  # seconds given to close frames before the process exits
EXPIRE_EARLY = 1.0  # seconds before a token's expire time at which the engine ends it
GRAINS_INTERVAL = 1.0  # seconds between two reads of one minion's cached grains


class GrainsQueue:
    """Minions whose cached grains the view wants read, coalesced (pure; ``now`` passed in).

    Any minion can fire ``minion/refresh/<id>`` or a forged start event as often as it
    likes; each asks for a read. Ids wait in a set (bounded: the view asks only for
    accepted ids), one loader takes them, and each id is read at most once per
    :data:`GRAINS_INTERVAL`.
    """

    def __init__(self, interval: float = GRAINS_INTERVAL) -> None:
        self.interval = interval
        self.wanted: set[str] = set()
        self.loading = False  # a loader task is running
        self._read_at: dict[str, float] = {}  # id -> when it was last read (recent ones only)
        self.requests = 0  # ids asked for
        self.loads = 0  # reads started

    def want(self, mids: list[str]) -> None:
        """Ask for the grains of ``mids``."""
        self.requests += len(mids)
        self.wanted.update(mids)

    def take(self, now: float) -> tuple[list[str], float]:
        """(ids due now, removed from the wanted set; seconds until the next is due)."""
        for mid, at in list(self._read_at.items()):
            if now - at >= self.interval:
                del self._read_at[mid]
        due = sorted(mid for mid in self.wanted if mid not in self._read_at)
        self.wanted.difference_update(due)
        for mid in due:
            self._read_at[mid] = now
        if due:
            self.loads += 1
        waits = [self.interval - (now - self._read_at[mid]) for mid in self.wanted]
        return due, max(0.0, min(waits, default=0.0))

    def stats(self) -> dict[str, int]:
        """For ``salt-run ws.status`` (key ``grains``)."""
        return {
            "wanted": len(self.wanted),
            "requests": self.requests,
            "loads": self.loads,
        }


@dataclasses.dataclass
class Counters:
    """Engine-wide counters (see ``salt-run ws.status``)."""

    started: float = dataclasses.field(default_factory=time.time)
    events_received: int = 0
    connections: int = 0
    messages_sent: int = 0


class Engine:
    """The running engine: one bus subscription, one HTTP server, one hub.

    Args:
        opts: the master's opts.
        config: the validated engine options.
        tls: the server TLS context (None: plain HTTP).
    """

    def __init__(
        self, opts: Mapping[str, Any], config: Config, tls: ssl.SSLContext | None = None
    ) -> None:
        self.opts = dict(opts)
        self.config = config
        self.tls = tls
        self.counters = Counters()
        self.hub = Hub(config.client_queue_size, config.client_queue_bytes)
        self.auth: Authenticator | None = None
        self.bus: BusReader | None = None
        self.server: tornado.httpserver.HTTPServer | None = None
        self.services: Services | None = None
        self.status_server: StatusServer | None = None
        self.listening = False
        # option include_master: messages say which master they come from (multi-master)
        self.master_id: str | None = str(opts.get("id")) if config.include_master else None
        # a master of masters: syndics forward their masters' events and returns here
        self.syndics = bool(opts.get("order_masters", False))
        syndic_wait = float(opts.get("syndic_wait", 5) or 0) if self.syndics else 0.0
        self.view = FormattedView(
            ViewLimits(
                config.max_jobs,
                config.job_max_age,
                config.job_timeout,
                syndic_wait,
                max_minions=config.max_minions,
                max_jobs_bytes=config.max_jobs_bytes,
            ),
            self.master_id,
            syndics=self.syndics,
            grains=config.view_grains,
        )
        # /formatted_events?delta=1: JSON Patch per audience; compat tables coalesced
        self.deltas = DeltaFeed(self.view)
        self.coalescer = Coalescer(config.view_interval)
        self._compat_timer: asyncio.TimerHandle | None = None
        self.fleet: Fleet | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # the event stream: ids, history, audiences, per-group encodings
        self.stream = Pipeline(
            self.master_id,
            history_size=config.history_size,
            history_max_bytes=config.history_max_bytes,
            utc_jid=bool(self.opts.get("utc_jid", False)),
            accepted=lambda: self.view.accepted,
            syndics=self.syndics,
        )
        self.grains = GrainsQueue()
        if config.metrics:
            require()  # prometheus_client, which Salt does not bring: a ConfigError if missing
        self.fanout = Histogram()  # seconds from a batch's bus read to its last client write
        self._read_at: float | None = None  # when the batch being drained was read (perf_counter)
        self.metrics = Registry(self)  # every number, for ws.status and /metrics
        # grains reads and admission's target resolution each on a thread of their own,
        # not queued behind the default executor's fleet work (reseed, presence, keys)
        self._grains_pool = concurrent.futures.ThreadPoolExecutor(1, "salt_ws-grains")
        self._admit_pool = concurrent.futures.ThreadPoolExecutor(2, "salt_ws-admit")

    # -- bus -> hub -------------------------------------------------------------

    def consume(self, items: list[Any]) -> None:
        """Number and publish the bus items (each encoded once per group), apply them to
        the view (engine loop)."""
        read_at, self._read_at = self._read_at, None
        if read_at is None:  # not through the bus handoff (tests): from now
            read_at = time.perf_counter()
        now = time.time()
        batch = self.stream.feed(items, now)
        self.counters.events_received += len(items)
        update = Update()
        view = self.view
        for tag, data in batch.events:
            try:
                update.merge(view.apply(tag, data, now))
            except Exception:  # pylint: disable=broad-except
                log.exception("salt_ws: the formatted view could not apply %r", tag)
        if batch.reseed:
            self._spawn(self._reseed())  # the view may have missed changes
        self.publish(batch.entries)
        self._fanned_out(read_at)
        self.view_changed(update)

    def _fanned_out(self, read_at: float) -> None:
        """Observe the fan-out time once the clients' writes of this loop turn are done
        (they run in callbacks queued by the publish, ahead of this one)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tests): the writes, if any, were synchronous
            self.fanout.observe(time.perf_counter() - read_at)
            return
        loop.call_soon(lambda: self.fanout.observe(time.perf_counter() - read_at))

    def _stamped(self, schedule: Any) -> Any:
        """The bus handoff's ``schedule``, noting when the batch it wakes for was read.

        The bus thread schedules a drain for the first event after the last drain (its
        read time is the batch's); a drain that leaves items behind reschedules itself
        on the loop thread, and those items keep the read time of the batch they came in.
        """
        loop_thread = threading.get_ident()

        def stamp(drain: Any) -> Any:
            carried = self._read_at if threading.get_ident() == loop_thread else None
            read_at = carried if carried is not None else time.perf_counter()
            return schedule(self._drain_read_at, drain, read_at)

        return stamp

    def _drain_read_at(self, drain: Any, read_at: float) -> None:
        self._read_at = read_at
        drain()

    def publish(self, entries: list[Entry]) -> None:
        """Queue ``entries`` for every ``/all_events`` (and ``/events``) group."""
        hub = self.hub
        groups = [key for key in hub.keys(Channel.ALL_EVENTS) if isinstance(key, Group)]
        for group, messages in self.stream.fan_out(entries, groups).items():
            hub.publish(Channel.ALL_EVENTS, messages, key=group)

    @property
    def audiences(self) -> dict[str, Permissions]:
        """Audience key -> its permissions (the pipeline's)."""
        return self.stream.audiences

    @property
    def job_funs(self) -> JobFunctions:
        """What the ACL knows of recent jobs (the pipeline's)."""
        return self.stream.job_funs

    def view_changed(self, update: Update) -> None:
        """Send what changed — a patch per delta audience at once, the compat tables
        coalesced (``view_interval``), each encoded once per audience — and start the
        update's commands."""
        if update.minions or update.jobs:
            for key, message in self.deltas.patches(update).items():
                self.hub.publish(Channel.FORMATTED_EVENTS, [message], key=delta_key(key))
            self._send_tables(self.coalescer.changed(update, time.monotonic()))
        loads = [command for command in update.commands if isinstance(command, LoadGrains)]
        mids = [mid for command in loads for mid in command.mids]
        if mids and self.fleet is not None:
            self.grains.want(mids)  # one loader at a time, each id at most once a second
            if not self.grains.loading:
                self.grains.loading = True
                self._spawn(self._load_grains())
        if self.fleet is not None and any(isinstance(c, ReloadKeys) for c in update.commands):
            self._spawn(self._reload_keys())  # the view asks for one at a time

    def _send_tables(self, tables: list[str]) -> None:
        """Send the compat tables named (their latest state) to every compat audience,
        and arm the timer for those that wait (coalesced)."""
        if tables:
            for key in self.hub.keys(Channel.FORMATTED_EVENTS):
                if not isinstance(key, str):
                    continue  # a delta audience
                perms = None if key == ADMIN else self.audiences.get(key)
                if key != ADMIN and perms is None:
                    continue
                messages = []
                if "minions" in tables:
                    messages.append(self.view.render_minions(perms))
                if "jobs" in tables:
                    messages.append(self.view.render_jobs(perms))
                self.hub.publish(Channel.FORMATTED_EVENTS, messages, key=key)
        at = self.coalescer.next_at()
        if at is None or self._compat_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test feeding the engine by hand): nothing to arm
            return
        self._compat_timer = loop.call_later(max(0.0, at - time.monotonic()), self._tables_due)

    def _tables_due(self) -> None:
        self._compat_timer = None
        self._send_tables(self.coalescer.due(time.monotonic()))

    def delta_snapshot(self, audience: Permissions | None) -> str:
        """The first message of a ``?delta=1`` client of ``audience``."""
        return self.deltas.snapshot(None if audience is None or audience.admin else audience)

    def _forget_deltas(self) -> None:
        """Stop building patches for audiences whose last delta client left."""
        followed = {
            key[1] for key in self.hub.keys(Channel.FORMATTED_EVENTS) if isinstance(key, tuple)
        }
        for key in self.deltas.audiences:
            if (ADMIN if key is None else key) not in followed:
                self.deltas.forget(key)

    async def admit(self, session: dict[str, Any]) -> Permissions:
        """The audience of a session: its permissions, with ACL targets resolved."""
        assert self.auth is not None
        # on the token thread: its LoadAuth is used by no other thread (an auth object
        # without run(), as some tests inject, is called on the default executor)
        run = getattr(self.auth, "run", None) or self._blocking
        auth_list = await run(self.auth.auth_list, session)
        key = audience_key(auth_list)
        perms = self.audiences.get(key)
        if perms is None:
            perms = Permissions(auth_list)
            targets = targets_of(auth_list)
            if targets and self.fleet is not None:
                perms.resolve(
                    await self._blocking_on(self._admit_pool, self.fleet.resolve, targets)
                )
            self.audiences[key] = perms
        return perms

    async def _refresh_audiences(self) -> None:
        """Re-resolve ACL targets (minions come and go, grains change)."""
        for key, perms in list(self.audiences.items()):
            targets = targets_of(perms.auth_list)
            if not targets or self.fleet is None:
                continue
            try:
                resolved = await self._blocking(self.fleet.resolve, targets)
            except Exception:  # pylint: disable=broad-except
                log.debug("salt_ws: ACL target refresh failed", exc_info=True)
                continue
            if not perms.resolve(resolved):
                continue  # the same minions: nothing this audience sees changed
            self.view.forget_audience(key)
            self.stream.forget_audience(key)  # replays judge past events anew
            resync = self.deltas.resync(perms)
            if resync is not None:
                self.hub.publish(Channel.FORMATTED_EVENTS, [resync], key=delta_key(key))
            tables = [self.view.render_minions(perms), self.view.render_jobs(perms)]
            self.hub.publish(Channel.FORMATTED_EVENTS, tables, key=key)  # its compat clients

    def snapshot(self, channel: Channel, audience: Permissions | None = None) -> list[str]:
        """What a client of ``channel`` gets right after its ready message."""
        if channel is not Channel.FORMATTED_EVENTS:
            return []
        return self.view.snapshot(audience)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _blocking(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    async def _blocking_on(self, pool: concurrent.futures.Executor, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    async def _load_grains(self) -> None:
        """The one grains loader: reads what :attr:`grains` has due until nothing is wanted."""
        assert self.fleet is not None
        try:
            while self.grains.wanted:
                mids, wait = self.grains.take(time.monotonic())
                if not mids:
                    await asyncio.sleep(wait)
                    continue
                try:
                    found = await self._blocking_on(
                        self._grains_pool, self.fleet.load_grains, dict.fromkeys(mids)
                    )
                except Exception:  # pylint: disable=broad-except
                    log.warning("salt_ws: could not read cached grains", exc_info=True)
                    continue
                update = Update()
                for mid, grains in found.items():
                    update.merge(self.view.set_grains(mid, grains))
                self.view_changed(update)
        finally:
            self.grains.loading = False

    async def _reload_keys(self) -> None:
        """Re-read the accepted keys for the view (a key event, or an id it has no key for)."""
        assert self.fleet is not None
        try:
            accepted = await self._blocking(self.fleet.accepted)
        except Exception:  # pylint: disable=broad-except
            log.warning("salt_ws: could not read the master's accepted keys", exc_info=True)
            accepted = None
        self.view_changed(self.view.set_accepted(accepted, time.time()))

    async def _reseed(self) -> None:
        """(Re)load the fleet: accepted, connected minions and their cached grains."""
        if self.fleet is None:
            self.fleet = await self._blocking(Fleet, self.opts)
            if not self.fleet.data_cache:
                log.warning("salt_ws: minion_data_cache is off; the formatted view shows no grains")
        try:
            minions = await self._blocking(self.fleet.seed)
            accepted = await self._blocking(self.fleet.accepted)
            syndics = await self._blocking(self.fleet.syndics) if self.syndics else []
        except Exception:  # pylint: disable=broad-except
            log.warning("salt_ws: could not read the fleet from the master", exc_info=True)
            return
        self.view_changed(self.view.seed(minions, syndics, accepted))

    async def _housekeeping(self) -> None:
        """Twice a second: token expiry, job timeouts and bounds; ACL targets and, when
        the master's presence events cannot be used, presence at their intervals."""
        interval = float(self.opts.get("loop_interval", 60) or 60)
        # On a master of masters syndics re-fire their masters' presence events
        # under the same tag, so this master's own presence must be checked.
        presence_events = bool(self.opts.get("presence_events", False))
        own_presence = self.syndics or not presence_events
        if not presence_events:
            log.warning(
                "salt_ws: presence_events is off on this master; the engine checks "
                "connected minions itself every %gs (loop_interval)",
                interval,
            )
        elif own_presence:
            log.info(
                "salt_ws: order_masters is on; the engine checks this master's connected "
                "minions itself every %gs (loop_interval) and follows syndics' presence events",
                interval,
            )
        next_presence = time.monotonic() + interval
        next_acl = time.monotonic() + self.config.acl_refresh_interval
        failing = False
        while True:
            await asyncio.sleep(0.5)
            try:
                now = time.time()
                if self.services is not None and self.auth is not None:
                    # Tokens end EXPIRE_EARLY before their expire time: sockets are
                    # closed and the token removed before Salt's own clean-up finds
                    # it expired (which logs the token).
                    self.services.close_expired(now + EXPIRE_EARLY)
                    self.services.close_stalled(time.monotonic())  # writes stuck WRITE_TIMEOUT
                    self.services.tick(time.monotonic())  # quiet envelope / SSE clients
                    due = self.auth.reap(now + EXPIRE_EARLY)
                    if due:
                        await self.auth.run(self.auth.forget, due)
                self.view_changed(self.view.expire(now))
                self._forget_deltas()
                if time.monotonic() >= next_acl:
                    next_acl = time.monotonic() + self.config.acl_refresh_interval
                    await self._refresh_audiences()
                if own_presence and self.fleet is not None and time.monotonic() >= next_presence:
                    next_presence = time.monotonic() + interval
                    connected = await self._blocking(self.fleet.connected)
                    self.view_changed(self.view.presence(connected, now=time.time()))
                failing = False
            except Exception:  # pylint: disable=broad-except
                # Keep enforcing token expiry whatever else fails; log once per streak.
                if not failing:
                    log.exception("salt_ws: housekeeping step failed; continuing")
                failing = True

    # -- lifecycle --------------------------------------------------------------

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then close every client with 1001."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._start(loop)
            await self._stopping.wait()
        finally:
            await self.shutdown()

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.status_server = StatusServer(
            socket_path(self.opts, self.config.port),
            {"status": self.status, "view": self.view.tables, "clients": self.clients},
        )
        await self.status_server.start()
        self.auth = Authenticator(self.opts, max_pending_logins=self.config.max_pending_logins)
        # tokens issued before a restart are removed early too (see Authenticator.reap)
        known = await self.auth.run(self.auth.load_known)
        log.debug("salt_ws: %d tokens in the store are tracked for expiry", known)
        handoff = Handoff(
            self._stamped(loop.call_soon_threadsafe), self.consume, self.config.bus_queue_bytes
        )
        self.bus = BusReader(self.opts, handoff)
        self.bus.start()
        if not await loop.run_in_executor(None, self.bus.wait_started, 30.0):
            log.warning("salt_ws: the event bus subscription is slow to start")
        self.job_funs.watch(time.time())  # jobs published from now on are seen from their new
        await self._reseed()
        self._spawn(self._housekeeping())

        self.services = Services(
            self.config, self.hub, self.auth, self.counters, self.snapshot, self.admit, self.stream
        )
        self.services.exposition = self.metrics.exposition  # GET /metrics (metrics: True)
        self.services.delta_snapshot = self.delta_snapshot  # /formatted_events?delta=1
        self.services.opts = self.opts  # the dashboard's eauth backends
        self.server = make_server(self.services, self.tls)
        sockets = await self._bind()
        if sockets is None:
            return
        self.server.add_sockets(sockets)
        self.listening = True
        scheme = "https/wss" if self.tls else "http/ws (TLS disabled)"
        log.info("salt_ws: serving %s on %s:%d", scheme, self.config.address, self.config.port)

    async def _bind(self) -> list[socket.socket] | None:
        """Bind the listening sockets; retry quietly while the port is in use."""
        cfg = self.config
        reported = False
        while True:
            try:
                return tornado.netutil.bind_sockets(cfg.port, cfg.address, backlog=cfg.backlog)
            except socket.gaierror as exc:
                raise ConfigError("address", f"cannot resolve {cfg.address!r}: {exc}") from None
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise ConfigError(
                        "port", f"cannot listen on {cfg.address}:{cfg.port}: {exc.strerror}"
                    ) from None
                if not reported:
                    # EADDRNOTAVAIL: the address is not (yet) on this host, e.g. at boot.
                    log.error(
                        "salt_ws: option '%s': cannot listen on %s:%d: %s; retrying every %ds",
                        "port" if exc.errno == errno.EADDRINUSE else "address",
                        cfg.address,
                        cfg.port,
                        exc.strerror,
                        cfg.bind_retry_interval,
                    )
                    reported = True
                else:
                    log.debug("salt_ws: still cannot listen on %s:%d", cfg.address, cfg.port)
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), cfg.bind_retry_interval)
                return None
            except asyncio.TimeoutError:
                continue

    async def shutdown(self) -> None:
        """Stop accepting, close clients with 1001, unsubscribe from the bus."""
        log.info("salt_ws: shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None and self.listening:
            self.server.stop()
        if self.services is not None:
            sockets = self.services.sockets
            for handler in list(sockets):
                handler.close(wire.CLOSE_GOING_AWAY, "salt master shutting down")
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while sockets and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # clients answer the close frame
        if self.bus is not None:
            self.bus.stop()
        if self.auth is not None:
            self.auth.shutdown()
        for pool in (self._grains_pool, self._admit_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.status_server is not None:
            await self.status_server.stop()

    def status(self) -> dict[str, Any]:
        """The live state reported by ``salt-run ws.status``."""
        hub, counters, cfg = self.hub, self.counters, self.config
        return {
            "running": True,
            "state": "serving" if self.listening else "waiting for port",
            "pid": os.getpid(),
            "address": cfg.address,
            "port": cfg.port,
            "tls": cfg.tls,
            "uptime": round(time.time() - counters.started, 3),
            "clients": {channel.value: hub.count(channel) for channel in Channel},
            "connections_total": counters.connections,
            "events_received": counters.events_received,
            "messages_sent": counters.messages_sent,
            "clients_cut_slow": hub.stats.clients_cut,
            "clients_cut_bytes": hub.stats.clients_cut_bytes,
            "queue_bytes_high_water": hub.stats.queue_bytes_high_water,
            "client_queue_bytes": cfg.client_queue_bytes,
            "frame_cache": self.services.frames.stats() if self.services else None,
            "writes": self.services.writes.stats() if self.services else None,  # fan-out writes
            "queue_high_water": hub.stats.queue_high_water,
            "client_queue_size": cfg.client_queue_size,
            "bus_connected": bool(self.bus and self.bus.connected),
            "bus_reconnects": self.stream.bus_reconnects,
            **(self.bus.stats() if self.bus is not None else {}),
            "minions": len(self.view.minion_ids),
            "jobs": self.view.job_count,
            "syndics": self.view.syndic_ids,
            "view_refused": self.view.refused,  # the formatted view's refusals, by reason
            "jobs_bytes": self.view.jobs_bytes,
            "jobs_kept_bytes": self.view.kept_bytes,  # arguments and functions besides
            "acl_jobs": self.job_funs.stats(),
            "grains": self.grains.stats(),  # grains reads asked for, coalesced, started
            "view_deltas": self.deltas.stats(),  # ?delta=1: audiences followed, patches, resyncs
            "view_tables": self.coalescer.stats(),  # compat tables sent and coalesced
            "dashboard": (
                self.services.dashboard.stats()
                if self.services is not None and self.services.dashboard is not None
                else None
            ),
            "limits": self.services.stats() if self.services is not None else {},
            "stream": self.stream.status(),  # ids, history, replays and gaps
            "stream_filters": self.stream.filter_stats(),  # compiled tag filter sets
            "metrics": self.metrics.status(),  # the registry /metrics serves (salt_ws_* names)
        }

    def clients(self) -> dict[str, Any]:
        """What ``salt-run ws.clients`` reports: one row per open stream (no token)."""
        sockets = self.services.sockets if self.services is not None else ()
        return {"clients": client_rows(sockets, self.stream.id_of, time.time())}


def _port_label(port: object) -> str:
    """The port as a safe file-name part (the option may be anything before validation)."""
    text = str(port)
    return text if text.isdigit() else "invalid-port"


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _park(opts: Mapping[str, Any], port: object, reason: str) -> None:
    """Idle until the master stops this process, so Salt does not restart (and re-log) us.

    ``salt-run ws.status`` still answers, with the reason.
    """
    failed = {"running": False, "state": "failed", "pid": os.getpid(), "message": reason}
    server = StatusServer(socket_path(opts, port), {"status": lambda: failed})
    try:
        await server.start()
    except OSError as exc:
        log.debug("salt_ws: no status socket while parked: %s", exc)
    try:
        await _wait_for_stop()
    finally:
        await server.stop()


async def _main(opts: Mapping[str, Any], raw_config: Mapping[str, Any] | None) -> None:
    port = _port_label((raw_config or {}).get("port", DEFAULTS.port))
    try:
        config = parse(raw_config)
        await Engine(opts, config, ssl_context(config)).serve()
    except ConfigError as exc:
        log.error("salt_ws engine not started: %s", exc)
        await _park(opts, port, f"not started: {exc}")
    except Exception as exc:  # pylint: disable=broad-except
        log.critical(
            "salt_ws engine failed; it stays down until the salt-master restarts", exc_info=True
        )
        await _park(opts, port, f"failed: {exc!r}; see the master log")


def run(opts: Mapping[str, Any], raw_config: Mapping[str, Any] | None) -> None:
    """Entry point of the ``ws`` engine (blocking, in the engine process).

    Args:
        opts: the master's ``__opts__``.
        raw_config: the options under ``engines: - ws:``.
    """
    install_log_redaction()
    # Two busy threads (bus reader, fan-out) share the GIL: hand it over sooner than
    # the default 5 ms so neither adds that much to an event's latency.
    sys.setswitchinterval(0.001)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_main(opts, raw_config))
    finally:
        loop.close()
    log.info("salt_ws: engine stopped (pid %d)", os.getpid())
