"""One client's stream, transport-neutral: request, handshake state, filters, cursor.

Pure: no tornado, no salt, no I/O. The websocket handler and the Server-Sent
Events handler (:mod:`salt_ws.handlers`) each hold a :class:`Session` and only
move bytes; everything a client may ask for is decided here:

* :func:`parse_request` turns the query string (and ``Last-Event-ID``) into a
  :class:`StreamRequest`, or a :class:`RequestError` (HTTP 400 before any
  upgrade): ``?envelope=1``, ``?since=<epoch>:<seq>``, repeatable ``?tag=<glob>``,
  ``?delta=1`` on ``/formatted_events``.
* :class:`State` is the handshake, with guarded transitions
  (:meth:`Session.advance` raises :class:`InvalidState`): a websocket without a
  token waits for its first-message token, then for ``websocket client ready``;
  it then streams until it is closed.
* :meth:`Session.on_text` decides what a websocket text message means in the
  current state (:class:`Reply`); while streaming, ``{"subscribe": [...]}`` and
  ``{"unsubscribe": [...]}`` change the client's tag filters.
* :func:`over_a_limit` is admission: which connection limit an authenticated
  client would exceed, counted over the other sessions.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from salt_ws.acl import ADMIN
from salt_ws.pipeline import Cursor, Format, Group
from salt_ws.wire import CloseCode

__all__ = [
    "CLIENT_READY",
    "InvalidState",
    "Reply",
    "ReplyKind",
    "RequestError",
    "Session",
    "State",
    "StreamRequest",
    "over_a_limit",
    "parse_request",
    "token_message",
]

CLIENT_READY = "websocket client ready"
# A client's filters are compiled into one regular expression per distinct set (about
# 40 bytes and 4 µs of loop time per character): bound what one client can make it build.
MAX_FILTER_CHARS = 4096  # characters of one client's filters, in all
FILTER_CHANGES = 20  # subscribe / unsubscribe messages per FILTER_WINDOW
FILTER_WINDOW = 60.0  # seconds
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# C0, DEL and C1: a client's filters are printed by salt-run ws.clients (escape sequences
# would reach the administrator's terminal); no tag Salt makes holds one
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class RequestError(ValueError):
    """A stream request that is refused before the upgrade (HTTP 400)."""


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """What a client asked for in its URL (all opt-in; the default is saltnado's stream)."""

    envelope: bool = False  # {"id", "tag", "data"} messages
    since: Cursor | None = None  # resume after this id (implies the envelope)
    tags: tuple[str, ...] = ()  # tag globs (none: every event)
    delta: bool = False  # /formatted_events as JSON Patch deltas


def _flag(name: str, values: Sequence[str]) -> bool:
    value = values[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RequestError(f"parameter {name!r} must be 1 or 0, got {values[-1]!r}")


def check_tags(tags: Iterable[Any], max_filters: int, max_length: int) -> list[str]:
    """``tags`` as filters, or :class:`RequestError` naming what is wrong.

    Refused at the first filter too many (a URL or message may hold thousands:
    none is looked at past the bound), duplicates kept once.
    """
    found: dict[str, None] = {}  # (in order; O(1) lookups)
    chars = 0
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise RequestError("a tag filter is a non-empty string")
        if len(tag) > max_length:
            raise RequestError(f"a tag filter has at most {max_length} characters")
        if _CONTROL.search(tag):
            raise RequestError("a tag filter may not hold control characters")
        if tag not in found:
            if len(found) >= max_filters:
                raise RequestError(f"at most {max_filters} tag filters (max_filters)")
            chars += len(tag)
            if chars > MAX_FILTER_CHARS:
                raise RequestError(f"at most {MAX_FILTER_CHARS} characters of tag filters in all")
            found[tag] = None
    return list(found)


def _cursor(text: str) -> Cursor:
    try:
        return Cursor.parse(text.strip())
    except ValueError as exc:
        raise RequestError(f"malformed 'since' {text[:100]!r}: {exc}") from None


def parse_request(
    args: Mapping[str, Sequence[str]],
    channel: str,
    last_event_id: str | None = None,
    max_filters: int = 64,
    max_filter_length: int = 1024,
) -> StreamRequest:
    """The :class:`StreamRequest` of a URL's query arguments.

    Args:
        args: the query arguments, each name with all of its values (decoded text).
        channel: ``all_events``, ``formatted_events`` or ``events`` (SSE).
        last_event_id: the ``Last-Event-ID`` header (SSE); it wins over ``?since=``
            unless that is a later id of the same epoch.
        max_filters: option ``max_filters``.
        max_filter_length: option ``max_filter_length``.

    Raises:
        RequestError: a parameter that is malformed or not for this endpoint.
    """
    known = {"all_events": {"envelope", "since", "tag"}, "events": {"since", "tag"}}.get(
        channel, {"delta"}
    )
    for name in args:
        if name == "token" and channel == "events":
            raise RequestError(
                "a token in the query string is refused; send X-Auth-Token or the session_id cookie"
            )
        if name not in known:
            raise RequestError(f"unknown parameter {name!r} for /{channel}")
    since = _cursor(args["since"][-1]) if "since" in args else None
    if last_event_id:
        # EventSource keeps its URL when it reconnects: a stream opened with ?since= gets
        # it again, beside the id of the last event read since, which wins unless ?since=
        # is later in the same epoch (else everything after ?since= would come again)
        read = _cursor(last_event_id)
        if since is None or since.epoch != read.epoch or read.seq > since.seq:
            since = read
    envelope = _flag("envelope", args["envelope"]) if "envelope" in args else False
    tags = tuple(check_tags(args.get("tag", ()), max_filters, max_filter_length))
    delta = _flag("delta", args["delta"]) if "delta" in args else False
    return StreamRequest(envelope or since is not None, since, tags, delta)


class State(enum.Enum):
    """Where a client is in the handshake."""

    AWAITING_TOKEN = "awaiting token"  # noqa: S105 - a state: a websocket opened without a token
    AUTHENTICATING = "authenticating"  # its first-message token is being checked
    AWAITING_READY = "awaiting ready"  # authenticated; waiting for "websocket client ready"
    STREAMING = "streaming"
    CLOSED = "closed"


_NEXT: dict[State, frozenset[State]] = {
    State.AWAITING_TOKEN: frozenset({State.AUTHENTICATING, State.CLOSED}),
    State.AUTHENTICATING: frozenset({State.AWAITING_READY, State.CLOSED}),
    State.AWAITING_READY: frozenset({State.STREAMING, State.CLOSED}),
    State.STREAMING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class InvalidState(RuntimeError):
    """A transition the handshake does not allow."""


class ReplyKind(enum.Enum):
    """What the handler does with a websocket text message."""

    NOTHING = "nothing"  # ignore it
    AUTHENTICATE = "authenticate"  # check ``token`` (the first-message token)
    START = "start"  # the client is ready: start streaming
    SUBSCRIBED = "subscribed"  # filters changed: answer with the filters now
    CLOSE = "close"  # close with ``code`` and ``reason``


@dataclasses.dataclass(frozen=True)
class Reply:
    """The decision on one message."""

    kind: ReplyKind
    token: str = ""
    code: int = 0
    reason: str = ""


def _close(code: CloseCode, reason: str) -> Reply:
    return Reply(ReplyKind.CLOSE, code=int(code), reason=reason)


def token_message(message: str) -> str | None:
    """The token of a first message ``{"token": "..."}``, else None."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None


class Session:
    """One client of one stream, whatever carries it (websocket or SSE).

    Args:
        channel: ``all_events``, ``formatted_events`` or ``events``.
        request: what its URL asked for.
        authenticated: it came with a checked token (no first-message token).
        sse: the client reads Server-Sent Events (no handshake messages).
        max_filters: option ``max_filters``.
        max_filter_length: option ``max_filter_length``.
    """

    def __init__(
        self,
        channel: str,
        request: StreamRequest = StreamRequest(),
        authenticated: bool = False,
        sse: bool = False,
        max_filters: int = 64,
        max_filter_length: int = 1024,
    ) -> None:
        self.channel = channel
        self.request = request
        self.sse = sse
        self.state = State.AWAITING_READY if authenticated else State.AWAITING_TOKEN
        self.token: str | None = None
        self.user: Any = None  # Salt's token data (name, eauth, expire)
        self.audience: str = ADMIN  # the permission set's key
        self.filters: list[str] = list(request.tags)
        self.max_filters = max_filters
        self.max_filter_length = max_filter_length
        self.ready_early = False  # "websocket client ready" came while authenticating
        self._changes: collections.deque[float] = collections.deque()  # filter changes, when
        # when it last got a message, or was first looked at while streaming (ticks)
        self.quiet_since: float | None = None
        self.pushed = 0  # messages queued for it when last looked at (ticks)

    # -- state ----------------------------------------------------------------

    def advance(self, state: State) -> None:
        """Move to ``state``.

        Raises:
            InvalidState: the handshake does not go from the current state to ``state``.
        """
        if state not in _NEXT[self.state]:
            raise InvalidState(f"{self.state.value} -> {state.value}")
        self.state = state

    def authenticated(self, token: str, user: Any, audience: str) -> None:
        """The token checked out: remember whose stream this is."""
        if self.state is State.AWAITING_TOKEN:
            self.advance(State.AUTHENTICATING)
        if self.state is State.AUTHENTICATING:
            self.advance(State.AWAITING_READY)
        self.token, self.user, self.audience = token, user, audience

    @property
    def streaming(self) -> bool:
        """Has it started receiving the stream?"""
        return self.state is State.STREAMING

    @property
    def fmt(self) -> Format:
        """How its events are encoded."""
        if self.sse:
            return Format.SSE
        return Format.ENVELOPE if self.request.envelope else Format.PLAIN

    def group(self) -> Group:
        """The pipeline group it belongs to now (its filters may change)."""
        return Group(self.audience, frozenset(self.filters) or None, self.fmt)

    # -- websocket messages ---------------------------------------------------------

    def on_text(self, message: str, now: float = 0.0) -> Reply:
        """What a websocket text message means now (see :class:`ReplyKind`).

        ``now`` (monotonic) bounds filter changes: more than :data:`FILTER_CHANGES`
        subscribe / unsubscribe messages within :data:`FILTER_WINDOW` close the
        socket with 1008.
        """
        state = self.state
        if state is State.STREAMING:
            return self._streaming_message(message, now)
        if state is State.AUTHENTICATING:
            if message == CLIENT_READY:
                self.ready_early = True
                return Reply(ReplyKind.NOTHING)
            return _close(CloseCode.POLICY, "unexpected message while authenticating")
        if state is State.AWAITING_TOKEN:
            token = token_message(message)
            if token is None:
                return _close(CloseCode.TOKEN_INVALID, 'authenticate first: send {"token": "..."}')
            self.advance(State.AUTHENTICATING)
            return Reply(ReplyKind.AUTHENTICATE, token=token)
        if state is State.AWAITING_READY and message == CLIENT_READY:
            return Reply(ReplyKind.START)
        if state is State.CLOSED:
            return Reply(ReplyKind.NOTHING)
        return _close(CloseCode.POLICY, f"unexpected message; send '{CLIENT_READY}'")

    def _streaming_message(self, message: str, now: float) -> Reply:
        """After the handshake: subscribe / unsubscribe on ``/all_events``; else nothing
        (as saltnado, which ignores what a client says once it streams)."""
        if self.channel != "all_events" or not message.startswith("{"):
            return Reply(ReplyKind.NOTHING)
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):
            return Reply(ReplyKind.NOTHING)
        if not isinstance(data, dict) or not ({"subscribe", "unsubscribe"} & set(data)):
            return Reply(ReplyKind.NOTHING)
        if len(data) != 1 or not isinstance(next(iter(data.values())), list):
            return _close(
                CloseCode.POLICY, 'send {"subscribe": [<tags>]} or {"unsubscribe": [<tags>]}'
            )
        changes = self._changes
        while changes and now - changes[0] >= FILTER_WINDOW:
            changes.popleft()
        if len(changes) >= FILTER_CHANGES:
            return _close(
                CloseCode.POLICY,
                f"too many subscribe / unsubscribe messages (at most {FILTER_CHANGES} "
                f"per {FILTER_WINDOW:g}s)",
            )
        changes.append(now)
        try:
            if "subscribe" in data:
                self.subscribe(data["subscribe"])
            else:
                self.unsubscribe(data["unsubscribe"])
        except RequestError as exc:
            return _close(CloseCode.POLICY, str(exc))
        return Reply(ReplyKind.SUBSCRIBED)

    def subscribe(self, tags: Iterable[Any]) -> None:
        """Add tag filters (bounded by ``max_filters`` and ``max_filter_length``).

        Raises:
            RequestError: a filter that is not a non-empty string, is too long, or
                one too many; the filters are then unchanged.
        """
        found = check_tags(
            itertools.chain(self.filters, tags), self.max_filters, self.max_filter_length
        )
        self.filters = found

    def unsubscribe(self, tags: Iterable[Any]) -> None:
        """Remove tag filters (those not held are ignored); none left: every event."""
        drop = {tag for tag in tags if isinstance(tag, str)}
        self.filters = [tag for tag in self.filters if tag not in drop]

    # -- heartbeats -----------------------------------------------------------------

    def tick_due(self, now: float, pushed: int, interval: float) -> bool:
        """Has this envelope or SSE client received nothing for ``interval`` s at ``now``?

        Args:
            now: the time (monotonic).
            pushed: how many messages were queued for it so far.
            interval: option ``tick_interval`` (0: never).
        """
        if pushed != self.pushed or self.quiet_since is None:
            # (a new client's silence counts from the first look, not from 0)
            self.pushed, self.quiet_since = pushed, now
            return False
        if not interval or not self.streaming or self.fmt is Format.PLAIN:
            return False
        if now - self.quiet_since >= interval:
            self.quiet_since = now
            return True
        return False


def _user(user: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Whom ``max_connections_per_user`` counts: the token's eauth and name."""
    if user is None:
        return None
    return (str(user.get("eauth")), str(user.get("name")))


def over_a_limit(
    session: Session, others: Iterable[Session], config: Any
) -> tuple[str, str] | None:
    """(option, message) of the connection limit an authenticated ``session`` exceeds.

    Counts the other authenticated sessions, so it holds before a websocket's
    upgrade and after a first-message authentication alike.
    """
    others = [s for s in others if s is not session and s.user is not None]
    if len(others) >= config.max_connections:
        return (
            "max_connections",
            f"too many connections (max_connections: {config.max_connections})",
        )
    if sum(1 for s in others if s.token == session.token) >= config.max_connections_per_token:
        return "max_connections_per_token", (
            "too many connections for this token "
            f"(max_connections_per_token: {config.max_connections_per_token})"
        )
    user = _user(session.user)
    if sum(1 for s in others if _user(s.user) == user) >= config.max_connections_per_user:
        return "max_connections_per_user", (
            "too many connections for this user "
            f"(max_connections_per_user: {config.max_connections_per_user})"
        )
    return None
