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
