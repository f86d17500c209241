"""Route table, settings and the HTTP server: builds the :class:`tornado.web.Application`
and the :class:`Server` that serves it."""

from __future__ import annotations

import collections
import logging
import ssl
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream
import tornado.web

from salt_ws import dashboard
from salt_ws.auth import loggable
from salt_ws.handlers import (
    EventsHandler,
    EventsSSEHandler,
    LoginHandler,
    LogoutHandler,
    MetricsHandler,
    Services,
)
from salt_ws.hub import Channel
from salt_ws.limits import address_key, is_trusted

__all__ = ["Server", "make_app", "make_server"]

access_log = logging.getLogger("salt_ws.access")


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, with tokens in paths redacted and control characters escaped."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s (%s) %.1fms",
            status,
            loggable(request.method or ""),
            loggable(request.uri or ""),
            request.remote_ip,
            1000.0 * request.request_time(),
        )


def make_app(services: Services) -> tornado.web.Application:
    """The engine's routes.

    ``/all_events/<token>`` and ``/formatted_events/<token>`` keep saltnado's
    URLs; a malformed token gets the same 401 as an unknown one (saltnado
    answered 404 for a token of the wrong length). ``/all_events`` and
    ``/formatted_events`` without a token take it from the ``X-Auth-Token``
    header, the session cookie or a first ``{"token": ...}`` message.
    """
    kwargs: dict[str, Any] = {"services": services}
    routes = [
        (r"/login", LoginHandler, kwargs),
        (r"/logout", LogoutHandler, kwargs),
        (
            r"/all_events(?:/([^/]*))?",
            EventsHandler,
            {**kwargs, "channel": Channel.ALL_EVENTS},
        ),
        (
            r"/formatted_events(?:/([^/]*))?",
            EventsHandler,
            {**kwargs, "channel": Channel.FORMATTED_EVENTS},
        ),
        (r"/events", EventsSSEHandler, kwargs),
        *dashboard.routes(services),  # "/" and "/dashboard/...": none with dashboard: False
    ]
    cfg = services.config
    if cfg.metrics:  # GET /metrics (Prometheus); 404 otherwise
        routes.append((r"/metrics", MetricsHandler, kwargs))
    return tornado.web.Application(
        routes,
        debug=False,  # tornado's debug mode autoreloads and serves tracebacks: never in an engine
        serve_traceback=False,
        log_function=_log_request,
        websocket_max_message_size=cfg.max_message_size,
        # heartbeats: a ping every ping_interval s; no pong within ping_timeout closes
        websocket_ping_interval=cfg.ping_interval or None,
        websocket_ping_timeout=cfg.ping_timeout,
    )


_TIMEOUTS = {"headers": "http_header_timeout", "body": "http_body_timeout"}


class _Connection:
    """What the server knows of one HTTP connection: its address key and request phase."""

    __slots__ = ("key", "phase", "since", "writing_since")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.phase = "headers"  # waiting for a request's headers, then "body", then "done"
        self.since = now
        self.writing_since: float | None = None  # a response waiting for the client to read


class _Watch(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, noting its phase on the connection.

    The connection stays evictable (in ``waiting``) until its request is complete and
    handed to a handler (:meth:`finish`): headers or a body dribbled in hold no slot.
    """

    def __init__(
        self,
        delegate: tornado.httputil.HTTPMessageDelegate,
        conn: _Connection,
        waiting: collections.OrderedDict[Any, _Connection],
        stream: Any,
    ) -> None:
        self.delegate = delegate
        self.conn = conn
        self.waiting = waiting
        self.stream = stream

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.conn.phase, self.conn.since = "body", tornado.ioloop.IOLoop.current().time()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.conn.phase = "done"
        self.waiting.pop(self.stream, None)  # a request being handled is never evicted
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class Server(tornado.httpserver.HTTPServer):
    """tornado's HTTP server, counting open connections per address and in all.

    A connection over ``max_http_connections`` or, from an address that is not
    a trusted proxy, over ``max_http_connections_per_address`` is closed at once
    (counted in ``Services.refused``). A connection counts until it closes or is
    upgraded to a websocket, which the websocket budgets count from then on.
    Connections tornado closes for ``http_timeout`` (headers, idle keep-alive,
    body) are counted as ``http_header_timeout`` / ``http_body_timeout``.

    When the total is full, the connection that has waited longest for a
    request to be complete (headers or body: a slowloris, a dribbled body, an
    idle keep-alive) is closed to make room (``max_http_connections_evicted``);
    only when every connection has a request being handled or a response being
    written is the newcomer refused. A response the client does not read
    within ``http_timeout`` closes its connection (``http_write_timeout``;
    tornado itself waits for it forever), checked by :meth:`sweep`.
    """

    def initialize(self, *args: Any, services: Services, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self.services = services
        self.http_timeout = float(services.config.http_timeout)
        self._open: dict[tornado.iostream.IOStream, _Connection] = {}
        # connections whose request is not complete yet (headers, body), longest-waiting first
        self._waiting: collections.OrderedDict[Any, _Connection] = collections.OrderedDict()
        self._sweeper: tornado.ioloop.PeriodicCallback | None = None
        services.detach_http = self.detach

    def detach(self, stream: Any) -> None:
        """Stop counting ``stream`` as an HTTP connection: it carries an event stream
        now (SSE), which the stream budgets count, as after a websocket upgrade."""
        self._waiting.pop(stream, None)
        conn = self._open.pop(stream, None)
        if conn is not None:
            self.services.http.release(conn.key)

    def _evict_waiting(self) -> bool:
        """Close the connection that has waited longest for a complete request; False if none."""
        if not self._waiting:
            return False
        stream, conn = self._waiting.popitem(last=False)
        if self._open.pop(stream, None) is not None:
            self.services.http.release(conn.key)  # now: tornado's on_close comes later
        self.services.refuse("max_http_connections_evicted")
        stream.close()
        return True

    def sweep(self, now: float) -> int:
        """Close connections whose response has waited ``http_timeout`` for the client to
        read it (``now``: the loop's time); returns how many."""
        stalled = []
        for stream, conn in self._open.items():
            if conn.phase != "done" or not stream.writing():
                conn.writing_since = None
            elif conn.writing_since is None:
                conn.writing_since = now
            elif now - conn.writing_since >= self.http_timeout:
                stalled.append((stream, conn))
        for stream, conn in stalled:
            del self._open[stream]
            self._waiting.pop(stream, None)
            self.services.http.release(conn.key)
            self.services.refuse("http_write_timeout")
            stream.close()
        return len(stalled)

    def _sweep(self) -> None:
        self.sweep(tornado.ioloop.IOLoop.current().time())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        super().stop()

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        services = self.services
        peer = address[0] if isinstance(address, tuple) and address else ""
        key = address_key(peer)
        if self._sweeper is None:
            interval = max(0.05, self.http_timeout / 4)
            self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep, interval * 1000)
            self._sweeper.start()
        exempt = is_trusted(peer, services.trusted)
        http = services.http
        if http.refusal(key, exempt) == "total" and (exempt or http.count(key) < http.per_key):
            self._evict_waiting()  # not for an address that its own cap refuses anyway
        refusal = services.http.acquire(key, exempt=exempt)
        if refusal is not None:
            services.refuse(
                "max_http_connections" if refusal == "total" else "max_http_connections_per_address"
            )
            stream.close()
            return
        # registered first: tornado may call on_close before handle_stream returns
        self._open[stream] = _Connection(key, tornado.ioloop.IOLoop.current().time())
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        conn = self._open.get(getattr(server_conn, "stream", None))  # type: ignore[arg-type]
        if conn is None:
            return delegate
        conn.phase, conn.since = "headers", tornado.ioloop.IOLoop.current().time()
        stream = getattr(server_conn, "stream", None)
        self._waiting[stream] = conn
        self._waiting.move_to_end(stream)
        return _Watch(delegate, conn, self._waiting, stream)

    def on_close(self, server_conn: object) -> None:
        stream = getattr(server_conn, "stream", None)
        self._waiting.pop(stream, None)
        conn = self._open.pop(stream, None)  # type: ignore[arg-type]
        if conn is not None:
            self.services.http.release(conn.key)
            waited = tornado.ioloop.IOLoop.current().time() - conn.since
            if conn.phase != "done" and waited >= self.http_timeout * 0.95:
                self.services.refuse(_TIMEOUTS[conn.phase])
        super().on_close(server_conn)


def make_server(services: Services, tls: ssl.SSLContext | None = None) -> Server:
    """The engine's HTTP server for :func:`make_app` (not yet listening).

    ``http_timeout`` bounds, in all, the wait for a request's headers (tornado's
    ``idle_connection_timeout``: the whole header read, so headers dribbled a
    byte at a time are cut too; also an idle keep-alive connection) and for its
    body (``body_timeout``).
    """
    cfg = services.config
    return Server(
        make_app(services),
        services=services,
        ssl_options=tls,
        max_body_size=cfg.max_body_size,
        idle_connection_timeout=cfg.http_timeout,
        body_timeout=cfg.http_timeout,
    )
