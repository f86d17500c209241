"""The formatted view: one live model of minions and jobs, shared by all clients (pure).

:class:`FormattedView` is a state machine. :meth:`FormattedView.apply` takes
a bus event and the current time and returns an :class:`Update`: which
tables changed and which :data:`Command` objects the engine should run (for
example "load the cached grains of m1"). It never touches a socket, the
clock or Salt.

The wire shapes are saltnado's (see the seed documentation): a minions
message ``{"minions": {mid: {"id", "grains"}}}`` and a jobs message
``{"jobs": {jid: {"jid", "tgt", "tgt_type", "fun", "start_time", "state",
"minions": {mid: {"return", "retcode", "success"}}}}}``. Beyond the seed,
each job carries ``success`` (all minions succeeded; ``null`` while running),
``user`` and ``end_time``; a minion that never answered within
``job_timeout`` is marked ``{"success": false, "error": "..."}`` and the job
completes. Each message is a complete table.

Behind syndics (the master is a master of masters, ``order_masters``): the
minions table also lists minions that syndics report (their forwarded presence
and start events, and returns of jobs they announced), each with a
``"syndic"`` field naming the syndic; a job expects the minions each syndic's
own master targeted (its forwarded ``new`` event) instead of the syndic itself,
and completes no sooner than ``syndic_wait`` after it started, as Salt's CLI
waits for syndics to report. Because syndics also re-fire their masters'
presence events under the plain tag, this master's own presence then comes
only from :meth:`FormattedView.presence` (the engine's own check).

What is trusted (issue 9). Any minion can put nearly any tag and payload on
the master bus, so no event proves anything; the view decides from the
master's own state, which the engine hands it:

* **Ids.** An id enters the minions table, a job's expected minions, a job's
  entries or a :class:`LoadGrains` command only if it passes Salt's
  ``valid_id`` rule (:func:`salt_ws.events.valid_id`: no ``/``, ``\\``, NUL,
  not empty, ``.`` or ``..``; at most 255 bytes, as a key file name) and is an
  **accepted key** of this master (the set given to :meth:`~FormattedView.seed`
  and :meth:`~FormattedView.set_accepted`). A ``salt/key`` event, or an event
  naming a valid id without a key, does not change that set: it makes the
  view ask the engine to re-read the keys (:class:`ReloadKeys`, one at a time,
  at most once a second); ids that events said were connected enter once the
  keys show them accepted.
* **Behind syndics** (a master of masters) minions have no key here: a
  forwarded event counts only if its first hop (``via[0]``) is an accepted
  key of this master and every hop and id passes ``valid_id``; deeper (nested)
  syndic ids are bounded (:data:`MAX_NESTED_SYNDICS`). A syndic is learned from
  ``salt/syndic/<id>/start`` or the seed only with an accepted key. Nothing of
  a minion behind a syndic is ever read from this master's cache (only local
  minions get :class:`LoadGrains`). Returns, which syndics forward under the
  plain tag, need only ``valid_id`` there.
* **A job's function never changes once known** (from its first ``new``, or
  its first return with a function if no ``new`` was seen), nor its
  arguments once known from a ``new``. A conflicting ``new`` (another
  ``fun``, or the same one with other ``arg``) changes nothing but makes the job
  administrator-only; so does, for a job known only from returns, a return
  with another function (it is kept, for administrators: both sources are
  equally forgeable, so neither is believed over the other). A job whose
  function is not shaped like one (``acl.valid_fun``) is administrator-only.
  A return naming another function than the job's (from its ``new`` or its
  first return) makes the job administrator-only too: its own fields
  (``fun``, ``user``, times) would otherwise be shown through a forged
  return. Each minion's entry keeps the function (only if ``acl.valid_fun``)
  and the arguments (``acl.normalise_arg``: ``str()`` values, at most 64 KiB)
  of that minion's own return (internally; the wire entry is unchanged). An
  audience sees a returned entry only if that return's own function and
  arguments pass ``may(fun, mid, arg)`` and, for a job known from its ``new``,
  the job's function with the job's arguments pass too; an entry without a
  return is judged by the job's. A return never sets the arguments other
  returns are judged with.
* **Bounds.** The minions table holds at most ``max_minions`` ids (local and
  behind syndics); the jobs table at most ``max_jobs`` jobs and
  ``max_jobs_bytes`` bytes of its encoding plus what jobs keep besides it
  (arguments, returns' functions: :attr:`FormattedView.kept_bytes`, in
  ``ws.status`` as ``jobs_kept_bytes``; oldest dropped first). One
  minion's return whose encoded entry is larger than an eighth of
  ``max_jobs_bytes`` is replaced by a marker string naming its size
  (``"<return of N bytes not kept: ...>"``; the raw event on ``/all_events``
  is unaffected), and so is a job's ``tgt`` beyond that size; other string
  fields are cut at :data:`MAX_FIELD` characters, jids at
  ``acl.MAX_JID_LENGTH``.

Everything refused is counted by reason in :attr:`FormattedView.refused`
(reported by ``salt-run ws.status``): ``invalid_id``, ``not_accepted``,
``over_limit`` (minions table full, too many nested syndics or entries in a
job), ``fun_conflict`` (jobs made administrator-only by a conflicting
``new`` or return), ``jobs_bytes`` (jobs dropped for ``max_jobs_bytes``),
``return_too_large`` and ``field_too_large`` (values replaced by a marker),
``invalid_jid``, ``invalid_fun`` (a job's function not shaped like one, shown
as :data:`INVALID_FUN`).

Encoding is incremental: each minion and each job-minion entry keeps its
JSON fragment (a job's entries are encoded when they change, which is also
how the jobs table's size in bytes is kept without re-encoding it), so an
event re-encodes only what it changed and a table is rendered by joining
cached fragments; a new client gets the cached strings. Each audience's view
of each job is cached too (until that job changes or the audience is
forgotten), so an event re-filters only the job it changed. A job's kept bytes
and its success are counted as its entries change, never summed over them per
event, and a table message made stale is dropped at its next render (freeing
a 200 MB string takes milliseconds), so applying an event costs the same at
any fleet size.

What changed (issue 11): each :class:`Update` carries :class:`Changes`, the
minions and jobs it changed by id, with their states before (a minion's row,
a job's encoded fields, what its entries were judged by, its changed entries'
fragments), serial-numbered per input method; :class:`salt_ws.delta.DeltaFeed`
builds JSON Patch messages from them, per audience, at a cost per change.
Option ``view_grains`` (``grains=``) keeps only the named grains of each minion
(wherever grains enter: :meth:`~FormattedView.seed`,
:meth:`~FormattedView.set_grains`, a syndic's minion's ``grains.items`` return).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
from typing import Any, Callable, Iterable, Mapping, Protocol

from salt_ws import events as ev
from salt_ws.acl import MAX_JID_LENGTH, normalise_arg, valid_fun
from salt_ws.wire import encode, stamp

__all__ = [
    "JOB_FIELDS",
    "REFUSALS",
    "Changes",
    "Command",
    "FormattedView",
    "JobChange",
    "JobState",
    "LoadGrains",
    "ReloadKeys",
    "Update",
    "ViewLimits",
]


class Audience(Protocol):
    """What the view needs of a permission set (see :class:`salt_ws.acl.Permissions`)."""

    admin: bool
    key: str

    def may(self, fun: str | None, mid: str, arg: Any = None) -> bool: ...

    def may_target(self, mid: str) -> bool: ...


class JobState(str, enum.Enum):
    """A job's ``state`` on the wire (saltnado's strings)."""

    RUNNING = "running"
    COMPLETE = "complete"


@dataclasses.dataclass(frozen=True)
class ViewLimits:
    """Table bounds, job timeout and (on a master of masters) Salt's ``syndic_wait``."""

    max_jobs: int = 1000
    job_max_age: float = 86400.0
    job_timeout: float = 600.0
    syndic_wait: float = 0.0
    max_minions: int = 100_000
    max_jobs_bytes: int = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class LoadGrains:
    """Command: read these minions' grains from the master's cache, then call ``set_grains``."""

    mids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ReloadKeys:
    """Command: re-read the master's accepted keys, then call ``set_accepted`` with them
    (``set_accepted(None)`` if they could not be read)."""


Command = LoadGrains | ReloadKeys


@dataclasses.dataclass
class JobChange:
    """How one job stood before an update, for the delta feed (:mod:`salt_ws.delta`).

    ``before``: the job's encoded fields (:data:`JOB_FIELDS`) as last sent, ``None`` if it
    was not in the table; ``judged``: what its entries were judged by then
    (function, administrator-only, known from a ``new``, arguments' revision);
    ``entries``: minion -> its encoded entry fragment before (``None``: no entry);
    ``dropped``: the job left the table meanwhile (it may be back, as a new row).
    """

    before: tuple[str, ...] | None
    judged: tuple[Any, ...] | None
    entries: dict[str, str | None] = dataclasses.field(default_factory=dict)
    dropped: bool = False


@dataclasses.dataclass
class Changes:
    """What changed in the tables since the previous :class:`Changes`, by id.

    ``minions``: minion -> its entry before (``None``: not in the table); ``jobs``: jid ->
    :class:`JobChange`. ``first``/``last``/``count``: the serial numbers it covers (each
    input method's changes get the next one), so a consumer can tell it missed none.
    """

    first: int
    last: int
    count: int = 1
    minions: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)
    jobs: dict[str, JobChange] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.minions or self.jobs)

    @property
    def contiguous(self) -> bool:
        """Does it cover every serial from ``first`` to ``last``?"""
        return self.last - self.first + 1 == self.count

    def merge(self, later: Changes) -> Changes:
        """Fold ``later`` (changes made after these) in, keeping the earliest states."""
        for mid, entry in later.minions.items():
            self.minions.setdefault(mid, entry)
        for jid, change in later.jobs.items():
            mine = self.jobs.get(jid)
            if mine is None:
                self.jobs[jid] = change
                continue
            for mid, frag in change.entries.items():
                mine.entries.setdefault(mid, frag)
            mine.dropped |= change.dropped
        self.first = min(self.first, later.first)
        self.last = max(self.last, later.last)
        self.count += later.count
        return self


@dataclasses.dataclass
class Update:
    """What an input changed: tables to re-send, what in them changed, commands for the engine.

    ``changes`` names the minions and jobs that changed (with their states before),
    for :class:`salt_ws.delta.DeltaFeed`; every update the view returns must reach the
    feed, in order (merging them in order is fine).
    """

    minions: bool = False
    jobs: bool = False
    commands: list[Command] = dataclasses.field(default_factory=list)
    # (not compared: two updates are equal when they ask the engine for the same things)
    changes: Changes | None = dataclasses.field(default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return self.minions or self.jobs or bool(self.commands)

    def merge(self, other: Update) -> Update:
        """Fold ``other`` (a later update) into this one (in place) and return it."""
        self.minions |= other.minions
        self.jobs |= other.jobs
        self.commands.extend(other.commands)
        if other.changes is not None:
            if self.changes is None:
                self.changes = other.changes
            else:
                self.changes.merge(other.changes)
        return self


#: Reasons counted in :attr:`FormattedView.refused` (see the module docstring).
REFUSALS = (
    "invalid_id",
    "not_accepted",
    "over_limit",
    "fun_conflict",
    "jobs_bytes",
    "return_too_large",
    "field_too_large",
    "invalid_jid",
    "invalid_fun",
)

_PENDING = {"return": None, "retcode": None, "success": None}
_PENDING_JSON = encode(_PENDING)
LOCAL = ""  # the source of minions connected to this master (other sources: syndic ids)
ECHO_WINDOW = 2.0  # seconds within which a nested syndic's event is re-fired by its parents
MAX_ECHOES = 1024  # recent nested-syndic events remembered for that
MAX_ID_BYTES = 255  # a key file name: no file system holds a longer one
MAX_NESTED_SYNDICS = 64  # syndic ids without a key here (below the first hop)
MAX_FIELD = 1024  # characters of a job's fun, user, tgt_type or start_time
MAX_KEY_HINTS = 1024  # ids waiting for a key re-read to tell whether they may enter
KEYS_INTERVAL = 1.0  # seconds between two key re-reads asked for by events
KEYS_TIMEOUT = 30.0  # a key re-read unanswered this long is taken as lost
_JOB_MINIONS = ',"minions":{'
INVALID_FUN = "<not a function name>"  # shown for a job's function that is not shaped like one


def _nbytes(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (as it goes on the wire)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _join(prefix: str, parts: list[str], suffix: str) -> str:
    """``prefix + ",".join(parts) + "}" + suffix`` with a single copy of a large table."""
    if not parts:
        return prefix + "}" + suffix
    if len(parts) == 1:
        return prefix + parts[0] + "}" + suffix
    return ",".join([prefix + parts[0], *parts[1:-1], parts[-1] + "}" + suffix])


#: A job's own fields on the wire, after ``jid`` and before ``minions`` (saltnado's and ours).
JOB_FIELDS = ("tgt", "tgt_type", "fun", "start_time", "state", "success", "user", "end_time")
_LIST_JSON = encode("list")


def _head_of(jid_json: str, fields: tuple[str, ...]) -> str:
    """A job's encoding up to its entries, from its encoded fields."""
    parts = ['{"jid":', jid_json]
    for name, value in zip(JOB_FIELDS, fields, strict=True):
        parts.append(',"' + name + '":')
        parts.append(value)
    return "".join(parts)


class _Job:
    """One row of the jobs table, with its encoded fragments and their size in bytes."""

    __slots__ = (
        "admin_only",
        "arg",
        "arg_bytes",
        "arg_rev",
        "args",
        "counted",
        "end_time",
        "entry_bytes",
        "fields",
        "from_new",
        "fun",
        "funs",
        "head",
        "jid",
        "jid_json",
        "judged",
        "kept_own",
        "last_stamp",
        "minion_fragments",
        "minions",
        "ok",
        "open_targets",
        "pending",
        "settle_at",
        "size",
        "start_time",
        "started_at",
        "state",
        "success",
        "tgt_json",
        "tgt_type",
        "touched",
        "user",
        "via",
    )

    def __init__(
        self,
        jid: str,
        fun: str,
        tgt_json: str,
        tgt_type: str,
        start_time: str | None,
        user: str | None,
        now: float,
    ) -> None:
        self.jid = jid
        self.jid_json = encode(jid)
        self.fun = fun  # "" while unknown
        self.arg: Any = None  # the job's arguments in Salt's format (None: unknown)
        self.arg_rev = 0  # bumped whenever arg is set
        self.from_new = False  # fun (and arg) known from a new event
        self.admin_only = False
        self.tgt_json = tgt_json
        self.tgt_type = tgt_type
        self.start_time = start_time
        self.user = user
        self.started_at = now
        self.state = JobState.RUNNING
        self.success: bool | None = None
        self.end_time: str | None = None
        self.last_stamp: str | None = start_time  # of the latest event, for end_time
        self.settle_at = now  # complete no sooner (a published job: after syndic_wait)
        # its new did not say whom it targeted (Salt trimmed the list): it completes at
        # job_timeout with whatever returned, never because nobody is pending
        self.open_targets = False
        self.pending: set[str] = set()  # targeted minions that have not returned
        self.minions: dict[str, dict[str, Any]] = {}  # mid -> {"success": ...} of its entry
        # same keys, same order as minions: each entry encoded, and its size in bytes
        self.minion_fragments: dict[str, tuple[str, int]] = {}
        self.entry_bytes = 0  # sum of the fragments' sizes
        self.ok = 0  # entries whose success is true
        self.funs: dict[str, str | None] = {}  # the function of each minion's own return
        # the arguments of each minion's own return (normalised, bounded; None: unknown),
        # with their size in bytes (0 when they are the job's own, shared)
        self.args: dict[str, tuple[Any, int]] = {}
        self.arg_bytes = 0  # bytes of arg (kept outside the encoding)
        self.kept_own = 0  # bytes of args' and funs' values (kept outside the encoding)
        self.counted = 0  # what the view last counted of kept(), see FormattedView._touch_job
        self.via: dict[str, str] = {}  # minion -> the syndic that announced it for this job
        # entries changed since the view last noted them: minion -> fragment before (None: none)
        self.touched: dict[str, str | None] = {}
        self.fields: tuple[str, ...] = ()
        self.judged: tuple[Any, ...] = ()
        self.head = ""
        self.size = 0  # bytes of '"<jid>":{...}' in the encoded table
        self.refresh()

    def judge(self) -> tuple[Any, ...]:
        """What every entry is judged by (see :meth:`may`): a change re-judges them all."""
        return (self.fun, self.admin_only, self.from_new, self.arg_rev)

    def refresh(self) -> int:
        """Re-encode the job's own fields; the change in :attr:`size`."""
        self.fields = (
            self.tgt_json,
            encode(self.tgt_type),
            encode(self.fun),
            encode(self.start_time),
            encode(self.state.value),
            encode(self.success),
            encode(self.user),
            encode(self.end_time),
        )
        self.judged = self.judge()
        self.head = _head_of(self.jid_json, self.fields)
        n = len(self.minion_fragments)
        size = (
            _nbytes(self.jid_json)
            + 1
            + _nbytes(self.head)
            + len(_JOB_MINIONS)
            + self.entry_bytes
            + max(0, n - 1)
            + 2
        )
        delta, self.size = size - self.size, size
        return delta

    def put(self, mid: str, entry: dict[str, Any], fragment: str) -> None:
        """Set ``mid``'s entry and its encoding."""
        old = self.minion_fragments.get(mid)
        if mid not in self.touched:
            self.touched[mid] = None if old is None else old[0]
        if old is not None:
            self.entry_bytes -= old[1]
            self.ok -= self.minions[mid].get("success") is True
        size = _nbytes(fragment)
        # only what the job's success needs: the entry is in its fragment (a return's
        # objects can weigh 20 times its JSON, which is what max_jobs_bytes counts)
        self.minions[mid] = {"success": entry.get("success")}
        self.minion_fragments[mid] = (fragment, size)
        self.entry_bytes += size
        self.ok += entry.get("success") is True

    def expect(self, mids: Iterable[str]) -> None:
        """Also wait for ``mids``; a completed job that now waits runs again."""
        for mid in mids:
            if mid not in self.minions:
                self.put(mid, dict(_PENDING), encode(mid) + ":" + _PENDING_JSON)
                self.pending.add(mid)
        if self.state is JobState.COMPLETE and self.pending:
            self.state, self.success, self.end_time = JobState.RUNNING, None, None

    def unexpect(self, mid: str) -> bool:
        """Stop waiting for ``mid`` (a syndic, not a minion) unless it returned."""
        if mid not in self.pending:
            return False
        self.pending.discard(mid)
        if mid not in self.touched:
            self.touched[mid] = self.minion_fragments[mid][0]
        self.ok -= self.minions.pop(mid).get("success") is True
        self.entry_bytes -= self.minion_fragments.pop(mid)[1]
        self.forget_kept(mid)
        return True

    def forget_kept(self, mid: str) -> None:
        """Drop what ``mid``'s return kept (its function and arguments)."""
        fun = self.funs.pop(mid, None)
        if fun:
            self.kept_own -= len(fun)
        self.kept_own -= self.args.pop(mid, (None, 0))[1]

    def keep(self, mid: str, fun: str | None, arg: tuple[Any, int]) -> None:
        """Keep the function and arguments of ``mid``'s return."""
        self.forget_kept(mid)
        self.funs[mid] = fun
        self.args[mid] = arg
        self.kept_own += (len(fun) if fun else 0) + arg[1]

    def kept(self) -> int:
        """Bytes kept besides the encoding: arguments and the functions of returns."""
        return self.arg_bytes + self.kept_own

    def finish(self, stamp: str | None) -> None:
        self.state = JobState.COMPLETE
        self.end_time = stamp
        self.success = self.ok == len(self.minions)

    def set_arg(self, raw: Any) -> None:
        """The job's arguments, from its ``new`` (normalised and bounded as the ACL's)."""
        self.arg, size = normalise_arg(raw)
        self.arg_bytes = size if self.arg is not None else 0
        self.arg_rev += 1

    def may(self, audience: Audience, mid: str) -> bool:
        """May ``audience`` see ``mid``'s entry? A return is judged by its own function and
        arguments and, for a job known from its ``new``, by the job's as well; an entry
        without a return by the job's."""
        if mid in self.funs:
            fun = self.funs[mid]
            if fun is None or not audience.may(fun, mid, arg=self.args[mid][0]):
                return False
            return not self.from_new or audience.may(self.fun, mid, arg=self.arg)
        return audience.may(self.fun, mid, arg=self.arg)

    def cut_fields(self, shown: list[str]) -> tuple[str, ...]:
        """The job's fields cut down to the minions ``shown`` (sorted): see :meth:`render`."""
        return (encode(shown), _LIST_JSON, *self.fields[2:])

    def value(self, mid: str) -> str:
        """``mid``'s entry, encoded (from its cached fragment)."""
        frag = self.minion_fragments[mid][0]
        return frag[len(encode(mid)) + 1 :]

    def render(self, shown: list[str] | None = None) -> str:
        """The job's JSON (``shown``: just these minions' entries, sorted).

        Cut down to ``shown``, the target names just those minions (``tgt_type``
        ``list``), as a cut-down ``new`` event does on ``/all_events``: the
        original expression may name minions the audience may not see.
        """
        frags = self.minion_fragments
        if shown is None:
            return self.head + _JOB_MINIONS + ",".join(frag for frag, _ in frags.values()) + "}}"
        only = set(shown)
        parts = [frag for mid, (frag, _) in frags.items() if mid in only]
        head = _head_of(self.jid_json, self.cut_fields(shown))
        return head + _JOB_MINIONS + ",".join(parts) + "}}"


class FormattedView:
    """Minions and jobs tables, updated from bus events.

    Args:
        limits: table bounds, job timeout and syndic wait.
        master: with ``include_master``, this master's id, added to every table message.
        syndics: this master is a master of masters: follow what syndics
            forward, and take this master's presence only from :meth:`presence`.
        accepted: ids of the minion keys this master has accepted (see :meth:`set_accepted`).
        valid_id: the id rule (default :func:`salt_ws.events.valid_id`; the
            engine may pass Salt's own, bound to the master's opts).
        grains: option ``view_grains``: the names of the grains kept per minion, in
            this order (``None``: all of them, as saltnado).
    """

    def __init__(
        self,
        limits: ViewLimits | None = None,
        master: str | None = None,
        syndics: bool = False,
        accepted: Iterable[str] = (),
        valid_id: Callable[[str], bool] | None = None,
        grains: Iterable[str] | None = None,
    ) -> None:
        self.limits = limits or ViewLimits()
        self.master = master
        self.grains = None if grains is None else tuple(dict.fromkeys(grains))
        # option include_master: every table message also says which master it describes
        self._suffix = "}" if master is None else ',"master":' + encode(master) + "}"
        self._follow_syndics = syndics
        self._valid_id = valid_id or ev.valid_id
        self._refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self._accepted: frozenset[str] = frozenset()
        self._hints: set[str] = set()  # ids said to be connected, refused for want of a key
        self._keys_wanted = False  # a key re-read is due
        self._keys_asked: float | None = None  # when the one in flight was asked for
        self._keys_last = float("-inf")
        self._minions: dict[str, dict[str, Any]] = {}
        self._minion_fragments: dict[str, str] = {}
        # who reports each minion: LOCAL (this master) or a syndic id
        self._sources: dict[str, set[str]] = {LOCAL: set()}
        self._syndics: set[str] = set()
        self._nested: set[str] = set()  # syndics learned without a key here
        self._linked: set[str] = set()  # syndics this master's presence check has seen
        # recent events of nested syndics, which their parent syndics re-fire as their own:
        # (time, hash of the event, ids of the syndics above the one it came from)
        self._echoes: collections.deque[tuple[float, int, frozenset[str]]] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        self._jobs_size = 0  # sum of the jobs' sizes in bytes
        self._job_fragments: dict[str, str] = {}
        # audience -> jid -> (fragment, minions shown: None all, [] none, else sorted ids)
        self._audience_jobs: dict[str, dict[str, tuple[str, list[str] | None]]] = {}
        self._kept = 0  # bytes jobs keep besides their encoding (arguments, functions)
        # encoded tables: key None is the full view, other keys one audience's
        self._minions_messages: dict[str | None, str] = {}
        self._jobs_messages: dict[str | None, str] = {}
        # the cached tables are out of date: dropped at the next render, not at the change
        # (freeing a 200 MB string is ~7 ms: a change would cost that, not per change)
        self._minions_stale = self._jobs_stale = False
        # what changed since the last input method returned (see Changes), by id
        self._serial = 0  # of the last Changes handed out
        self._changed_minions: dict[str, dict[str, Any] | None] = {}
        self._changed_jobs: dict[str, JobChange] = {}
        self._set_accepted(accepted)

    # -- queries --------------------------------------------------------------------------

    @property
    def minion_ids(self) -> list[str]:
        """Ids of the minions in the view."""
        return list(self._minions)

    @property
    def syndic_ids(self) -> list[str]:
        """Ids of the syndics known to report to this master."""
        return sorted(self._syndics)

    @property
    def job_count(self) -> int:
        """Jobs in the table."""
        return len(self._jobs)

    @property
    def jobs_bytes(self) -> int:
        """Bytes of the encoded jobs table (its entries, without the message's wrapper)."""
        return self._jobs_size + max(0, len(self._jobs) - 1)

    @property
    def kept_bytes(self) -> int:
        """Bytes the jobs keep besides the table's encoding (arguments, returns' functions);
        with :attr:`jobs_bytes`, bounded by ``max_jobs_bytes``."""
        return self._kept

    @property
    def accepted(self) -> frozenset[str]:
        """The master's accepted minion keys, as the view knows them."""
        return self._accepted

    @property
    def refused(self) -> dict[str, int]:
        """What the view refused or cut, by reason (see :data:`REFUSALS`)."""
        return dict(self._refused)

    def render_minions(self, audience: Audience | None = None) -> str:
        """The encoded ``{"minions": ...}`` message, for everyone or for one audience.

        Cached until the table (or :meth:`forget_audience`) invalidates it.
        """
        key = None if audience is None or audience.admin else audience.key
        if self._minions_stale:
            self._minions_messages.clear()
            self._minions_stale = False
        message = self._minions_messages.get(key)
        if message is None:
            parts = self.minion_parts(audience)
            message = self._minions_messages[key] = _join('{"minions":{', parts, self._suffix)
        return message

    def minion_parts(self, audience: Audience | None = None) -> list[str]:
        """The minions table's fragments (``"<id>":{...}``) the audience sees, in order."""
        limited = audience is not None and not audience.admin
        frags = self._minion_fragments
        parts = []
        for mid, entry in self._minions.items():
            if limited and not audience.may_target(mid):  # type: ignore[union-attr]
                continue
            frag = frags.get(mid)
            if frag is None:
                frag = frags[mid] = encode(mid) + ":" + encode(entry)
            parts.append(frag)
        return parts

    def render_jobs(self, audience: Audience | None = None) -> str:
        """The encoded ``{"jobs": ...}`` message, for everyone or for one audience.

        An audience sees the jobs that are not administrator-only, with the
        entries of the minions whose own function it may run there (none: the
        job is not shown).

        Each job's fragment for an audience is cached until that job changes (or
        :meth:`forget_audience`), so an event re-filters only the job it changed.
        """
        key = None if audience is None or audience.admin else audience.key
        if self._jobs_stale:
            self._jobs_messages.clear()
            self._jobs_stale = False
        message = self._jobs_messages.get(key)
        if message is None:
            parts = self.job_parts(audience)
            message = self._jobs_messages[key] = _join('{"jobs":{', parts, self._suffix)
        return message

    def job_parts(self, audience: Audience | None = None) -> list[str]:
        """The jobs table's fragments (``"<jid>":{...}``) the audience sees, oldest first."""
        if audience is None or audience.admin:
            return [self._fragment(job) for job in self._jobs.values()]
        parts = []
        for jid in self._jobs:
            frag = self.audience_job(jid, audience)[0]
            if frag:
                parts.append(frag)
        return parts

    def _fragment(self, job: _Job) -> str:
        frag = self._job_fragments.get(job.jid)
        if frag is None:
            frag = self._job_fragments[job.jid] = job.jid_json + ":" + job.render()
        return frag

    def audience_job(self, jid: str, audience: Audience) -> tuple[str, list[str] | None]:
        """Job ``jid`` as a (limited) ``audience`` sees it, cached until the job changes:
        its fragment (``""``: not at all) and the minions shown (``None``: all of them;
        ``[]``: none; else their sorted ids, and the job is cut down to them)."""
        cache = self._audience_jobs.setdefault(audience.key, {})
        found = cache.get(jid)
        if found is None:
            found = cache[jid] = self._audience_fragment(self._jobs[jid], audience)
        return found

    def _audience_fragment(self, job: _Job, audience: Audience) -> tuple[str, list[str] | None]:
        """The job as ``audience`` sees it ("" : not at all), and the minions it shows."""
        if job.admin_only:
            return "", []
        allowed = [mid for mid in job.minions if job.may(audience, mid)]
        if not allowed:
            return "", []
        if len(allowed) < len(job.minions):
            allowed.sort()
            return job.jid_json + ":" + job.render(allowed), allowed
        return self._fragment(job), None

    def forget_audience(self, key: str) -> None:
        """Drop an audience's cached tables (its permissions were re-resolved)."""
        self._minions_messages.pop(key, None)
        self._jobs_messages.pop(key, None)
        self._audience_jobs.pop(key, None)

    # -- rows, for the delta feed (salt_ws.delta) ------------------------------------------

    @property
    def jids(self) -> list[str]:
        """Jids in the table, oldest first."""
        return list(self._jobs)

    def minion_entry(self, mid: str) -> dict[str, Any] | None:
        """``mid``'s row of the minions table (not to be changed), or ``None``."""
        return self._minions.get(mid)

    def minion_value(self, mid: str) -> str:
        """``mid``'s row, encoded as in the minions table (its cached fragment's value)."""
        frag = self._minion_fragments.get(mid)
        if frag is None:
            frag = self._minion_fragments[mid] = encode(mid) + ":" + encode(self._minions[mid])
        return frag[len(encode(mid)) + 1 :]

    def job(self, jid: str) -> _Job | None:
        """Job ``jid``'s row (not to be changed: read its ``fields``, ``minions``,
        ``minion_fragments``, ``judged``, ``may()``), or ``None``."""
        return self._jobs.get(jid)

    def job_value(self, jid: str) -> str:
        """Job ``jid``, encoded as in the administrators' jobs table."""
        job = self._jobs[jid]
        return self._fragment(job)[len(job.jid_json) + 1 :]

    def snapshot(self, audience: Audience | None = None) -> list[str]:
        """What a new client receives first: the minions message, then the jobs message."""
        return [self.render_minions(audience), self.render_jobs(audience)]

    def tables(self) -> dict[str, Any]:
        """Both tables as plain data, exactly as the websocket shows them."""
        return {**json.loads(self.render_minions()), **json.loads(self.render_jobs())}

    # -- inputs ---------------------------------------------------------------------------

    def seed(
        self,
        minions: Mapping[str, Mapping[str, Any] | None],
        syndics: Iterable[str] = (),
        accepted: Iterable[str] | None = None,
    ) -> Update:
        """(Re)start from the master's accepted, connected minions and their cached grains.

        Minions not in ``minions`` are dropped (a re-seed after a bus outage);
        ``None`` grains keep what the view knew and ask for them again.
        ``syndics``: ids of syndics known to report to this master.
        ``accepted``: the master's accepted keys (default: those known
        already, plus ``minions`` and ``syndics``, taken as read from them).
        """
        syndics = list(syndics)
        if accepted is None:  # read from the keys: they are accepted
            accepted = [*self._accepted, *minions, *syndics]
        self._set_accepted(accepted)
        self._hints.clear()
        self._keys_asked = None
        update = self._learn_syndics([s for s in syndics if self._first_hop(s, want=False)])
        gone = [m for m in self._sources[LOCAL] if m not in minions or m not in self._accepted]
        update.merge(self._remove(gone))
        update.minions = True
        missing = []
        for mid, grains in minions.items():
            if mid in self._syndics:
                continue  # connected like a minion, but none
            known = mid in self._sources[LOCAL]
            if not known and not self._admit(mid, LOCAL, hint=False):
                continue
            self._sources[LOCAL].add(mid)
            if grains is None:
                missing.append(mid)
                if known:
                    continue
                grains = self._minions[mid]["grains"] if mid in self._minions else {}
            self._put_minion(mid, self._grains(grains))
        if missing:
            update.commands.append(LoadGrains(tuple(missing)))
        return self._collect(update)

    def set_accepted(self, accepted: Iterable[str] | None, now: float | None = None) -> Update:
        """Result of a :class:`ReloadKeys` command: the master's accepted keys now.

        Local minions whose key is gone leave; ids events said were connected
        enter if their key is now accepted. ``None``: the keys could not be
        read (nothing changes; a later event may ask again). With ``now``,
        a re-read asked for meanwhile is returned as a command at once.
        """
        self._keys_asked = None
        update = Update()
        if accepted is not None:
            self._set_accepted(accepted)
            local = self._sources[LOCAL]
            update.merge(self._remove([m for m in local if m not in self._accepted]))
            hints, self._hints = self._hints, set()
            update.merge(self._add([m for m in hints if m in self._accepted]))
        if now is not None:
            update.commands.extend(self._keys_command(now))
        return self._collect(update)

    def apply(self, tag: Any, data: Any, now: float) -> Update:
        """Apply one bus event; never raises for odd tags or payloads."""
        update = self._apply(ev.parse(tag, data), now)
        update.commands.extend(self._keys_command(now))
        if self._bound_jobs():
            update.jobs = True
        return self._collect(update)

    def _apply(self, event: ev.Event | ev.Forwarded | None, now: float) -> Update:
        if event is None:
            return Update()
        if isinstance(event, ev.Forwarded):
            return self._forwarded(event, now) if self._follow_syndics else Update()
        if isinstance(event, ev.JobNew):
            return self._job_new(event, now)
        if isinstance(event, ev.JobReturn):
            return self._job_return(event, now)
        if isinstance(event, ev.SyndicStart):
            if self._follow_syndics and self._first_hop(event.sid):
                return self._learn_syndics([event.sid])
            return Update()
        if isinstance(event, (ev.PresencePresent, ev.PresenceChange)):
            if self._follow_syndics:
                return Update()  # maybe a syndic's, re-fired under the plain tag
            if isinstance(event, ev.PresencePresent):
                return self.presence(event.present)
            return self._add(event.new).merge(self._remove(event.lost))
        if isinstance(event, ev.KeyChange):
            # forgeable: only a hint to re-read the keys (accept: and to let the id in then)
            if event.act is ev.KeyAction.ACCEPT and self._id_ok(event.mid, count=False):
                self._hint(event.mid)
            self._keys_wanted = True
            return Update()
        if isinstance(event, ev.MinionStart):
            if event.mid in self._syndics or self._origin(event.mid) not in (None, LOCAL):
                return Update()  # a syndic's minion: its start event re-fired under the plain tag
            if event.mid in self._sources[LOCAL]:
                return Update(commands=[LoadGrains((event.mid,))])
            return self._add([event.mid])
        if isinstance(event, ev.MinionDataRefreshed):
            if event.mid in self._sources[LOCAL]:
                return Update(commands=[LoadGrains((event.mid,))])
            return Update()
        return Update()  # pragma: no cover - parse() returns only the kinds above

    def presence(
        self, present: Iterable[str], source: str = LOCAL, now: float | None = None
    ) -> Update:
        """The full set of minions connected to this master (or to syndic ``source``'s).

        Comes from a presence event or the engine's own check. The minions
        table is re-sent every time, as saltnado's page promises ("every
        loop_interval seconds"). With ``now``, a key re-read it makes due is
        returned as a command (otherwise the next :meth:`apply` or
        :meth:`expire` returns it).
        """
        present = set(present)
        members = self._sources.setdefault(source, set())
        update = self._remove([mid for mid in members if mid not in present], source)
        update.merge(self._add(present, source))
        update.minions = True
        if source == LOCAL:
            # A syndic connects to this master like a minion: once it has been seen and is
            # gone, the minions behind it are out of reach until it reports them again.
            for sid in self._syndics & present:
                self._linked.add(sid)
            for sid in self._linked - present:
                self._linked.discard(sid)
                update.merge(self._remove(list(self._sources.get(sid, ())), sid))
        if now is not None:
            update.commands.extend(self._keys_command(now))
        return self._collect(update)

    def set_grains(self, mid: str, grains: Mapping[str, Any] | None) -> Update:
        """Result of a :class:`LoadGrains` command (ignored if the minion left meanwhile)."""
        if mid not in self._minions or grains is None:
            return Update()
        grains = self._grains(grains)
        if self._minions[mid]["grains"] == grains:
            return Update()
        self._put_minion(mid, grains)
        return self._collect(Update(minions=True))

    def expire(self, now: float) -> Update:
        """Time out jobs whose minions never answered, and drop jobs past ``job_max_age``.

        Also returns a key re-read that events made due meanwhile.
        """
        limits = self.limits
        changed = False
        for jid, job in list(self._jobs.items()):
            age = now - job.started_at
            if age >= limits.job_max_age:
                self._drop_job(jid)
                changed = True
            elif job.state is JobState.RUNNING and age >= limits.job_timeout:
                error = f"no return within {limits.job_timeout:g}s"
                for mid in list(job.pending):
                    entry = {"return": None, "retcode": None, "success": False, "error": error}
                    self._set_entry(job, mid, entry)
                job.pending.clear()
                job.finish(stamp(now))
                self._touch_job(job)
                changed = True
            elif self._settle(job, now):  # syndics had time to report more minions
                changed = True
        changed |= self._bound_jobs()
        return self._collect(Update(jobs=changed, commands=self._keys_command(now)))

    # -- trust ----------------------------------------------------------------------------

    def _refuse(self, reason: str, count: int = 1) -> None:
        self._refused[reason] += count

    def _set_accepted(self, accepted: Iterable[str]) -> None:
        self._accepted = frozenset(m for m in accepted if self._id_ok(m, count=False))

    def _id_ok(self, mid: Any, count: bool = True) -> bool:
        """Does ``mid`` pass Salt's id rule (and fit a key file name)?"""
        ok = (
            isinstance(mid, str)
            and self._valid_id(mid)
            and (len(mid) <= MAX_ID_BYTES if mid.isascii() else _nbytes(mid) <= MAX_ID_BYTES)
        )
        if not ok and count:
            self._refuse("invalid_id")
        return ok

    def _hint(self, mid: str) -> None:
        if len(self._hints) < MAX_KEY_HINTS:
            self._hints.add(mid)

    def _keys_command(self, now: float) -> list[Command]:
        """A :class:`ReloadKeys` if one is due: wanted, none in flight, not within a second."""
        if not self._keys_wanted:
            return []
        if self._keys_asked is not None and now - self._keys_asked < KEYS_TIMEOUT:
            return []
        if now - self._keys_last < KEYS_INTERVAL:
            return []
        self._keys_wanted = False
        self._keys_asked = self._keys_last = now
        return [ReloadKeys()]

    def _first_hop(self, sid: str, want: bool = True) -> bool:
        """May syndic ``sid`` speak to this master directly (valid id, accepted key)?"""
        if not self._id_ok(sid):
            return False
        if sid not in self._accepted:
            self._refuse("not_accepted")
            self._keys_wanted |= want
            return False
        return True

    def _admit(self, mid: str, source: str, hint: bool = True) -> bool:
        """May ``mid`` enter the minions table, reported by ``source``? (Counts refusals.)"""
        if not self._id_ok(mid):
            return False
        if source == LOCAL and mid not in self._accepted:
            self._refuse("not_accepted")
            if hint:
                self._hint(mid)
                self._keys_wanted = True
            return False
        if mid not in self._minions and len(self._minions) >= self.limits.max_minions:
            self._refuse("over_limit")
            return False
        return True

    def _targets(self, mids: Iterable[str], local: bool) -> list[str]:
        """The minions a job waits for among ``mids`` (a ``new`` event's ``minions``).

        Valid ids (with an accepted key for this master's own ``new``); a
        syndic never returns, its master's minions do (and, as Salt's CLI, no
        return is awaited from a minion with a syndic's id, which often runs
        on the syndic's host).
        """
        found = []
        not_accepted = 0
        accepted = self._accepted  # valid ids all (see _set_accepted)
        for mid in mids:
            if mid in self._syndics:
                continue
            if local:
                if mid in accepted:
                    found.append(mid)
                else:  # refused without a closer look: a forged new may list 100,000
                    not_accepted += 1
            elif self._id_ok(mid):
                found.append(mid)
        if not_accepted:
            self._refuse("not_accepted", not_accepted)
            self._keys_wanted = True
        found.sort()
        return found

    def _fun_text(self, fun: Any) -> str:
        """A job's function as kept: ``""`` when unknown, a marker when not shaped like one."""
        if not fun:
            return ""
        if valid_fun(fun):
            return fun
        self._refuse("field_too_large" if len(fun) > MAX_FIELD else "invalid_fun")
        return INVALID_FUN

    def _clip(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_FIELD:
            self._refuse("field_too_large")
            return f"<{len(value)} characters not kept>"
        return value

    # -- internals ------------------------------------------------------------------------

    def _origin(self, mid: str) -> str | None:
        """Who reports ``mid``: LOCAL, else the first syndic that does (None: nobody)."""
        if mid in self._sources[LOCAL]:
            return LOCAL
        return min((s for s, members in self._sources.items() if mid in members), default=None)

    def _grains(self, grains: Mapping[str, Any]) -> dict[str, Any]:
        """The grains kept of ``grains`` (option ``view_grains``), as a new dict."""
        names = self.grains
        if names is None:
            return dict(grains)
        return {name: grains[name] for name in names if name in grains}

    def _note_minion(self, mid: str) -> None:
        """``mid``'s entry is about to change (see :class:`Changes`)."""
        if mid not in self._changed_minions:
            self._changed_minions[mid] = self._minions.get(mid)

    def _note_job(self, job: _Job, created: bool = False) -> None:
        """``job`` changed: note its state as last sent, and its entries that changed."""
        change = self._changed_jobs.get(job.jid)
        if change is None:
            before = (None, None) if created else (job.fields, job.judged)
            change = self._changed_jobs[job.jid] = JobChange(*before)
        if job.touched:
            for mid, frag in job.touched.items():
                change.entries.setdefault(mid, frag)
            job.touched = {}

    def _collect(self, update: Update) -> Update:
        """Hand the changes noted since the last input method returned to ``update``."""
        if self._changed_minions or self._changed_jobs:
            self._serial += 1
            changes = Changes(self._serial, self._serial)
            changes.minions, self._changed_minions = self._changed_minions, {}
            changes.jobs, self._changed_jobs = self._changed_jobs, {}
            update.minions |= bool(changes.minions)
            update.jobs |= bool(changes.jobs)
            update.merge(Update(changes=changes))
        return update

    @property
    def serial(self) -> int:
        """Serial number of the last :class:`Changes` handed out (see :meth:`settle_changes`)."""
        return self._serial

    @property
    def changes_pending(self) -> bool:
        """Are there changes not yet handed out (an input method raised half-way)?"""
        return bool(self._changed_minions or self._changed_jobs)

    def _put_minion(self, mid: str, grains: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"id": mid, "grains": grains}
        origin = self._origin(mid)
        if origin:
            entry["syndic"] = origin
        old = self._minions.get(mid)
        if old == entry:
            return  # (a re-seed with the same grains: the cached fragment stays right)
        self._note_minion(mid)
        self._minions[mid] = entry
        self._minion_fragments.pop(mid, None)
        self._minions_stale = True

    def _add(self, mids: Iterable[str], source: str = LOCAL) -> Update:
        members = self._sources.setdefault(source, set())
        changed = False
        load = []
        for mid in sorted(set(mids) - members - self._syndics):  # a syndic is not a minion
            if not self._admit(mid, source):
                continue
            members.add(mid)
            entry = self._minions.get(mid)
            if entry is None or entry.get("syndic", LOCAL) != self._origin(mid):
                self._put_minion(mid, entry["grains"] if entry else {})
                changed = True
                if source == LOCAL:
                    load.append(mid)  # the master caches grains of its own minions only
        return Update(minions=changed, commands=[LoadGrains(tuple(load))] if load else [])

    def _remove(self, mids: Iterable[str], source: str = LOCAL) -> Update:
        members = self._sources.get(source, set())
        changed = False
        for mid in list(mids):
            if mid not in members:
                continue
            members.discard(mid)
            entry = self._minions[mid]
            if self._origin(mid) is None:
                self._note_minion(mid)
                del self._minions[mid]
                self._minion_fragments.pop(mid, None)
                self._minions_stale = True
            elif entry.get("syndic", LOCAL) != self._origin(mid):
                self._put_minion(mid, entry["grains"])
            else:
                continue
            changed = True
        if source != LOCAL and not members:
            self._sources.pop(source, None)
        return Update(minions=changed)

    def _learn_syndics(self, sids: Iterable[str]) -> Update:
        """Note syndics (already checked); running jobs stop waiting for them as minions."""
        new = set(sids) - self._syndics
        if not new:
            return Update()
        self._syndics |= new
        self._nested |= new - self._accepted
        update = Update()
        for source in list(self._sources):  # it connects like a minion, but is none
            update.merge(self._remove(new, source))
        for job in self._jobs.values():
            for sid in new:
                job.via.pop(sid, None)
            if job.state is JobState.RUNNING and any([job.unexpect(sid) for sid in new]):
                self._touch_job(job)
                update.jobs = True
        return update

    def _hops_ok(self, via: Iterable[str]) -> bool:
        """May syndics ``via`` (nested ones, below a first hop) be learned?"""
        via = list(via)
        if not all(self._id_ok(sid) for sid in via):
            return False
        new = {sid for sid in via if sid not in self._syndics and sid not in self._accepted}
        if len(self._nested) + len(new) > MAX_NESTED_SYNDICS:
            self._refuse("over_limit")
            return False
        return True

    def _forwarded(self, fwd: ev.Forwarded, now: float) -> Update:
        """An event a syndic forwarded from its own master's bus."""
        event = fwd.event
        nested = list(fwd.via[1:])
        if isinstance(event, ev.SyndicStart):
            nested.append(event.sid)
        if not self._first_hop(fwd.via[0]) or not self._hops_ok(nested):
            return Update()
        update = self._learn_syndics(fwd.via)
        sid = fwd.syndic
        if isinstance(event, (ev.PresencePresent, ev.PresenceChange, ev.MinionStart)):
            if self._echo(fwd, now):
                return update
        if isinstance(event, ev.JobNew):
            return update.merge(self._syndic_job(sid, event, now))
        if isinstance(event, ev.PresencePresent):
            return update.merge(self.presence(event.present, sid))
        if isinstance(event, ev.PresenceChange):
            return update.merge(self._add(event.new, sid)).merge(self._remove(event.lost, sid))
        if isinstance(event, ev.MinionStart):
            # If its re-fire under the plain tag came first (Salt 3007), it was
            # taken for one of ours; the next presence check re-adds it if so.
            return update.merge(self._add([event.mid], sid)).merge(self._remove([event.mid]))
        if isinstance(event, ev.KeyChange):
            if event.act is ev.KeyAction.ACCEPT:
                return update.merge(self._add([event.mid], sid))
            if event.act in (ev.KeyAction.DELETE, ev.KeyAction.REJECT):
                return update.merge(self._remove([event.mid], sid))
        if isinstance(event, ev.SyndicStart):
            return update.merge(self._learn_syndics([event.sid]))
        return update

    def _echo(self, fwd: ev.Forwarded, now: float) -> bool:
        """Is this a parent syndic re-firing, as its own, what a nested syndic just forwarded?

        A syndic forwards its master's events twice: prefixed with its id, and
        (Salt re-fires them there) under the plain tag; one level up, that
        plain copy arrives prefixed with the parent syndic's id. Salt 3008
        fires the prefixed copy first, which is what this recognises. Only a
        hash of each event is kept, so the memory is bounded by the count.
        """
        echoes = self._echoes
        while echoes and now - echoes[0][0] > ECHO_WINDOW:
            echoes.popleft()
        digest = hash((type(fwd.event).__name__, fwd.event))
        if any(fwd.syndic in above and seen == digest for _, seen, above in echoes):
            return True
        if len(fwd.via) > 1 and fwd.event is not None:
            echoes.append((now, digest, frozenset(fwd.via[:-1])))
            if len(echoes) > MAX_ECHOES:
                echoes.popleft()
        return False

    def _syndic_job(self, sid: str, event: ev.JobNew, now: float) -> Update:
        """Syndic ``sid``'s master published job ``event.jid`` to ``event.minions``."""
        job = self._jobs.get(event.jid)
        if job is None:  # this master's own new event was missed (engine started mid-job)
            job = self._new_job(event, now)
            if job is None:
                return Update()
        elif not self._same_fun(job, event, compare_arg=False):
            return Update(jobs=True)
        minions = self._within_job(job, self._targets(event.minions, local=False))
        answered = [m for m in minions if m in job.minions and m not in job.pending]
        job.expect(minions)
        for mid in minions:
            job.via.setdefault(mid, sid)
        self._settle(job, now)
        self._touch_job(job)
        # minions whose returns overtook the announcement answered through this syndic
        answered = [m for m in answered if m not in self._sources[LOCAL]]
        return self._add(answered, sid).merge(Update(jobs=True))

    def _within_job(self, job: _Job, mids: list[str]) -> list[str]:
        """``mids``, as far as the job may hold that many entries (``max_minions``)."""
        room = self.limits.max_minions - len(job.minions)
        new = [m for m in mids if m not in job.minions]
        if len(new) <= room:
            return mids
        self._refuse("over_limit", len(new) - max(room, 0))
        keep = set(new[: max(room, 0)])
        return [m for m in mids if m in job.minions or m in keep]

    def _same_fun(self, job: _Job, event: ev.JobNew, compare_arg: bool = True) -> bool:
        """Does a (further) ``new`` agree with what the job already is? If its function
        was unknown, it is now; if it disagrees, the job becomes administrator-only."""
        if not job.fun and not job.from_new:  # known only from returns without a function
            job.fun = self._fun_text(event.fun)
            job.admin_only |= not valid_fun(event.fun)
        if event.fun == job.fun and not (
            compare_arg and job.from_new and normalise_arg(event.arg)[0] != job.arg
        ):
            return True
        if not job.admin_only:
            job.admin_only = True
            self._refuse("fun_conflict")
        if job.judge() != job.judged:  # (its function may just have become known)
            self._touch_job(job)
        return False

    def _settle(self, job: _Job, now: float) -> bool:
        """Complete ``job`` if nobody is pending and syndics had time to report."""
        if job.state is not JobState.RUNNING or job.pending or job.open_targets:
            return False
        if self.limits.syndic_wait > 0 and now < job.settle_at:
            return False
        job.finish(job.last_stamp or stamp(now))
        self._touch_job(job)
        return True

    def _touch_job(self, job: _Job) -> None:
        self._note_job(job)
        self._jobs_size += job.refresh()
        kept = job.kept()
        self._kept += kept - job.counted
        job.counted = kept
        self._forget_fragments(job.jid)

    def _forget_fragments(self, jid: str) -> None:
        self._job_fragments.pop(jid, None)
        for cache in self._audience_jobs.values():
            cache.pop(jid, None)
        self._jobs_stale = True

    def _drop_job(self, jid: str) -> None:
        job = self._jobs.pop(jid, None)
        if job is not None:
            self._note_job(job)
            self._changed_jobs[jid].dropped = True
            self._jobs_size -= job.size
            self._kept -= job.counted
        self._forget_fragments(jid)

    def _bound_jobs(self) -> bool:
        """Drop the oldest jobs while the table (with what jobs keep) is over ``max_jobs_bytes``."""
        dropped = False
        while self._jobs and self.jobs_bytes + self._kept > self.limits.max_jobs_bytes:
            self._drop_job(next(iter(self._jobs)))
            self._refuse("jobs_bytes")
            dropped = True
        return dropped

    def _insert_job(self, job: _Job) -> None:
        self._note_job(job, created=True)
        self._jobs[job.jid] = job
        self._jobs_size += job.size
        self._touch_job(job)
        while len(self._jobs) > self.limits.max_jobs:
            self._drop_job(next(iter(self._jobs)))

    def _tgt_json(self, tgt: Any) -> str:
        """A job's ``tgt`` encoded, or a marker if larger than its share."""
        tgt_json = encode(tgt)
        if _nbytes(tgt_json) > self._share():
            self._refuse("field_too_large")
            tgt_json = encode(f"<tgt of {_nbytes(tgt_json)} bytes not kept>")
        return tgt_json

    def _make_job(
        self,
        jid: str,
        fun: str | None,
        tgt: Any,
        tgt_type: str | None,
        start: str | None,
        user: str | None,
        now: float,
    ) -> _Job | None:
        if len(jid) > MAX_JID_LENGTH:
            self._refuse("invalid_jid")
            return None
        job = _Job(
            jid,
            self._fun_text(fun),
            self._tgt_json(tgt),
            self._clip(tgt_type or "glob"),
            self._clip(start),
            self._clip(user),
            now,
        )
        job.admin_only = bool(job.fun) and not valid_fun(job.fun)
        return job

    def _new_job(self, event: ev.JobNew, now: float) -> _Job | None:
        job = self._make_job(
            event.jid, event.fun, event.tgt, event.tgt_type, event.stamp, event.user, now
        )
        if job is None:
            return None
        job.admin_only = not valid_fun(event.fun)
        job.from_new = True
        job.set_arg(event.arg)
        job.settle_at = now + self.limits.syndic_wait  # syndics may still announce minions
        self._insert_job(job)
        return job

    def _share(self) -> int:
        """Bytes one value may take in the jobs table (an eighth of ``max_jobs_bytes``)."""
        return max(1, self.limits.max_jobs_bytes // 8)

    def _set_entry(
        self,
        job: _Job,
        mid: str,
        entry: dict[str, Any],
        returned: bool = False,
        fun: Any = None,
        fun_args: Any = None,
    ) -> None:
        """Set a minion's entry (``returned``: from its return, which ran ``fun`` with
        ``fun_args``); a return too large for its share is replaced by a marker."""
        fragment = encode(mid) + ":" + encode(entry)
        size = _nbytes(fragment)
        if size > self._share() and entry.get("return") is not None:
            self._refuse("return_too_large")
            marker = (
                f"<return of {size} bytes not kept: over the formatted view's "
                f"{self._share()} bytes per return; see /all_events>"
            )
            entry = {**entry, "return": marker}
            fragment = encode(mid) + ":" + encode(entry)
        job.put(mid, entry, fragment)
        if returned:
            arg, size = normalise_arg(fun_args)
            if arg is not None and arg == job.arg:
                kept = (job.arg, 0)  # the job's own: shared
            else:
                kept = (arg, size if arg is not None else 0)
            job.keep(mid, fun if valid_fun(fun) else None, kept)  # (no other fun is kept)

    def _job_new(self, event: ev.JobNew, now: float) -> Update:
        expected = self._targets(event.minions, local=True)
        job = self._jobs.get(event.jid)
        if job is None:
            job = self._new_job(event, now)
            if job is None:
                return Update()
        elif not self._same_fun(job, event):
            return Update(jobs=True)
        elif not job.from_new:  # a return overtook the new event: keep what was returned
            # The job's arguments stay unknown: a new arriving after a return may be forged,
            # and must not choose the arguments pending minions are judged with (red team b7).
            job.tgt_json = self._tgt_json(event.tgt)
            job.tgt_type = self._clip(event.tgt_type)
            job.start_time = self._clip(event.stamp) or job.start_time
            job.user = self._clip(event.user)
        job.expect(self._within_job(job, expected))
        if event.trimmed:
            job.open_targets = True
        self._touch_job(job)
        self._settle(job, now)  # targeted nobody: complete (after syndic_wait)
        return Update(jobs=True)

    def _job_return(self, event: ev.JobReturn, now: float) -> Update:
        mid = event.mid
        if not self._id_ok(mid):
            return Update()
        if not self._follow_syndics and mid not in self._accepted:
            self._refuse("not_accepted")  # a master of masters cannot tell: its syndics' minions
            self._keys_wanted = True
            return Update()
        update = Update(jobs=True)
        job = self._jobs.get(event.jid)
        if job is None:
            # No new event seen (scheduled job, engine started mid-job): the
            # return itself is all we know, so the job is this one minion.
            job = self._make_job(
                event.jid, event.fun, event.tgt, event.tgt_type, event.stamp, None, now
            )
            if job is None:
                return Update()
            self._insert_job(job)  # (its arguments stay unknown: a return's are its own)
        elif event.fun and event.fun != job.fun:
            if not job.fun and not job.from_new:  # the first return that names the function
                job.fun = self._fun_text(event.fun)
                job.admin_only |= not valid_fun(event.fun)
            elif not job.admin_only:
                # returns disagree with each other or with the new: which is the job?
                job.admin_only = True
                self._refuse("fun_conflict")
                self._touch_job(job)
        if mid not in job.minions and not self._within_job(job, [mid]):
            if job.judge() != job.judged:  # (its function may just have become known)
                self._touch_job(job)
                return update
            return Update()
        job.pending.discard(mid)
        entry = {"return": event.ret, "retcode": event.retcode, "success": event.success}
        self._set_entry(job, mid, entry, returned=True, fun=event.fun, fun_args=event.fun_args)
        job.last_stamp = event.stamp or job.last_stamp
        sid = job.via.get(mid)
        if sid is not None and mid not in self._sources[LOCAL]:
            update.merge(self._add([mid], sid))  # it answered through its syndic
            answered = self._minions.get(mid)
            if answered and event.fun == "grains.items" and isinstance(event.ret, dict):
                grains = self._grains(event.ret)
                if event.success and answered["grains"] != grains:
                    self._put_minion(mid, grains)  # no grains cache here for it
                    update.minions = True
        if job.state is JobState.RUNNING:
            self._settle(job, now)
        else:
            job.success = job.ok == len(job.minions)
        self._touch_job(job)
        return update
