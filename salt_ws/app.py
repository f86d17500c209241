"""Route table and settings: builds the :class:`tornado.web.Application`."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

from salt_ws.auth import redact
from salt_ws.handlers import EventsHandler, LoginHandler, LogoutHandler, Services
from salt_ws.hub import Channel

__all__ = ["make_app"]

access_log = logging.getLogger("salt_ws.access")


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, with tokens in paths redacted."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO
    if access_log.isEnabledFor(level):
        request = handler.request
        access_log.log(
            level,
            "%d %s %s (%s) %.1fms",
            status,
            request.method,
            redact(request.uri or ""),
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
