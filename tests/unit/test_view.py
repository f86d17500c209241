"""salt_ws.view.FormattedView: the minions and jobs tables, driven by bus events.

Time is always passed in (``now``); nothing here sleeps. Most scenarios replay the events a real
salt 3008.4 master fired (``tests/files/events-salt-3008.4.json``, scenario in
``scripts/record_events.py``), with ``now`` taken from each event's ``_stamp``.
"""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salt_ws.view import FormattedView, LoadGrains, ReloadKeys, Update, ViewLimits

RECORDED = pathlib.Path(__file__).parents[1] / "files" / "events-salt-3008.4.json"
EVENTS: list[tuple[str, dict[str, Any]]] = [
    (tag, data) for tag, data in json.loads(RECORDED.read_text())
]

JOB_KEYS = {
    # the seed's (saltnado's) job keys ...
    "jid",
    "tgt",
    "tgt_type",
    "fun",
    "start_time",
    "state",
    "minions",
    # ... and what this engine adds
    "success",
    "user",
    "end_time",
}
ENTRY_KEYS = {"return", "retcode", "success"}

# The recorded jobs, in the order they appeared.
PING = "20261128064157383392"  # test.ping on both
RETCODE = "20261128064158536026"  # test.retcode code=3 on both
EXCEPTION = "20261128064159685083"  # test.exception on minion-1
ARG = "20261128064200953562"  # test.arg, list target
SCHED_ADD = "20261128064203746160"  # schedule.add on minion-2
SCHEDULED = ("20261128064204305217", "20261128064206284630", "20261128064208301684")
SCHED_DEL = "20261128064209997153"  # schedule.delete on minion-2
SCHEDULED_LAST = "20261128064210367396"  # fired once more before the delete took effect
STUCK = "20261128064219262207"  # test.ping on both after minion-2 was stopped
FIND_JOB = "20261128064229337724"  # saltutil.find_job on the silent minion-2


# The minions whose keys the master has accepted in these scenarios (see test_view_trust.py for
# ids without one).
ACCEPTED = ("minion-1", "minion-2", "minion-3", "m1", "m2", "m3", "münchen")


def new_view(limits: ViewLimits | None = None) -> FormattedView:
    return FormattedView(limits, accepted=ACCEPTED)


def stamp_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, as browsers' JSON.parse does."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def stamp_of(tag: str) -> str:
    """The ``_stamp`` of the (first) recorded event with this tag."""
    return next(data["_stamp"] for t, data in EVENTS if t == tag)


def returned(jid: str, mid: str) -> Any:
    """What ``mid`` returned for ``jid`` in the recording."""
    return next(data["return"] for t, data in EVENTS if t == f"salt/job/{jid}/ret/{mid}")


def replay(view: FormattedView, events: list[tuple[str, Any]] = EVENTS) -> list[tuple[str, Update]]:
    """Apply recorded events, ``now`` from each ``_stamp``; the updates, by tag."""
    updates = []
    now = 0.0
    for tag, data in events:
        if isinstance(data, dict) and isinstance(data.get("_stamp"), str):
            now = stamp_time(data["_stamp"])
        updates.append((tag, view.apply(tag, data, now)))
    return updates


def replayed(limits: ViewLimits | None = None) -> FormattedView:
    view = new_view(limits)
    replay(view)
    return view


def ok(ret: Any = True, retcode: int = 0) -> dict[str, Any]:
    return {"return": ret, "retcode": retcode, "success": retcode == 0}


PENDING = {"return": None, "retcode": None, "success": None}


def job(
    jid: str,
    fun: str,
    tgt: Any,
    minions: dict[str, dict[str, Any]],
    *,
    state: str = "complete",
    success: bool | None = True,
    tgt_type: str = "glob",
    user: str | None = "root",
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """A jobs-table row as the websocket shows it (start/end default to the recorded stamps)."""
    if start is None:
        start = stamp_of(f"salt/job/{jid}/new")
    return {
        "jid": jid,
        "tgt": tgt,
        "tgt_type": tgt_type,
        "fun": fun,
        "start_time": start,
        "state": state,
        "success": success,
        "user": user,
        "end_time": end,
        "minions": minions,
    }


def last_ret(jid: str) -> str:
    return [d["_stamp"] for t, d in EVENTS if t.startswith(f"salt/job/{jid}/ret/")][-1]


def scheduled(jid: str) -> dict[str, Any]:
    """A scheduled job: only its return was seen (no new event), so it is that one minion."""
    at = stamp_of(f"salt/job/{jid}/ret/minion-2")
    return job(jid, "test.ping", "minion-2", {"minion-2": ok()}, user=None, start=at, end=at)


EXPECTED_JOBS = {
    PING: job(
        PING,
        "test.ping",
        "*",
        {"minion-1": ok(), "minion-2": ok()},
        end=last_ret(PING),
    ),
    RETCODE: job(
        RETCODE,
        "test.retcode",
        "*",
        {"minion-1": ok(True, 3), "minion-2": ok(True, 3)},
        success=False,
        end=last_ret(RETCODE),
    ),
    EXCEPTION: job(
        EXCEPTION,
        "test.exception",
        "minion-1",
        {"minion-1": ok(returned(EXCEPTION, "minion-1"), 1)},
        success=False,
        end=last_ret(EXCEPTION),
    ),
    ARG: job(
        ARG,
        "test.arg",
        ["minion-1", "minion-2"],
        {
            "minion-1": ok(returned(ARG, "minion-1")),
            "minion-2": ok(returned(ARG, "minion-2")),
        },
        tgt_type="list",
        end=last_ret(ARG),
    ),
    SCHED_ADD: job(
        SCHED_ADD,
        "schedule.add",
        "minion-2",
        {"minion-2": ok(returned(SCHED_ADD, "minion-2"))},
        end=last_ret(SCHED_ADD),
    ),
    **{jid: scheduled(jid) for jid in SCHEDULED},
    SCHED_DEL: job(
        SCHED_DEL,
        "schedule.delete",
        "minion-2",
        {"minion-2": ok(returned(SCHED_DEL, "minion-2"))},
        end=last_ret(SCHED_DEL),
    ),
    SCHEDULED_LAST: scheduled(SCHEDULED_LAST),
    STUCK: job(
        STUCK,
        "test.ping",
        ["minion-1", "minion-2"],
        {"minion-1": ok(), "minion-2": PENDING},
        state="running",
        success=None,
        tgt_type="list",
    ),
    FIND_JOB: job(
        FIND_JOB,
        "saltutil.find_job",
        ["minion-2"],
        {"minion-2": PENDING},
        state="running",
        success=None,
        tgt_type="list",
    ),
}


# -- replaying the recording ---------------------------------------------------------------------


def test_replay_final_minions_table():
    # minion-2's key was deleted at the end; no grains were loaded (no set_grains calls).
    assert replayed().tables()["minions"] == {"minion-1": {"id": "minion-1", "grains": {}}}


def test_replay_final_jobs_table():
    jobs = replayed().tables()["jobs"]
    assert list(jobs) == list(EXPECTED_JOBS)  # insertion order: the order jobs appeared
    for jid, expected in EXPECTED_JOBS.items():
        assert jobs[jid] == expected, jid


def test_replay_runner_and_untracked_events_leave_no_trace():
    jobs = replayed().tables()["jobs"]
    assert "20261128064202151756" not in jobs  # salt/run/<jid>/new|ret: not a minion job


@pytest.mark.parametrize(
    ("jid", "success", "entries"),
    [
        pytest.param(PING, True, {"minion-1": (True, 0, True), "minion-2": (True, 0, True)},
                     id="test.ping"),
        pytest.param(RETCODE, False, {"minion-1": (True, 3, False), "minion-2": (True, 3, False)},
                     id="test.retcode-3"),
        pytest.param(EXCEPTION, False, {"minion-1": (..., 1, False)}, id="test.exception"),
        pytest.param(SCHEDULED[0], True, {"minion-2": (True, 0, True)}, id="scheduled-no-new"),
    ],
)  # fmt: skip
def test_replay_completed_job_outcomes(jid, success, entries):
    row = replayed().tables()["jobs"][jid]
    assert row["state"] == "complete"
    assert row["success"] is success
    assert set(row["minions"]) == set(entries)
    for mid, (ret, retcode, ok_) in entries.items():
        entry = row["minions"][mid]
        assert set(entry) == ENTRY_KEYS
        if ret is not ...:
            assert entry["return"] == ret
        assert (entry["retcode"], entry["success"]) == (retcode, ok_)


def test_replay_exception_return_is_the_traceback_text():
    entry = replayed().tables()["jobs"][EXCEPTION]["minions"]["minion-1"]
    assert entry["return"].startswith("The minion function caused an exception")


def test_replay_scheduled_returns_are_single_minion_jobs():
    jobs = replayed().tables()["jobs"]
    for jid in (*SCHEDULED, SCHEDULED_LAST):
        assert jobs[jid] == scheduled(jid)


def test_replay_commands_load_grains_for_each_started_minion():
    commands = [
        (tag, [c for c in u.commands if isinstance(c, LoadGrains)])
        for tag, u in replay(new_view())
        if any(isinstance(c, LoadGrains) for c in u.commands)
    ]
    # minion/refresh/* came before the minions were shown: no command for them;
    # the later presence change named minions already shown: none either.
    assert commands == [
        ("salt/minion/minion-2/start", [LoadGrains(("minion-2",))]),
        ("salt/minion/minion-1/start", [LoadGrains(("minion-1",))]),
    ]


# -- a job whose minion never answers -----------------------------------------------------------


def test_stuck_job_runs_until_job_timeout_then_completes_failed():
    limits = ViewLimits(job_timeout=600.0)
    view = replayed(limits)
    start = stamp_time(stamp_of(f"salt/job/{STUCK}/new"))

    update = view.expire(start + 600.0 - 0.001)
    assert not update.jobs
    assert view.tables()["jobs"][STUCK]["state"] == "running"

    update = view.expire(start + 600.0)
    assert update == Update(jobs=True)
    row = view.tables()["jobs"][STUCK]
    assert row["state"] == "complete"
    assert row["success"] is False
    assert row["minions"]["minion-1"] == ok()
    assert row["minions"]["minion-2"] == {
        "return": None,
        "retcode": None,
        "success": False,
        "error": "no return within 600s",
    }
    # find_job started ten seconds later: still running.
    assert view.tables()["jobs"][FIND_JOB]["state"] == "running"


@pytest.mark.parametrize("timeout", [5.0, 90.5])
def test_timeout_error_names_the_timeout(timeout):
    view = replayed(ViewLimits(job_timeout=timeout))
    view.expire(stamp_time(stamp_of(f"salt/job/{FIND_JOB}/new")) + timeout)
    entry = view.tables()["jobs"][FIND_JOB]["minions"]["minion-2"]
    assert entry["error"] == f"no return within {timeout:g}s"


def test_expire_leaves_completed_jobs_alone():
    view = replayed()
    before = view.tables()["jobs"]
    view.expire(stamp_time(stamp_of(f"salt/job/{FIND_JOB}/new")) + 600.0)
    after = view.tables()["jobs"]
    for jid in EXPECTED_JOBS:
        if EXPECTED_JOBS[jid]["state"] == "complete":
            assert after[jid] == before[jid], jid


# -- updates and commands ------------------------------------------------------------------------


def seeded(*mids: str) -> FormattedView:
    view = new_view()
    view.seed({mid: {"id": mid, "os": "Debian"} for mid in mids}, accepted=ACCEPTED)
    return view


UPDATES = [
    # (seeded minions, tag, data, expected update, minions afterwards)
    pytest.param(["m1"], "salt/minion/m2/start", {"id": "m2"},
                 Update(True, False, [LoadGrains(("m2",))]), ["m1", "m2"], id="start-new-minion"),
    pytest.param(["m1"], "salt/minion/m1/start", {"id": "m1"},
                 Update(False, False, [LoadGrains(("m1",))]), ["m1"],
                 id="start-known-minion-reloads-grains"),
    # salt/key events are forgeable: each only asks for the keys to be re-read (what that
    # re-read changes: test_key_changes_take_effect_when_the_keys_are_re_read)
    pytest.param(["m1"], "salt/key", {"act": "accept", "id": "m2", "result": True},
                 Update(commands=[ReloadKeys()]), ["m1"], id="key-accept-new"),
    pytest.param(["m1"], "salt/key", {"act": "accept", "id": "m1"},
                 Update(commands=[ReloadKeys()]), ["m1"], id="key-accept-known"),
    pytest.param(["m1", "m2"], "salt/key", {"act": "delete", "id": "m2", "result": True},
                 Update(commands=[ReloadKeys()]), ["m1", "m2"], id="key-delete"),
    pytest.param(["m1", "m2"], "salt/key", {"act": "reject", "id": "m1", "result": True},
                 Update(commands=[ReloadKeys()]), ["m1", "m2"], id="key-reject"),
    pytest.param(["m1"], "salt/key", {"act": "delete", "id": "m9"},
                 Update(commands=[ReloadKeys()]), ["m1"], id="key-delete-unknown"),
    pytest.param(["m1"], "salt/key", {"act": "pend", "id": "m2", "result": True},
                 Update(commands=[ReloadKeys()]), ["m1"], id="key-pend-new"),
    pytest.param(["m1"], "salt/key", {"act": "pend", "id": "m1", "result": True},
                 Update(commands=[ReloadKeys()]), ["m1"], id="key-pend-known"),
    pytest.param(["m1"], "salt/key", {"act": "delete", "id": "m1", "result": False}, Update(),
                 ["m1"], id="key-delete-failed"),
    pytest.param(["m1"], "salt/presence/change", {"new": ["m3", "m1", "m2"], "lost": []},
                 Update(True, False, [LoadGrains(("m2", "m3"))]), ["m1", "m2", "m3"],
                 id="presence-change-new"),
    pytest.param(["m1", "m2"], "salt/presence/change", {"new": [], "lost": ["m2"]},
                 Update(minions=True), ["m1"], id="presence-change-lost"),
    pytest.param(["m1"], "salt/presence/change", {"new": [], "lost": ["m9"]}, Update(), ["m1"],
                 id="presence-change-lost-unknown"),
    pytest.param(["m1"], "salt/presence/change", {"new": ["m2"], "lost": ["m1"]},
                 Update(True, False, [LoadGrains(("m2",))]), ["m2"], id="presence-change-both"),
    pytest.param(["m1", "m2"], "salt/presence/present", {"present": ["m1", "m2"]},
                 Update(minions=True), ["m1", "m2"], id="presence-present-unchanged"),
    pytest.param(["m1", "m2"], "salt/presence/present", {"present": ["m2", "m3"]},
                 Update(True, False, [LoadGrains(("m3",))]), ["m2", "m3"],
                 id="presence-present-changed"),
    pytest.param(["m1"], "salt/presence/present", {"present": []}, Update(minions=True), [],
                 id="presence-present-empty"),
    pytest.param(["m1"], "minion/refresh/m1", {}, Update(commands=[LoadGrains(("m1",))]),
                 ["m1"], id="refresh-shown-minion"),
    pytest.param(["m1"], "minion/refresh/m2", {}, Update(), ["m1"], id="refresh-unknown-minion"),
    pytest.param(["m1"], "salt/job/1/new", {"minions": ["m1"]}, Update(jobs=True), ["m1"],
                 id="job-new"),
    pytest.param(["m1"], "salt/job/1/ret/m1", {"id": "m1", "retcode": 0}, Update(jobs=True), ["m1"],
                 id="job-ret"),
    pytest.param(["m1"], "salt/job/1/prog/m1/0", {}, Update(), ["m1"], id="job-prog"),
    pytest.param(["m1"], "salt/run/1/new", {}, Update(), ["m1"], id="runner"),
    pytest.param(["m1"], "salt/auth", {"act": "accept", "id": "m2"}, Update(), ["m1"],
                 id="auth"),
    pytest.param(["m1"], "nonsense", None, Update(), ["m1"], id="nonsense"),
]  # fmt: skip


@pytest.mark.parametrize(("seed", "tag", "data", "expected", "after"), UPDATES)
def test_update_and_commands(seed, tag, data, expected, after):
    view = seeded(*seed)
    assert view.apply(tag, data, 100.0) == expected
    assert sorted(view.minion_ids) == after


@pytest.mark.parametrize(
    ("seed", "act", "mid", "keys", "expected", "after"),
    [
        pytest.param(["m1"], "accept", "m2", ["m1", "m2"],
                     Update(True, False, [LoadGrains(("m2",))]), ["m1", "m2"], id="accept"),
        pytest.param(["m1", "m2"], "delete", "m2", ["m1"], Update(minions=True), ["m1"],
                     id="delete"),
        pytest.param(["m1", "m2"], "reject", "m1", ["m2"], Update(minions=True), ["m2"],
                     id="reject"),
        pytest.param(["m1"], "pend", "m2", ["m1"], Update(), ["m1"], id="pend"),
    ],
)  # fmt: skip
def test_key_changes_take_effect_when_the_keys_are_re_read(seed, act, mid, keys, expected, after):
    view = seeded(*seed)
    view.apply("salt/key", {"act": act, "id": mid, "result": True}, 100.0)
    assert view.set_accepted(keys) == expected
    assert sorted(view.minion_ids) == after


def test_a_minion_shown_by_an_event_starts_with_empty_grains_until_set_grains():
    view = new_view()
    view.apply("salt/minion/m1/start", {"id": "m1"}, 1.0)
    assert view.tables()["minions"] == {"m1": {"id": "m1", "grains": {}}}
    assert view.set_grains("m1", {"os": "Debian"}) == Update(minions=True)
    assert view.tables()["minions"] == {"m1": {"id": "m1", "grains": {"os": "Debian"}}}


def test_a_removed_minion_that_comes_back_has_its_grains_reloaded():
    view = seeded("m1")
    view.apply("salt/presence/change", {"new": [], "lost": ["m1"]}, 1.0)
    update = view.apply("salt/presence/change", {"new": ["m1"], "lost": []}, 2.0)
    assert update.commands == [LoadGrains(("m1",))]
    assert view.tables()["minions"]["m1"]["grains"] == {}


@pytest.mark.parametrize(
    ("mid", "grains"),
    [
        pytest.param("m9", {"os": "Debian"}, id="unknown-minion"),
        pytest.param("m1", {"id": "m1", "os": "Debian"}, id="unchanged-grains"),
        pytest.param("m1", None, id="no-grains-in-cache"),
    ],
)
def test_set_grains_ignored(mid, grains):
    view = seeded("m1")
    before = view.render_minions()
    assert view.set_grains(mid, grains) == Update()
    assert not view.set_grains(mid, grains)
    assert view.render_minions() is before
    assert view.minion_ids == ["m1"]


def test_set_grains_copies_the_mapping():
    view = seeded("m1")
    grains = {"os": "Arch"}
    view.set_grains("m1", grains)
    grains["os"] = "changed later"
    assert view.tables()["minions"]["m1"]["grains"] == {"os": "Arch"}


def test_seed_asks_for_missing_grains():
    view = new_view()
    update = view.seed({"m1": {"os": "Debian"}, "m2": None, "m3": None})
    assert update == Update(minions=True, commands=[LoadGrains(("m2", "m3"))])
    assert view.tables()["minions"] == {
        "m1": {"id": "m1", "grains": {"os": "Debian"}},
        "m2": {"id": "m2", "grains": {}},
        "m3": {"id": "m3", "grains": {}},
    }


def test_update_is_falsy_only_when_empty():
    assert not Update()
    assert Update(minions=True)
    assert Update(jobs=True)
    assert Update(commands=[LoadGrains(("m",))])
    merged = Update(minions=True).merge(Update(jobs=True, commands=[LoadGrains(("a",))]))
    assert merged == Update(True, True, [LoadGrains(("a",))])


# -- wire shapes and the encoding cache ----------------------------------------------------------


def test_rendered_messages_are_strict_json_equal_to_tables():
    view = replayed()
    minions, jobs = strict_loads(view.render_minions()), strict_loads(view.render_jobs())
    assert list(minions) == ["minions"]
    assert list(jobs) == ["jobs"]
    assert {**minions, **jobs} == view.tables()


def test_snapshot_is_minions_then_jobs_message():
    view = replayed()
    assert view.snapshot() == [view.render_minions(), view.render_jobs()]


def test_every_job_has_exactly_the_seed_keys_plus_success_user_end_time():
    view = replayed()
    view.expire(stamp_time(stamp_of(f"salt/job/{FIND_JOB}/new")) + 600.0)  # one with "error"
    for jid, row in view.tables()["jobs"].items():
        assert set(row) == JOB_KEYS, jid
        assert row["jid"] == jid
        for mid, entry in row["minions"].items():
            assert set(entry) - {"error"} == ENTRY_KEYS, (jid, mid)


def test_messages_are_compact_without_trailing_newline():
    view = replayed()
    for text in view.snapshot():
        assert not text.endswith("\n")
        assert text == json.dumps(strict_loads(text), separators=(",", ":"), ensure_ascii=False)


def test_cached_strings_are_reused_while_nothing_changes():
    view = replayed()
    minions, jobs = view.snapshot()
    assert view.render_minions() is minions
    assert view.render_jobs() is jobs
    # events that change neither table
    for tag, data in [
        ("salt/run/1/new", {"fun": "runner.x"}),
        ("salt/job/1/prog/m1/0", {}),
        ("salt/presence/present", {"present": ["minion-1"]}),  # resent, yet unchanged
        ("minion/refresh/minion-1", {}),
        ("salt/key", {"act": "pend", "id": "minion-1"}),
    ]:
        view.apply(tag, data, 1e10 - 1)
    view.set_grains("minion-1", {})  # unchanged
    view.expire(stamp_time(stamp_of(f"salt/job/{STUCK}/new")) + 1)  # nothing to time out
    assert view.snapshot()[0] is minions
    assert view.snapshot()[1] is jobs


def test_a_jobs_change_replaces_only_the_jobs_string():
    view = replayed()
    minions, jobs = view.snapshot()
    view.apply(
        f"salt/job/{STUCK}/ret/minion-2", {"id": "minion-2", "retcode": 0, "return": True}, 1.0
    )
    assert view.render_minions() is minions
    assert view.render_jobs() is not jobs
    assert view.tables()["jobs"][STUCK]["state"] == "complete"


def test_a_minions_change_replaces_only_the_minions_string():
    view = replayed()
    minions, jobs = view.snapshot()
    view.set_grains("minion-1", {"os": "Debian"})
    assert view.render_minions() is not minions
    assert view.render_jobs() is jobs
    assert view.tables()["minions"]["minion-1"]["grains"] == {"os": "Debian"}


def test_a_timeout_replaces_the_jobs_string():
    view = replayed()
    jobs = view.render_jobs()
    view.expire(stamp_time(stamp_of(f"salt/job/{STUCK}/new")) + 600)
    assert view.render_jobs() is not jobs


def test_payloads_json_cannot_express_are_converted():
    view = new_view()
    view.apply("salt/job/1/new", {"minions": ["m1"], "tgt": {"a", "b"}}, 1.0)
    view.apply(
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": 0, "return": {1: b"\xff", "n": float("nan")}},
        2.0,
    )
    row = strict_loads(view.render_jobs())["jobs"]["1"]
    assert sorted(row["tgt"]) == ["a", "b"]
    assert row["minions"]["m1"]["return"] == {"1": "\\xff", "n": "nan"}


# -- events out of order -------------------------------------------------------------------------


def test_return_before_its_new_event():
    view = new_view()
    view.apply("salt/job/7/ret/m1", {"id": "m1", "fun": "test.ping", "retcode": 0, "return": True,
                                     "_stamp": "T1"}, 1.0)  # fmt: skip
    row = view.tables()["jobs"]["7"]
    assert row["state"] == "complete"  # all we know is this one minion
    assert row["minions"] == {"m1": ok()}

    new = {"fun": "test.ping", "tgt": "*", "tgt_type": "glob", "minions": ["m1", "m2"],
           "user": "root", "_stamp": "T0"}  # fmt: skip
    view.apply("salt/job/7/new", new, 1.1)
    row = view.tables()["jobs"]["7"]
    assert row == job("7", "test.ping", "*", {"m1": ok(), "m2": PENDING}, state="running",
                      success=None, start="T0")  # fmt: skip

    view.apply("salt/job/7/ret/m2", {"id": "m2", "retcode": 0, "return": True, "_stamp": "T2"}, 1.2)
    row = view.tables()["jobs"]["7"]
    assert (row["state"], row["success"], row["end_time"]) == ("complete", True, "T2")


def test_return_before_a_new_event_naming_only_that_minion():
    view = new_view()
    view.apply("salt/job/7/ret/m1", {"id": "m1", "retcode": 2, "_stamp": "T1"}, 1.0)
    view.apply("salt/job/7/new", {"fun": "cmd.run", "minions": ["m1"], "user": "u"}, 1.1)
    assert view.tables()["jobs"]["7"] == job(
        "7", "cmd.run", None, {"m1": {"return": None, "retcode": 2, "success": False}},
        success=False, user="u", start="T1", end="T1",
    )  # fmt: skip


def test_duplicate_return_changes_nothing():
    view = replayed()
    tag = f"salt/job/{PING}/ret/minion-1"
    data = next(d for t, d in EVENTS if t == tag)
    before = view.tables()
    assert view.apply(tag, data, 1e9) == Update(jobs=True)
    assert view.tables() == before


def test_a_later_return_for_the_same_minion_wins():
    view = replayed()
    view.apply(
        f"salt/job/{PING}/ret/minion-1", {"id": "minion-1", "retcode": 1, "return": "boom"}, 1e9
    )
    row = view.tables()["jobs"][PING]
    assert row["minions"]["minion-1"] == {"return": "boom", "retcode": 1, "success": False}
    assert (row["state"], row["success"]) == ("complete", False)


def test_late_return_after_timeout_replaces_the_error():
    view = replayed()
    start = stamp_time(stamp_of(f"salt/job/{STUCK}/new"))
    view.expire(start + 600)
    view.apply(
        f"salt/job/{STUCK}/ret/minion-2",
        {"id": "minion-2", "retcode": 0, "return": True},
        start + 601,
    )
    row = view.tables()["jobs"][STUCK]
    assert row["minions"] == {"minion-1": ok(), "minion-2": ok()}
    assert (row["state"], row["success"]) == ("complete", True)
    view.expire(start + 700)  # nothing left to time out
    assert view.tables()["jobs"][STUCK] == row


def test_new_event_for_a_completed_job_adding_minions_reopens_it():
    view = replayed()
    view.apply(f"salt/job/{PING}/new", {"fun": "test.ping", "arg": [], "tgt": "*", "user": "root",
                                        "minions": ["minion-1", "minion-3"]}, 1e9)  # fmt: skip
    row = view.tables()["jobs"][PING]
    assert row["minions"] == {"minion-1": ok(), "minion-2": ok(), "minion-3": PENDING}
    assert (row["state"], row["success"], row["end_time"]) == ("running", None, None)
    view.apply(
        f"salt/job/{PING}/ret/minion-3", {"id": "minion-3", "retcode": 0, "_stamp": "T3"}, 1e9
    )
    row = view.tables()["jobs"][PING]
    assert (row["state"], row["success"], row["end_time"]) == ("complete", True, "T3")


def test_new_event_for_a_completed_job_adding_no_minions_keeps_it_complete():
    view = replayed()
    before = view.tables()["jobs"][PING]
    view.apply(f"salt/job/{PING}/new", {"fun": "test.ping", "arg": [], "tgt": "*",
                                        "tgt_type": "glob", "user": "root",
                                        "minions": ["minion-2"]}, 1e9)  # fmt: skip
    assert view.tables()["jobs"][PING] == before


def test_job_targeting_nobody_completes_at_once():
    view = new_view()
    view.apply("salt/job/1/new", {"fun": "test.ping", "minions": [], "_stamp": "T0"}, 1.0)
    row = view.tables()["jobs"]["1"]
    assert (row["state"], row["minions"], row["end_time"]) == ("complete", {}, "T0")


def test_return_from_a_minion_that_was_not_targeted_is_shown():
    view = new_view()
    view.apply("salt/job/1/new", {"minions": ["m1"]}, 1.0)
    view.apply("salt/job/1/ret/m2", {"id": "m2", "retcode": 0}, 1.1)
    row = view.tables()["jobs"]["1"]
    assert row["state"] == "running"
    assert row["minions"]["m2"]["success"] is True
    view.apply("salt/job/1/ret/m1", {"id": "m1", "retcode": 0}, 1.2)
    assert view.tables()["jobs"]["1"]["state"] == "complete"


# -- bounds ----------------------------------------------------------------------------------------


def test_max_jobs_evicts_the_oldest():
    view = new_view(ViewLimits(max_jobs=3))
    for n in range(5):
        view.apply(f"salt/job/{n}/new", {"minions": ["m1"]}, float(n))
        assert view.job_count == min(n + 1, 3)
    assert list(view.tables()["jobs"]) == ["2", "3", "4"]


def test_return_for_an_evicted_job_comes_back_as_a_new_one():
    view = new_view(ViewLimits(max_jobs=2))
    for n in range(3):
        view.apply(f"salt/job/{n}/new", {"minions": ["m1"]}, float(n))
    view.apply("salt/job/0/ret/m1", {"id": "m1", "retcode": 0}, 3.0)
    jobs = view.tables()["jobs"]
    assert list(jobs) == ["2", "0"]
    assert jobs["0"]["minions"] == {"m1": ok(None)}


def test_job_max_age_drops_old_jobs_complete_or_running():
    view = new_view(ViewLimits(job_max_age=100.0, job_timeout=1000.0))
    view.apply("salt/job/old-running/new", {"minions": ["m1"]}, 0.0)
    view.apply("salt/job/old-done/ret/m1", {"id": "m1", "retcode": 0}, 0.5)
    view.apply("salt/job/young/new", {"minions": ["m1"]}, 50.0)
    assert not view.expire(99.9).jobs
    assert view.job_count == 3
    assert view.expire(100.0) == Update(jobs=True)
    assert list(view.tables()["jobs"]) == ["old-done", "young"]
    view.expire(100.5)
    assert list(view.tables()["jobs"]) == ["young"]
    view.expire(150.0)
    assert view.job_count == 0
    assert view.render_jobs() == '{"jobs":{}}'


def test_age_counts_from_when_the_view_first_saw_the_job():
    view = new_view(ViewLimits(job_max_age=100.0))
    view.apply("salt/job/1/ret/m1", {"id": "m1", "retcode": 0}, 0.0)
    view.apply("salt/job/1/new", {"minions": ["m1", "m2"]}, 90.0)  # reopened, not re-dated
    view.expire(100.0)
    assert view.job_count == 0


# -- property: any sequence of inputs --------------------------------------------------------------

# max_jobs_bytes small enough that runs drop jobs for it and replace returns by markers
LIMITS = ViewLimits(max_jobs=4, job_max_age=60.0, job_timeout=15.0, max_jobs_bytes=700)
JIDS = ["20240101000000000001", "20240101000000000002", "3", "4", "5", "6"]
MIDS = ["m1", "m2", "m3", "", "a/b", "münchen"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=6)
)
json_ish = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(-3, 3), inner, max_size=4)
    ),
    max_leaves=6,
)
mid_lists = st.lists(st.sampled_from(MIDS) | json_ish, max_size=5)
realistic = st.fixed_dictionaries(
    {},
    optional={
        "_stamp": st.just("2024-01-01T00:00:00.000000") | json_ish,
        "fun": st.sampled_from(["test.ping", "state.apply"]) | json_ish,
        "tgt": st.sampled_from(["*", "m1"]) | mid_lists | json_ish,
        "tgt_type": st.sampled_from(["glob", "list", "compound"]) | json_ish,
        "minions": mid_lists | json_ish,
        "user": st.sampled_from(["root", "sudo_alice"]) | json_ish,
        "return": json_ish,
        "retcode": st.integers(-2, 3) | st.booleans() | json_ish,
        "success": st.booleans() | json_ish,
        "schedule": st.just("probe"),
        "act": st.sampled_from(["accept", "delete", "reject", "pend", "bogus"]) | json_ish,
        "id": st.sampled_from(MIDS) | json_ish,
        "result": st.booleans() | json_ish,
        "present": mid_lists | json_ish,
        "new": mid_lists | json_ish,
        "lost": mid_lists | json_ish,
    },
)
jids, mids = st.sampled_from(JIDS), st.sampled_from(MIDS)
tags = st.one_of(
    st.builds("salt/job/{}/new".format, jids),
    st.builds("salt/job/{}/ret/{}".format, jids, mids),
    st.builds("salt/job/{}/prog/{}/{}".format, jids, mids, st.integers(0, 3)),
    st.builds("salt/run/{}/{}".format, jids, st.sampled_from(["new", "ret"])),
    st.sampled_from(["salt/key", "salt/presence/present", "salt/presence/change"]),
    st.builds("salt/minion/{}/start".format, mids),
    st.builds("minion/refresh/{}".format, mids),
    st.text(max_size=20),
    json_ish,  # not even a string
)
# Job events get a stream of their own so that runs often hold more jobs than LIMITS.max_jobs,
# and see new/ret pairs for the same jid and minion.
job_tags = st.builds("salt/job/{}/new".format, jids) | st.builds(
    "salt/job/{}/ret/{}".format, jids, mids
)
job_data = st.fixed_dictionaries(
    {"minions": st.lists(mids, max_size=3)},
    optional={
        "_stamp": st.sampled_from(["T0", "T1"]),
        "retcode": st.integers(0, 2) | st.booleans() | st.none(),
        "success": st.booleans() | st.none(),
        "return": json_ish | st.text(min_size=90, max_size=100),  # over LIMITS' share: a marker
    },
)
dts = st.floats(0.0, 25.0)
step = st.one_of(
    st.tuples(st.just("apply"), tags, realistic | json_ish, dts),
    st.tuples(st.just("apply"), job_tags, job_data, dts),
    st.tuples(st.just("job"), job_tags, job_data, st.floats(0.0, 2.0)),  # returns name their id
    st.tuples(
        st.just("grains"),
        mids,
        st.none() | st.dictionaries(st.text(max_size=4), json_ish),
        dts,
    ),
    st.tuples(st.just("expire"), st.none(), st.none(), dts),
)
# Lengths drawn uniformly: hypothesis' own list sizes stay short, and the bounds need runs
# longer than max_jobs distinct jobs.
steps = st.integers(0, 30).flatmap(lambda n: st.lists(step, min_size=n, max_size=n))


def run_step(view: FormattedView, step: tuple[str, Any, Any, float], now: float) -> Update:
    kind, a, b, _ = step
    if kind == "job" and "/ret/" in a:
        b = {**b, "id": a.split("/ret/", 1)[1]}
    if kind in ("apply", "job"):
        return view.apply(a, b, now)
    if kind == "grains":
        return view.set_grains(a, b)
    return view.expire(now)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.lists(mids, max_size=3), steps=steps)
def test_any_sequence_of_inputs(seed, steps):
    view = new_view(LIMITS)
    view.seed({mid: {"os": "Debian"} for mid in seed}, accepted=ACCEPTED)
    now = 1_000.0
    born: dict[str, float] = {}  # jid -> when it (last) appeared in the table
    times = []
    for i, step in enumerate(steps):
        now += step[3]
        times.append(now)
        update = run_step(view, step, now)
        assert isinstance(update, Update)
        assert view.job_count <= LIMITS.max_jobs
        assert view.jobs_bytes <= LIMITS.max_jobs_bytes

        minions_text, jobs_text = view.render_minions(), view.render_jobs()
        tables = {**strict_loads(minions_text), **strict_loads(jobs_text)}
        assert tables == view.tables()
        assert view.snapshot() == [minions_text, jobs_text]
        # the size kept incrementally is the encoded table's
        wire_bytes = len(jobs_text.encode("utf-8", "surrogatepass")) - len('{"jobs":{}}')
        assert view.jobs_bytes == wire_bytes

        # The incrementally cached encoding equals a from-scratch one: the same inputs
        # replayed into a view that renders only once.
        fresh = new_view(LIMITS)
        fresh.seed({mid: {"os": "Debian"} for mid in seed}, accepted=ACCEPTED)
        for earlier, at in zip(steps[: i + 1], times, strict=True):
            run_step(fresh, earlier, at)
        assert fresh.snapshot() == [minions_text, jobs_text]

        jobs = tables["jobs"]
        for jid in list(born):
            if jid not in jobs:
                del born[jid]
        for jid, row in jobs.items():
            born.setdefault(jid, now)
            assert set(row) == JOB_KEYS
            assert row["jid"] == jid
            assert row["state"] in ("running", "complete")
            if row["state"] == "running":
                assert row["success"] is None
                assert any(e["success"] is None for e in row["minions"].values())
            else:
                assert isinstance(row["success"], bool)
                assert row["success"] == all(e["success"] is True for e in row["minions"].values())
            for entry in row["minions"].values():
                assert set(entry) - {"error"} == ENTRY_KEYS
        assert set(tables["minions"]) == set(view.minion_ids)
        for mid, row in tables["minions"].items():
            assert row["id"] == mid
            assert isinstance(row["grains"], dict)

        if step[0] == "expire":
            for jid, row in jobs.items():
                assert now - born[jid] < LIMITS.job_max_age, jid
                if row["state"] == "running":
                    assert now - born[jid] < LIMITS.job_timeout, jid
