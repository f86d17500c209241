"""What goes on the websocket: JSON encoding of events and engine notices.

Pure. Every message is one JSON text frame, exactly as saltnado sends it on
``/all_events``: ``{"tag": ..., "data": {...}}`` with no prefix and no
trailing newline. Event payloads come from msgpack and may hold values JSON
cannot express (bytes, sets, non-string keys, NaN); they are converted
rather than allowed to break a socket.
"""

from __future__ import annotations

import collections
import datetime
import enum
import json
import math
import struct
import sys
from typing import Any, Callable

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_SLOW",
    "DROPPED_TAG",
    "GAP_TAG",
    "MAX_DEPTH",
    "RESTORED_TAG",
    "CloseCode",
    "FrameCache",
    "encode",
    "encode_event",
    "frame",
    "jsonable",
    "notice",
    "text_size",
    "utf8",
]


class CloseCode(enum.IntEnum):
    """Close codes the engine sends (RFC 6455 section 7.4.1; 4000-4999 are this application's).

    Each member's :attr:`explanation` says when it is sent; the README's table of close codes
    follows this list.
    """

    GOING_AWAY = 1001
    UNSUPPORTED = 1003
    POLICY = 1008
    TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013
    TOO_SLOW = 4001
    TOKEN_INVALID = 4401
    HANDSHAKE_TIMEOUT = 4408

    @property
    def explanation(self) -> str:
        """When the engine closes a websocket with this code."""
        return _CLOSE_EXPLANATIONS[self]


_CLOSE_EXPLANATIONS = {
    CloseCode.GOING_AWAY: "the engine is stopping (salt-master shutdown)",
    CloseCode.UNSUPPORTED: "the client sent a binary message",
    CloseCode.POLICY: "the client sent something other than the handshake messages",
    CloseCode.TOO_BIG: "an inbound message exceeded max_message_size (sent by tornado)",
    CloseCode.TRY_AGAIN_LATER: "a first-message token found a connection limit full, or its "
    "address sent too many unknown tokens",
    CloseCode.TOO_SLOW: "the client fell client_queue_size messages or client_queue_bytes "
    "behind, or did not take a write batch within 30 s",
    CloseCode.TOKEN_INVALID: "token invalid, expired, or revoked by /logout",
    CloseCode.HANDSHAKE_TIMEOUT: "no token message / ready message within handshake_timeout",
}

# The names the rest of the engine uses.
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_UNSUPPORTED = CloseCode.UNSUPPORTED
CLOSE_POLICY = CloseCode.POLICY
CLOSE_TOO_BIG = CloseCode.TOO_BIG
CLOSE_TRY_AGAIN_LATER = CloseCode.TRY_AGAIN_LATER
CLOSE_TOO_SLOW = CloseCode.TOO_SLOW
CLOSE_TOKEN_INVALID = CloseCode.TOKEN_INVALID
CLOSE_HANDSHAKE_TIMEOUT = CloseCode.HANDSHAKE_TIMEOUT

# Tags of the engine's own notices, sent in the event shape so that existing
# clients need no new parsing. All three mean "events may have been missed".
GAP_TAG = "salt_ws/bus/lost"
RESTORED_TAG = "salt_ws/bus/restored"
# The engine fell more than bus_queue_bytes behind the bus and dropped events
# (same shape as RESTORED_TAG, plus how many events and bytes were dropped).
DROPPED_TAG = "salt_ws/bus/dropped"

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


MAX_DEPTH = 100  # deeper payload parts are sent as a marker string


def jsonable(value: Any, depth: int = 0) -> Any:
    """Return ``value`` converted to something :mod:`json` encodes strictly.

    Bytes become text (undecodable bytes escaped), sets and tuples lists,
    non-string keys strings, NaN/Infinity strings, anything else its
    ``str()``; containers nested deeper than :data:`MAX_DEPTH` become the
    string ``"<nested too deep>"``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)) and depth >= MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else _key(k): jsonable(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _key(key: Any) -> str:
    """A dict key as JSON's encoder writes it (``None`` -> ``"null"``), else as text."""
    if key is None or isinstance(key, (bool, int, float)):
        return _encoder.encode(key) if not isinstance(key, float) else str(key)
    return str(jsonable(key, MAX_DEPTH - 1))


def encode(message: Any) -> str:
    """Encode one message as compact, strict JSON; never raises for odd payloads."""
    try:
        return _encoder.encode(message)
    except (TypeError, ValueError, RecursionError):
        return _encoder.encode(jsonable(message))


def encode_event(tag: str, data: Any, master: str | None = None) -> str:
    """Encode a bus event as saltnado's ``{"tag": ..., "data": ...}`` frame.

    ``master`` (option ``include_master``) adds ``"master": <id>`` for
    clients that combine several masters' streams.
    """
    if master is None:
        return encode({"tag": tag, "data": data})
    return encode({"tag": tag, "data": data, "master": master})


def stamp(at: float) -> str:
    """A time as Salt stamps events (``2026-11-28T06:41:57.388573+00:00``)."""
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()


def notice(tag: str, at: str, master: str | None = None, **data: Any) -> str:
    """Encode one of the engine's own notices (e.g. :data:`GAP_TAG`) in event shape.

    ``at`` is its ``_stamp`` (see :func:`stamp`).
    """
    return encode_event(tag, {**data, "_stamp": at}, master)


def frame(text: str) -> bytes:
    """One unmasked, uncompressed websocket text frame (RFC 6455 section 5.2) carrying ``text``.

    Server frames are the same bytes for every client, so fan-out builds each
    once (see :class:`FrameCache`) and writes a client's whole batch with one
    ``write``, instead of one tornado ``write_message`` per message per client.
    This function keeps nothing. A lone surrogate (JSON allows ``"\\ud800"``;
    UTF-8 does not) is sent as U+FFFD, so a text frame is always valid UTF-8.
    """
    data = utf8(text)
    size = len(data)
    if size < 126:
        head = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + data


def utf8(text: str) -> bytes:
    """``text`` in UTF-8, a lone surrogate as U+FFFD (JSON allows one; UTF-8 does not)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def text_size(text: str) -> int:
    """The bytes a message's text occupies in memory (``sys.getsizeof``: O(1), exact)."""
    return sys.getsizeof(text)


class FrameCache:
    """Websocket frames of recent messages, shared by every client, bounded in bytes (pure).

    The hub queues the same ``str`` for every subscriber and each handler
    frames what it takes from its queue, so during one publish every client
    after the first finds its frame here. An entry costs its text (which the
    cache keeps alive as the key) plus its frame; the least recently used
    entries are evicted to stay within ``max_bytes``. A message whose entry
    alone exceeds the bound is framed and not kept (``uncached``). A bound of
    0 keeps nothing: every client frames each message itself.

    Args:
        max_bytes: the bound (option ``frame_cache_bytes``).
        build: what is cached of a text (default: its websocket frame; SSE: its UTF-8).
    """

    __slots__ = (
        "_build",
        "_entries",
        "bytes",
        "evictions",
        "hits",
        "max_bytes",
        "misses",
        "uncached",
    )

    def __init__(self, max_bytes: int, build: Callable[[str], bytes] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self._build = build or frame
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.uncached = 0
        self._entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def frame(self, text: str) -> bytes:
        """The frame of ``text``, from the cache when it is there."""
        entries = self._entries
        found = entries.get(text)
        if found is not None:
            self.hits += 1
            entries.move_to_end(text)
            return found
        self.misses += 1
        built = self._build(text)
        cost = len(built) + text_size(text)
        if cost > self.max_bytes:
            self.uncached += 1
            return built
        while entries and self.bytes + cost > self.max_bytes:
            old_text, old_frame = entries.popitem(last=False)
            self.bytes -= len(old_frame) + text_size(old_text)
            self.evictions += 1
        entries[text] = built
        self.bytes += cost
        return built

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        """Counters for ``salt-run ws.status``."""
        return {
            "limit_bytes": self.max_bytes,
            "bytes": self.bytes,
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "uncached": self.uncached,
        }
