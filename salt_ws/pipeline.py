"""The event stream, pure: bus items in, numbered events out, encoded once per group.

No tornado, no salt, no I/O. :meth:`Pipeline.feed` takes what the bus thread
handed over — ``(tag, data)`` pairs and the link markers :class:`LinkChange`
and :class:`Dropped` — and makes each an :class:`Entry` with the next ``seq``
of this engine start (``epoch``: a random id chosen at start; an event's id is
``"<epoch>:<seq>"``). Entries are kept in a history ring bounded in events
(``history_size``) and bytes (``history_max_bytes``), from which a client that
reconnects with a cursor is served what it missed (:meth:`Pipeline.replay`).

Clients are grouped by what they may receive (:class:`Group`): their audience
(one permission set, :mod:`salt_ws.acl`), their tag filters and their wire
format (saltnado's ``{"tag", "data"}``, the envelope with ``"id"``, or
Server-Sent Events). :meth:`Pipeline.fan_out` renders a batch once per group:
the ACL decision once per entry and audience, the tag match once per entry and
distinct filter set, and each encoding once per entry, audience and format
(kept on the entry, so a replay reuses them). Every client of a group shares the
same ``str`` objects.

The engine's own notices (link lost, restored, events dropped) are entries
too: they have ids, reach every audience and pass every filter. A bus event
whose tag merely starts with ``salt_ws/`` is an ordinary, administrator-only
event (see :mod:`salt_ws.acl`).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import fnmatch
import json
import re
import secrets
from typing import Any, Callable, Iterable, Mapping, Sequence

from salt_ws import wire
from salt_ws.acl import ADMIN, JobEvent, JobFunctions, Permissions

__all__ = [
    "GAP_TAG",
    "MAX_FILTERED_TAG",
    "SUBSCRIBED_TAG",
    "TICK_TAG",
    "Batch",
    "Cursor",
    "Dropped",
    "Entry",
    "Format",
    "Group",
    "LinkChange",
    "Pipeline",
    "TagFilter",
]

GAP_TAG = "salt_ws/stream/gap"  # a resume could not give every event after the asked id
TICK_TAG = "salt_ws/stream/tick"  # nothing sent for tick_interval: the latest id
SUBSCRIBED_TAG = "salt_ws/stream/subscribed"  # the answer to subscribe / unsubscribe

MAX_EPOCH = 64  # characters of an epoch in a cursor
MAX_SEQ_DIGITS = 19  # a seq fits 63 bits
MAX_FILTER_SETS = 1024  # compiled tag filter sets kept
MAX_FILTER_CACHE_CHARS = 1 << 20  # ... and their characters in all (~40 bytes each compiled)
# beyond both, only the sets of no live group are dropped: a set in use is never compiled again
# A tag longer than this matches no filter (unfiltered clients still get it): matching costs the
# tag's length times the filters' characters (64 filters "*aaa...a<nn>" took 4 s per 1 MB tag).
MAX_FILTERED_TAG = 1024
_EPOCH_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_EPOCH}}}\Z")


class LinkChange:
    """A marker in the event stream: the bus link went down or came back."""

    __slots__ = ("at", "up")

    def __init__(self, up: bool, at: float) -> None:
        self.up = up
        self.at = at

    def __repr__(self) -> str:
        return f"LinkChange(up={self.up}, at={self.at})"


class Dropped:
    """A marker in the event stream: events were dropped here (``bus_queue_bytes``).

    ``at`` and ``until`` are the times of the first and last dropped event;
    ``events`` and ``bytes`` say how many were dropped and their raw size.
    """

    __slots__ = ("at", "bytes", "events", "until")

    def __init__(self, at: float) -> None:
        self.at = self.until = at
        self.events = 0
        self.bytes = 0

    def add(self, size: int, now: float) -> None:
        """Count one more dropped event of ``size`` bytes."""
        self.events += 1
        self.bytes += size
        self.until = now

    def __repr__(self) -> str:
        return (
            f"Dropped(at={self.at}, until={self.until}, events={self.events}, bytes={self.bytes})"
        )


@dataclasses.dataclass(frozen=True, order=True)
class Cursor:
    """A position in the stream: ``"<epoch>:<seq>"`` (the id of the event at ``seq``)."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor ``text`` names.

        Raises:
            ValueError: ``text`` is not ``<epoch>:<seq>`` (epoch: 1-64 of
                ``[A-Za-z0-9_-]``; seq: a decimal number of at most 19 digits).
        """
        epoch, sep, seq = text.partition(":")
        if not sep or not _EPOCH_RE.match(epoch):
            raise ValueError("expected '<epoch>:<seq>' (the id of an event)")
        if not seq.isascii() or not seq.isdigit() or len(seq) > MAX_SEQ_DIGITS:
            raise ValueError("the seq of an id is a decimal number")
        return cls(epoch, int(seq))


class Format(str, enum.Enum):
    """How a group's clients receive an event."""

    PLAIN = "plain"  # saltnado: {"tag": ..., "data": ...}
    ENVELOPE = "envelope"  # {"id": "<epoch>:<seq>", "tag": ..., "data": ...}
    SSE = "sse"  # "tag: ...\nid: ...\ndata: {"tag": ..., "data": ...}\n\n"


@dataclasses.dataclass(frozen=True)
class Group:
    """Clients that receive the same messages: one audience, filter set and format.

    ``tags`` is None (or empty) for no filter: every event the audience may see.
    """

    audience: str = ADMIN
    tags: frozenset[str] | None = None
    fmt: Format = Format.PLAIN

    @property
    def filtered(self) -> bool:
        """Does this group narrow events by tag?"""
        return bool(self.tags)


class TagFilter:
    """A set of tag globs, matched as ``salt-run state.event`` does (``fnmatch``; ``*``
    crosses ``/``; case-sensitive), compiled into one regular expression."""

    __slots__ = ("_match", "chars", "tags")

    def __init__(self, tags: Iterable[str]) -> None:
        self.tags = frozenset(tags)
        self.chars = sum(len(tag) for tag in self.tags)
        pattern = "|".join(f"(?:{fnmatch.translate(tag)})" for tag in sorted(self.tags))
        self._match = re.compile(pattern).match if self.tags else None

    def matches(self, tag: str) -> bool:
        """Does ``tag`` match one of the globs (always, for an empty set)? A tag longer
        than :data:`MAX_FILTERED_TAG` matches none."""
        if self._match is None:
            return True
        return len(tag) <= MAX_FILTERED_TAG and self._match(tag) is not None


# What an entry keeps of a bus event's payload (its objects can weigh 20 times its JSON:
# a 1 MiB event of empty lists is 3 MB of JSON and 64 MB of lists): only what limited
# audiences' ACL checks look at. _SHOWN: a dict whose job event is shown whole or not at
# all (a return or progress); _FROM_PLAIN: a new, decoded from the plain encoding when an
# audience's cut-down copy is made; None: no limited audience sees it.
_SHOWN: dict[str, Any] = {}
_FROM_PLAIN: Any = object()


def _kept_payload(data: Any, job: JobEvent | None) -> Any:
    if job is None or job.admin_only or not isinstance(data, dict):
        return None
    return _FROM_PLAIN if job.kind == "new" else _SHOWN


class _Every:
    """Holds every id: a new's minion lists are kept as they are (strings only)."""

    def __contains__(self, item: object) -> bool:
        return True


class Entry:
    """One numbered event of the stream, with its encodings built so far."""

    __slots__ = ("_enc", "data", "job", "kept", "notice", "plain", "seq", "size", "tag")

    def __init__(
        self, seq: int, tag: str, data: Any, job: JobEvent | None, plain: str, notice: bool
    ) -> None:
        self.seq = seq
        self.tag = tag
        self.data = data  # what the ACL needs of the payload (see _kept_payload); notices': theirs
        self.job = job
        self.plain = plain  # saltnado's encoding, as the administrator sees it
        self.notice = notice  # made by the engine: reaches everyone, passes every filter
        self.size = wire.text_size(plain)  # bytes of every encoding held
        self.kept = False  # in the history (its size counts there)
        # (audience, format) -> the encoding ("": the audience may not see it)
        self._enc: dict[tuple[str, Format], str] = {}


@dataclasses.dataclass
class Batch:
    """What :meth:`Pipeline.feed` made of a handful of bus items."""

    entries: list[Entry]
    events: list[tuple[str, Any]]  # the bus events among them, for the formatted view
    reseed: bool = False  # the link came back or events were dropped: re-read the fleet


@dataclasses.dataclass
class PipelineStats:
    """Counters for ``salt-run ws.status`` (key ``stream``)."""

    events: int = 0  # entries made (bus events and notices)
    history_evicted: int = 0
    replays: int = 0
    replayed: int = 0  # messages sent by replays
    gaps: int = 0


class Pipeline:
    """Sequence numbers, history, audiences and the per-group rendering of the stream.

    Args:
        master_id: this master's id when messages carry ``"master"`` (``include_master``).
        history_size: entries kept for resume (0: none).
        history_max_bytes: bytes of encodings kept for resume.
        utc_jid: the master's ``utc_jid`` (how jids are dated, for the ACL).
        accepted: the accepted minion ids now (a new's minion list is cut to them
            for limited audiences).
        epoch: this stream's epoch (random when not given).
    """

    def __init__(
        self,
        master_id: str | None = None,
        history_size: int = 10000,
        history_max_bytes: int = 64 * 1024 * 1024,
        utc_jid: bool = False,
        accepted: Callable[[], frozenset[str]] | None = None,
        epoch: str | None = None,
        syndics: bool = False,
    ) -> None:
        self.master_id = master_id
        self.history_size = history_size
        self.history_max_bytes = history_max_bytes
        self.epoch = epoch if epoch is not None else secrets.token_hex(8)
        if not _EPOCH_RE.match(self.epoch):
            raise ValueError("an epoch is 1-64 of [A-Za-z0-9_-]")
        self.seq = 0
        self.history: collections.deque[Entry] = collections.deque()
        self.history_bytes = 0
        self.audiences: dict[str, Permissions] = {}
        # jid -> function and arguments, for the ACL (jids dated as the master makes them)
        self.job_funs = JobFunctions(utc_jid=utc_jid)
        self.stats = PipelineStats()
        self._accepted = accepted
        self._syndics = syndics  # a master of masters: minion lists are not cut here
        self._filter_chars = 0  # characters of the filter sets kept compiled
        self._filters: collections.OrderedDict[frozenset[str], TagFilter] = (
            collections.OrderedDict()
        )
        self._live: frozenset[frozenset[str]] = frozenset()  # sets of the last fan-out's groups
        self.filter_compiles = 0
        self._link_down_since: float | None = None
        self.bus_reconnects = 0

    # -- ids ------------------------------------------------------------------

    def id_of(self, seq: int) -> str:
        """The id of the entry at ``seq``."""
        return f"{self.epoch}:{seq}"

    @property
    def latest(self) -> str:
        """The id of the latest entry (``<epoch>:0`` before any)."""
        return self.id_of(self.seq)

    @property
    def oldest(self) -> int:
        """The seq of the oldest entry kept (``seq + 1`` when none is)."""
        return self.history[0].seq if self.history else self.seq + 1

    # -- input ----------------------------------------------------------------

    def feed(self, items: Iterable[Any], now: float) -> Batch:
        """Number each bus item, keep it in the history and return the batch.

        Args:
            items: ``(tag, data)`` pairs, :class:`LinkChange` and :class:`Dropped` markers.
            now: the time (``time.time()``), for the ACL's job dating.
        """
        batch = Batch([], [])
        learn = self.job_funs.learn
        for item in items:
            if isinstance(item, (LinkChange, Dropped)):
                self.job_funs.watch(now)  # events may have been missed up to here
                tag, payload = self._link_notice(item)
                if isinstance(item, Dropped) or item.up:
                    batch.reseed = True  # the view may have missed changes
                plain = wire.encode_event(tag, payload, self.master_id)
                batch.entries.append(self._add(tag, payload, None, plain, notice=True))
                continue
            tag, data = item
            job = learn(tag, data, now)
            if job is not None and job.kind == "new" and not job.admin_only:
                # its minion lists, cut to the accepted ids, once (the payload is not kept)
                within = self._accepted() if not self._syndics and self._accepted else _Every()
                job = job.targets_within(data, within)
            batch.events.append((tag, data))
            plain = wire.encode_event(tag, data, self.master_id)
            kept = _kept_payload(data, job)
            batch.entries.append(self._add(tag, kept, job, plain, notice=False))
        return batch

    def _add(self, tag: str, data: Any, job: JobEvent | None, plain: str, notice: bool) -> Entry:
        self.seq += 1
        self.stats.events += 1
        entry = Entry(self.seq, tag, data, job, plain, notice)
        if self.history_size > 0:
            entry.kept = True
            self.history.append(entry)
            self.history_bytes += entry.size
            self._trim()
        return entry

    def _trim(self) -> None:
        history = self.history
        while history and (
            len(history) > self.history_size or self.history_bytes > self.history_max_bytes
        ):
            old = history.popleft()
            old.kept = False
            self.history_bytes -= old.size
            self.stats.history_evicted += 1

    # -- output ---------------------------------------------------------------

    def tag_filter(self, tags: frozenset[str]) -> TagFilter:
        """The compiled filter of ``tags`` (shared by every group that has that set)."""
        filters = self._filters
        found = filters.get(tags)
        if found is None:
            found = filters[tags] = TagFilter(tags)
            self.filter_compiles += 1
            self._filter_chars += found.chars
            live = self._live
            for old in list(filters):  # the least recently used first, never a live one
                if len(filters) <= MAX_FILTER_SETS and self._filter_chars <= MAX_FILTER_CACHE_CHARS:
                    break
                if old != tags and old not in live:
                    self._filter_chars -= filters.pop(old).chars
        else:
            filters.move_to_end(tags)
        return found

    def fan_out(self, entries: Sequence[Entry], groups: Iterable[Group]) -> dict[Group, list[str]]:
        """The messages of ``entries`` for each group (groups with none are left out).

        Each filter set is matched once per entry, whatever the number of groups
        that hold it; each encoding is built once per entry, audience and format.
        """
        out: dict[Group, list[str]] = {}
        masks: dict[frozenset[str], list[bool]] = {}
        groups = list(groups)
        # the sets live clients hold stay compiled, whatever their number (each client's
        # are bounded: salt_ws.session.MAX_FILTER_CHARS)
        self._live = frozenset(group.tags for group in groups if group.tags)
        for group in groups:
            messages = [text for _, text in self._shown(entries, group, masks)]
            if messages:
                out[group] = messages
        return out

    def render(self, entries: Sequence[Entry], group: Group) -> list[str]:
        """The messages of ``entries`` for one group."""
        return self.fan_out(entries, [group]).get(group, [])

    def _shown(
        self,
        entries: Sequence[Entry],
        group: Group,
        masks: dict[frozenset[str], list[bool]],
    ) -> list[tuple[int, str]]:
        """(seq, message) of each entry ``group`` receives, in order.

        ``masks`` holds the tag matches already made, by filter set (shared by the
        groups of one fan-out: a set is matched once per entry).
        """
        mask = None
        if group.tags:
            mask = masks.get(group.tags)
            if mask is None:
                match = self.tag_filter(group.tags).matches
                mask = masks[group.tags] = [e.notice or match(e.tag) for e in entries]
        encoding = self.encoding
        audience, fmt = group.audience, group.fmt
        shown = []
        for index, entry in enumerate(entries):
            if mask is not None and not mask[index]:
                continue
            text = encoding(entry, audience, fmt)
            if text:
                shown.append((entry.seq, text))
        return shown

    def encoding(self, entry: Entry, audience: str, fmt: Format) -> str:
        """``entry`` as ``audience`` receives it in ``fmt`` ("": not at all)."""
        if fmt is Format.PLAIN:  # (cached and counted by _plain)
            return self._plain(entry, audience)
        key = (audience, fmt)
        found = entry._enc.get(key)
        if found is not None:
            return found
        plain = self._plain(entry, audience)
        text = _framed(fmt, entry.tag, self.id_of(entry.seq), plain) if plain else ""
        entry._enc[key] = text
        if text:  # (an empty text holds no bytes of its own)
            self._account(entry, wire.text_size(text))
        return text

    def _plain(self, entry: Entry, audience: str) -> str:
        """saltnado's encoding of ``entry`` for ``audience`` ("": not shown)."""
        if audience == ADMIN or entry.notice:
            return entry.plain
        key = (audience, Format.PLAIN)
        found = entry._enc.get(key)
        if found is not None:
            return found
        perms = self.audiences.get(audience)
        text = ""
        if perms is not None:
            data = entry.data
            if data is _FROM_PLAIN:
                data = json.loads(entry.plain)["data"]
            shown = perms.filter_event(data, entry.job)
            if shown is None:  # (a payload of None is dropped, not "unchanged")
                text = ""
            elif shown is data:
                text = entry.plain
            else:
                text = wire.encode_event(entry.tag, shown, self.master_id)
        entry._enc[key] = text
        if text and text is not entry.plain:
            self._account(entry, wire.text_size(text))
        return text

    def forget_audience(self, key: str) -> None:
        """Drop the encodings made for audience ``key`` (its targets were re-resolved):
        a replay judges what it may see of past events by its permissions now."""
        for entry in self.history:
            for fmt in Format:
                text = entry._enc.pop((key, fmt), None)
                if text and text is not entry.plain:
                    nbytes = wire.text_size(text)
                    entry.size -= nbytes
                    self.history_bytes -= nbytes

    def _account(self, entry: Entry, nbytes: int) -> None:
        entry.size += nbytes
        if entry.kept:
            self.history_bytes += nbytes
            self._trim()

    # -- resume ---------------------------------------------------------------

    def check(self, since: Cursor) -> str | None:
        """Why ``since`` cannot be resumed from at all (None: it can, maybe with a gap).

        Only a seq of this epoch that this stream has not reached yet is refused.
        """
        if since.epoch == self.epoch and since.seq > self.seq:
            return f"id {since} is ahead of this stream"  # (not the latest id: no token yet)
        return None

    def replay(self, since: Cursor, group: Group) -> list[str]:
        """What a client resuming after ``since`` receives before the live stream.

        Every kept entry after ``since`` that ``group`` may see, in order; when
        entries after ``since`` are no longer kept (too old) or ``since`` is of
        another epoch (the engine restarted), first a :data:`GAP_TAG` notice and
        then everything kept. Call it and subscribe in one go (no await between),
        so the live stream continues exactly where the replay ends.
        """
        oldest = self.oldest
        reason = None
        if since.epoch != self.epoch:
            reason = "engine restarted"
            start = oldest
        elif since.seq + 1 < oldest:
            reason = "too old"
            start = oldest
        else:
            start = min(since.seq + 1, self.seq + 1)
        entries = list(self.history)[start - oldest :] if start <= self.seq else []
        shown = self._shown(entries, group, {})
        messages = [text for _, text in shown]
        self.stats.replays += 1
        self.stats.replayed += len(messages)
        if reason is None:
            return messages
        self.stats.gaps += 1
        resumed = shown[0][0] if shown else self.seq + 1
        gap = {
            "since": str(since),
            "resumed_from": self.id_of(resumed),
            "reason": reason,
            "missed": True,
        }
        return [self.notice(GAP_TAG, gap, group.fmt, seq=resumed - 1), *messages]

    def notice(self, tag: str, data: Mapping[str, Any], fmt: Format, seq: int | None = None) -> str:
        """A message of the stream's own (gap, tick, subscribed) in ``fmt``.

        It carries the id of ``seq`` (default: the latest) in the envelope and
        SSE formats; it is not an entry and takes no seq of its own.
        """
        ident = self.id_of(self.seq if seq is None else seq)
        return _framed(fmt, tag, ident, wire.encode_event(tag, dict(data), self.master_id))

    def tick(self, fmt: Format) -> str:
        """The :data:`TICK_TAG` message: the latest id, for clients that heard nothing."""
        return self.notice(TICK_TAG, {}, fmt)

    def subscribed(self, tags: Iterable[str]) -> str:
        """The answer to subscribe / unsubscribe: the client's filters now (no id)."""
        return wire.encode_event(SUBSCRIBED_TAG, {"tags": sorted(tags)}, self.master_id)

    # -- link notices -----------------------------------------------------------

    def _link_notice(self, change: LinkChange | Dropped) -> tuple[str, dict[str, Any]]:
        if isinstance(change, Dropped):  # the engine fell more than bus_queue_bytes behind
            return wire.DROPPED_TAG, {
                "reason": "the engine fell more than bus_queue_bytes behind the event bus; "
                "events between down_since and now were dropped",
                "down_since": wire.stamp(change.at),
                "missed": True,
                "dropped": change.events,
                "dropped_bytes": change.bytes,
                "_stamp": wire.stamp(change.until),
            }
        if not change.up:
            self._link_down_since = change.at
            return wire.GAP_TAG, {
                "reason": "the engine lost its master event bus connection; reconnecting",
                "missed": True,
                "_stamp": wire.stamp(change.at),
            }
        self.bus_reconnects += 1
        since = self._link_down_since
        self._link_down_since = None
        return wire.RESTORED_TAG, {
            "reason": "event bus connection restored; events between down_since and now "
            "were missed",
            "down_since": wire.stamp(since) if since else None,
            "missed": True,
            "_stamp": wire.stamp(change.at),
        }

    def status(self) -> dict[str, Any]:
        """For ``salt-run ws.status`` (key ``stream``)."""
        return {
            "epoch": self.epoch,
            "latest": self.latest,
            "oldest": self.id_of(self.oldest),
            "history": len(self.history),
            "history_bytes": self.history_bytes,
            "history_size": self.history_size,
            "history_max_bytes": self.history_max_bytes,
            "history_evicted": self.stats.history_evicted,
            "replays": self.stats.replays,
            "replayed": self.stats.replayed,
            "gaps": self.stats.gaps,
            "filter_sets": len(self._filters),
        }

    def filter_stats(self) -> dict[str, int]:
        """For ``salt-run ws.status`` (key ``stream_filters``): the compiled tag filter sets
        (``sets``, their ``chars``), how many the last fan-out's groups hold (``live``: never
        dropped) and how many were ever compiled (``compiles``)."""
        return {
            "sets": len(self._filters),
            "chars": self._filter_chars,
            "live": len(self._live),
            "compiles": self.filter_compiles,
        }


def _framed(fmt: Format, tag: str, ident: str, plain: str) -> str:
    """saltnado's encoding ``plain`` of an event in ``fmt``, with the id ``ident``.

    The envelope is spliced, not re-encoded: ``plain`` is a JSON object that
    :func:`salt_ws.wire.encode_event` made, and an id is ``[A-Za-z0-9_-]`` and ``:``.
    """
    if fmt is Format.PLAIN:
        return plain
    if fmt is Format.ENVELOPE:
        return '{"id":"' + ident + '",' + plain[1:]
    return sse(tag, ident, plain)


def sse(tag: str, ident: str, plain: str) -> str:
    """One Server-Sent Event in rest_tornado's shape (the ``tag:`` line first).

    The ``data:`` line is the JSON encoding, which never holds a line break;
    a tag (chosen by whoever fired the event) could, so CR and LF in the
    ``tag:`` line are written as ``\\r`` and ``\\n`` (the ``data:`` line
    carries the exact tag).
    """
    if "\n" in tag or "\r" in tag:
        tag = tag.replace("\r", "\\r").replace("\n", "\\n")
    return "tag: " + tag + "\nid: " + ident + "\ndata: " + plain + "\n\n"
