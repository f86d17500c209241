"""Who may see what: eauth permissions applied to events and to the formatted view (pure).

The rule follows Salt's publish ACL (``salt.utils.minions.CkMinions.auth_check``):
a user may see a job's events on minion ``m`` exactly when their eauth
permissions would let them run that job's function, **with that job's
arguments**, on ``m``.

* A string entry (``"test.*"``) is a function regex valid on every minion.
* A dict entry ``{target: [function entries]}`` is valid on the minions the
  compound ``target`` matches (``"*"`` is all minions, ``"@runner"``-style
  targets match none). A function entry is a regex, or a one-key dict
  ``{regex: {"args": [...], "kwargs": {...}}}`` (or a list of such dicts)
  restricting arguments exactly as ``CkMinions.__args_check`` does: each
  positional regex must match ``str()`` of the argument at its position
  (``None`` matches anything present), each kwargs regex the named keyword
  argument. Arguments come in Salt's wire format (a job's ``arg``: positional
  values, then keyword arguments as a dict holding ``"__kwarg__": True``).
  When the arguments are not known, an argument restriction grants nothing
  (unless it restricts nothing). A restriction Salt would raise on ends the
  check with "no", as Salt's does.
* Regexes use :func:`re.match`, as Salt does (anchored at the start only).

**The job a ``new``/``ret``/``prog`` event belongs to** is decided by
:class:`JobFunctions`, never by the event alone: any minion can fire any
``salt/job/...`` tag with any payload. A job's function is the first one seen
for its jid — from its ``new`` event, or from its first return when the
engine saw no ``new``; its arguments are those of its first ``new``. Any
later ``new`` or return naming another function (or a ``new`` with other
arguments), and any function that does not look like a Salt function name
(``[A-Za-z0-9_.]+``, at most 256 characters), make the job
administrator-only for as long as it is remembered (the last 10,000 jobs,
16 MiB; an entry younger than :data:`JID_WINDOW`, 300 s, is never forgotten:
when all are that young a new jid is not registered, counted ``full``).

* A ``ret`` is shown only if its **own** function and ``fun_args`` pass and,
  for a job known from its ``new``, the job's function and arguments pass as
  well; a return never lends its arguments to other returns, nor does a
  ``new`` to a return (a ``new`` forged after the real one was forgotten
  cannot vouch for the real return).
* A ``prog`` event carries no function of its own: it is checked with the
  job's function and arguments, and only when these came from a ``new`` whose
  jid is a Salt jid (``YYYYMMDDhhmmssffffff``, maybe ``_<pid>``; local time,
  or UTC with the master's ``utc_jid``) made within :data:`JID_WINDOW` of the
  time the ``new`` came — else (no ``new``, a custom or old jid: counted
  ``untimely``; a job not registered) it is for administrators only.

**Administrators** — permissions holding the string ``".*"`` (every function on
every minion) or ``"@events"`` — see the whole bus: every event on
``/all_events`` and the unfiltered formatted view. Everyone else sees only
job events (``salt/job/<jid>/new``, ``.../ret/<mid>``, ``.../prog/<mid>/...``)
they are allowed by the rules above, plus the engine's own notices. A ``new``
event naming minions they may not see is a cut-down copy: ``minions`` and
``missing`` hold only their minions, and ``tgt`` is that list (``tgt_type``
``"list"``), so the target expression cannot name others. Returns are shown
whole or not at all (their ``tgt``, set only by scheduled jobs, is the
returning minion itself). Key, auth, presence, runner, publish and custom
events are for administrators only — and so is any *bus* event whose tag
starts with ``salt_ws/``: only notices the engine made itself, marked with
:data:`NOTICE` instead of a payload, reach everyone. In the formatted view
they see the minions they may target with any function, and the jobs (with
those minions' entries) whose function they may run on at least one of the
job's minions.

Target expressions are resolved to minion sets by the engine through Salt
(:class:`salt_ws.fleet.Fleet`); this module only consumes the result.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import functools
import json
import math
import re
from typing import Any, Container, Final, Iterable, Mapping, TypeGuard

__all__ = [
    "ADMIN",
    "NOTICE",
    "Job",
    "JobEvent",
    "JobFunctions",
    "Permissions",
    "audience_key",
    "is_admin",
    "jid_time",
    "normalise_arg",
    "targets_of",
    "valid_fun",
]

ADMIN = "admin"  # the audience key of full-access users


class _Notice:
    """The type of :data:`NOTICE`."""

    def __repr__(self) -> str:
        return "NOTICE"


#: Stands in for the payload of a notice the engine made itself (never a bus event's).
NOTICE: Final = _Notice()

MAX_FUN_LENGTH = 256  # characters of a function name
MAX_JID_LENGTH = 128  # characters of a jid (Salt's own are 20 digits; custom jids are strings)
MAX_ARG_BYTES = 64 * 1024  # a job's arguments beyond this are not kept (unknown)
JID_WINDOW = 300.0  # seconds: a new is believed only this close to its jid's time
_FUN = re.compile(r"[A-Za-z0-9_.]+")
_JID = re.compile(r"(\d{20})(?:_\d{1,20})?")


def valid_fun(fun: Any) -> TypeGuard[str]:
    """Does ``fun`` look like a Salt function name (``[A-Za-z0-9_.]+``, <= 256 characters)?"""
    return isinstance(fun, str) and len(fun) <= MAX_FUN_LENGTH and _FUN.fullmatch(fun) is not None


def jid_time(jid: Any, utc: bool = False) -> list[float]:
    """When a Salt jid (``YYYYMMDDhhmmssffffff``, maybe ``_<pid>``) was made, as epoch seconds.

    Local time unless ``utc`` (the master's ``utc_jid``); a local time that a clock change
    makes ambiguous gives both readings. Empty: not a Salt jid.
    """
    match = _JID.fullmatch(jid) if isinstance(jid, str) else None
    if match is None:
        return []
    try:
        made = datetime.datetime.strptime(match.group(1), "%Y%m%d%H%M%S%f")
        if utc:
            return [made.replace(tzinfo=datetime.timezone.utc).timestamp()]
        return sorted({made.replace(fold=0).timestamp(), made.replace(fold=1).timestamp()})
    except (OverflowError, OSError, ValueError):
        return []


def is_admin(auth_list: Iterable[Any]) -> bool:
    """True for full access: a ``".*"`` or ``"@events"`` entry."""
    return any(isinstance(entry, str) and entry in (".*", "@events") for entry in auth_list)


def audience_key(auth_list: list[Any]) -> str:
    """One key per distinct permission set: clients sharing it share encodings."""
    if is_admin(auth_list):
        return ADMIN
    return json.dumps(auth_list, sort_keys=True, default=str)


def targets_of(auth_list: Iterable[Any]) -> set[str]:
    """The target expressions the engine must resolve for these permissions."""
    found = set()
    for entry in auth_list:
        if isinstance(entry, dict) and len(entry) == 1:
            target = next(iter(entry))
            if isinstance(target, str) and target != "*" and not target.startswith("@"):
                found.add(target)
    return found


# -- Salt's publish ACL checks, ported ------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _compiled(regex: str) -> re.Pattern[str] | None:
    try:
        return re.compile(regex)
    except re.error:
        return None


def _match(regex: Any, value: str) -> bool:
    """``CkMinions.match_check`` for one string: a regex that is not one matches nothing."""
    pattern = _compiled(regex) if isinstance(regex, str) else None
    return pattern is not None and pattern.match(value) is not None


def _valid(regex: Any) -> bool:
    return isinstance(regex, str) and _compiled(regex) is not None


class _Outcome(enum.Enum):
    NO = 0
    YES = 1
    REFUSED = 2  # Salt raises here (TypeError/AttributeError): auth_check says no, at once


def _split_args(arg: Any) -> tuple[list[Any], dict[Any, Any] | None] | None:
    """Positional and keyword arguments as ``auth_check`` splits them; None when unknown."""
    if not isinstance(arg, (list, tuple)):
        return None
    args = list(arg)
    kwargs = args[-1] if args else None
    if isinstance(kwargs, dict) and "__kwarg__" in kwargs:
        del args[-1]
        return args, kwargs
    return args, None


def _args_check(valid: Any, args: list[Any], kwargs: dict[Any, Any] | None) -> _Outcome:
    """``CkMinions.__args_check``, with its exceptions made an outcome."""
    if not isinstance(valid, list):
        valid = [valid]
    for cond in valid:
        if not isinstance(cond, dict):
            continue
        try:
            good = True
            for i, cond_arg in enumerate(cond.get("args", [])):
                if len(args) <= i:
                    good = False
                    break
                if cond_arg is None:
                    continue
                if not _match(cond_arg, str(args[i])):
                    good = False
                    break
            if not good:
                continue
            for key, value in cond.get("kwargs", {}).items():
                if kwargs is None or key not in kwargs:
                    good = False
                    break
                if value is None:
                    continue
                if not _match(value, str(kwargs[key])):
                    good = False
                    break
        except (TypeError, AttributeError):
            return _Outcome.REFUSED
        if good:
            return _Outcome.YES
    return _Outcome.NO


def _args_check_unknown(valid: Any) -> _Outcome:
    """:func:`_args_check` for arguments not known: only "no restriction at all" grants;
    a condition Salt could raise on, for some arguments, refuses."""
    if not isinstance(valid, list):
        valid = [valid]
    for cond in valid:
        if not isinstance(cond, dict):
            continue
        try:
            positional = list(cond.get("args", []))
            keywords = list(cond.get("kwargs", {}).items())
        except (TypeError, AttributeError):
            return _Outcome.REFUSED
        if not positional and not keywords:
            return _Outcome.YES
    return _Outcome.NO


def _args_satisfiable(valid: Any) -> bool:
    """Could some arguments pass :func:`_args_check` (every regex in a condition valid)?"""
    if not isinstance(valid, list):
        valid = [valid]
    for cond in valid:
        if not isinstance(cond, dict):
            continue
        try:
            positional = list(cond.get("args", []))
            keywords = [value for _, value in cond.get("kwargs", {}).items()]
        except (TypeError, AttributeError):
            continue
        if all(value is None or _valid(value) for value in positional + keywords):
            return True
    return False


def _fun_check(valid: Any, fun: str, split: tuple[list[Any], Any] | None) -> _Outcome:
    """``CkMinions.__fun_check`` (``split`` None: arguments unknown)."""
    if not isinstance(valid, list):
        valid = [valid]
    for cond in valid:
        if isinstance(cond, str):
            if _match(cond, fun):
                return _Outcome.YES
        elif isinstance(cond, dict) and len(cond) == 1:
            regex, spec = next(iter(cond.items()))
            if _match(regex, fun):
                outcome = _args_check_unknown(spec) if split is None else _args_check(spec, *split)
                if outcome is not _Outcome.NO:
                    return outcome
    return _Outcome.NO


def _fun_satisfiable(valid: Any) -> bool:
    """May some function (with some arguments) pass :func:`_fun_check`?"""
    if not isinstance(valid, list):
        valid = [valid]
    for cond in valid:
        if isinstance(cond, str) and _valid(cond):
            return True
        if isinstance(cond, dict) and len(cond) == 1:
            regex, spec = next(iter(cond.items()))
            if _valid(regex) and _args_satisfiable(spec):
                return True
    return False


# -- jobs: what a jid's function and arguments are ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """What the engine holds true of one jid.

    Attributes:
        fun: the job's function (None once administrator-only).
        arg: the arguments of its first ``new`` (str()-normalised, Salt's wire
            format), or None: no ``new`` seen, or too large to keep.
        from_new: the function came from a ``new`` event (not from a return) whose
            Salt jid was made within :data:`JID_WINDOW` of when it came: not a forgery
            made after the real job was forgotten, so ``prog`` events may use it.
        admin_only: conflicting or absurd events were seen for the jid.
    """

    fun: str | None
    arg: list[Any] | None = None
    from_new: bool = False
    admin_only: bool = False


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """One ``new``/``ret``/``prog`` event as :meth:`Permissions.filter_event` judges it.

    Attributes:
        kind: ``"new"``, ``"ret"`` or ``"prog"``.
        jid: the job id from the tag.
        mid: the minion id from the tag (None for ``new``).
        fun: the function the event is checked with.
        arg: the arguments it is checked with (None: unknown): a return's own ``fun_args``.
        admin_only: only administrators see it.
        also: further (function, arguments) pairs that must pass too: for a return of a
            job known from its ``new``, the job's own.
        minions: for a ``new``, its ``minions`` already cut to the master's accepted
            keys (None: not cut; see :meth:`targets_within`).
        missing: the same for its ``missing``.
    """

    kind: str
    jid: str
    mid: str | None
    fun: str | None
    arg: list[Any] | None
    admin_only: bool = False
    also: tuple[tuple[str | None, list[Any] | None], ...] = ()
    minions: tuple[str, ...] | None = None
    missing: tuple[str, ...] | None = None

    def targets_within(self, data: Any, accepted: Container[str]) -> JobEvent:
        """For a ``new``: this event with ``data``'s minion lists cut to ``accepted`` ids,
        once, so that each audience's check costs no more than the accepted minions."""
        if self.kind != "new" or self.admin_only or not isinstance(data, dict):
            return self
        minions, missing = data.get("minions"), data.get("missing", [])
        if not isinstance(minions, list):
            return self
        cut_missing = None
        if isinstance(missing, list):
            cut_missing = tuple(m for m in missing if isinstance(m, str) and m in accepted)
        return dataclasses.replace(
            self,
            minions=tuple(m for m in minions if isinstance(m, str) and m in accepted),
            missing=cut_missing,
        )


_ADMIN_ONLY = Job(None, admin_only=True)
_ENTRY_BYTES = 200  # rough cost of one entry besides its strings
_ITEM_BYTES = 56  # rough cost of one kept argument besides its characters (str and pointer)


def normalise_arg(arg: Any, limit: int = MAX_ARG_BYTES) -> tuple[list[Any] | None, int]:
    """``arg`` with every value as ``str()`` (all Salt's check looks at) and its size in bytes
    (characters in UTF-8 plus a rough per-value overhead); (None, size) when it is not a
    list, cannot be rendered, or is larger than ``limit``."""
    split = _split_args(arg)
    if split is None:
        return None, 0
    args, kwargs = split
    size = 0
    try:
        out: list[Any] = []
        for value in args:
            text = str(value)
            size += _ITEM_BYTES
            size += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            out.append(text)
            if size > limit:
                return None, size
        if kwargs is not None:
            kw: dict[Any, str] = {}
            for key, value in kwargs.items():
                text = str(value)
                size += 2 * _ITEM_BYTES + len(str(key))
                size += len(text.encode("utf-8", "surrogatepass"))
                kw[key] = text
                if size > limit:
                    return None, size
            out.append(kw)
    except (RecursionError, ValueError, TypeError):
        return None, size
    return out, size


def _job_tag(tag: Any) -> tuple[str, str, str | None] | None:
    """(kind, jid, mid) of a ``salt/job/<jid>/new|ret/<mid>|prog/<mid>/...`` tag."""
    if not isinstance(tag, str) or not tag.startswith("salt/job/"):
        return None
    parts = tag.split("/")
    if len(parts) == 4 and parts[3] == "new":
        return "new", parts[2], None
    if (len(parts) == 5 and parts[3] == "ret") or (len(parts) >= 5 and parts[3] == "prog"):
        return parts[3], parts[2], parts[4]
    return None


class JobFunctions:
    """jid -> :class:`Job`, bounded; learns from each bus event, in bus order (pure).

    An entry younger than ``jid_window`` is never forgotten: when every entry is
    that young and the registry is full, a new jid is not registered (counted as
    ``full``; such a job is unknown, so its ``prog`` events are for
    administrators only). Forged ``new`` events therefore cannot push a running
    job out and then speak for it. A ``new`` gives ``prog`` events a function
    only if its jid is a Salt jid made within ``jid_window`` of ``now``.

    Args:
        max_jobs: jobs remembered; the oldest is forgotten first.
        max_arg_bytes: a job's arguments beyond this are not kept (counted as unknown).
        max_bytes: rough bytes of all entries; the oldest are forgotten first beyond it.
        utc_jid: the master makes jids in UTC (its ``utc_jid`` option), not local time.
        jid_window: seconds (see above).
    """

    def __init__(
        self,
        max_jobs: int = 10_000,
        max_arg_bytes: int = MAX_ARG_BYTES,
        max_bytes: int = 16 * 1024 * 1024,
        utc_jid: bool = False,
        jid_window: float = JID_WINDOW,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_arg_bytes = max_arg_bytes
        self.max_bytes = max_bytes
        self.utc_jid = utc_jid
        self.jid_window = jid_window
        # jid -> (job, rough bytes, when it was registered)
        self._jobs: collections.OrderedDict[str, tuple[Job, int, float]] = collections.OrderedDict()
        self.bytes = 0
        self.conflicts = 0  # jobs made administrator-only by a conflicting new or return
        self.refused = 0  # events with an absurd function or jid
        self.args_unknown = 0  # arguments not kept: too large or not a list
        self.evicted = 0
        self.full = 0  # jids not registered: full of entries younger than jid_window
        self.untimely = 0  # news whose jid is no Salt jid of about now: no function for prog
        # Since when every bus event has been fed here (see watch(); a fresh registry has seen
        # them all): a job published before then may have had its real new missed, so no new
        # of it is believed for prog. The engine calls watch() when it (re)subscribes.
        self.watching_since = -math.inf

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, jid: str) -> Job | None:
        """What is known of ``jid`` (None: nothing)."""
        entry = self._jobs.get(jid)
        return entry[0] if entry else None

    def stats(self) -> dict[str, int]:
        """Counters for ``salt-run ws.status``."""
        return {
            "jobs": len(self._jobs),
            "bytes": self.bytes,
            "conflicts": self.conflicts,
            "refused": self.refused,
            "args_unknown": self.args_unknown,
            "evicted": self.evicted,
            "full": self.full,
            "untimely": self.untimely,
        }

    def watch(self, now: float) -> None:
        """From ``now`` on the engine sees every bus event (it subscribed, or resubscribed,
        or events were just dropped): a job whose jid was made before ``now`` may have had
        its real ``new`` missed, so none of its ``new`` events gives ``prog`` a function.
        """
        self.watching_since = now

    def timely(self, jid: str, now: float | None) -> bool:
        """Is ``jid`` a Salt jid made within ``jid_window`` of ``now`` (None: cannot tell),
        and not before :attr:`watching_since`?

        The master makes the jid, then fires the job's ``new``: if the engine saw every
        event since before the jid was made, the first ``new`` it saw for that jid is the
        master's own; a minion would have had to guess the jid before it existed.
        """
        if now is None:
            return False
        return any(
            abs(now - made) <= self.jid_window and made >= self.watching_since
            for made in jid_time(jid, self.utc_jid)
        )

    def learn(self, tag: Any, data: Any, now: float | None = None) -> JobEvent | None:
        """Take in one bus event; for a job event, how it is to be judged (else None).

        Args:
            tag: the event's tag.
            data: its payload.
            now: the time it came (epoch seconds). Without it no ``new`` can be dated,
                so none gives ``prog`` events a function, and nothing is protected
                from eviction.
        """
        parsed = _job_tag(tag)
        if parsed is None:
            return None
        kind, jid, mid = parsed
        if not jid or len(jid) > MAX_JID_LENGTH or mid == "":
            self.refused += 1
            return JobEvent(kind, jid, mid, None, None, admin_only=True)
        job = self.get(jid)
        if kind == "prog":  # its payload's "fun" is the minion's word: only a dated new counts
            if job is None or job.admin_only or job.fun is None or not job.from_new:
                return JobEvent(kind, jid, mid, None, None, admin_only=True)
            return JobEvent(kind, jid, mid, job.fun, job.arg)
        fun = data.get("fun") if isinstance(data, dict) else None
        if not valid_fun(fun):
            self.refused += 1
            self._conflict(jid, job, now)
            return JobEvent(kind, jid, mid, None, None, admin_only=True)
        if job is not None and (job.admin_only or job.fun != fun):
            self._conflict(jid, job, now)
            return JobEvent(kind, jid, mid, fun, None, admin_only=True)
        if kind == "new":
            return self._learn_new(jid, fun, data.get("arg"), job, now)
        # a return: judged by its own function and arguments, and also by the job's
        # (those of a dated new); it never sets the arguments other returns are judged with
        arg = self._normalise(data.get("fun_args"))
        if job is None:
            self._store(jid, Job(fun), len(fun), now)
            return JobEvent(kind, jid, mid, fun, arg)
        also = ((job.fun, job.arg),) if job.from_new else ()
        return JobEvent(kind, jid, mid, fun, arg, also=also)

    def _learn_new(
        self, jid: str, fun: str, raw_arg: Any, job: Job | None, now: float | None
    ) -> JobEvent:
        arg, size = normalise_arg(raw_arg, self.max_arg_bytes)
        if arg is None:
            self.args_unknown += 1
        if job is None:
            if self.timely(jid, now):
                self._store(jid, Job(fun, arg, from_new=True), len(fun) + size, now)
            else:  # maybe forged for a job forgotten meanwhile: its returns tell their own
                self.untimely += 1
        elif job.from_new and (arg is None or arg != job.arg):
            # the same jid published twice with other arguments: which returns are whose?
            self._conflict(jid, job, now)
            return JobEvent("new", jid, None, fun, None, admin_only=True)
        # (a job first known from a return keeps unknown arguments: a forged new for it
        # must not lend its returns and progress the arguments of the user's choice)
        return JobEvent("new", jid, None, fun, arg)

    def _normalise(self, raw_arg: Any) -> list[Any] | None:
        arg, _ = normalise_arg(raw_arg, self.max_arg_bytes)
        if arg is None:
            self.args_unknown += 1
        return arg

    def _conflict(self, jid: str, job: Job | None, now: float | None) -> None:
        if job is not None and job.admin_only:
            return
        if job is not None:
            self.conflicts += 1
        self._store(jid, _ADMIN_ONLY, 0, now)

    def _young(self, registered: float, now: float | None) -> bool:
        return now is not None and now - registered < self.jid_window

    def _store(self, jid: str, job: Job, size: int, now: float | None) -> None:
        cost = _ENTRY_BYTES + len(jid) + size
        old = self._jobs.get(jid)
        if old is not None:  # an update keeps its place (and age): first seen, first forgotten
            self.bytes += cost - old[1]
            self._jobs[jid] = (job, cost, old[2])
            return
        while self._jobs and (
            len(self._jobs) >= self.max_jobs or self.bytes + cost > self.max_bytes
        ):
            oldest = next(iter(self._jobs.values()))
            if self._young(oldest[2], now):
                self.full += 1  # fail closed: the job stays unknown
                if now is not None:
                    self.watch(now)  # and a new for it from now on may be forged
                return
            self._jobs.popitem(last=False)
            self.bytes -= oldest[1]
            self.evicted += 1
        self._jobs[jid] = (job, cost, now if now is not None else float("-inf"))
        self.bytes += cost


# -- permissions ---------------------------------------------------------------------------------


class Permissions:
    """One permission set, with its target expressions resolved to minion ids.

    Args:
        auth_list: the user's eauth permissions (as ``/login`` returns them).
        resolved: target expression -> ids of the minions it matches now.
    """

    def __init__(
        self, auth_list: list[Any], resolved: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.auth_list = list(auth_list)
        self.admin = is_admin(self.auth_list)
        self.key = audience_key(self.auth_list)
        self._global: tuple[str, ...] = tuple(e for e in self.auth_list if isinstance(e, str))
        # every entry, in order (Salt's check stops at the first that grants or raises):
        # (None, regex) for a string, (target, function entries) for a dict
        self._entries: list[tuple[str | None, Any]] = []
        self._scoped: list[tuple[str, Any]] = []
        for entry in self.auth_list:
            if isinstance(entry, str):
                self._entries.append((None, entry))
            elif isinstance(entry, dict) and len(entry) == 1:
                target, funs = next(iter(entry.items()))
                if isinstance(target, str):
                    self._entries.append((target, funs))
                    self._scoped.append((target, funs))
        self.resolve(resolved or {})

    def resolve(self, resolved: Mapping[str, Iterable[str]]) -> bool:
        """Install fresh target resolutions (the fleet or its grains changed).

        Returns True if they differ from those installed before.
        """
        targets = {t: frozenset(resolved.get(t, ())) for t, _ in self._scoped}
        changed = targets != getattr(self, "_targets", None)
        self._targets = targets
        return changed

    def _in_target(self, target: str, mid: str) -> bool:
        if target == "*":
            return True
        if target.startswith("@"):
            return False
        return mid in self._targets.get(target, frozenset())

    def _outcomes(self, fun: str, arg: Any) -> list[tuple[str | None, _Outcome]]:
        """Per entry that can decide, in order: (its target, or None for all minions, outcome)."""
        split = _split_args(arg)
        found: list[tuple[str | None, _Outcome]] = []
        for target, spec in self._entries:
            if target is None:
                if _match(spec, fun):
                    found.append((None, _Outcome.YES))
                    break  # valid on every minion: nothing after it is reached
            else:
                outcome = _fun_check(spec, fun, split)
                if outcome is not _Outcome.NO:
                    found.append((target, outcome))
        return found

    def _decide(self, outcomes: list[tuple[str | None, _Outcome]], mid: str) -> bool:
        for target, outcome in outcomes:
            if target is None or self._in_target(target, mid):
                return outcome is _Outcome.YES
        return False

    def may(self, fun: str | None, mid: str, arg: Any = None) -> bool:
        """May this user run ``fun`` with ``arg`` on ``mid`` (and so see its events)?

        Args:
            fun: the job's function.
            mid: the minion id.
            arg: the job's arguments in Salt's wire format (positional values, then
                keyword arguments as a dict holding ``"__kwarg__": True``); None when
                unknown, in which case argument restrictions grant nothing.
        """
        if self.admin:
            return True
        if not isinstance(fun, str) or not fun:
            return False
        return self._decide(self._outcomes(fun, arg), mid)

    def allowed(self, fun: str | None, mids: Iterable[Any], arg: Any = None) -> list[str]:
        """The ids among ``mids`` (strings only) that :meth:`may` allows, in order."""
        mids = [mid for mid in mids if isinstance(mid, str)]
        if self.admin:
            return mids
        if not isinstance(fun, str) or not fun:
            return []
        outcomes = self._outcomes(fun, arg)
        return [mid for mid in mids if self._decide(outcomes, mid)]

    def may_target(self, mid: str) -> bool:
        """May this user run anything at all on ``mid`` (is it in their minion list)?"""
        if self.admin or any(not e.startswith("@") and _valid(e) for e in self._global):
            return True
        return any(
            self._in_target(target, mid) and _fun_satisfiable(funs) for target, funs in self._scoped
        )

    def filter_event(self, data: Any, job: JobEvent | None) -> Any:
        """The event as this user may see it: ``data`` (maybe cut down) or None to drop it.

        Args:
            data: the payload, or :data:`NOTICE` for the engine's own notices.
            job: what :meth:`JobFunctions.learn` made of the event (None: not a job event).
        """
        if data is NOTICE or self.admin:
            return data
        if job is None or job.admin_only or not isinstance(data, dict):
            return None
        if job.kind != "new":
            mid = job.mid
            if mid is None or not self.may(job.fun, mid, job.arg):
                return None
            return data if all(self.may(fun, mid, arg) for fun, arg in job.also) else None
        minions = data.get("minions")
        if not isinstance(minions, list):
            return None
        allowed = self.allowed(job.fun, minions if job.minions is None else job.minions, job.arg)
        if not allowed:
            return None
        missing = data.get("missing", [])
        if job.missing is not None:
            kept = self.allowed(job.fun, job.missing, job.arg)
        else:
            kept = self.allowed(job.fun, missing, job.arg) if isinstance(missing, list) else []
        if len(allowed) == len(minions) and isinstance(missing, list) and len(kept) == len(missing):
            return data
        listed = set(allowed)
        target = allowed + [mid for mid in kept if mid not in listed]
        cut = {**data, "minions": allowed, "tgt": target, "tgt_type": "list"}
        if "missing" in data:
            cut["missing"] = kept
        return cut
