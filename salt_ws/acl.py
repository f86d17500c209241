"""Who may see what: eauth permissions applied to events and to the formatted view (pure).

The rule follows Salt's publish ACL (``salt.utils.minions.CkMinions.auth_check``):
a user may see a job's events on minion ``m`` exactly when their eauth
permissions would let them run that job's function on ``m``.

* A string entry (``"test.*"``) is a function regex valid on every minion.
* A dict entry ``{target: [function regexes]}`` is valid on the minions the
  compound ``target`` matches (``"*"`` is all minions, ``"@runner"``-style
  targets match none). Function entries that carry argument restrictions
  (``{"cmd.run": {"args": [...]}}``) count by their function name.
* Regexes use :func:`re.match`, as Salt does (anchored at the start only).

**Administrators** — permissions holding the string ``".*"`` (every function on
every minion) or ``"@events"`` — see the whole bus: every event on
``/all_events`` and the unfiltered formatted view. Everyone else sees only
job events (``salt/job/<jid>/new``, ``.../ret/<mid>``, ``.../prog/<mid>/...``)
they are allowed by the rule above, with the ``minions`` lists of ``new``
events cut down to the minions they may target, plus the engine's own
``salt_ws/...`` notices; key, auth, presence, runner and custom events are
for administrators only. In the formatted view they see the minions they may
target with any function, and the jobs (with those minions' entries) whose
function they may run on at least one of the job's minions.

Target expressions are resolved to minion sets by the engine through Salt
(:class:`salt_ws.fleet.Fleet`); this module only consumes the result.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterable, Mapping

__all__ = [
    "ADMIN",
    "Permissions",
    "audience_key",
    "is_admin",
    "targets_of",
]

ADMIN = "admin"  # the audience key of full-access users


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


@functools.lru_cache(maxsize=4096)
def _matches(regex: str, fun: str) -> bool:
    try:
        return re.match(regex, fun) is not None
    except re.error:
        return False


@functools.lru_cache(maxsize=1024)
def _valid(regex: str) -> bool:
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


def _fun_patterns(entries: Any) -> tuple[str, ...]:
    """Function regexes of an ACL target's entry list, as ``CkMinions.__fun_check`` reads it.

    Strings are regexes; a one-key dict ``{regex: {"args": ..., "kwargs": ...}}``
    counts by its regex (arguments are not known for an event) but only if
    its restriction is a dict, the only form Salt can ever satisfy. Iterating
    a dict given instead of a list yields its keys, as it does in Salt.
    """
    patterns: list[str] = []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, (list, tuple, dict)):
        return ()
    for item in entries:
        if isinstance(item, str):
            patterns.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            regex, spec = next(iter(item.items()))
            if isinstance(regex, str) and isinstance(spec, dict):
                patterns.append(regex)
    return tuple(patterns)


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
        self._scoped: list[tuple[str, tuple[str, ...]]] = []
        for entry in self.auth_list:
            if isinstance(entry, dict) and len(entry) == 1:
                target, funs = next(iter(entry.items()))
                if isinstance(target, str):
                    self._scoped.append((target, _fun_patterns(funs)))
        self.resolve(resolved or {})

    def resolve(self, resolved: Mapping[str, Iterable[str]]) -> None:
        """Install fresh target resolutions (the fleet or its grains changed)."""
        self._targets = {t: frozenset(resolved.get(t, ())) for t, _ in self._scoped}

    def _in_target(self, target: str, mid: str) -> bool:
        if target == "*":
            return True
        if target.startswith("@"):
            return False
        return mid in self._targets.get(target, frozenset())

    def may(self, fun: str | None, mid: str) -> bool:
        """May this user run ``fun`` on ``mid`` (and so see its events)?"""
        if self.admin:
            return True
        if not isinstance(fun, str) or not fun:
            return False
        if any(_matches(regex, fun) for regex in self._global):
            return True
        return any(
            self._in_target(target, mid) and any(_matches(regex, fun) for regex in funs)
            for target, funs in self._scoped
        )

    def may_target(self, mid: str) -> bool:
        """May this user run anything at all on ``mid`` (is it in their minion list)?"""
        if self.admin or any(not e.startswith("@") and _valid(e) for e in self._global):
            return True
        return any(
            self._in_target(target, mid) and any(_valid(regex) for regex in funs)
            for target, funs in self._scoped
        )

    def filter_event(self, tag: str, data: Any, job_funs: Mapping[str, str]) -> Any:
        """The event as this user may see it: ``data`` (maybe cut down) or None to drop it.

        Args:
            tag: the event tag.
            data: the payload.
            job_funs: jid -> function of jobs seen on the bus (for ``prog`` events).
        """
        if self.admin or tag.startswith("salt_ws/"):
            return data
        parts = tag.split("/")
        if len(parts) < 4 or parts[0] != "salt" or parts[1] != "job" or not isinstance(data, dict):
            return None
        jid, kind = parts[2], parts[3]
        if kind == "new" and len(parts) == 4:
            fun = data.get("fun")
            minions = data.get("minions")
            if not isinstance(minions, list):
                return None
            allowed = [m for m in minions if isinstance(m, str) and self.may(fun, m)]
            if not allowed:
                return None
            if len(allowed) == len(minions):
                return data
            missing = data.get("missing")
            cut = {**data, "minions": allowed}
            if isinstance(missing, list):
                cut["missing"] = [m for m in missing if m in allowed]
            return cut
        if kind in ("ret", "prog") and len(parts) >= 5:
            fun = data.get("fun") if kind == "ret" else job_funs.get(jid)
            return data if self.may(fun, parts[4]) else None
        return None
