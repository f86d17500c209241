"""A new whose minion list Salt trimmed (max_event_size): whom it targeted is unknown."""

from __future__ import annotations

from salt_ws import events as ev
from salt_ws.view import FormattedView, ViewLimits

NOW = 1_764_590_400.0  # 2025-12-01T12:00:00Z
JID = "20251201120000000001"
NEW = {"fun": "test.ping", "tgt": "*", "tgt_type": "glob", "user": "root", "arg": []}


def test_parse_marks_a_trimmed_minion_list():
    trimmed = ev.parse(f"salt/job/{JID}/new", {**NEW, "minions": "VALUE_TRIMMED"})
    listed = ev.parse(f"salt/job/{JID}/new", {**NEW, "minions": ["m1"]})
    assert isinstance(trimmed, ev.JobNew) and trimmed.trimmed and trimmed.minions == ()
    assert isinstance(listed, ev.JobNew) and not listed.trimmed


def test_a_trimmed_new_runs_until_job_timeout_then_completes_with_what_returned():
    view = FormattedView(ViewLimits(job_timeout=600), accepted=["m1", "m2"])
    view.apply(f"salt/job/{JID}/new", {**NEW, "minions": "VALUE_TRIMMED"}, NOW)
    assert view.tables()["jobs"][JID]["state"] == "running"  # not "complete": nobody known
    ret = {
        "id": "m1",
        "fun": "test.ping",
        "fun_args": [],
        "return": True,
        "retcode": 0,
        "success": True,
        "jid": JID,
    }
    view.apply(f"salt/job/{JID}/ret/m1", ret, NOW + 1)
    job = view.tables()["jobs"][JID]
    assert job["state"] == "running" and job["minions"]["m1"]["return"] is True
    view.expire(NOW + 10)
    assert view.tables()["jobs"][JID]["state"] == "running"
    view.expire(NOW + 601)
    job = view.tables()["jobs"][JID]
    assert job["state"] == "complete" and list(job["minions"]) == ["m1"]
