"""Tornado handlers: ``/login``, ``/logout`` and the event websockets. Thin.

Handlers get their collaborators (hub, authenticator, config, counters)
through tornado's ``initialize()`` keyword arguments, never from globals.

Admission (issue 9): a websocket without a checked token (waiting for its
first-message token) holds a slot of its own small budget
(``max_unauthenticated``, ``max_unauthenticated_per_address``), not one of
``max_connections``, which only authenticated sockets count, with
``max_connections_per_token`` and ``max_connections_per_user`` beside it. The
client address is the peer's, or what a ``trusted_proxies`` peer says in
``X-Forwarded-For`` (:func:`salt_ws.limits.client_address`); per-address limits
count IPv6 by /64. Every refusal is counted by reason in
:meth:`Services.stats` (``salt-run ws.status``, key ``limits``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import urllib.parse
from typing import Any, Awaitable, Callable, Mapping, cast

import tornado.iostream
import tornado.web
import tornado.websocket

from salt_ws import wire
from salt_ws.acl import ADMIN
from salt_ws.auth import MAX_TOKEN_EXPIRE, LoginBusy, LoginFailed, check_token_expire, loggable
from salt_ws.hub import Channel, Subscription
from salt_ws.limits import LoginThrottle, Slots, address_key, client_address, is_trusted, networks
from salt_ws.metrics import Traffic, close_reason
from salt_ws.pipeline import Pipeline
from salt_ws.session import (
    CLIENT_READY,
    ReplyKind,
    RequestError,
    Session,
    State,
    over_a_limit,
    parse_request,
)

__all__ = [
    "AUTH_COOKIE",
    "CLIENT_READY",
    "REFUSALS",
    "EventsHandler",
    "EventsSSEHandler",
    "LoginHandler",
    "LogoutHandler",
    "MetricsHandler",
    "Services",
    "Writes",
]

log = logging.getLogger(__name__)

AUTH_COOKIE = "session_id"  # saltnado's cookie name
WRITE_BATCH = 256  # messages handed to tornado per flush; bounds its buffer
WRITE_BATCH_BYTES = 2**20  # bytes per flush (at least one message): what a non-reader pins
WRITE_TIMEOUT = 30.0  # seconds a batch may take to reach the client before it is cut (4001)
# An outbox holding at most this (text sizes) is written as one batch: a message's frame is
# at most twice its text's in-memory size (UTF-8 of Latin-1 text), so the batch stays within
# WRITE_BATCH_BYTES without framing messages one at a time to find out.
_WHOLE_OUTBOX_BYTES = WRITE_BATCH_BYTES // 2

# Unknown tokens per address per login_failure_window: this many times login_max_failures.
# Looser than for passwords: a token cannot be guessed; this bounds the lookups (and the
# log lines Salt writes for tokens it cannot load).
UNKNOWN_TOKEN_ALLOWANCE = 4

# Failed logins per username per login_failure_window: this many times login_max_failures,
# so that one address (stopped at login_max_failures) cannot lock an account out alone.
USER_FAILURE_ALLOWANCE = 2

# Every refusal reason counted in Services.refused (shown even while zero).
REFUSALS = (
    "max_connections",  # 503 before the upgrade, 1013 after a first-message token
    "max_connections_per_token",  # 429 / 1013
    "max_connections_per_user",  # 429 / 1013
    "max_unauthenticated",  # 503: too many sockets waiting for a token message
    "max_unauthenticated_per_address",  # 429
    "max_http_connections",  # connection closed at once (salt_ws.app.Server)
    "max_http_connections_per_address",
    "max_http_connections_evicted",  # the longest wait for headers closed to make room
    "http_write_timeout",  # a response not read by the client within http_timeout
    "http_header_timeout",  # headers not complete within http_timeout (or idle keep-alive)
    "http_body_timeout",  # body not complete within http_timeout
    "login_throttled",  # 429: failed logins per address or per username
    "max_pending_logins",  # 503: the login queue is full
    "max_pending_logins_per_user",  # 429: logins of this username already waiting
    "unknown_token_throttled",  # 429 / 1013: unknown tokens per address
    "cross_origin",  # 403: /login or /logout from a foreign Origin
    "write_stalled",  # 4001: a write batch not taken by the client within WRITE_TIMEOUT
)

JSON_TYPES = ("application/json", "text/json")
YAML_TYPES = ("application/x-yaml", "text/yaml", "application/yaml")


class Writes:
    """The fan-out's write side: wake-ups coalesced per loop turn, and what the writes cost.

    A publish wakes every client it queued messages for. :meth:`wake` only notes the
    client; one callback per loop turn (``loop.call_soon``) then flushes each noted
    client once, after every publish and push of that turn, so a client gets one
    write per turn however many publishes (and groups) woke it. Nothing here waits:
    the bus thread only ever schedules a drain (:class:`salt_ws.bus.Handoff`).

    Counters (``salt-run ws.status``, key ``writes``): ``rounds`` (flush callbacks),
    ``wakeups`` (wakes by publishes and pushes), ``flushes`` (clients flushed by a
    round), ``writes`` (batches written), ``messages`` (in them), ``direct`` (batches
    the socket's own ``send`` took whole: no tornado buffer, no future), ``partial``
    (the socket took part, tornado got the rest), ``tornado`` (batches handed to
    tornado whole: TLS, SSE, a non-empty tornado buffer, a full socket),
    ``direct_bytes`` and ``tornado_bytes``.
    """

    __slots__ = (
        "_due",
        "_scheduled",
        "direct",
        "direct_bytes",
        "flushes",
        "messages",
        "partial",
        "rounds",
        "tornado",
        "tornado_bytes",
        "wakeups",
        "writes",
    )

    def __init__(self) -> None:
        self._due: dict[_Stream, None] = {}  # woken this turn, in wake order
        self._scheduled = False
        self.rounds = self.wakeups = self.flushes = self.writes = self.messages = 0
        self.direct = self.partial = self.tornado = 0
        self.direct_bytes = self.tornado_bytes = 0

    def wake(self, stream: _Stream) -> None:
        """Flush ``stream`` at the end of this loop turn (once, however often woken)."""
        self.wakeups += 1
        self._due[stream] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        due, self._due = self._due, {}
        self.rounds += 1
        self.flushes += len(due)
        for stream in due:
            try:
                stream._flush()
            except Exception:  # pylint: disable=broad-except
                log.exception("salt_ws: a client's flush failed")

    def stats(self) -> dict[str, int]:
        """Counters for ``salt-run ws.status`` (key ``writes``)."""
        return {name: getattr(self, name) for name in self.__slots__ if name[0] != "_"}


class Services:
    """What the handlers share; built once by the engine (tests build their own).

    Args:
        config: the engine's :class:`~salt_ws.config.Config`.
        hub: the :class:`~salt_ws.hub.Hub`.
        auth: the :class:`~salt_ws.auth.Authenticator`.
        counters: engine-wide counters (``connections``, ``messages_sent``).
        snapshot: first messages for a new client of a channel and audience.
        admit: coroutine turning a session into its audience (permissions).
    """

    def __init__(
        self,
        config: Any,
        hub: Any,
        auth: Any,
        counters: Any,
        snapshot: Callable[[Channel, Any], list[str]] = lambda channel, audience: [],
        admit: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
        stream: Pipeline | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.auth = auth
        self.counters = counters
        self.snapshot = snapshot
        self.opts: Mapping[str, Any] | None = None  # the master's opts (the engine sets them)
        self.dashboard: Any = None  # the dashboard's state, when it is served
        # the first message of a /formatted_events?delta=1 client (the engine's DeltaFeed)
        self.delta_snapshot: Callable[[Any], str] = _no_deltas
        self.admit = admit or _admit_everyone
        # the event stream (ids, history, audiences); tests may leave it to us
        self.stream = stream if stream is not None else Pipeline()
        self.sockets: set[_Stream] = set()  # open websockets and SSE streams
        # the HTTP server's: stop counting a connection as HTTP (an SSE stream began)
        self.detach_http: Callable[[Any], None] = lambda stream: None
        self.frames = wire.FrameCache(config.frame_cache_bytes)  # frames shared by all clients
        # SSE: the UTF-8 bytes of each message, shared likewise (a quarter of the bound)
        self.texts = wire.FrameCache(config.frame_cache_bytes // 4, build=wire.utf8)
        self.throttle = LoginThrottle(
            config.login_max_failures,
            config.login_failure_window,
            max_user_failures=config.login_max_failures * USER_FAILURE_ALLOWANCE,
        )
        self.token_throttle = LoginThrottle(
            config.login_max_failures * UNKNOWN_TOKEN_ALLOWANCE, config.login_failure_window
        )
        self.trusted = networks(config.trusted_proxies)
        self.unauthenticated = Slots(
            config.max_unauthenticated, config.max_unauthenticated_per_address
        )
        self.http = Slots(config.max_http_connections, config.max_http_connections_per_address)
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self.writes = Writes()  # coalesced flushes and what the writes cost
        self.traffic = Traffic()  # per endpoint: sent, connections, closes by reason; logins
        # GET /metrics: (body, content type); the engine's registry (None: not served)
        self.exposition: Callable[[], tuple[bytes, str]] | None = None

    def authenticated(self) -> int:
        """Open streams with a checked token (what ``max_connections`` counts)."""
        return sum(1 for h in self.sockets if h.session is not None)

    def tick(self, now: float) -> None:
        """Ticks and keepalives for streams quiet for ``tick_interval`` (``now``: monotonic)."""
        interval = self.config.tick_interval
        if interval:
            for handler in list(self.sockets):
                handler.tick(now, interval)

    def refuse(self, reason: str) -> None:
        """Count a refusal (one of :data:`REFUSALS`)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def client_address(self, request: Any) -> str:
        """The client's address: the peer, or ``X-Forwarded-For`` from a trusted proxy."""
        forwarded = request.headers.get_list("X-Forwarded-For")
        return client_address(request.remote_ip or "", forwarded, self.trusted)

    def stats(self) -> dict[str, Any]:
        """What is open, what was refused (by reason), what the throttles track."""
        auth_stats = self.auth.stats() if hasattr(self.auth, "stats") else {}
        login = self.throttle.stats()
        return {
            "open": {
                "websockets": len(self.sockets),
                "authenticated": self.authenticated(),
                "unauthenticated": len(self.unauthenticated),
                "http_connections": len(self.http),
                "logins_pending": auth_stats.get("logins_pending", 0),
                "write_pending_bytes": sum(h.pending_bytes for h in self.sockets),
            },
            "refused": dict(self.refused),
            "tracked": {
                "login_addresses": login["addresses"],
                "login_usernames": login["usernames"],
                "unknown_token_addresses": self.token_throttle.stats()["addresses"],
                "tokens_known": auth_stats.get("tokens_known", 0),
            },
        }

    def connections_for(self, token: str) -> int:
        """Open websockets authenticated with ``token``."""
        return sum(1 for handler in self.sockets if handler.token == token)

    def close_expired(self, now: float) -> int:
        """Close sockets whose token has expired; returns how many."""
        expired = [h for h in self.sockets if h.session is not None and h.session.expired(now)]
        for handler in expired:
            handler.closing("token_expired")
            handler.close(wire.CLOSE_TOKEN_INVALID, "token expired")
        return len(expired)

    def close_stalled(self, now: float) -> int:
        """Cut sockets whose write batch has waited :data:`WRITE_TIMEOUT` or more
        (``now``: :func:`time.monotonic`); returns how many."""
        stalled = [h for h in self.sockets if h.stalled(now)]
        for handler in stalled:
            self.refuse("write_stalled")
            handler.cut_stalled()
        return len(stalled)

    def revoke(self, token: str) -> int:
        """Close the sockets of a token that was logged out; returns how many."""
        revoked = [h for h in self.sockets if h.token == token]
        for handler in revoked:
            handler.closing("logout")
            handler.close(wire.CLOSE_TOKEN_INVALID, "token revoked by /logout")
        return len(revoked)


def _no_deltas(audience: Any) -> str:
    return '{"seq":0,"snapshot":{"minions":{},"jobs":{}}}'  # tests without a view


async def _admit_everyone(session: dict[str, Any]) -> Any:
    return None  # no permission filtering: tests and tools that do not need it


def _request_token(handler: tornado.web.RequestHandler) -> str | None:
    """A token from the ``X-Auth-Token`` header or the session cookie."""
    return handler.request.headers.get("X-Auth-Token") or handler.get_cookie(AUTH_COOKIE)


def _error(status: int, message: str) -> dict[str, str]:
    """saltnado's error body: ``{"status": "401 Unauthorized", "return": message}``."""
    return {
        "status": f"{status} {http.client.responses.get(status, 'Error')}",
        "return": message,
    }


def _check_cors_origin(origin: str, allowed: str | tuple[str, ...] | None) -> str | None:
    """rest_tornado's rule: ``*``, one origin, or a list of origins."""
    if allowed is None:
        return None
    if isinstance(allowed, tuple):
        return origin if origin in allowed else None
    if allowed in ("*", origin):
        return allowed
    return None


class _Redacting:
    """Keeps tokens in request paths out of tornado's own log lines."""

    request: Any

    def _request_summary(self) -> str:
        method, uri = loggable(self.request.method or ""), loggable(self.request.uri or "")
        return f"{method} {uri} ({self.request.remote_ip})"


class BaseHandler(_Redacting, tornado.web.RequestHandler):
    """JSON (or YAML, on request) responses and rest_tornado's CORS headers."""

    services: Services

    def initialize(self, services: Services) -> None:
        self.services = services

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        allowed = _check_cors_origin(origin, self.services.config.cors_origin) if origin else None
        if allowed:
            self.set_header("Access-Control-Allow-Origin", allowed)
            self.set_header("Access-Control-Allow-Credentials", "true")

    def options(self, *args: Any) -> None:
        """CORS preflight, as rest_tornado answers it."""
        requested = self.request.headers.get("Access-Control-Request-Headers")
        if requested:
            self.set_header("Access-Control-Allow-Headers", requested)
        self.set_header("Access-Control-Expose-Headers", "X-Auth-Token")
        self.set_header("Access-Control-Allow-Methods", "OPTIONS, GET, POST")
        self.set_status(204)
        self.finish()

    def reply(self, payload: Any, status: int = 200) -> None:
        """Serialize ``payload`` per the ``Accept`` header and finish."""
        self.set_status(status)
        accept = self.request.headers.get("Accept", "")
        if any(t in accept for t in YAML_TYPES) and not any(t in accept for t in JSON_TYPES):
            import salt.utils.yaml  # pylint: disable=import-outside-toplevel

            self.set_header("Content-Type", "application/x-yaml")
            self.finish(salt.utils.yaml.safe_dump(payload, default_flow_style=False))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(wire.encode(payload))

    def fail(self, status: int, message: str) -> None:
        """An error in saltnado's shape: ``{"status": ..., "return": message}``."""
        self.reply(_error(status, message), status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.fail(status_code, self._reason)

    def payload(self) -> dict[str, Any]:
        """The request body as a dict, from JSON or form encoding.

        Raises:
            ValueError: with a message naming what is wrong.
        """
        body = self.request.body or b""
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype in JSON_TYPES:
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ValueError("the request body is not valid JSON") from None
            except RecursionError:  # e.g. 30,000 nested "["
                raise ValueError("the request body is nested too deeply") from None
            if isinstance(data, list) and len(data) == 1:
                data = data[0]  # salt-api clients sometimes send a one-item lowstate list
            if not isinstance(data, dict):
                raise ValueError("the JSON body must be an object")
            return data
        if ctype in ("", "application/x-www-form-urlencoded", "multipart/form-data"):
            return {k: self.get_body_argument(k) for k in self.request.body_arguments}
        raise ValueError(f"unsupported Content-Type {ctype!r}; send JSON or form data")

    def request_token(self) -> str | None:
        """A token from the ``X-Auth-Token`` header or the session cookie."""
        return _request_token(self)

    def refuse_foreign_origin(self) -> bool:
        """Answer 403 (and return True) for a browser request from another origin.

        A request with an ``Origin`` header that is neither this server's
        (its host, as tornado's websocket check compares) nor allowed by
        ``cors_origin`` is refused: the ``session_id`` cookie must not let
        another site log a browser in or out. Clients that send no ``Origin``
        (curl, scripts) are not affected.
        """
        origin = self.request.headers.get("Origin")
        if origin is None or _check_cors_origin(origin, self.services.config.cors_origin):
            return False
        if urllib.parse.urlparse(origin).netloc.lower() == (self.request.host or "").lower():
            return False
        self.services.refuse("cross_origin")
        self.fail(403, "cross-origin request refused (see the cors_origin option)")
        return True


class LoginHandler(BaseHandler):
    """``POST /login``: eauth credentials in, saltnado's token payload out."""

    # salt_ws_logins_total{result}, by the answer (a cross-origin 403 is only a refusal)
    RESULTS = {
        200: "ok",
        400: "malformed",
        401: "bad_credentials",
        429: "throttled",
        503: "throttled",
    }

    def get(self) -> None:
        self.set_header("WWW-Authenticate", "Session")
        self.fail(401, "Please log in")

    def on_finish(self) -> None:
        result = self.RESULTS.get(self.get_status()) if self.request.method == "POST" else None
        if result is not None:
            self.services.traffic.login(result)

    async def post(self) -> None:
        services = self.services
        if self.refuse_foreign_origin():
            return
        address = services.client_address(self.request)
        try:
            data = self.payload()
        except ValueError as exc:
            self.fail(400, str(exc))
            return
        creds = {}
        for field in ("username", "password", "eauth"):
            value = data.get(field)
            if not isinstance(value, str) or not value:
                self.fail(400, f"missing or empty field '{field}'")
                return
            creds[field] = value
        expire = data.get("token_expire")
        if expire is not None:
            try:
                if isinstance(expire, bool):
                    raise TypeError(expire)
                expire = check_token_expire(float(expire))
            except (TypeError, ValueError, OverflowError):
                self.fail(
                    400,
                    "field 'token_expire' must be a number of seconds above 0 and at most "
                    f"{MAX_TOKEN_EXPIRE:.0f}",
                )
                return
        username = creds["username"]
        throttle = services.throttle
        now = time.time()
        wait = throttle.retry_after(address, now)
        who = f"from {address}"
        if not wait:
            wait = throttle.retry_after(address, now, username)
            who = f"for user {username!r}"
        if wait > 0:
            services.refuse("login_throttled")
            retry = int(wait) + 1
            self.set_header("Retry-After", str(retry))
            self.fail(429, f"too many failed logins {who}; retry in {retry}s")
            return
        auth = services.auth
        # Count the attempt as a failure until it succeeds, so that parallel
        # guesses cannot all pass the check above while eauth is busy.
        throttle.failed(address, now, username)
        try:
            result = await auth.run_login(
                auth.login, username, creds["password"], creds["eauth"], expire, user=username
            )
        except LoginBusy as exc:
            throttle.succeeded(address, now, username)  # nothing was tried
            services.refuse(exc.reason)
            self.fail(exc.status, str(exc))
            return
        except LoginFailed as exc:
            log.info(
                "salt_ws: login refused for user %r (eauth %r) from %s",
                username,
                creds["eauth"],
                address,
            )
            self.fail(401, str(exc))
            return
        throttle.succeeded(address, now, username)
        cfg = services.config
        self.set_cookie(
            AUTH_COOKIE,
            result["token"],
            httponly=True,
            samesite="Strict",
            secure=cfg.tls or cfg.cookie_secure,
            expires=result["expire"],
        )
        self.set_header("X-Auth-Token", result["token"])
        self.reply({"return": [result]})


class LogoutHandler(BaseHandler):
    """``POST /logout``: invalidates the token (header, cookie or body ``token``)."""

    async def post(self) -> None:
        if self.refuse_foreign_origin():
            return
        token = self.request_token()
        if not token:
            try:
                token = self.payload().get("token")
            except ValueError:
                token = None
        if not isinstance(token, str):
            token = None
        auth = self.services.auth
        if not token or not await auth.run(auth.logout, token):
            self.fail(401, "no valid token given")
            return
        self.services.revoke(token)
        self.clear_cookie(AUTH_COOKIE)
        self.reply({"return": "Your token has been cleared"})


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the engine's registry in Prometheus' text format (``metrics: True``).

    From an address in ``metrics_allow`` (the client's address as for every limit:
    a ``trusted_proxies`` peer's ``X-Forwarded-For``, else the peer) without a
    token; from anywhere else only with an administrator's ``X-Auth-Token``
    (not the cookie); otherwise 403. Unknown tokens count against the address's
    unknown-token throttle, as on the streams.
    """

    async def get(self) -> None:
        services = self.services
        exposition = services.exposition
        if exposition is None:
            self.fail(404, "metrics are not served (metrics: False)")
            return
        address = services.client_address(self.request)
        if not is_trusted(address, networks(services.config.metrics_allow)):
            if not await self._administrator(address_key(address)):
                self.fail(403, "an administrator's X-Auth-Token is needed from this address")
                return
        body, content_type = exposition()
        self.set_header("Content-Type", content_type)
        self.finish(body)

    async def _administrator(self, key: str) -> bool:
        token = self.request.headers.get("X-Auth-Token")
        services = self.services
        if not token:
            return False
        if services.token_throttle.retry_after(key, time.time()) > 0:
            services.refuse("unknown_token_throttled")
            return False
        auth = services.auth
        user = await auth.run(auth.session, token)
        if user is None:
            services.token_throttle.failed(key, time.time())
            return False
        audience = await services.admit(user)
        return audience is None or audience.key == ADMIN


class _Stream:
    """What the websocket and SSE handlers share: the session, admission, the pump.

    A handler provides ``_write(data) -> future``, ``_frame(text) -> bytes``,
    ``_writable()`` and ``close(code, reason)``; everything else is here.
    """

    services: Services
    channel: Channel
    request: Any
    client: Session

    def _setup(self, services: Services, channel: Channel) -> None:
        self.services = services
        self.channel = channel
        self.client = Session(channel.value)
        self.perms: Any = None  # what admission made of the token (its Permissions)
        self._sub: Subscription | None = None
        self._inflight: asyncio.Future[None] | None = None  # a batch not yet flushed
        self._inflight_bytes = 0  # its size
        self._inflight_since = 0.0  # since when (time.monotonic())
        self.address = ""  # the client's (see Services.client_address)
        self._key = ""  # what per-address limits count (IPv6: the /64)
        # for ws.clients and the metrics (salt_ws.status.client_rows, salt_ws.metrics.Traffic)
        self.opened_at = time.time()  # reset when the stream opens
        self.sent = 0  # messages handed to its socket
        self.delivered: int | None = None  # it was handed every event up to this seq
        self._close_reason: str | None = None  # why the engine closes it (the first given)

    @property
    def endpoint(self) -> str:
        """``all_events``, ``formatted_events`` or ``events`` (SSE): the metrics' label."""
        return "events" if self.client.sse else self.channel.value

    @property
    def subscription(self) -> Subscription | None:
        """Its place in the hub (None before it streams)."""
        return self._sub

    def closing(self, reason: str) -> None:
        """Note why the engine ends this stream (one of :data:`salt_ws.metrics.CLOSE_REASONS`);
        the first reason noted is the one counted when it ends."""
        if self._close_reason is None:
            self._close_reason = reason

    def _opened(self) -> None:
        """The stream is open: count it and start its clock."""
        services = self.services
        services.sockets.add(self)
        services.counters.connections += 1
        services.traffic.connected(self.endpoint)
        self.opened_at = time.time()

    @property
    def token(self) -> str | None:
        """The client's token (None until it checked out)."""
        return self.client.token

    @property
    def session(self) -> Any:
        """The token's data (None until it checked out)."""
        return self.client.user

    def _parse(self) -> None:
        """This client's :class:`Session` from its URL (and ``Last-Event-ID``).

        Raises:
            RequestError: the request is refused before any token is looked at (400).
        """
        cfg = self.services.config
        sse = self.client.sse
        endpoint = "events" if sse else self.channel.value
        args = {
            name: [v.decode("utf-8", "replace") for v in values]
            for name, values in self.request.query_arguments.items()
        }
        request = parse_request(
            args,
            endpoint,
            self.request.headers.get("Last-Event-ID") if sse else None,
            max_filters=cfg.max_filters,
            max_filter_length=cfg.max_filter_length,
        )
        if request.since is not None:
            problem = self.services.stream.check(request.since)
            if problem:
                raise RequestError(problem)
        self.client = Session(
            endpoint,
            request,
            sse=sse,
            max_filters=cfg.max_filters,
            max_filter_length=cfg.max_filter_length,
        )

    async def _authenticate(self, token: str) -> bool:
        auth = self.services.auth
        user = await auth.run(auth.session, token)
        if user is None:
            return False
        audience = self.perms = await self.services.admit(user)
        self.client.authenticated(token, user, audience.key if audience is not None else ADMIN)
        return True

    async def _admit_token(self, token: str, refuse: Callable[[int, str], None]) -> bool:
        """Admit a token given before the stream starts: the connection count (before any
        eauth), the token, then the per-token and per-user limits. On a refusal, answer
        with ``refuse(status, message)`` and return False."""
        services, cfg = self.services, self.services.config
        if services.authenticated() >= cfg.max_connections:  # before any eauth
            services.refuse("max_connections")
            refuse(503, f"too many connections (max_connections: {cfg.max_connections})")
            return False
        if not await self._authenticate(token):
            services.token_throttle.failed(self._key, time.time())
            refuse(401, "invalid or expired token")
            return False
        over = self._over_a_limit()
        if over is not None:
            services.refuse(over[0])
            refuse(503 if over[0] == "max_connections" else 429, over[1])
            return False
        return True

    def _over_a_limit(self) -> tuple[str, str] | None:
        others = [h.client for h in self.services.sockets]
        return over_a_limit(self.client, others, self.services.config)

    def _unknown_tokens_throttled(self) -> bool:
        """True (and counted) once this address sent too many unknown tokens."""
        if self.services.token_throttle.retry_after(self._key, time.time()) > 0:
            self.services.refuse("unknown_token_throttled")
            return True
        return False

    def _subscribe(self) -> None:
        """Start the stream: the snapshot or the replay, then live messages, in one step."""
        services, client = self.services, self.client
        client.advance(State.STREAMING)
        if self.channel is Channel.ALL_EVENTS:
            group = client.group()
            since = client.request.since
            initial = services.stream.replay(since, group) if since is not None else []
            key: Any = group
        elif client.request.delta:
            initial = [services.delta_snapshot(self.perms)]
            key = ("delta", client.audience)  # the engine's delta_key
        else:
            initial = services.snapshot(self.channel, self.perms)
            key = client.audience
        self._sub = services.hub.subscribe(
            self.channel, self._wake, self._cut, initial, audience=client.audience, key=key
        )
        if not initial and self.channel is Channel.ALL_EVENTS:
            self.delivered = services.stream.seq  # live from here
        self._flush()  # the snapshot or replay, if any

    def _wake(self) -> None:
        self.services.writes.wake(self)

    def _unsubscribe(self) -> None:
        sockets = self.services.sockets
        if self in sockets:  # the stream ends (counted once)
            sockets.discard(self)
            self.services.traffic.ended(self.endpoint, self._close_reason or "client")
        if self.client.state is not State.CLOSED:
            self.client.state = State.CLOSED
        if self._sub is not None:
            self.services.hub.unsubscribe(self._sub)

    def _cut(self, code: int, reason: str) -> None:
        log.warning(
            "salt_ws: closing %s client %s: %s", self.channel.value, self.request.remote_ip, reason
        )
        self.close(code, reason)

    def tick(self, now: float, interval: float) -> None:
        """Send the latest id (envelope) or a keepalive comment (SSE) if it heard nothing."""
        sub = self._sub
        if sub is None or not self.client.tick_due(now, sub.pushed, interval):
            return
        if self.client.sse:
            self.services.hub.push(sub, [KEEPALIVE])
        else:
            self.services.hub.push(sub, [self.services.stream.tick(self.client.fmt)])

    @property
    def pending_bytes(self) -> int:
        """Bytes of the batch not yet handed to the client (0: none)."""
        return self._inflight_bytes if self._inflight is not None else 0

    def stalled(self, now: float) -> bool:
        """Has a write batch waited :data:`WRITE_TIMEOUT` or more at ``now`` (monotonic)?"""
        return self._inflight is not None and now - self._inflight_since >= WRITE_TIMEOUT

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        raise NotImplementedError

    def cut_stalled(self) -> None:
        raise NotImplementedError

    def _writable(self) -> bool:
        raise NotImplementedError

    def _frame(self, text: str) -> bytes:
        raise NotImplementedError

    def _write(self, data: bytes) -> asyncio.Future[None] | None:
        """Send ``data``; None when it is all on the wire, else tornado's future for the rest."""
        raise NotImplementedError

    def _flush(self) -> None:
        """Write what is queued, in order, a batch per ``write``.

        Publishes wake the client (:meth:`Writes.wake`) and it is flushed once at
        the end of the loop turn, whatever the number of publishes; a replay or
        snapshot is flushed at once. When the transport cannot take a batch at
        once, the next one waits for it (:meth:`_written`), so at most one batch
        sits in tornado's buffer and the rest stays in the bounded outbox, where
        the slow-client policy sees it. A batch holds at most :data:`WRITE_BATCH`
        messages and :data:`WRITE_BATCH_BYTES` (at least one message, so it may
        exceed that by one message); one that is not taken within
        :data:`WRITE_TIMEOUT` gets the client cut (:meth:`Services.close_stalled`).
        """
        sub = self._sub
        if sub is None or self._inflight is not None:
            return
        outbox, counters, frame = sub.outbox, self.services.counters, self._frame
        writes = self.services.writes
        traffic, endpoint = self.services.traffic, self.endpoint
        numbered = self.channel is Channel.ALL_EVENTS
        while sub.active:
            count = len(outbox)
            if not count:
                return
            if not self._writable():
                return
            if count <= WRITE_BATCH and outbox.bytes <= _WHOLE_OUTBOX_BYTES:
                # the usual case: all of it (a frame is at most twice its text's size)
                texts = outbox.take(count)
                data = frame(texts[0]) if count == 1 else b"".join([frame(t) for t in texts])
            else:
                batch: list[bytes] = []
                size = 0
                while outbox and len(batch) < WRITE_BATCH and size < WRITE_BATCH_BYTES:
                    part = frame(outbox.take(1)[0])
                    batch.append(part)
                    size += len(part)
                count, data = len(batch), b"".join(batch)
            try:
                written = self._write(data)
            except tornado.iostream.StreamClosedError:
                return
            counters.messages_sent += count
            self.sent += count
            traffic.sent(endpoint, count, len(data))
            if numbered and not outbox:
                self.delivered = self.services.stream.seq  # everything queued so far
            writes.writes += 1
            writes.messages += count
            if written is None:
                continue  # on the wire already
            if not written.done():
                self._inflight = written
                self._inflight_bytes, self._inflight_since = len(data), time.monotonic()
                written.add_done_callback(self._written)
                return
            written.exception()  # retrieve it: a closed stream ends the loop above

    def _written(self, written: asyncio.Future[None]) -> None:
        self._inflight = None
        if written.cancelled() or written.exception() is not None:
            return  # the stream closed; on_close cleans up
        self._flush()


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """tornado's websocket protocol, telling the handler why it closes a connection itself:
    the echo of a client's close frame, a ping timeout, a message too big."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated:
            handler = cast(_Stream, self.handler)
            if self.client_terminated:
                handler.closing("client")
            elif reason == "ping timed out":  # tornado's periodic_ping
                handler.closing("ping_timeout")
            elif code is not None:
                handler.closing(close_reason(code))  # 1009: message too big (policy)
        super().close(code, reason)


class EventsHandler(_Stream, _Redacting, tornado.websocket.WebSocketHandler):
    """A websocket streaming one :class:`~salt_ws.hub.Channel` after the ready handshake.

    The token comes from the URL (saltnado's ``/<endpoint>/<token>``), the
    ``X-Auth-Token`` header, the ``session_id`` cookie, or — for browsers,
    which cannot set headers on websockets — a first message
    ``{"token": "..."}``. A token given before the upgrade is checked before
    it (401 otherwise). Nothing is sent until the client sends
    ``websocket client ready``; from then on every message of the channel
    that the token's permissions allow (and its tag filters pass) is sent in
    order, or the socket is closed with a code and reason
    (:class:`salt_ws.wire.CloseCode`). The handshake and the stream options
    are the :class:`~salt_ws.session.Session`'s; this class moves bytes.
    """

    def initialize(self, services: Services, channel: Channel) -> None:
        self._setup(services, channel)
        self._deadline: asyncio.TimerHandle | None = None
        self._unauthenticated: str | None = None  # key of the unauthenticated slot held

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(wire.encode(_error(status, message)))

    async def get(self, token: str = "", *args: Any, **kwargs: Any) -> None:
        services, cfg = self.services, self.services.config
        self.address = services.client_address(self.request)
        self._key = address_key(self.address)
        try:
            self._parse()
        except RequestError as exc:
            self._refuse(400, str(exc))
            return
        token = urllib.parse.unquote(token or "") or _request_token(self) or ""
        if self._unknown_tokens_throttled():
            self._refuse(429, "too many unknown tokens from this address; retry later")
            return
        if not token:
            # waits for a first-message token: a slot of the unauthenticated budget
            refusal = services.unauthenticated.refusal(self._key)
            if refusal == "total":
                services.refuse("max_unauthenticated")
                self._refuse(
                    503,
                    "too many connections waiting for a token "
                    f"(max_unauthenticated: {cfg.max_unauthenticated})",
                )
                return
            if refusal == "per_key":
                services.refuse("max_unauthenticated_per_address")
                self._refuse(
                    429,
                    "too many connections waiting for a token from this address "
                    f"(max_unauthenticated_per_address: {cfg.max_unauthenticated_per_address})",
                )
                return
        elif not await self._admit_token(token, self._refuse):
            return
        # nothing is awaited between these checks and open()
        await super().get(token, *args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        if self.services.config.cors_origin:
            return bool(_check_cors_origin(origin, self.services.config.cors_origin))
        return super().check_origin(origin)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        self._opened()
        if self.session is None and self.services.unauthenticated.acquire(self._key) is None:
            self._unauthenticated = self._key
        timeout = self.services.config.handshake_timeout
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if self._sub is None:
            what = "token message" if self.session is None else "'websocket client ready'"
            timeout = self.services.config.handshake_timeout
            self.close(wire.CLOSE_HANDSHAKE_TIMEOUT, f"no {what} within {timeout:g}s")

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.close(wire.CLOSE_UNSUPPORTED, "binary messages are not accepted")
            return
        reply = self.client.on_text(message, time.monotonic())
        kind = reply.kind
        if kind is ReplyKind.CLOSE:
            self.close(reply.code, reply.reason)
        elif kind is ReplyKind.AUTHENTICATE:
            asyncio.get_running_loop().create_task(self._first_message_auth(reply.token))
        elif kind is ReplyKind.START:
            self._start()
        elif kind is ReplyKind.SUBSCRIBED and self._sub is not None:
            hub = self.services.hub
            hub.regroup(self._sub, self.client.group())
            hub.push(self._sub, [self.services.stream.subscribed(self.client.filters)])

    def _leave_unauthenticated(self) -> None:
        if self._unauthenticated is not None:
            self.services.unauthenticated.release(self._unauthenticated)
            self._unauthenticated = None

    async def _first_message_auth(self, token: str) -> None:
        if self._unknown_tokens_throttled():
            self.client.advance(State.CLOSED)
            self.close(wire.CLOSE_TRY_AGAIN_LATER, "too many unknown tokens from this address")
            return
        ok = await self._authenticate(token)
        if self not in self.services.sockets:
            return  # the client left while its token was being checked
        self._leave_unauthenticated()
        over = self._over_a_limit() if ok else None
        if not ok:
            self.client.advance(State.CLOSED)
            self.services.token_throttle.failed(self._key, time.time())
            self.close(wire.CLOSE_TOKEN_INVALID, "invalid or expired token")
        elif over is not None:
            self.client.advance(State.CLOSED)
            self.services.refuse(over[0])
            self.close(wire.CLOSE_TRY_AGAIN_LATER, over[1])
        elif self.client.ready_early:
            self._start()

    def _start(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._subscribe()

    def on_close(self) -> None:
        self._leave_unauthenticated()
        if self._deadline is not None:
            self._deadline.cancel()
        self._unsubscribe()

    def cut_stalled(self) -> None:
        """Close a client that takes no bytes: 4001, and the stream at once (it would not
        read a close frame either), which frees the batch it pinned."""
        log.warning(
            "salt_ws: closing %s client %s: %d bytes not taken within %gs",
            self.channel.value,
            self.request.remote_ip,
            self._inflight_bytes,
            WRITE_TIMEOUT,
        )
        conn = self.ws_connection
        self.close(
            wire.CLOSE_TOO_SLOW, f"too slow: a write did not complete within {WRITE_TIMEOUT:g}s"
        )
        if conn is not None and conn.stream is not None:
            conn.stream.close()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code is not None:
            self.closing(close_reason(code))
        tornado.websocket.WebSocketHandler.close(self, code, reason)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        params = getattr(protocol, "params", None)  # (tornado's, since 6.0)
        if type(protocol) is tornado.websocket.WebSocketProtocol13 and params is not None:
            return _Protocol(self, False, params)
        return protocol  # closes it makes itself are then counted as the client's

    def _writable(self) -> bool:
        conn = self.ws_connection
        return conn is not None and not conn.is_closing()

    def _frame(self, text: str) -> bytes:
        return self.services.frames.frame(text)

    def _write(self, data: bytes) -> asyncio.Future[None] | None:
        """The socket's own ``send`` while tornado holds nothing for it, tornado for the rest.

        Plain TCP only: a TLS stream (``SSLIOStream``) keeps tornado's path. With
        tornado's buffer empty nothing of tornado's (a ping, a close frame) can be
        between our bytes, and whatever it writes later is queued behind the
        remainder handed to it, so frames stay whole and in order.
        """
        # optional on tornado's base class; a protocol that is open (not closing) has one
        stream = cast(Any, self.ws_connection).stream
        writes = self.services.writes
        if type(stream) is tornado.iostream.IOStream and not stream.closed():
            pending = getattr(stream, "_write_buffer", None)
            if pending is not None and not len(pending):
                try:
                    sent = stream.socket.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = 0  # tornado's write meets the error again and closes the stream
                if sent == len(data):
                    writes.direct += 1
                    writes.direct_bytes += sent
                    return None
                if sent:
                    writes.partial += 1
                    writes.direct_bytes += sent
                    rest = memoryview(data)[sent:]
                    writes.tornado_bytes += len(rest)
                    return stream.write(rest)
        writes.tornado += 1
        writes.tornado_bytes += len(data)
        return cast(tornado.iostream.IOStream, stream).write(data)


KEEPALIVE = ": keepalive\n\n"  # an SSE comment: EventSource ignores it, proxies see traffic


class EventsSSEHandler(_Stream, BaseHandler):
    """``GET /events``: the event stream as Server-Sent Events (rest_tornado's wire format).

    ``retry: 400`` first, then per event ``tag:``, ``id:`` and ``data:`` lines
    and a blank line. The token comes from ``X-Auth-Token`` or the
    ``session_id`` cookie (never the query string: 400). Same filters,
    permissions and slow-client policy as the websockets; resume by
    ``Last-Event-ID`` (which ``EventSource`` sends by itself) or ``?since=``;
    a ``: keepalive`` comment after ``tick_interval`` s of silence. Token
    expiry and ``/logout`` end the stream.
    """

    def initialize(self, services: Services) -> None:
        BaseHandler.initialize(self, services)
        self._setup(services, Channel.ALL_EVENTS)
        self.client = Session("events", sse=True)
        self._done: asyncio.Event | None = None

    async def get(self) -> None:
        services = self.services
        self.address = services.client_address(self.request)
        self._key = address_key(self.address)
        if self._unknown_tokens_throttled():
            self.fail(429, "too many unknown tokens from this address; retry later")
            return
        try:
            self._parse()
        except RequestError as exc:
            self.fail(400, str(exc))
            return
        token = self.request_token()
        if not token:
            self.fail(401, "send X-Auth-Token or the session_id cookie")
            return
        if not await self._admit_token(token, self.fail):
            return
        if self.client.state is State.CLOSED or self.request.connection.stream.closed():
            return  # the client left while its token was being checked: it holds nothing
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        self._done = asyncio.Event()
        stream = self.request.connection.stream
        services.detach_http(stream)  # counted as a stream from now on, as an upgrade would
        if hasattr(stream, "set_nodelay"):
            stream.set_nodelay(True)
        self._opened()
        self.write("retry: 400\n\n")
        self.flush()
        self._subscribe()
        await self._done.wait()

    def on_connection_close(self) -> None:
        self._unsubscribe()
        if self._done is not None:
            self._done.set()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """End the stream (token expired or revoked, shutdown, too slow)."""
        if self._done is None or self._done.is_set():
            return
        if code is not None:
            self.closing(close_reason(code))
        self._unsubscribe()
        if not self._finished:
            self.finish()
        self._done.set()

    def cut_stalled(self) -> None:
        """Cut a client that takes no bytes: the connection at once."""
        log.warning(
            "salt_ws: closing events client %s: %d bytes not taken within %gs",
            self.request.remote_ip,
            self._inflight_bytes,
            WRITE_TIMEOUT,
        )
        self.closing("too_slow")
        self._unsubscribe()
        self.request.connection.stream.close()
        if self._done is not None:
            self._done.set()

    def _writable(self) -> bool:
        return not self._finished and not self.request.connection.stream.closed()

    def _frame(self, text: str) -> bytes:
        return self.services.texts.frame(text)

    def _write(self, data: bytes) -> asyncio.Future[None] | None:
        writes = self.services.writes
        writes.tornado += 1
        writes.tornado_bytes += len(data)
        self.write(data)
        return self.flush()
