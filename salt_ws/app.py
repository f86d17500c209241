"""Route table, settings and the HTTP server: builds the :class:`tornado.web.Application`
and the :class:`Server` that serves it."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream
import tornado.web

from salt_ws.auth import loggable
from salt_ws.handlers import EventsHandler, LoginHandler, LogoutHandler, Services
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
    ]
    return tornado.web.Application(
        routes,
        debug=False,  # tornado's debug mode autoreloads and serves tracebacks: never in an engine
        serve_traceback=False,
        log_function=_log_request,
        websocket_max_message_size=services.config.max_message_size,
    )


_TIMEOUTS = {"headers": "http_header_timeout", "body": "http_body_timeout"}


class _Connection:
    """What the server knows of one HTTP connection: its address key and request phase."""

    __slots__ = ("key", "phase", "since")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.phase = "headers"  # waiting for a request's headers, then "body", then "done"
        self.since = now


class _Watch(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, noting its phase on the connection."""

    def __init__(self, delegate: tornado.httputil.HTTPMessageDelegate, conn: _Connection) -> None:
        self.delegate = delegate
        self.conn = conn

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.conn.phase, self.conn.since = "body", tornado.ioloop.IOLoop.current().time()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.conn.phase = "done"
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
    """

    def initialize(self, *args: Any, services: Services, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self.services = services
        self.http_timeout = float(services.config.http_timeout)
        self._open: dict[tornado.iostream.IOStream, _Connection] = {}

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        services = self.services
        peer = address[0] if isinstance(address, tuple) and address else ""
        key = address_key(peer)
        refusal = services.http.acquire(key, exempt=is_trusted(peer, services.trusted))
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
        return _Watch(delegate, conn)

    def on_close(self, server_conn: object) -> None:
        conn = self._open.pop(getattr(server_conn, "stream", None), None)  # type: ignore[arg-type]
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
