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

Encoding is incremental: each minion and each job-minion entry keeps its
JSON fragment, so an event re-encodes only what it changed and a table is
rendered by joining cached fragments; a new client gets the cached strings.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
from typing import Any, Iterable, Mapping, Protocol

from salt_ws import events as ev
from salt_ws.wire import encode, stamp

__all__ = [
    "Command",
    "FormattedView",
    "JobState",
    "LoadGrains",
    "Update",
    "ViewLimits",
]


class Audience(Protocol):
    """What the view needs of a permission set (see :class:`salt_ws.acl.Permissions`)."""

    admin: bool
    key: str

    def may(self, fun: str | None, mid: str) -> bool: ...

    def may_target(self, mid: str) -> bool: ...


class JobState(str, enum.Enum):
    """A job's ``state`` on the wire (saltnado's strings)."""

    RUNNING = "running"
    COMPLETE = "complete"


@dataclasses.dataclass(frozen=True)
class ViewLimits:
    """Jobs table bounds, job timeout and (on a master of masters) Salt's ``syndic_wait``."""

    max_jobs: int = 1000
    job_max_age: float = 86400.0
    job_timeout: float = 600.0
    syndic_wait: float = 0.0


@dataclasses.dataclass(frozen=True)
class LoadGrains:
    """Command: read these minions' grains from the master's cache, then call ``set_grains``."""

    mids: tuple[str, ...]


Command = LoadGrains


@dataclasses.dataclass
class Update:
    """What an input changed: tables to re-send and commands for the engine."""

    minions: bool = False
    jobs: bool = False
    commands: list[Command] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return self.minions or self.jobs or bool(self.commands)

    def merge(self, other: Update) -> Update:
        """Fold ``other`` into this update (in place) and return it."""
        self.minions |= other.minions
        self.jobs |= other.jobs
        self.commands.extend(other.commands)
        return self


_PENDING = {"return": None, "retcode": None, "success": None}
LOCAL = ""  # the source of minions connected to this master (other sources: syndic ids)
ECHO_WINDOW = 2.0  # seconds within which a nested syndic's event is re-fired by its parents


def _join(prefix: str, parts: list[str], suffix: str) -> str:
    """``prefix + ",".join(parts) + "}" + suffix`` with a single copy of a large table."""
    if not parts:
        return prefix + "}" + suffix
    if len(parts) == 1:
        return prefix + parts[0] + "}" + suffix
    return ",".join([prefix + parts[0], *parts[1:-1], parts[-1] + "}" + suffix])


class _Job:
    """One row of the jobs table, with its encoded fragments."""

    __slots__ = (
        "end_time",
        "fun",
        "jid",
        "last_stamp",
        "minion_fragments",
        "minions",
        "pending",
        "settle_at",
        "start_time",
        "started_at",
        "state",
        "success",
        "tgt",
        "tgt_type",
        "user",
        "via",
    )

    def __init__(
        self,
        jid: str,
        fun: str,
        tgt: Any,
        tgt_type: str,
        start_time: str | None,
        user: str | None,
        expected: Iterable[str],
        now: float,
    ) -> None:
        self.jid = jid
        self.fun = fun
        self.tgt = tgt
        self.tgt_type = tgt_type
        self.start_time = start_time
        self.user = user
        self.started_at = now
        self.state = JobState.RUNNING
        self.success: bool | None = None
        self.end_time: str | None = None
        self.last_stamp: str | None = start_time  # of the latest event, for end_time
        self.settle_at = now  # complete no sooner (a published job: after syndic_wait)
        self.pending = set(expected)  # targeted minions that have not returned
        self.minions: dict[str, dict[str, Any]] = {mid: dict(_PENDING) for mid in self.pending}
        self.minion_fragments: dict[str, str] = {}
        self.via: dict[str, str] = {}  # minion -> the syndic that announced it for this job

    def expect(self, mids: Iterable[str]) -> None:
        """Also wait for ``mids``; a completed job that now waits runs again."""
        for mid in mids:
            if mid not in self.minions:
                self.minions[mid] = dict(_PENDING)
                self.pending.add(mid)
        if self.state is JobState.COMPLETE and self.pending:
            self.state, self.success, self.end_time = JobState.RUNNING, None, None

    def unexpect(self, mid: str) -> bool:
        """Stop waiting for ``mid`` (a syndic, not a minion) unless it returned."""
        if mid not in self.pending:
            return False
        self.pending.discard(mid)
        del self.minions[mid]
        self.minion_fragments.pop(mid, None)
        return True

    def set_minion(self, mid: str, entry: dict[str, Any]) -> None:
        self.minions[mid] = entry
        self.minion_fragments.pop(mid, None)

    def finish(self, stamp: str | None) -> None:
        self.state = JobState.COMPLETE
        self.end_time = stamp
        self.success = all(m.get("success") is True for m in self.minions.values())

    def render(self, only: set[str] | None = None) -> str:
        """The job's JSON (``only``: just these minions' entries)."""
        head = encode(
            {
                "jid": self.jid,
                "tgt": self.tgt,
                "tgt_type": self.tgt_type,
                "fun": self.fun,
                "start_time": self.start_time,
                "state": self.state.value,
                "success": self.success,
                "user": self.user,
                "end_time": self.end_time,
            }
        )
        frags = self.minion_fragments
        parts = []
        for mid, entry in self.minions.items():
            if only is not None and mid not in only:
                continue
            frag = frags.get(mid)
            if frag is None:
                frag = frags[mid] = encode(mid) + ":" + encode(entry)
            parts.append(frag)
        return head[:-1] + ',"minions":{' + ",".join(parts) + "}}"


class FormattedView:
    """Minions and jobs tables, updated from bus events.

    Args:
        limits: jobs table bounds, job timeout and syndic wait.
        master: with ``include_master``, this master's id, added to every table message.
        syndics: this master is a master of masters: follow what syndics
            forward, and take this master's presence only from :meth:`presence`.
    """

    def __init__(
        self, limits: ViewLimits | None = None, master: str | None = None, syndics: bool = False
    ) -> None:
        self.limits = limits or ViewLimits()
        # option include_master: every table message also says which master it describes
        self._suffix = "}" if master is None else ',"master":' + encode(master) + "}"
        self._follow_syndics = syndics
        self._minions: dict[str, dict[str, Any]] = {}
        self._minion_fragments: dict[str, str] = {}
        # who reports each minion: LOCAL (this master) or a syndic id
        self._sources: dict[str, set[str]] = {LOCAL: set()}
        self._syndics: set[str] = set()
        self._linked: set[str] = set()  # syndics this master's presence check has seen
        # recent events of nested syndics, which their parent syndics re-fire as their own:
        # (time, event, ids of the syndics above the one it came from)
        self._echoes: collections.deque[tuple[float, ev.Event, frozenset[str]]] = (
            collections.deque()
        )
        self._jobs: dict[str, _Job] = {}
        self._job_fragments: dict[str, str] = {}
        # encoded tables: key None is the full view, other keys one audience's
        self._minions_messages: dict[str | None, str] = {}
        self._jobs_messages: dict[str | None, str] = {}

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

    def render_minions(self, audience: Audience | None = None) -> str:
        """The encoded ``{"minions": ...}`` message, for everyone or for one audience.

        Cached until the table (or :meth:`forget_audience`) invalidates it.
        """
        key = None if audience is None or audience.admin else audience.key
        message = self._minions_messages.get(key)
        if message is None:
            frags = self._minion_fragments
            parts = []
            for mid, entry in self._minions.items():
                if key is not None and not audience.may_target(mid):  # type: ignore[union-attr]
                    continue
                frag = frags.get(mid)
                if frag is None:
                    frag = frags[mid] = encode(mid) + ":" + encode(entry)
                parts.append(frag)
            message = self._minions_messages[key] = _join('{"minions":{', parts, self._suffix)
        return message

    def render_jobs(self, audience: Audience | None = None) -> str:
        """The encoded ``{"jobs": ...}`` message, for everyone or for one audience.

        An audience sees the jobs whose function it may run on at least one of
        the job's minions, with only those minions' entries.
        """
        key = None if audience is None or audience.admin else audience.key
        message = self._jobs_messages.get(key)
        if message is None:
            frags = self._job_fragments
            parts = []
            for jid, job in self._jobs.items():
                if key is not None:
                    allowed = [m for m in job.minions if audience.may(job.fun, m)]  # type: ignore[union-attr]
                    if not allowed:
                        continue
                    if len(allowed) < len(job.minions):
                        parts.append(encode(jid) + ":" + job.render(set(allowed)))
                        continue
                frag = frags.get(jid)
                if frag is None:
                    frag = frags[jid] = encode(jid) + ":" + job.render()
                parts.append(frag)
            message = self._jobs_messages[key] = _join('{"jobs":{', parts, self._suffix)
        return message

    def forget_audience(self, key: str) -> None:
        """Drop an audience's cached tables (its permissions were re-resolved)."""
        self._minions_messages.pop(key, None)
        self._jobs_messages.pop(key, None)

    def snapshot(self, audience: Audience | None = None) -> list[str]:
        """What a new client receives first: the minions message, then the jobs message."""
        return [self.render_minions(audience), self.render_jobs(audience)]

    def tables(self) -> dict[str, Any]:
        """Both tables as plain data, exactly as the websocket shows them."""
        return {**json.loads(self.render_minions()), **json.loads(self.render_jobs())}

    # -- inputs ---------------------------------------------------------------------------

    def seed(
        self, minions: Mapping[str, Mapping[str, Any] | None], syndics: Iterable[str] = ()
    ) -> Update:
        """(Re)start from the master's accepted, connected minions and their cached grains.

        Minions not in ``minions`` are dropped (a re-seed after a bus outage);
        ``None`` grains keep what the view knew and ask for them again.
        ``syndics``: ids of syndics known to report to this master.
        """
        update = self._learn_syndics(syndics)
        update.merge(self._remove([mid for mid in self._sources[LOCAL] if mid not in minions]))
        update.minions = True
        missing = []
        for mid, grains in minions.items():
            if mid in self._syndics:
                continue  # connected like a minion, but none
            known = mid in self._sources[LOCAL]
            self._sources[LOCAL].add(mid)
            if grains is None:
                missing.append(mid)
                if known:
                    continue
                grains = self._minions[mid]["grains"] if mid in self._minions else {}
            self._put_minion(mid, dict(grains))
        if missing:
            update.commands.append(LoadGrains(tuple(missing)))
        return update

    def apply(self, tag: Any, data: Any, now: float) -> Update:
        """Apply one bus event; never raises for odd tags or payloads."""
        event = ev.parse(tag, data)
        if event is None:
            return Update()
        if isinstance(event, ev.Forwarded):
            return self._forwarded(event, now) if self._follow_syndics else Update()
        if isinstance(event, ev.JobNew):
            return self._job_new(event, now)
        if isinstance(event, ev.JobReturn):
            return self._job_return(event, now)
        if isinstance(event, ev.SyndicStart):
            return self._learn_syndics([event.sid]) if self._follow_syndics else Update()
        if isinstance(event, (ev.PresencePresent, ev.PresenceChange)):
            if self._follow_syndics:
                return Update()  # maybe a syndic's, re-fired under the plain tag
            if isinstance(event, ev.PresencePresent):
                return self.presence(event.present)
            return self._add(event.new).merge(self._remove(event.lost))
        if isinstance(event, ev.KeyChange):
            if event.act is ev.KeyAction.ACCEPT:
                return self._add([event.mid])
            if event.act in (ev.KeyAction.DELETE, ev.KeyAction.REJECT):
                return self._remove([event.mid])
            return Update()
        if isinstance(event, ev.MinionStart):
            if event.mid in self._syndics or self._origin(event.mid) not in (None, LOCAL):
                return Update()  # a syndic's minion: its start event re-fired under the plain tag
            update = self._add([event.mid])
            if not update.commands:
                update.commands.append(LoadGrains((event.mid,)))
            return update
        if isinstance(event, ev.MinionDataRefreshed):
            if event.mid in self._sources[LOCAL]:
                return Update(commands=[LoadGrains((event.mid,))])
            return Update()
        return Update()  # pragma: no cover - parse() returns only the kinds above

    def presence(self, present: Iterable[str], source: str = LOCAL) -> Update:
        """The full set of minions connected to this master (or to syndic ``source``'s).

        Comes from a presence event or the engine's own check. The minions
        table is re-sent every time, as saltnado's page promises ("every
        loop_interval seconds").
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
        return update

    def set_grains(self, mid: str, grains: Mapping[str, Any] | None) -> Update:
        """Result of a :class:`LoadGrains` command (ignored if the minion left meanwhile)."""
        if mid not in self._minions or grains is None:
            return Update()
        grains = dict(grains)
        if self._minions[mid]["grains"] == grains:
            return Update()
        self._put_minion(mid, grains)
        return Update(minions=True)

    def expire(self, now: float) -> Update:
        """Time out jobs whose minions never answered, and drop jobs past ``job_max_age``."""
        limits = self.limits
        changed = False
        for jid, job in list(self._jobs.items()):
            age = now - job.started_at
            if age >= limits.job_max_age:
                self._drop_job(jid)
                changed = True
            elif job.state is JobState.RUNNING and age >= limits.job_timeout:
                error = f"no return within {limits.job_timeout:g}s"
                for mid in job.pending:
                    job.set_minion(
                        mid, {"return": None, "retcode": None, "success": False, "error": error}
                    )
                job.pending.clear()
                job.finish(stamp(now))
                self._touch_job(jid)
                changed = True
            elif self._settle(job, now):  # syndics had time to report more minions
                changed = True
        return Update(jobs=changed)

    # -- internals ------------------------------------------------------------------------

    def _origin(self, mid: str) -> str | None:
        """Who reports ``mid``: LOCAL, else the first syndic that does (None: nobody)."""
        if mid in self._sources[LOCAL]:
            return LOCAL
        return min((s for s, members in self._sources.items() if mid in members), default=None)

    def _put_minion(self, mid: str, grains: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"id": mid, "grains": grains}
        origin = self._origin(mid)
        if origin:
            entry["syndic"] = origin
        self._minions[mid] = entry
        self._minion_fragments.pop(mid, None)
        self._minions_messages.clear()

    def _add(self, mids: Iterable[str], source: str = LOCAL) -> Update:
        members = self._sources.setdefault(source, set())
        changed = False
        load = []
        for mid in sorted(set(mids) - members - self._syndics):  # a syndic is not a minion
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
                del self._minions[mid]
                self._minion_fragments.pop(mid, None)
                self._minions_messages.clear()
            elif entry.get("syndic", LOCAL) != self._origin(mid):
                self._put_minion(mid, entry["grains"])
            else:
                continue
            changed = True
        if source != LOCAL and not members:
            self._sources.pop(source, None)
        return Update(minions=changed)

    def _learn_syndics(self, sids: Iterable[str]) -> Update:
        """Note syndics; running jobs stop waiting for them as if they were minions."""
        new = set(sids) - self._syndics
        if not new:
            return Update()
        self._syndics |= new
        update = Update()
        for source in list(self._sources):  # it connects like a minion, but is none
            update.merge(self._remove(new, source))
        for jid, job in self._jobs.items():
            for sid in new:
                job.via.pop(sid, None)
            if job.state is JobState.RUNNING and any([job.unexpect(sid) for sid in new]):
                self._touch_job(jid)
                update.jobs = True
        return update

    def _forwarded(self, fwd: ev.Forwarded, now: float) -> Update:
        """An event a syndic forwarded from its own master's bus."""
        update = self._learn_syndics(fwd.via)
        event, sid = fwd.event, fwd.syndic
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
        fires the prefixed copy first, which is what this recognises.
        """
        echoes = self._echoes
        while echoes and now - echoes[0][0] > ECHO_WINDOW:
            echoes.popleft()
        if any(fwd.syndic in above and event == fwd.event for _, event, above in echoes):
            return True
        if len(fwd.via) > 1 and fwd.event is not None:
            echoes.append((now, fwd.event, frozenset(fwd.via[:-1])))
            if len(echoes) > 1024:
                echoes.popleft()
        return False

    def _syndic_job(self, sid: str, event: ev.JobNew, now: float) -> Update:
        """Syndic ``sid``'s master published job ``event.jid`` to ``event.minions``."""
        job = self._jobs.get(event.jid)
        if job is None:  # this master's own new event was missed (engine started mid-job)
            job = self._new_job(event, (), now)
        minions = self._expected(event.minions)
        answered = [m for m in minions if m in job.minions and m not in job.pending]
        job.expect(minions)
        for mid in minions:
            job.via.setdefault(mid, sid)
        self._settle(job, now)
        self._touch_job(job.jid)
        # minions whose returns overtook the announcement answered through this syndic
        answered = [m for m in answered if m not in self._sources[LOCAL]]
        return self._add(answered, sid).merge(Update(jobs=True))

    def _settle(self, job: _Job, now: float) -> bool:
        """Complete ``job`` if nobody is pending and syndics had time to report."""
        if job.state is not JobState.RUNNING or job.pending:
            return False
        if self.limits.syndic_wait > 0 and now < job.settle_at:
            return False
        job.finish(job.last_stamp or stamp(now))
        self._touch_job(job.jid)
        return True

    def _touch_job(self, jid: str) -> None:
        self._job_fragments.pop(jid, None)
        self._jobs_messages.clear()

    def _drop_job(self, jid: str) -> None:
        self._jobs.pop(jid, None)
        self._touch_job(jid)

    def _insert_job(self, job: _Job) -> None:
        self._jobs[job.jid] = job
        self._touch_job(job.jid)
        while len(self._jobs) > self.limits.max_jobs:
            self._drop_job(next(iter(self._jobs)))

    def _new_job(self, event: ev.JobNew, expected: Iterable[str], now: float) -> _Job:
        job = _Job(
            event.jid, event.fun, event.tgt, event.tgt_type, event.stamp, event.user, expected, now
        )
        job.settle_at = now + self.limits.syndic_wait  # syndics may still announce minions
        self._insert_job(job)
        return job

    def _expected(self, mids: Iterable[str]) -> list[str]:
        """The minions a job waits for among ``mids``: a syndic never returns, its master's
        minions do (and, as Salt's CLI, no return is awaited from a minion with a syndic's id,
        which often runs on the syndic's host)."""
        return [mid for mid in mids if mid not in self._syndics]

    def _job_new(self, event: ev.JobNew, now: float) -> Update:
        expected = self._expected(event.minions)
        job = self._jobs.get(event.jid)
        if job is None:
            job = self._new_job(event, expected, now)
        else:  # a return overtook the new event: keep what was returned
            job.fun, job.tgt, job.tgt_type = event.fun, event.tgt, event.tgt_type
            job.start_time, job.user = event.stamp or job.start_time, event.user
            job.expect(expected)
            self._touch_job(event.jid)
        self._settle(job, now)  # targeted nobody: complete (after syndic_wait)
        return Update(jobs=True)

    def _job_return(self, event: ev.JobReturn, now: float) -> Update:
        update = Update(jobs=True)
        job = self._jobs.get(event.jid)
        if job is None:
            # No new event seen (scheduled job, engine started mid-job): the
            # return itself is all we know, so the job is this one minion.
            job = _Job(
                event.jid,
                event.fun or "",
                event.tgt,
                event.tgt_type or "glob",
                event.stamp,
                None,
                (event.mid,),
                now,
            )
            self._insert_job(job)
        job.pending.discard(event.mid)
        job.set_minion(
            event.mid,
            {"return": event.ret, "retcode": event.retcode, "success": event.success},
        )
        job.last_stamp = event.stamp or job.last_stamp
        sid = job.via.get(event.mid)
        if sid is not None and event.mid not in self._sources[LOCAL]:
            update.merge(self._add([event.mid], sid))  # it answered through its syndic
            answered = self._minions.get(event.mid)
            if answered and event.fun == "grains.items" and isinstance(event.ret, dict):
                if event.success and answered["grains"] != event.ret:
                    self._put_minion(event.mid, dict(event.ret))  # no grains cache here for it
                    update.minions = True
        if job.state is JobState.RUNNING:
            self._settle(job, now)
        else:
            job.success = all(m.get("success") is True for m in job.minions.values())
        self._touch_job(event.jid)
        return update
