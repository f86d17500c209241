"""salt_ws.view against the red team's findings (issue 9 follow-up): forged news after
eviction, forged returns, unbounded functions and arguments, per-audience render cost, and
the job's own fields shown through a forged return."""

from __future__ import annotations

import json
from typing import Any

from salt_ws.acl import Permissions
from salt_ws.view import FormattedView, ViewLimits

NOW = 1_700_000_000.0
J = "20240101000000000001"
UPTIME = Permissions([{"*": [{"cmd.run": {"args": ["uptime"]}}]}])
SHADOW = {"id": "m1", "fun": "cmd.run", "fun_args": ["cat /etc/shadow"], "return": "root:$6$"}


def seeded(limits: ViewLimits | None = None, mids: tuple[str, ...] = ("m1", "m2", "evil")):
    view = FormattedView(limits)
    view.seed({mid: {} for mid in mids})
    return view


def jobs(view: FormattedView, audience: Any = None) -> dict[str, Any]:
    return json.loads(view.render_jobs(audience))["jobs"]


def test_a_forged_new_after_eviction_lends_no_arguments_to_the_real_return():
    """Red team a1."""
    view = seeded(ViewLimits(max_jobs=10))
    new = {"fun": "cmd.run", "arg": ["cat /etc/shadow"], "minions": ["m1", "m2"], "user": "root"}
    view.apply(f"salt/job/{J}/new", new, NOW)
    for i in range(11):
        view.apply(f"salt/job/f{i}/new", {"fun": "test.ping", "minions": [], "arg": []}, NOW)
    assert J not in jobs(view)
    view.apply(f"salt/job/{J}/new", {"fun": "cmd.run", "arg": ["uptime"], "minions": ["m1"]}, NOW)
    view.apply(f"salt/job/{J}/ret/m1", SHADOW, NOW)
    assert "m1" not in jobs(view, UPTIME).get(J, {}).get("minions", {})


def test_a_forged_first_return_does_not_set_the_arguments_of_later_returns():
    """Red team a4: no new seen."""
    view = seeded()
    forged = {"id": "evil", "fun": "cmd.run", "fun_args": ["uptime"], "return": "up"}
    view.apply(f"salt/job/{J}/ret/evil", forged, NOW)
    view.apply(f"salt/job/{J}/ret/m1", SHADOW, NOW)
    assert list(jobs(view, UPTIME)[J]["minions"]) == ["evil"]


def test_a_new_after_the_first_return_lends_no_arguments_to_pending_minions():
    """Red team b7: a job first seen from a return; a forged new then names arguments the
    user may run and a minion still pending: the job must stay hidden from that user."""
    view = seeded()
    view.apply(f"salt/job/{J}/ret/m1", {**SHADOW, "retcode": 0, "success": True}, NOW)
    forged = {"fun": "cmd.run", "arg": ["uptime"], "minions": ["m2"], "tgt": "m2", "user": "root"}
    view.apply(f"salt/job/{J}/new", forged, NOW + 1)
    assert J not in jobs(view, UPTIME)
    assert set(jobs(view)[J]["minions"]) == {"m1", "m2"}  # the administrator still sees it


def test_a_return_naming_another_function_than_the_new_makes_the_job_admin_only():
    """Red team a5: the job's own fields (fun, user, times) must not leak through it."""
    view = seeded()
    user = Permissions([{"evil": ["test.*"]}], {"evil": {"evil"}})
    new = {"fun": "cmd.run", "arg": ["rm -rf /srv"], "minions": ["m1", "m2"], "user": "root"}
    view.apply(f"salt/job/{J}/new", new, NOW)
    view.apply(f"salt/job/{J}/ret/evil", {"id": "evil", "fun": "test.ping", "return": True}, NOW)
    assert jobs(view, user) == {}
    assert J in jobs(view) and view.refused["fun_conflict"] == 1


def test_absurd_functions_of_returns_are_not_kept():
    """Red team a11: a megabyte 'function' per return was kept, uncounted."""
    view = seeded(ViewLimits(max_jobs_bytes=1 << 20))
    for j in range(20):
        for mid in ("m1", "m2"):
            data = {"id": mid, "fun": "test.ping" + "x" * 100_000, "return": True}
            view.apply(f"salt/job/{j}/ret/{mid}", data, NOW)
    kept = sum(len(f or "") for job in view._jobs.values() for f in job.funs.values())
    assert kept == 0
    assert jobs(view, Permissions(["test.*"])) == {}  # administrator-only


def test_a_jobs_arguments_are_bounded_and_counted():
    """Red team a12: 20,000-item arguments per forged new were kept raw, uncounted."""
    view = seeded(ViewLimits(max_jobs_bytes=1 << 20))
    for j in range(50):
        arg = [f"{i:x}" for i in range(5_000)]  # ~300 KB of memory each, under 64 KiB of text
        view.apply(f"salt/job/{j}/new", {"fun": "test.ping", "minions": [], "arg": arg}, NOW)
    assert view.jobs_bytes + view.kept_bytes <= 1 << 20
    assert all(job.arg is None for job in view._jobs.values())  # over 64 KiB: unknown
    small = [f"{i:x}" for i in range(100)]
    for j in range(50, 100):
        view.apply(f"salt/job/{j}/new", {"fun": "test.ping", "minions": [], "arg": small}, NOW)
    assert view.kept_bytes > 100 * 50  # what is kept is counted
    assert view.jobs_bytes + view.kept_bytes <= 1 << 20


class Counting:
    """An audience that counts the checks the view makes."""

    admin = False
    key = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def may(self, fun: str | None, mid: str, arg: Any = None) -> bool:
        self.calls += 1
        return fun == "test.ping" and mid != "m2"

    def may_target(self, mid: str) -> bool:
        return True


def test_a_change_re_filters_only_the_job_that_changed():
    """Red team stall/stall2: every event re-filtered every job for every audience."""
    mids = tuple(f"m{i}" for i in range(50))
    view = seeded(mids=mids)
    for j in range(20):
        view.apply(f"salt/job/{j}/new", {"fun": "test.ping", "minions": list(mids)}, NOW)
    audience = Counting()
    first = view.render_jobs(audience)
    assert audience.calls >= 20 * 50
    audience.calls = 0
    view.apply("salt/job/3/ret/m1", {"id": "m1", "fun": "test.ping", "return": True}, NOW)
    after = view.render_jobs(audience)
    assert 0 < audience.calls <= 2 * 50
    assert after != first and jobs(view, audience)["3"]["minions"]["m1"]["return"] is True
    assert "m2" not in jobs(view, audience)["3"]["minions"]
    # forgetting the audience re-filters everything
    view.forget_audience(audience.key)
    audience.calls = 0
    assert view.render_jobs(audience) == after and audience.calls >= 20 * 50
