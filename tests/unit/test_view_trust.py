"""The formatted view's trust boundary (issue 9: findings 1, 2 and 8, view side).

Any minion can put nearly any tag and payload on the master bus (``event.send``), so every
field of every event is attacker-controlled. These tests forge what a minion can forge and
check that the view decides from the master's own state (the accepted keys it is given), keeps
a job's function once known, and stays bounded in entries and bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from salt_ws.view import FormattedView, LoadGrains, ReloadKeys, Update, ViewLimits

REAL = "real"
# ids a forged event can carry that Salt's valid_id refuses (the traversal of finding 1)
PATHLIKE = ["../minions/real/data", "../../x", "a/b", "a\\b", "a\0b", ".", ".."]
GHOST = "ghost"  # a valid id with no accepted key on this master


def seeded(*extra_accepted: str, limits: ViewLimits | None = None) -> FormattedView:
    view = FormattedView(limits)
    view.seed({REAL: {"os": "Debian"}}, accepted=[REAL, *extra_accepted])
    return view


def loads_of(update: Update) -> set[str]:
    return {mid for c in update.commands if isinstance(c, LoadGrains) for mid in c.mids}


def new(jid: str, minions: list[str], fun: str = "test.ping", **more: Any) -> tuple[str, dict]:
    data = {"jid": jid, "fun": fun, "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    return f"salt/job/{jid}/new", {**data, "minions": minions, **more}


def ret(jid: str, mid: str, fun: str = "test.ping", value: Any = True, **more: Any) -> tuple:
    data = {"id": mid, "jid": jid, "fun": fun, "return": value, "retcode": 0, "success": True}
    return f"salt/job/{jid}/ret/{mid}", {**data, **more}


@dataclasses.dataclass
class Audience:
    """A non-admin permission set: function regexes valid on every minion (``test.*``)."""

    funs: tuple[str, ...] = ("test\\..*",)
    admin: bool = False
    key: str = "limited"
    calls: list[tuple[Any, str, Any]] = dataclasses.field(default_factory=list)

    def may(self, fun: str | None, mid: str, arg: list[Any] | None = None) -> bool:
        self.calls.append((fun, mid, arg))
        return isinstance(fun, str) and any(re.fullmatch(p, fun) for p in self.funs)

    def may_target(self, mid: str) -> bool:
        return True


def jobs_seen(view: FormattedView, audience: Audience | None = None) -> dict[str, Any]:
    return json.loads(view.render_jobs(audience))["jobs"]


# -- finding 1: only ids Salt accepts enter the view or reach the cache ----------------------


def forged_events(mid: str) -> list[tuple[str, Any]]:
    """What a minion can fire naming ``mid`` (tags that cannot hold it are left out)."""
    events: list[tuple[str, Any]] = [
        ("salt/presence/change", {"new": [mid], "lost": []}),
        ("salt/presence/present", {"present": [REAL, mid]}),
        ("salt/key", {"act": "accept", "id": mid, "result": True}),
    ]
    if "/" not in mid:
        events.append((f"salt/minion/{mid}/start", {"id": mid}))
        events.append((f"minion/refresh/{mid}", {}))
    return events


CASES = [
    pytest.param(mid, tag, data, id=f"{tag.split('/')[-1] or tag}-{mid!r}")
    for mid in [*PATHLIKE, GHOST]
    for tag, data in forged_events(mid)
]


@pytest.mark.parametrize(("mid", "tag", "data"), CASES)
def test_forged_ids_never_enter_the_minions_table_nor_reach_the_cache(mid, tag, data):
    view = seeded()
    update = view.apply(tag, data, 10.0)
    assert mid not in view.minion_ids
    assert view.minion_ids == [REAL]
    assert mid not in loads_of(update)
    assert mid not in json.loads(view.render_minions())["minions"]


@pytest.mark.parametrize("mid", PATHLIKE)
def test_path_like_ids_are_counted_as_invalid(mid):
    view = seeded()
    view.apply("salt/presence/change", {"new": [mid], "lost": []}, 10.0)
    assert view.refused["invalid_id"] == 1
    assert view.refused["not_accepted"] == 0


def test_an_id_without_an_accepted_key_is_counted_and_asks_for_the_keys():
    view = seeded()
    update = view.apply("salt/presence/change", {"new": [GHOST], "lost": []}, 10.0)
    assert view.refused["not_accepted"] == 1
    assert ReloadKeys() in update.commands


def test_an_id_enters_once_a_key_refresh_shows_it_accepted():
    view = seeded()
    view.apply("salt/presence/change", {"new": [GHOST], "lost": []}, 10.0)
    assert not view.set_accepted([REAL])  # still no key: still out
    assert GHOST not in view.minion_ids
    view.apply("salt/presence/change", {"new": [GHOST], "lost": []}, 20.0)
    update = view.set_accepted([REAL, GHOST])
    assert GHOST in view.minion_ids
    assert update.minions and loads_of(update) == {GHOST}


def test_a_key_event_is_only_a_hint_to_re_read_the_keys():
    view = seeded()
    update = view.apply("salt/key", {"act": "accept", "id": GHOST, "result": True}, 10.0)
    assert update.commands == [ReloadKeys()]
    assert GHOST not in view.minion_ids
    update = view.set_accepted([REAL, GHOST])  # the master really accepted it
    assert GHOST in view.minion_ids and loads_of(update) == {GHOST}


def test_a_forged_key_delete_removes_nothing_the_master_still_accepts():
    view = seeded()
    assert view.apply("salt/key", {"act": "delete", "id": REAL, "result": True}, 10.0).commands
    assert view.minion_ids == [REAL]
    view.set_accepted([REAL])
    assert view.minion_ids == [REAL]
    update = view.set_accepted([])  # deleted for real
    assert view.minion_ids == [] and update.minions


def test_key_re_reads_are_coalesced_while_one_is_in_flight():
    view = seeded()
    first = view.apply("salt/key", {"act": "accept", "id": "a", "result": True}, 10.0)
    assert first.commands == [ReloadKeys()]
    for n in range(50):  # a flood of forged key events: no more reads meanwhile
        update = view.apply("salt/key", {"act": "accept", "id": f"x{n}", "result": True}, 10.0)
        assert ReloadKeys() not in update.commands
    assert ReloadKeys() in view.set_accepted([REAL], now=11.0).commands  # one more, for them
    assert ReloadKeys() not in view.apply("salt/key", {"act": "pend", "id": "y"}, 11.5).commands


def test_key_re_reads_asked_for_by_events_come_at_most_once_a_second():
    view = seeded()
    assert view.apply("salt/key", {"act": "accept", "id": "a", "result": True}, 10.0).commands
    view.set_accepted([REAL])
    assert not view.apply("salt/key", {"act": "accept", "id": "a", "result": True}, 10.5).commands
    assert view.expire(11.0).commands == [ReloadKeys()]  # the engine calls expire twice a second


def test_a_lost_key_re_read_does_not_block_later_ones():
    view = seeded()
    assert view.apply("salt/key", {"act": "accept", "id": "a", "result": True}, 10.0).commands
    view.set_accepted(None)  # the engine could not read the keys
    again = view.apply("salt/key", {"act": "accept", "id": "a", "result": True}, 20.0)
    assert again.commands == [ReloadKeys()]


def test_refresh_events_for_unknown_or_path_like_ids_load_nothing():
    view = seeded()
    for mid in [*PATHLIKE, GHOST]:
        if "/" not in mid:
            assert not loads_of(view.apply(f"minion/refresh/{mid}", {}, 1.0))


def test_seed_takes_only_valid_accepted_ids():
    view = FormattedView()
    update = view.seed({REAL: None, "../../x": None, GHOST: None}, accepted=[REAL, "../../x"])
    assert view.minion_ids == [REAL]
    assert loads_of(update) == {REAL}
    assert view.refused["invalid_id"] == 1 and view.refused["not_accepted"] == 1


@pytest.mark.parametrize("mid", [*PATHLIKE, GHOST])
def test_a_job_expects_only_accepted_ids(mid):
    view = seeded()
    view.apply(*new("1", [REAL, mid]), 1.0)
    assert set(jobs_seen(view)["1"]["minions"]) == {REAL}


@pytest.mark.parametrize("mid", [*PATHLIKE, GHOST])
def test_a_return_from_an_id_without_a_key_is_refused(mid):
    view = seeded()
    view.apply(*new("1", [REAL]), 1.0)
    view.apply(*ret("1", mid), 2.0)
    view.apply(*ret("2", mid), 2.0)  # nor does it make a job of its own
    jobs = jobs_seen(view)
    assert set(jobs) == {"1"} and set(jobs["1"]["minions"]) == {REAL}
    assert jobs["1"]["state"] == "running"


# -- finding 1 on a master of masters --------------------------------------------------------


def mom(*accepted: str) -> FormattedView:
    view = FormattedView(ViewLimits(syndic_wait=5.0), syndics=True)
    view.seed({REAL: {}}, accepted=[REAL, *accepted])
    return view


def test_events_forwarded_by_a_syndic_without_a_key_are_refused():
    view = mom("syndic-1")
    view.apply("syndic/rogue/salt/presence/present", {"present": ["b1"]}, 0.0)
    view.apply("salt/syndic/rogue/start", {"id": "rogue"}, 0.0)
    assert "b1" not in view.minion_ids and view.syndic_ids == []
    assert view.refused["not_accepted"] == 2
    view.apply("syndic/syndic-1/salt/presence/present", {"present": ["b1"]}, 0.0)
    assert "b1" in view.minion_ids and view.syndic_ids == ["syndic-1"]


@pytest.mark.parametrize("mid", PATHLIKE)
def test_path_like_ids_behind_a_syndic_are_refused(mid):
    view = mom("syndic-1")
    view.apply("syndic/syndic-1/salt/presence/present", {"present": ["b1", mid]}, 0.0)
    view.apply("syndic/syndic-1/salt/job/1/new", new("1", [mid])[1], 0.0)
    assert set(view.minion_ids) == {REAL, "b1"}
    assert mid not in jobs_seen(view)["1"]["minions"]


@pytest.mark.parametrize("sid", [".", ".."])
def test_path_like_syndic_ids_are_refused(sid):
    view = mom(sid, "syndic-1")  # even if something put it among the keys
    view.apply(f"syndic/{sid}/salt/presence/present", {"present": ["b1"]}, 0.0)
    view.apply(f"syndic/syndic-1/syndic/{sid}/salt/presence/present", {"present": ["b2"]}, 0.0)
    assert view.minion_ids == [REAL] and view.syndic_ids == []


def test_nothing_behind_a_syndic_is_ever_read_from_this_masters_cache():
    view = mom("syndic-1")
    loads: set[str] = set()
    for tag, data in [
        ("syndic/syndic-1/salt/presence/present", {"present": ["b1"]}),
        ("syndic/syndic-1/salt/presence/change", {"new": ["b2"], "lost": []}),
        ("syndic/syndic-1/salt/minion/b3/start", {"id": "b3"}),
        ("syndic/syndic-1/salt/key", {"act": "accept", "id": "b4", "result": True}),
        ("syndic/syndic-1/salt/job/1/new", new("1", ["b5"])[1]),
        ret("1", "b5"),
        ("minion/refresh/b1", {}),
    ]:
        loads |= loads_of(view.apply(tag, data, 0.0))
    assert {"b1", "b2", "b3", "b4", "b5"} <= set(view.minion_ids)
    assert loads == set()


def test_a_syndic_id_must_be_accepted_to_be_learned_from_the_seed():
    view = FormattedView(syndics=True)
    view.seed({}, syndics=["syndic-1", "rogue"], accepted=["syndic-1"])
    assert view.syndic_ids == ["syndic-1"]


def test_nested_syndics_are_bounded():
    view = mom("top")
    for n in range(200):
        view.apply(f"syndic/top/syndic/low-{n}/salt/presence/present", {"present": [f"b{n}"]}, n)
    nested = [s for s in view.syndic_ids if s != "top"]
    assert 0 < len(nested) <= 64
    assert view.refused["over_limit"] > 0


# -- finding 2: a job's function never changes once known ------------------------------------


def test_a_second_new_with_another_function_makes_the_job_admin_only():
    view = seeded("m2")
    view.apply(*new("1", [REAL, "m2"], "cmd.run"), 1.0)
    view.apply(*ret("1", REAL, "cmd.run", "secret output"), 2.0)
    view.apply(*new("1", [REAL, "m2"], "test.ping", user="mallory"), 3.0)  # forged
    row = jobs_seen(view)["1"]
    assert (row["fun"], row["user"]) == ("cmd.run", "root")  # the first known stays
    assert "1" not in jobs_seen(view, Audience())
    assert view.refused["fun_conflict"] == 1


def test_a_second_new_with_the_same_function_but_other_arguments_is_a_conflict():
    view = seeded()
    view.apply(*new("1", [REAL], "test.arg", arg=["secret"]), 1.0)
    view.apply(*new("1", [REAL], "test.arg", arg=["uptime"]), 2.0)
    assert "1" not in jobs_seen(view, Audience())


def test_a_return_of_another_function_than_the_news_makes_the_job_admin_only():
    """Red team a5: the job's own fields must not be shown through such a return."""
    view = seeded("m2")
    view.apply(*new("1", [REAL, "m2"], "test.ping"), 1.0)
    view.apply(*ret("1", REAL, "test.ping"), 2.0)
    view.apply(*ret("1", "m2", "cmd.run", "root:x:0:0"), 3.0)  # a return of another function
    assert "1" not in jobs_seen(view, Audience(funs=("test\\..*", "cmd\\..*")))
    assert view.refused["fun_conflict"] == 1
    assert set(jobs_seen(view)["1"]["minions"]) == {REAL, "m2"}  # an admin sees it all
    assert "fun" not in jobs_seen(view)["1"]["minions"]["m2"]  # the wire entry is unchanged


def test_a_job_known_from_its_first_return_becomes_admin_only_on_another_function():
    view = seeded("m2")
    view.apply(*ret("1", REAL, "test.ping"), 1.0)
    assert "1" in jobs_seen(view, Audience())
    view.apply(*ret("1", "m2", "cmd.run", "secret"), 2.0)
    assert "1" not in jobs_seen(view, Audience())
    assert jobs_seen(view)["1"]["fun"] == "test.ping"
    assert view.refused["fun_conflict"] == 1


def test_a_new_after_a_first_return_with_another_function_makes_the_job_admin_only():
    view = seeded()
    view.apply(*ret("1", REAL, "cmd.run", "secret"), 1.0)
    view.apply(*new("1", [REAL], "test.ping"), 1.1)
    assert jobs_seen(view)["1"]["fun"] == "cmd.run"
    assert "1" not in jobs_seen(view, Audience(funs=("test\\..*", "cmd\\..*")))


def test_a_new_after_a_first_return_with_the_same_function_completes_the_job():
    view = seeded("m2")
    view.apply(*ret("1", REAL, "test.ping"), 1.0)
    view.apply(*new("1", [REAL, "m2"], "test.ping"), 1.1)
    assert set(jobs_seen(view, Audience())["1"]["minions"]) == {REAL, "m2"}


def test_may_gets_the_jobs_arguments_from_its_new_event():
    view = seeded()
    view.apply(*new("1", [REAL], "test.arg", arg=["a", {"k": 1, "__kwarg__": True}]), 1.0)
    view.apply(*ret("1", REAL, "test.arg", fun_args=["forged"]), 2.0)
    audience = Audience()
    jobs_seen(view, audience)
    # the return's own function and arguments, then the job's (str()-normalised, as Salt
    # checks them): both must pass
    assert audience.calls == [
        ("test.arg", REAL, ["forged"]),
        ("test.arg", REAL, ["a", {"k": "1", "__kwarg__": "True"}]),
    ]


def test_may_gets_a_returns_fun_args_when_no_new_was_seen():
    view = seeded()
    view.apply(*ret("1", REAL, "test.arg", fun_args=["x"]), 1.0)
    audience = Audience()
    jobs_seen(view, audience)
    assert audience.calls == [("test.arg", REAL, ["x"])]


@pytest.mark.parametrize("fun", ["", "cmd.run; rm", "x" * 300, "test ping", "test.ping\n"])
def test_a_job_whose_function_is_no_function_name_is_admin_only(fun):
    view = seeded()
    view.apply(*new("1", [REAL], fun), 1.0)
    assert "1" not in jobs_seen(view, Audience(funs=("(?s:.*)",)))
    assert "1" in jobs_seen(view)


# -- finding 8: bounds -----------------------------------------------------------------------


def test_a_forged_new_listing_100000_minions_expects_only_the_accepted_ones():
    view = seeded("m2")
    minions = [f"minion-{n}" for n in range(100_000)] + [REAL, "m2"]
    view.apply(*new("1", minions), 1.0)
    assert set(jobs_seen(view)["1"]["minions"]) == {REAL, "m2"}
    assert view.refused["not_accepted"] == 100_000
    assert view.jobs_bytes < 2_000


def test_max_minions_bounds_the_minions_table():
    view = FormattedView(ViewLimits(max_minions=3), syndics=True)
    view.seed({"m1": {}, "m2": {}}, accepted=["m1", "m2", "m3", "m4", "syndic-1"])
    view.apply("syndic/syndic-1/salt/presence/present", {"present": ["b1", "b2"]}, 0.0)
    view.presence(["m1", "m2", "m3", "m4"])
    assert len(view.minion_ids) == 3
    assert view.refused["over_limit"] >= 2


def test_max_jobs_bytes_drops_the_oldest_jobs():
    view = seeded(limits=ViewLimits(max_jobs_bytes=20_000))
    for n in range(40):
        view.apply(*new(str(n), [REAL]), float(n))
        view.apply(*ret(str(n), REAL, value="x" * 1_000), float(n))
        assert view.jobs_bytes <= 20_000
        assert len(view.render_jobs().encode()) <= 20_000 + 20
    jobs = list(jobs_seen(view))
    assert jobs[-1] == "39" and "0" not in jobs
    assert jobs == [str(n) for n in range(40 - len(jobs), 40)]  # oldest dropped first
    assert view.refused["jobs_bytes"] == 40 - len(jobs)


def test_jobs_bytes_tracks_the_encoded_table():
    view = seeded("m2")
    view.apply(*new("1", [REAL, "m2"]), 1.0)
    view.apply(*ret("1", REAL, value={"a": "é" * 100}), 2.0)
    view.apply(*new("2", [REAL]), 3.0)
    text = view.render_jobs()
    assert view.jobs_bytes == len(text.encode()) - len('{"jobs":{}}')


def test_a_return_larger_than_a_fair_share_is_replaced_by_a_marker():
    view = seeded(limits=ViewLimits(max_jobs_bytes=80_000))  # share: 10,000 bytes
    view.apply(*new("1", [REAL]), 1.0)
    view.apply(*ret("1", REAL, value="y" * 50_000), 2.0)
    entry = jobs_seen(view)["1"]["minions"][REAL]
    assert isinstance(entry["return"], str) and len(entry["return"]) < 200
    assert "50" in entry["return"] and "bytes" in entry["return"]
    assert (entry["retcode"], entry["success"]) == (0, True)
    assert view.refused["return_too_large"] == 1
    assert "1" in jobs_seen(view)


def test_refused_counts_every_reason_from_zero():
    assert seeded().refused == {
        "invalid_id": 0,
        "not_accepted": 0,
        "over_limit": 0,
        "fun_conflict": 0,
        "jobs_bytes": 0,
        "return_too_large": 0,
        "field_too_large": 0,
        "invalid_jid": 0,
        "invalid_fun": 0,
    }


# -- engine wiring ---------------------------------------------------------------------------


class FakeFleet:
    """The master's keys and cache as the engine sees them (salt_ws.fleet.Fleet's methods)."""

    def __init__(self, accepted: list[str]) -> None:
        self.keys = accepted
        self.data_cache = True
        self.asked: list[list[str]] = []
        self.key_reads = 0

    def accepted(self) -> list[str]:
        self.key_reads += 1
        return list(self.keys)

    def load_grains(self, mids: Any) -> dict[str, Any]:
        self.asked.append(list(mids))
        return {mid: {"os": "Debian"} for mid in mids}


def test_the_engine_reads_the_keys_for_the_view_and_reports_what_it_refused():
    import asyncio
    import time

    from salt_ws.config import parse
    from salt_ws.engine import Engine

    config = parse({"disable_ssl": True, "max_minions": 50, "max_jobs_bytes": 5 << 20})
    engine = Engine(opts={}, config=config)
    assert engine.view.limits.max_minions == 50
    assert engine.view.limits.max_jobs_bytes == 5 << 20
    fleet = FakeFleet([REAL])
    engine.fleet = fleet  # type: ignore[assignment]
    engine.view.seed({REAL: {}}, accepted=[REAL])

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)
            tasks = [t for t in engine._tasks if not t.done()]
            if tasks:
                await asyncio.gather(*tasks)

    async def main() -> None:
        engine.consume([("salt/presence/change", {"new": [*PATHLIKE, GHOST], "lost": []})])
        await settle()
        assert fleet.key_reads == 1 and GHOST not in engine.view.minion_ids
        fleet.keys = [REAL, GHOST]  # the master accepts it; its key event comes
        engine.consume([("salt/key", {"act": "accept", "id": GHOST, "result": True})])
        await settle()
        assert fleet.key_reads == 1  # at most one re-read a second: the next is due later,
        engine.view_changed(engine.view.expire(time.time() + 1.5))  # at housekeeping's expire
        await settle()
        assert fleet.key_reads == 2

    asyncio.run(main())
    assert GHOST in engine.view.minion_ids
    assert fleet.asked == [[GHOST]]  # never a path-like id
    status = engine.status()
    assert status["view_refused"]["invalid_id"] == len(PATHLIKE)
    assert status["view_refused"]["not_accepted"] == 1
    assert status["jobs_bytes"] == 0
