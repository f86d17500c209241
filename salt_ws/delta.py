"""Delta mode and compat coalescing for the formatted view (pure; issue 11).

:class:`DeltaFeed` turns the view's :class:`~salt_ws.view.Update` objects into RFC 6902
JSON Patch messages, per audience, against the document ``{"minions": {...}, "jobs":
{...}}`` that is exactly what compat mode's two table messages hold (``render_minions``
and ``render_jobs`` of that audience, merged; option ``include_master``'s ``"master"``
is not part of the document but a top-level key of every delta message, as it is of
every compat message)::

    {"seq": 7, "snapshot": {"minions": {...}, "jobs": {...}}}   # first, for a new client
    {"seq": 8, "patch": [{"op": "replace", "path": "/jobs/2026.../minions/m1", ...}]}

A patch is built from what the update names as changed (minions and jobs by id, a
job's changed entries by minion), so its cost is per change, not per fleet: one job
return is the minion's entry in the job plus the job's own fields that changed. Only
``add``, ``remove`` and ``replace`` are used; paths are RFC 6901 pointers
(:func:`pointer`) with minion ids and jids as keys. ``seq`` is per audience and grows
by exactly 1 per message; an update that changes nothing an audience sees sends it
nothing. Each message is encoded once per audience (one string for all its clients).

A limited audience sees what ``render_minions(audience)``/``render_jobs(audience)``
show: a job or minion entering or leaving its visibility is an ``add``/``remove``; a
job it sees only some entries of is cut down (its ``tgt`` the sorted list of those
minions, ``tgt_type`` ``list``), and an entry appearing in or leaving such a job
also adds/removes its id in that ``tgt`` array by index.

The feed keeps, per audience, its ``seq``, the view serial its document reflects and
(limited audiences only) which jobs the document holds and, for cut-down jobs, which
entries; the administrators' document needs nothing beyond the view itself, since
each update carries the states before it (:class:`~salt_ws.view.Changes`). An update
it cannot place (a serial missed, or a snapshot taken while changes were pending) is
answered with a *resync*: a patch replacing ``/minions`` and ``/jobs`` whole.

:class:`Coalescer` decides when compat mode re-sends a changed table: at most once per
``view_interval`` seconds per table, with its latest state, never later than
``view_interval`` after the first unsent change; ``0`` sends every change at once.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from typing import Any

from salt_ws.view import JOB_FIELDS, Audience, Changes, FormattedView, JobChange, Update
from salt_ws.wire import encode

__all__ = ["TABLES", "Coalescer", "DeltaFeed", "pointer"]

#: The compat tables, in the order a client receives them.
TABLES = ("minions", "jobs")

_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_ABSENT: Any = object()  # a job not in an audience's document, a grain not in a row
_PLAIN = frozenset((str, int, bool, type(None)))  # exact types whose == is JSON's


def pointer(*tokens: str) -> str:
    """An RFC 6901 JSON Pointer to ``tokens`` (``~`` as ``~0``, ``/`` as ``~1``)."""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _op(op: str, path: str, value: str | None = None) -> str:
    """One encoded JSON Patch operation (``value``: already encoded)."""
    if value is None:
        return '{"op":"' + op + '","path":' + encode(path) + "}"
    return '{"op":"' + op + '","path":' + encode(path) + ',"value":' + value + "}"


def _strict(value: Any) -> str | None:
    """``value`` encoded as the view would, if it needs none of the view's conversions."""
    try:
        return _STRICT.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None


def _joined(head: str, first: list[str], middle: str, second: list[str], tail: str) -> str:
    """``head + ",".join(first) + middle + ",".join(second) + tail``, copying the tables once."""
    pieces: list[str] = [head]
    for parts, after in ((first, middle), (second, tail)):
        if parts:
            commas: list[str] = [","] * (2 * len(parts) - 1)
            commas[0::2] = parts
            pieces.extend(commas)
        pieces.append(after)
    return "".join(pieces)


def _key(audience: Audience | None) -> str | None:
    return None if audience is None or audience.admin else audience.key


@dataclasses.dataclass
class _Document:
    """What the feed knows of one audience's document."""

    audience: Audience | None  # None: administrators
    seq: int = 0
    synced: int = 0  # the view serial it reflects (-1: unknown, resync at the next change)
    # limited audiences: jid -> the minions shown (None: all the job's entries; else sorted)
    jobs: dict[str, list[str] | None] = dataclasses.field(default_factory=dict)
    snapshot: str | None = None  # cached, at seq


class DeltaFeed:
    """JSON Patch messages for every audience with delta clients (see the module docstring).

    Args:
        view: the formatted view whose updates are fed to :meth:`patches`.

    The engine calls :meth:`snapshot` for a new ``?delta=1`` client (which starts
    following that audience), :meth:`patches` with every update the view returns, in
    order, before the view takes its next input (several updates may be merged first,
    in order, then fed at once), :meth:`resync` after ``view.forget_audience``
    re-resolved an audience, and :meth:`forget` when an audience's last delta client
    left. An update fed late, or missed, costs a resync (counted), never a wrong
    document.
    """

    def __init__(self, view: FormattedView) -> None:
        self.view = view
        self._docs: dict[str | None, _Document] = {}
        self._prefix = "" if view.master is None else ',"master":' + encode(view.master)
        self.counters = {"snapshots": 0, "patches": 0, "ops": 0, "resyncs": 0, "bytes": 0}

    # -- queries --------------------------------------------------------------------------

    @property
    def audiences(self) -> list[str | None]:
        """Keys of the audiences followed (``None``: administrators)."""
        return list(self._docs)

    def seq(self, audience: Audience | None = None) -> int:
        """The audience's current ``seq`` (0 if not followed)."""
        doc = self._docs.get(_key(audience))
        return 0 if doc is None else doc.seq

    def stats(self) -> dict[str, int]:
        """Counters for ``ws.status``: audiences followed, messages and ops sent, bytes."""
        return {"audiences": len(self._docs), **self.counters}

    # -- the engine's calls ---------------------------------------------------------------

    def snapshot(self, audience: Audience | None = None) -> str:
        """``{"seq": N, "snapshot": {...}}`` for a new client of ``audience`` (cached)."""
        key = _key(audience)
        doc = self._docs.get(key)
        if doc is None:
            doc = self._docs[key] = _Document(None if key is None else audience)
            self._sync(doc)
        elif doc.synced != self.view.serial:
            doc.synced = -1  # updates were not fed before this: resync everyone at the next
            doc.snapshot = None
        if doc.snapshot is None:
            view = self.view
            doc.snapshot = _joined(
                '{"seq":' + str(doc.seq) + ',"snapshot":{"minions":{',
                view.minion_parts(doc.audience),
                '},"jobs":{',
                view.job_parts(doc.audience),
                "}}" + self._prefix + "}",
            )
        self.counters["snapshots"] += 1
        return doc.snapshot

    def patches(self, update: Update) -> dict[str | None, str]:
        """The patch message of each followed audience that ``update`` changed (by key)."""
        changes = update.changes
        out: dict[str | None, str] = {}
        if changes is None:
            return out
        # patches are built from the view as it is now: it must not have moved on since
        current = changes.last == self.view.serial and not self.view.changes_pending
        for key, doc in self._docs.items():
            if changes.last <= doc.synced:
                continue  # already in its snapshot
            if (
                not current
                or doc.synced < 0
                or changes.first != doc.synced + 1
                or not changes.contiguous
            ):
                out[key] = self._resync(doc)
                continue
            ops = self._ops(doc, changes)
            doc.synced = changes.last
            if ops:
                out[key] = self._message(doc, ops)
        return out

    def resync(self, audience: Audience | None = None) -> str | None:
        """A patch replacing both tables of ``audience`` (its permissions changed:
        call after ``view.forget_audience``); ``None`` if it is not followed."""
        doc = self._docs.get(_key(audience))
        if doc is None:
            return None
        if audience is not None and not audience.admin:
            doc.audience = audience
        return self._resync(doc)

    def forget(self, key: str | None) -> None:
        """Stop following an audience (its last delta client left)."""
        self._docs.pop(key, None)

    # -- internals ------------------------------------------------------------------------

    def _sync(self, doc: _Document) -> None:
        """Note what ``doc`` holds now (after a snapshot or a resync)."""
        view = self.view
        doc.synced = -1 if view.changes_pending else view.serial
        doc.jobs = {}
        if doc.audience is not None:
            view.render_jobs(doc.audience)  # fills the view's per-audience cache
            for jid in view.jids:
                frag, shown = view.audience_job(jid, doc.audience)
                if frag:
                    doc.jobs[jid] = None if shown is None else list(shown)

    def _tables(self, doc: _Document) -> tuple[str, str]:
        """``"minions":{...}`` and ``"jobs":{...}`` of the audience's compat messages."""
        cut = len(self._prefix) + 1  # ',"master":"..."}' or '}'
        view = self.view
        return view.render_minions(doc.audience)[1:-cut], view.render_jobs(doc.audience)[1:-cut]

    def _resync(self, doc: _Document) -> str:
        self._sync(doc)
        minions, jobs = self._tables(doc)
        ops = [
            _op("replace", "/minions", minions[len('"minions":') :]),
            _op("replace", "/jobs", jobs[len('"jobs":') :]),
        ]
        self.counters["resyncs"] += 1
        return self._message(doc, ops)

    def _message(self, doc: _Document, ops: list[str]) -> str:
        doc.seq += 1
        doc.snapshot = None
        text = '{"seq":' + str(doc.seq) + ',"patch":[' + ",".join(ops) + "]" + self._prefix + "}"
        self.counters["patches"] += 1
        self.counters["ops"] += len(ops)
        self.counters["bytes"] += len(text)
        return text

    def _ops(self, doc: _Document, changes: Changes) -> list[str]:
        ops: list[str] = []
        self._minion_ops(doc.audience, changes, ops)
        for jid, change in changes.jobs.items():
            if doc.audience is None:
                self._admin_job_ops(jid, change, ops)
            else:
                self._limited_job_ops(doc, jid, change, ops)
        return ops

    def _minion_ops(self, audience: Audience | None, changes: Changes, ops: list[str]) -> None:
        view = self.view
        for mid, old in changes.minions.items():
            if audience is not None and not audience.may_target(mid):
                continue
            new = view.minion_entry(mid)
            path = pointer("minions", mid)
            if new is None:
                if old is not None:
                    ops.append(_op("remove", path))
            elif old is None:
                ops.append(_op("add", path, view.minion_value(mid)))
            elif old is not new:
                self._entry_ops(mid, path, old, new, ops)

    def _entry_ops(
        self, mid: str, path: str, old: dict[str, Any], new: dict[str, Any], ops: list[str]
    ) -> None:
        """A minion's row changed: its grains one by one, where that is exact and smaller."""
        mine: list[str] = []
        old_syndic, new_syndic = old.get("syndic"), new.get("syndic")
        if old_syndic != new_syndic:
            if new_syndic is None:
                mine.append(_op("remove", path + "/syndic"))
            else:
                op = "add" if old_syndic is None else "replace"
                mine.append(_op(op, path + "/syndic", encode(new_syndic)))
        grains_ops = self._grains_ops(path + "/grains", old["grains"], new["grains"])
        if grains_ops is None:  # not expressible key by key: the row whole
            ops.append(_op("replace", path, self.view.minion_value(mid)))
            return
        ops.extend(mine)
        ops.extend(grains_ops)

    @staticmethod
    def _grains_ops(path: str, old: dict[Any, Any], new: dict[Any, Any]) -> list[str] | None:
        """Ops turning grains ``old`` into ``new`` key by key (``None``: replace the row).

        Only when every key is a string and every value encodes without the view's
        conversions (so each value's encoding is exactly its part of the row's), and
        when that is shorter than the grains whole.
        """
        if old is new:
            return []
        if not all(isinstance(k, str) for k in old) or not all(isinstance(k, str) for k in new):
            return None
        ops = [_op("remove", path + pointer(k)) for k in old if k not in new]
        missing = _ABSENT
        for k, value in new.items():
            was = old.get(k, missing)
            kind = type(value)
            if kind in _PLAIN:  # (always encodes, and equal with its type: the same text)
                if type(was) is kind and was == value:
                    continue
                encoded: str | None = _STRICT.encode(value)
            else:
                encoded = _strict(value)
                if encoded is None:
                    return None
                if was is not missing and (was is value or _strict(was) == encoded):
                    continue
            op = "add" if was is missing else "replace"
            ops.append(_op(op, path + pointer(k), encoded))
            if len(ops) > len(new) // 2 + 1:
                return None
        return ops

    def _admin_job_ops(self, jid: str, change: JobChange, ops: list[str]) -> None:
        view = self.view
        job = view.job(jid)
        path = pointer("jobs", jid)
        if job is None:
            if change.before is not None:
                ops.append(_op("remove", path))
            return
        if change.before is None:
            ops.append(_op("add", path, view.job_value(jid)))
            return
        if change.dropped:  # evicted and back as a new row
            ops.append(_op("replace", path, view.job_value(jid)))
            return
        for name, was, now in zip(JOB_FIELDS, change.before, job.fields, strict=True):
            if was != now:
                ops.append(_op("replace", path + "/" + name, now))
        self._entry_changes(job, path, change, ops)

    @staticmethod
    def _entry_changes(
        job: Any,
        path: str,
        change: JobChange,
        ops: list[str],
        shown: dict[str, bool] | None = None,
        showed: dict[str, bool] | None = None,
    ) -> None:
        """Ops for a job's changed entries. ``shown``/``showed``: which of them the
        audience sees now / saw before (default: those that exist now / existed)."""
        frags = job.minion_fragments
        for mid, old in change.entries.items():
            cur = frags.get(mid)
            was = old is not None if showed is None else showed[mid]
            now = cur is not None if shown is None else shown[mid]
            entry = path + "/minions" + pointer(mid)
            if was and not now:
                ops.append(_op("remove", entry))
            elif now and not was:
                ops.append(_op("add", entry, job.value(mid)))
            elif now and cur is not None and old != cur[0]:
                ops.append(_op("replace", entry, job.value(mid)))

    def _limited_job_ops(self, doc: _Document, jid: str, change: JobChange, ops: list[str]) -> None:
        audience = doc.audience
        assert audience is not None
        view = self.view
        job = view.job(jid)
        path = pointer("jobs", jid)
        old = doc.jobs.get(jid, _ABSENT)
        if job is None or job.admin_only or not job.minions:
            if old is not _ABSENT:
                ops.append(_op("remove", path))
                del doc.jobs[jid]
            return
        if old is _ABSENT or change.before is None or change.dropped or change.judged != job.judged:
            self._job_whole(doc, jid, old, ops)
            return
        # Only the changed entries can have changed visibility: judge just those.
        visible = {mid: mid in job.minions and job.may(audience, mid) for mid in change.entries}
        mine: list[str] = []
        if old is None:  # it showed all entries: every entry that did not change still shows
            hidden = {mid for mid, ok in visible.items() if not ok and mid in job.minions}
            if not hidden:
                self._fields_ops(path, change.before, job.fields, mine)
                self._entry_changes(job, path, change, mine)
                ops.extend(mine)
                return
            cut = [mid for mid in job.minions if mid not in hidden]
            if not cut:
                ops.append(_op("remove", path))
                del doc.jobs[jid]
                return
            cut.sort()
            doc.jobs[jid] = cut
            self._fields_ops(path, change.before, job.cut_fields(cut), mine)
            self._entry_changes(job, path, change, mine, shown=visible)
            ops.extend(mine)
            return
        # It showed some entries (sorted in old): move them in and out, the target too.
        showed: dict[str, bool] = {}
        targets: list[str] = []
        for mid in sorted(change.entries):
            at = bisect.bisect_left(old, mid)
            was = showed[mid] = at < len(old) and old[at] == mid
            now = visible[mid]
            if was and not now:
                del old[at]
                targets.append(_op("remove", path + "/tgt/" + str(at)))
            elif now and not was:
                old.insert(at, mid)
                targets.append(_op("add", path + "/tgt/" + str(at), encode(mid)))
        if not old:
            ops.append(_op("remove", path))
            del doc.jobs[jid]
            return
        self._entry_changes(job, path, change, mine, shown=visible, showed=showed)
        if len(old) == len(job.minions):  # all its entries show again: the job's own target
            doc.jobs[jid] = None
            mine.append(_op("replace", path + "/tgt", job.fields[0]))
            mine.append(_op("replace", path + "/tgt_type", job.fields[1]))
            self._fields_ops(path, change.before[2:], job.fields[2:], mine, start=2)
        else:
            mine.extend(targets)
            self._fields_ops(path, change.before[2:], job.fields[2:], mine, start=2)
        ops.extend(mine)

    def _job_whole(self, doc: _Document, jid: str, old: Any, ops: list[str]) -> None:
        """Judge every entry of job ``jid`` afresh: it is added, replaced or removed whole."""
        assert doc.audience is not None
        frag, shown = self.view.audience_job(jid, doc.audience)
        path = pointer("jobs", jid)
        if not frag:
            if old is not _ABSENT:
                ops.append(_op("remove", path))
                del doc.jobs[jid]
            return
        job = self.view.job(jid)
        assert job is not None
        value = frag[len(job.jid_json) + 1 :]
        ops.append(_op("add" if old is _ABSENT else "replace", path, value))
        doc.jobs[jid] = None if shown is None else list(shown)

    @staticmethod
    def _fields_ops(
        path: str, before: tuple[str, ...], now: tuple[str, ...], ops: list[str], start: int = 0
    ) -> None:
        for name, was, is_ in zip(JOB_FIELDS[start:], before, now, strict=True):
            if was != is_:
                ops.append(_op("replace", path + "/" + name, is_))


class Coalescer:
    """When compat mode re-sends each changed table (pure; ``now`` passed in).

    Args:
        interval: option ``view_interval``: at most one send per table per this many
            seconds, never later than this after the table's first unsent change
            (``0``: every change at once).

    The engine calls :meth:`changed` with each update and sends the tables it returns
    (rendered then, with their latest state), and calls :meth:`due` at :meth:`next_at`.
    """

    def __init__(self, interval: float) -> None:
        if not (math.isfinite(interval) and interval >= 0):
            raise ValueError(f"view_interval must be a finite number >= 0, not {interval!r}")
        self.interval = float(interval)
        self._sent_at: dict[str, float] = dict.fromkeys(TABLES, -math.inf)
        self._pending: dict[str, float] = {}  # table -> when its first unsent change came
        self.counters = {"sent": 0, "coalesced": 0}

    def changed(self, update: Update, now: float) -> list[str]:
        """Note the tables ``update`` changed; the tables to send now (changed or overdue)."""
        for table in TABLES:
            if getattr(update, table):
                if table in self._pending:
                    self.counters["coalesced"] += 1  # goes with the send already due
                else:
                    self._pending[table] = now
        return self.due(now)

    def due(self, now: float) -> list[str]:
        """The tables to send now (each then counts as sent at ``now``)."""
        out = []
        for table in TABLES:
            if table not in self._pending:
                continue
            sent = self._sent_at[table]
            if now >= sent + self.interval or now < sent:  # (the clock went back: send)
                del self._pending[table]
                self._sent_at[table] = now
                out.append(table)
        self.counters["sent"] += len(out)
        return out

    def next_at(self) -> float | None:
        """When :meth:`due` next has a table to send (``None``: nothing is waiting)."""
        if not self._pending:
            return None
        return min(self._sent_at[table] + self.interval for table in self._pending)

    def stats(self) -> dict[str, int]:
        """Counters for ``ws.status``: tables sent, changes folded into a later send,
        tables waiting."""
        return {**self.counters, "waiting": len(self._pending)}
