"""Salt event tags parsed into typed events (pure).

Only what the formatted view needs is recognised; anything else parses to
``None``. Any minion can put any tag on the master bus (``event.send``), so
events are recognised only in the shapes the master itself produces: a
return or start event must name its minion in ``id``, presence events must
carry lists.

On a master of masters (``order_masters``), each syndic forwards its own
master's events with its id as a prefix, ``syndic/<syndic id>/<tag>`` (once per
level when syndics are nested); such a tag parses to :class:`Forwarded`
wrapping the inner event.

Parsing never raises: payloads come from the bus as Salt and third parties
fire them, and a missing ``retcode`` (scheduled jobs, #15582) or a non-dict
payload must not break anything downstream.

What is trusted: nothing. A shape check only tells a real event from noise;
it proves nothing about who fired it. Salt 3008.4 fires a minion's
``event.send`` under its own tag without a check (its blacklist misses
``salt/job/*/ret/*``, ``salt/job/*/prog/*`` and ``salt/presence/*``), and the
``events``-list form keeps whatever ``id`` the minion wrote, so ``data["id"] ==
mid`` holds for forgeries too, and any ``syndic/`` prefix can be made up. Ids
are therefore passed on as written (the view checks each against
:func:`valid_id` and the master's accepted keys, and counts what it refuses),
and every other field (``fun``, ``arg``, ``minions``, ``return``) is data to
bound, never a decision.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, cast

__all__ = [
    "Event",
    "Forwarded",
    "JobNew",
    "JobReturn",
    "KeyAction",
    "KeyChange",
    "MinionDataRefreshed",
    "MinionStart",
    "PresenceChange",
    "PresencePresent",
    "SyndicStart",
    "parse",
    "valid_id",
]


@dataclasses.dataclass(frozen=True)
class JobNew:
    """``salt/job/<jid>/new``: a job was published to ``minions``."""

    jid: str
    fun: str
    tgt: Any
    tgt_type: str
    minions: tuple[str, ...]
    user: str | None
    stamp: str | None
    arg: list[Any] | None = None  # Salt's format: positional args, kwargs as {"__kwarg__": True}
    # the minion list was not a list: Salt replaced it by "VALUE_TRIMMED" (an event over
    # max_event_size, e.g. a job on ~35,000 minions): who was targeted is not known
    trimmed: bool = False


@dataclasses.dataclass(frozen=True)
class JobReturn:
    """``salt/job/<jid>/ret/<mid>``: one minion's return."""

    jid: str
    mid: str
    fun: str | None
    ret: Any
    retcode: int | None
    success: bool | None
    stamp: str | None
    tgt: Any = None
    tgt_type: str | None = None
    fun_args: list[Any] | None = None


class KeyAction(str, enum.Enum):
    """``act`` of a ``salt/key`` event."""

    ACCEPT = "accept"
    DELETE = "delete"
    REJECT = "reject"
    PEND = "pend"


@dataclasses.dataclass(frozen=True)
class KeyChange:
    """``salt/key``: a minion key changed state."""

    act: KeyAction
    mid: str


@dataclasses.dataclass(frozen=True)
class PresencePresent:
    """``salt/presence/present``: the full set of connected minions."""

    present: frozenset[str]


@dataclasses.dataclass(frozen=True)
class PresenceChange:
    """``salt/presence/change``: minions that connected (``new``) or dropped (``lost``)."""

    new: frozenset[str]
    lost: frozenset[str]


@dataclasses.dataclass(frozen=True)
class MinionStart:
    """``salt/minion/<mid>/start``: a minion (re)started."""

    mid: str


@dataclasses.dataclass(frozen=True)
class MinionDataRefreshed:
    """``minion/refresh/<mid>``: the master cached fresh grains for ``mid``."""

    mid: str


@dataclasses.dataclass(frozen=True)
class SyndicStart:
    """``salt/syndic/<sid>/start``: a syndic (re)connected to its master of masters."""

    sid: str


Event = (
    JobNew
    | JobReturn
    | KeyChange
    | PresencePresent
    | PresenceChange
    | MinionStart
    | MinionDataRefreshed
    | SyndicStart
)

MAX_SYNDIC_DEPTH = 8


def valid_id(mid: Any) -> bool:
    """Salt's ``salt.utils.verify.valid_id`` character rule, without opts or the disk.

    An id may not be empty, ``.`` or ``..``, nor hold ``/``, ``\\`` or NUL:
    Salt joins ids to its pki and cache directories.
    """
    return (
        isinstance(mid, str)
        and mid not in ("", ".", "..")
        and "/" not in mid
        and "\\" not in mid
        and "\0" not in mid
    )


@dataclasses.dataclass(frozen=True)
class Forwarded:
    """``syndic/<sid>/<tag>``: an event a syndic forwarded from its own master's bus.

    Attributes:
        via: the syndics it came through, from this master downwards; the
            last one is the syndic whose master fired ``event``.
        event: the event as that master saw it; ``None`` for one the view does
            not track (it still tells which syndics exist).
    """

    via: tuple[str, ...]
    event: Event | None

    @property
    def syndic(self) -> str:
        """The syndic whose master fired the event."""
        return self.via[-1]


def _id_list(value: Any) -> tuple[str, ...]:
    """Distinct non-empty strings of a list, in order (sorting waits until the view has
    cut a forged 100,000-id list down to the ids it accepts)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(dict.fromkeys(v for v in value if isinstance(v, str) and v))
    return ()


def _ids(value: Any) -> frozenset[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, (list, tuple)) else None


def _retcode(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return None


def _success(data: dict[str, Any], retcode: int | None) -> bool | None:
    value = data.get("success")
    if isinstance(value, bool):
        return value
    if retcode is not None:
        return retcode == 0
    return None


def parse(tag: Any, data: Any) -> Event | Forwarded | None:
    """Parse one bus event; ``None`` for anything the view does not track.

    Args:
        tag: the event tag.
        data: the event payload (normally a dict).
    """
    if not isinstance(tag, str):
        return None
    if not isinstance(data, dict):
        data = {}
    parts = tag.split("/")
    if parts[0] == "syndic":
        via = []
        while len(parts) >= 3 and parts[0] == "syndic" and parts[1]:
            via.append(parts[1])
            parts = parts[2:]
        if not via or len(via) > MAX_SYNDIC_DEPTH:
            return None
        # the loop took every syndic/<sid>/ prefix off, so the rest never parses to Forwarded
        return Forwarded(tuple(via), cast("Event | None", parse("/".join(parts), data)))
    stamp = _str(data.get("_stamp"))
    if len(parts) >= 4 and parts[0] == "salt" and parts[1] == "job" and parts[2]:
        jid = parts[2]
        if parts[3] == "new" and len(parts) == 4:
            minions = data.get("minions")
            return JobNew(
                jid=jid,
                fun=_str(data.get("fun")) or "",
                tgt=data.get("tgt"),
                tgt_type=_str(data.get("tgt_type")) or "glob",
                minions=_id_list(minions),
                user=_str(data.get("user")),
                stamp=stamp,
                arg=_list(data.get("arg")),
                trimmed=minions == "VALUE_TRIMMED",  # salt.utils.dicttrim's marker
            )
        if parts[3] == "ret" and len(parts) >= 5:
            mid = "/".join(parts[4:])
            if not mid or data.get("id") != mid:
                return None  # every real return names its minion; anything else is forged
            retcode = _retcode(data.get("retcode"))
            return JobReturn(
                jid=jid,
                mid=mid,
                fun=_str(data.get("fun")),
                ret=data.get("return"),
                retcode=retcode,
                success=_success(data, retcode),
                stamp=stamp,
                tgt=data.get("tgt"),
                tgt_type=_str(data.get("tgt_type")),
                fun_args=_list(data.get("fun_args")),
            )
        return None
    if tag == "salt/key":
        key_id = _str(data.get("id"))
        try:
            act = KeyAction(data.get("act"))
        except ValueError:
            return None
        if not key_id or data.get("result") is False:
            return None
        return KeyChange(act, key_id)
    if tag == "salt/presence/present":
        # a minion can fire any tag (event.send): only the master's shape counts
        if not isinstance(data.get("present"), list):
            return None
        return PresencePresent(_ids(data["present"]))
    if tag == "salt/presence/change":
        if not isinstance(data.get("new"), list) or not isinstance(data.get("lost"), list):
            return None
        return PresenceChange(_ids(data["new"]), _ids(data["lost"]))
    if len(parts) == 4 and parts[:2] == ["salt", "minion"] and parts[3] == "start" and parts[2]:
        if data.get("id") != parts[2]:
            return None  # a start event fired by another minion, or forged
        return MinionStart(parts[2])
    if len(parts) == 4 and parts[:2] == ["salt", "syndic"] and parts[3] == "start" and parts[2]:
        if data.get("id") != parts[2]:
            return None
        return SyndicStart(parts[2])
    if len(parts) == 3 and parts[:2] == ["minion", "refresh"] and parts[2]:
        return MinionDataRefreshed(parts[2])
    return None
