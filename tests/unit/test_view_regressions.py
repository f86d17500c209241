"""Regression tests: forged presence/return/start events, re-seed, timed-out end_time."""

from salt_ws.view import FormattedView, Update


def seeded():
    view = FormattedView()
    view.seed({"minion-1": {"os": "Debian"}, "minion-2": {"os": "Debian"}})
    return view


def test_presence_present_without_a_present_list_is_ignored():
    # What `salt-call event.send salt/presence/present` on any minion puts on the master bus
    # (masterapi._minion_event fires the whole load under the given tag, no blacklist).
    forged = {
        "cmd": "_minion_event",
        "id": "minion-1",
        "tag": "salt/presence/present",
        "data": {},
        "pretag": None,
    }
    for data in (forged, {}, None, {"present": "minion-1"}):
        view = seeded()
        view.apply("salt/presence/present", data, 1.0)
        assert sorted(view.minion_ids) == ["minion-1", "minion-2"], data


def test_forged_return_for_another_minion_is_ignored():
    view = seeded()
    view.apply("salt/job/1/new", {"minions": ["minion-1", "minion-2"], "fun": "test.ping"}, 1.0)
    forged = {
        "cmd": "_minion_event",
        "id": "minion-1",
        "tag": "salt/job/1/ret/minion-2",
        "data": {},
    }
    view.apply("salt/job/1/ret/minion-2", forged, 2.0)
    view.apply("salt/job/1/ret/minion-1", {"id": "minion-1", "retcode": 0, "return": True}, 3.0)
    row = view.tables()["jobs"]["1"]
    assert row["state"] == "running"  # minion-2 has not answered


def test_minion_start_for_another_id_is_ignored():
    view = seeded()
    forged = {
        "cmd": "_minion_event",
        "id": "minion-1",
        "tag": "salt/minion/ghost/start",
        "data": "x",
    }
    assert view.apply("salt/minion/ghost/start", forged, 1.0) == Update()
    assert "ghost" not in view.minion_ids


def test_reseed_drops_minions_the_master_no_longer_has():
    view = seeded()
    view.seed({"minion-1": {"os": "Debian"}})  # after a bus outage minion-2's key was deleted
    assert view.minion_ids == ["minion-1"]


def test_timed_out_job_has_an_end_time():
    view = FormattedView(accepted=["m1"])
    view.apply("salt/job/1/new", {"minions": ["m1"]}, 0.0)
    view.expire(600.0)
    row = view.tables()["jobs"]["1"]
    assert row["state"] == "complete"
    assert row["end_time"] is not None


def test_a_function_learnt_from_a_conflicting_new_is_shown_at_once():
    # A job known only from a return without a function, then a new naming a function not
    # shaped like one: the job shows the marker (and is administrators-only) right away,
    # not at its next change (its head was not re-encoded).
    view = seeded()
    view.apply("salt/job/1/ret/minion-1", {"id": "minion-1", "retcode": 0, "return": 1}, 1.0)
    assert view.tables()["jobs"]["1"]["fun"] == ""
    view.apply("salt/job/1/new", {"jid": "1", "fun": "bad fun!", "minions": ["minion-1"]}, 2.0)
    assert view.tables()["jobs"]["1"]["fun"] == "<not a function name>"


def test_a_function_learnt_from_a_return_over_the_entries_bound_is_shown_at_once():
    from salt_ws.view import ViewLimits

    view = FormattedView(ViewLimits(max_minions=1))
    view.seed({"minion-1": {}, "minion-2": {}})
    view.apply("salt/job/1/ret/minion-1", {"id": "minion-1", "retcode": 0, "return": 1}, 1.0)
    data = {"id": "minion-2", "fun": "test.ping", "retcode": 0, "return": True}
    view.apply("salt/job/1/ret/minion-2", data, 2.0)  # no room for its entry
    assert view.tables()["jobs"]["1"]["fun"] == "test.ping"
