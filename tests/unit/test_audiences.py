"""Audiences: what a non-admin user sees of the formatted view and of the event stream.

salt_ws.view.FormattedView renders per audience (a salt_ws.acl.Permissions); salt_ws.engine
.Engine.consume publishes each event to each audience subscribed to the hub, re-encoding only
what an audience sees cut down.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from typing import Any

import pytest
import salt.auth
import salt.utils.event

import salt_ws.engine
from salt_ws import wire
from salt_ws.acl import ADMIN, Permissions
from salt_ws.bus import LinkChange
from salt_ws.config import parse
from salt_ws.engine import Engine
from salt_ws.hub import Channel
from salt_ws.view import FormattedView
from tests.unit.conftest import Client

NOW = 1_700_000_000.0
GRAINS = {
    "web-1": {"os": "Debian", "role": "web"},
    "web-2": {"os": "Debian", "role": "web"},
    "db-1": {"os": "Rocky", "role": "db"},
    "minion-1": {"os": "Arch", "role": "other"},
}
ACL = [{"web-*": ["test.*"]}, {"L@db-1": ["cmd.*"]}]  # web-*: test.*, db-1: cmd.*
RESOLVED = {"web-*": {"web-1", "web-2"}, "L@db-1": {"db-1"}}


def scoped(resolved: dict[str, Any] | None = None) -> Permissions:
    return Permissions(ACL, resolved=RESOLVED if resolved is None else resolved)


_JIDS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh_jids() -> None:
    _JIDS.clear()


def J(n: str) -> str:
    """Job ``n`` as a Salt jid of about now (the engine dates a new's jid before it lets
    prog events use the new's function); the same jid for the whole test."""
    if n not in _JIDS:
        _JIDS[n] = datetime.datetime.now().strftime("%Y%m%d%H%M%S") + f"{int(n):06d}"
    return _JIDS[n]


def short(text: str) -> str:
    """``text`` with the jids of :func:`J` written as their job numbers again."""
    return re.sub(r"\b\d{14}0*(\d+)\b", r"\1", text)


def new(jid: str, fun: str, minions: list[str]) -> tuple[str, dict[str, Any]]:
    jid = J(jid)
    data = {"jid": jid, "fun": fun, "tgt": ",".join(minions), "tgt_type": "list"}
    return f"salt/job/{jid}/new", {**data, "minions": minions, "user": "root"}


def ret(jid: str, fun: str, mid: str, value: Any = True) -> tuple[str, dict[str, Any]]:
    jid = J(jid)
    data = {"jid": jid, "fun": fun, "id": mid, "return": value, "retcode": 0, "success": True}
    return f"salt/job/{jid}/ret/{mid}", data


JOBS = [
    new("1", "test.ping", ["web-1", "db-1", "minion-1"]),  # scoped: web-1's entry only
    new("2", "cmd.run", ["db-1"]),  # scoped: all of it
    new("3", "cmd.run", ["web-1"]),  # scoped: nothing
    new("4", "grains.items", ["minion-1"]),  # scoped: nothing
    new("5", "test.ping", []),  # targeted nobody: nothing to see for the scoped user
    ret("1", "test.ping", "web-1"),
    ret("1", "test.ping", "db-1"),
]


@pytest.fixture
def view() -> FormattedView:
    view = FormattedView()
    view.seed(GRAINS)
    for tag, data in JOBS:
        view.apply(tag, data, NOW)
    return view


def minions_of(message: str) -> dict[str, Any]:
    return json.loads(message)["minions"]


def jobs_of(message: str) -> dict[str, Any]:
    return {short(jid): job for jid, job in json.loads(message)["jobs"].items()}


# -- FormattedView per audience ----------------------------------------------------------------


def test_a_scoped_user_sees_only_the_minions_they_may_target(view):
    shown = minions_of(view.render_minions(scoped()))
    assert shown == {mid: {"id": mid, "grains": GRAINS[mid]} for mid in ("web-1", "web-2", "db-1")}


def test_a_scoped_user_sees_only_jobs_they_may_run_with_only_those_minions(view):
    full = jobs_of(view.render_jobs())
    shown = jobs_of(view.render_jobs(scoped()))
    assert sorted(shown) == ["1", "2"]
    assert shown["2"] == full["2"]
    assert shown["1"]["minions"] == {"web-1": full["1"]["minions"]["web-1"]}
    # the target expression named other minions: the cut-down job names only the user's
    assert full["1"]["tgt"] == "web-1,db-1,minion-1"
    assert (shown["1"]["tgt"], shown["1"]["tgt_type"]) == (["web-1"], "list")
    assert {k: v for k, v in shown["1"].items() if k not in ("minions", "tgt", "tgt_type")} == {
        k: v for k, v in full["1"].items() if k not in ("minions", "tgt", "tgt_type")
    }


def test_a_user_without_minion_permissions_sees_empty_tables(view):
    nobody = Permissions(["@runner", {"@wheel": [".*"]}])
    assert view.snapshot(nobody) == ['{"minions":{}}', '{"jobs":{}}']


def test_a_global_function_shows_every_minion_and_its_jobs(view):
    pinger = Permissions(["test.ping"])
    assert sorted(minions_of(view.render_minions(pinger))) == sorted(GRAINS)
    shown = jobs_of(view.render_jobs(pinger))
    assert sorted(shown) == ["1"]  # job 5 targeted nobody: no minion to see it on
    assert shown["1"] == jobs_of(view.render_jobs())["1"]


@pytest.mark.parametrize("admin", [None, Permissions([".*"]), Permissions(["@events"])])
def test_admins_and_no_audience_see_everything_shared(view, admin):
    assert view.render_minions(admin) is view.render_minions()
    assert view.render_jobs(admin) is view.render_jobs()
    assert sorted(minions_of(view.render_minions(admin))) == sorted(GRAINS)
    assert sorted(jobs_of(view.render_jobs(admin))) == ["1", "2", "3", "4", "5"]


def test_snapshot_is_the_audiences_minions_then_jobs(view):
    perms = scoped()
    assert view.snapshot(perms) == [view.render_minions(perms), view.render_jobs(perms)]
    assert view.snapshot(perms) != view.snapshot()


def test_an_audiences_tables_are_cached(view):
    perms = scoped()
    assert view.render_minions(perms) is view.render_minions(perms)
    assert view.render_jobs(perms) is view.render_jobs(perms)
    same_key = scoped()  # another Permissions with the same auth list shares the cache
    assert view.render_jobs(same_key) is view.render_jobs(perms)


def test_a_job_change_invalidates_every_audiences_jobs_table(view):
    perms = scoped()
    before_scoped, before_full = view.render_jobs(perms), view.render_jobs()
    view.apply(*ret("1", "test.ping", "web-1", "changed"), NOW + 1)
    after = jobs_of(view.render_jobs(perms))
    assert after["1"]["minions"]["web-1"]["return"] == "changed"
    assert view.render_jobs() != before_full
    assert view.render_jobs(perms) != before_scoped


def test_a_new_allowed_job_appears_for_the_audience(view):
    perms = scoped()
    view.render_jobs(perms)
    view.apply(*new("6", "test.version", ["web-2"]), NOW + 1)
    assert "6" in jobs_of(view.render_jobs(perms))


def test_a_minion_change_invalidates_every_audiences_minions_table(view):
    perms = scoped()
    view.render_minions(perms)
    view.set_grains("web-1", {"os": "Debian", "role": "changed"})
    assert minions_of(view.render_minions(perms))["web-1"]["grains"]["role"] == "changed"
    view.presence(["web-2", "db-1", "minion-1"])  # web-1 left
    assert sorted(minions_of(view.render_minions(perms))) == ["db-1", "web-2"]


def test_forget_audience_drops_its_cached_tables_after_a_re_resolve(view):
    perms = scoped()
    minions, jobs = view.render_minions(perms), view.render_jobs(perms)
    perms.resolve({"web-*": {"web-1"}, "L@db-1": set()})
    assert view.render_minions(perms) is minions  # cached until told
    view.forget_audience(perms.key)
    assert sorted(minions_of(view.render_minions(perms))) == ["web-1"]
    assert sorted(jobs_of(view.render_jobs(perms))) == ["1"]
    assert view.render_jobs(perms) is not jobs


def test_forget_audience_leaves_other_audiences_cached(view):
    perms, pinger = scoped(), Permissions(["test.ping"])
    full, other = view.render_jobs(), view.render_jobs(pinger)
    view.forget_audience(perms.key)
    view.forget_audience("never-seen")
    assert view.render_jobs() is full
    assert view.render_jobs(pinger) is other


# -- Engine: per-audience fan-out ---------------------------------------------------------------


class FakeFleet:
    """Resolves ACL targets from a fixed table (stands in for salt_ws.fleet.Fleet)."""

    def __init__(self, resolved: dict[str, set[str]]) -> None:
        self.resolved = resolved
        self.asked: list[set[str]] = []

    def resolve(self, targets: Any) -> dict[str, set[str]]:
        self.asked.append(set(targets))
        return {t: set(self.resolved.get(t, ())) for t in targets}


class FakeAuth:
    """Stands in for salt_ws.auth.Authenticator: permissions by user name."""

    def __init__(self, perms: dict[str, list[Any]]) -> None:
        self.perms = perms

    def auth_list(self, session: dict[str, Any]) -> list[Any]:
        return self.perms[session["name"]]


@pytest.fixture
def engine(monkeypatch) -> Engine:
    """An Engine that must not touch Salt or the network."""

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no I/O expected")

    monkeypatch.setattr(salt.utils.event, "get_master_event", no_io)
    monkeypatch.setattr(salt.auth, "LoadAuth", no_io)
    for name in ("BusReader", "StatusServer", "Authenticator", "Fleet"):
        monkeypatch.setattr(salt_ws.engine, name, no_io)
    engine = Engine(opts={}, config=parse({"disable_ssl": True}))
    engine.view.set_accepted(GRAINS)  # as read from the master's keys at start
    return engine


@pytest.fixture
def perms(engine) -> Permissions:
    """The scoped audience, registered with the engine as admit() would."""
    perms = scoped()
    engine.audiences[perms.key] = perms
    return perms


LOST = LinkChange(False, NOW)


def stream() -> list[Any]:
    """Events of jobs 1 and 2 and others (jids of now: see :func:`J`)."""
    return [
        new("1", "test.ping", ["web-1", "db-1"]),  # scoped: cut down to web-1
        ("salt/auth", {"act": "accept", "id": "web-1"}),  # admin only
        (f"salt/job/{J('1')}/prog/web-1/0", {"data": {"ret": {}}}),  # test.ping (job 1) on web-1
        ret("1", "test.ping", "web-1"),  # scoped: as is
        ret("1", "test.ping", "db-1"),  # admin only
        new("2", "cmd.run", ["db-1"]),  # scoped: as is
        (f"salt/job/{J('2')}/prog/web-1/0", {"data": {}}),  # cmd.run on web-1: admin only
        ("salt/key", {"act": "delete", "id": "web-2", "result": True}),  # admin only
        ("custom/tag", {"x": 1}),  # admin only
    ]


def test_admins_get_every_event_and_a_scoped_audience_only_its_own(engine, perms):
    admin, limited = Client(engine), Client(engine, perms.key)
    engine.consume([*stream()[:3], LOST, *stream()[3:]])
    everything = admin.received()
    shown = limited.received()

    expected = [wire.encode_event(tag, data) for tag, data in stream()]
    notice = everything.pop(3)
    assert everything == expected
    assert json.loads(notice)["tag"] == wire.GAP_TAG

    cut_new = {**stream()[0][1], "minions": ["web-1"], "tgt": ["web-1"], "tgt_type": "list"}
    assert shown == [
        wire.encode_event(stream()[0][0], cut_new),
        expected[2],
        notice,
        expected[3],
        expected[5],
    ]
    # one encoding shared by everyone who sees an event unchanged; re-encoded only when cut
    assert shown[1] is everything[2]
    assert shown[2] is notice
    assert shown[3] is everything[3]
    assert shown[4] is everything[5]


def test_a_cut_down_new_event_does_not_change_what_admins_get(engine, perms):
    admin, limited = Client(engine), Client(engine, perms.key)
    tag, data = new("7", "test.ping", ["db-1", "web-2", "minion-1"])
    data["missing"] = ["web-9"]
    engine.consume([(tag, data)])
    assert admin.received() == [wire.encode_event(tag, data)]
    [cut] = limited.received()
    assert json.loads(cut)["data"]["minions"] == ["web-2"]
    assert json.loads(cut)["data"]["missing"] == []
    assert data["minions"] == ["db-1", "web-2", "minion-1"]


def test_engine_notices_reach_every_audience(engine, perms):
    clients = [Client(engine), Client(engine, perms.key), Client(engine, "unregistered")]
    engine.consume([("salt/auth", {}), LOST])
    admin, limited, unknown = (client.received() for client in clients)
    assert len(admin) == 2
    assert limited == unknown == [admin[1]]
    assert limited[0] is admin[1]


def test_an_unregistered_audience_gets_no_events(engine):
    unknown = Client(engine, "not registered")
    engine.consume(stream())
    assert unknown.received() == []


def test_clients_of_one_audience_share_its_messages(engine, perms):
    first, second = Client(engine, perms.key), Client(engine, perms.key)
    engine.consume(stream()[:1])
    [a], [b] = first.received(), second.received()
    assert a is b  # the cut-down event is encoded once per audience, not per client


def test_prog_events_follow_the_function_of_a_job_seen_in_an_earlier_batch(engine, perms):
    limited = Client(engine, perms.key)
    engine.consume([new("8", "test.ping", ["web-1"])])
    engine.consume([prog("8", "web-1"), prog("9", "web-1")])
    assert tags_of(limited.received()) == [
        "salt/job/8/new",
        "salt/job/8/prog/web-1/0",
    ]


def test_view_changes_are_published_per_audience(engine, perms):
    admin = Client(engine, channel=Channel.FORMATTED_EVENTS)
    limited = Client(engine, perms.key, Channel.FORMATTED_EVENTS)
    unknown = Client(engine, "unregistered", Channel.FORMATTED_EVENTS)
    engine.view_changed(engine.view.seed(GRAINS))
    engine.consume(JOBS)

    full_minions, full_jobs = admin.received()
    assert full_minions == engine.view.render_minions()
    assert full_jobs == engine.view.render_jobs()
    assert sorted(jobs_of(full_jobs)) == ["1", "2", "3", "4", "5"]

    scoped_minions, scoped_jobs = limited.received()
    assert scoped_minions == engine.view.render_minions(perms)
    assert sorted(minions_of(scoped_minions)) == ["db-1", "web-1", "web-2"]
    assert scoped_jobs == engine.view.render_jobs(perms)
    assert sorted(jobs_of(scoped_jobs)) == ["1", "2"]
    assert sorted(jobs_of(scoped_jobs)["1"]["minions"]) == ["web-1"]
    assert unknown.received() == []


def test_a_job_update_sends_only_the_jobs_table(engine, perms):
    limited = Client(engine, perms.key, Channel.FORMATTED_EVENTS)
    engine.consume([new("1", "test.ping", ["web-1"])])
    [message] = limited.received()
    assert set(json.loads(message)) == {"jobs"}


def test_snapshot_is_per_audience(engine, perms):
    engine.view_changed(engine.view.seed(GRAINS))
    engine.consume(JOBS)
    assert engine.snapshot(Channel.FORMATTED_EVENTS, perms) == engine.view.snapshot(perms)
    assert engine.snapshot(Channel.FORMATTED_EVENTS, None) == engine.view.snapshot()
    assert engine.snapshot(Channel.ALL_EVENTS, perms) == []


# -- Engine: what a forging minion cannot make a limited user see (issue 9) --------------------


def tags_of(messages: list[str]) -> list[str]:
    return [short(json.loads(m)["tag"]) for m in messages]


def prog(jid: str, mid: str) -> tuple[str, dict[str, Any]]:
    return f"salt/job/{J(jid)}/prog/{mid}/0", {"data": {"ret": {"secret": "output"}}}


def test_a_forged_second_new_does_not_rewrite_the_jobs_function(engine, perms):
    """Finding 2: a cmd.run job on web-1 (not allowed) re-announced as test.ping (allowed)."""
    admin, limited = Client(engine), Client(engine, perms.key)
    stream = [
        new("20", "cmd.run", ["web-1"]),
        new("20", "test.ping", ["web-1"]),  # forged by a minion
        prog("20", "web-1"),
        ret("20", "test.ping", "web-1"),  # forged too
    ]
    engine.consume(stream)
    assert len(admin.received()) == len(stream)
    assert limited.received() == []
    engine.consume([prog("20", "web-1")])  # a later batch: still the job's first function
    assert limited.received() == []


def test_a_forged_ret_naming_another_function_is_hidden(engine, perms):
    admin, limited = Client(engine), Client(engine, perms.key)
    engine.consume([new("21", "cmd.run", ["web-1"]), ret("21", "test.ping", "web-1")])
    assert len(admin.received()) == 2
    assert limited.received() == []


def test_a_job_learned_from_its_first_return_keeps_that_function(engine, perms):
    admin, limited = Client(engine), Client(engine, perms.key)
    engine.consume([ret("22", "test.ping", "web-1"), prog("22", "web-1")])
    # (its prog: a function only from a new, red team a3)
    assert tags_of(limited.received()) == ["salt/job/22/ret/web-1"]
    engine.consume([ret("22", "test.version", "web-2"), prog("22", "web-1")])
    assert limited.received() == []  # another function: the job is administrator-only now
    assert len(admin.received()) == 4


def test_prog_of_an_unknown_job_is_hidden(engine, perms):
    limited = Client(engine, perms.key)
    engine.consume([prog("23", "web-1")])
    assert limited.received() == []


def test_argument_restricted_permissions_check_the_jobs_arguments(engine):
    """Finding 3: {"cmd.run": {"args": ["uptime"]}} is not every cmd.run."""
    perms = Permissions([{"web-*": [{"cmd.run": {"args": ["uptime$"]}}]}], resolved=RESOLVED)
    engine.audiences[perms.key] = perms
    limited = Client(engine, perms.key)
    bad_tag, bad = new("30", "cmd.run", ["web-1"])
    good_tag, good = new("31", "cmd.run", ["web-1"])
    bad["arg"], good["arg"] = ["cat /etc/shadow"], ["uptime"]
    engine.consume([(bad_tag, bad), ret("30", "cmd.run", "web-1"), prog("30", "web-1")])
    assert limited.received() == []
    good_ret = ret("31", "cmd.run", "web-1")
    good_ret[1]["fun_args"] = ["uptime"]  # a return passes with its own arguments too
    engine.consume([(good_tag, good), good_ret, prog("31", "web-1")])
    assert tags_of(limited.received()) == [
        "salt/job/31/new",
        "salt/job/31/ret/web-1",
        "salt/job/31/prog/web-1/0",
    ]


def test_a_return_without_a_known_new_is_checked_with_its_own_fun_args(engine):
    perms = Permissions([{"web-*": [{"cmd.run": {"args": ["uptime$"]}}]}], resolved=RESOLVED)
    engine.audiences[perms.key] = perms
    limited = Client(engine, perms.key)
    (bad_tag, bad), (good_tag, good) = ret("32", "cmd.run", "web-1"), ret("33", "cmd.run", "web-1")
    bad["fun_args"], good["fun_args"] = ["cat /etc/shadow"], ["uptime"]
    engine.consume([(bad_tag, bad), (good_tag, good), prog("33", "web-1")])
    # the prog: the job's arguments are unknown, and an argument restriction grants nothing
    assert tags_of(limited.received()) == ["salt/job/33/ret/web-1"]


@pytest.mark.parametrize(
    "event",
    [
        ("salt_ws/bus/lost", {"missed": True, "reason": "forged"}),
        ("salt_ws/bus/restored", {"missed": True}),
        ("salt_ws/stream/anything", {}),
        ("salt_ws/bus/lost", None),  # no payload is not the engine's notice either
    ],
)
def test_a_bus_event_with_the_engines_prefix_is_for_administrators_only(engine, perms, event):
    """Finding 9: only notices the engine made itself reach every audience."""
    admin, limited, unknown = Client(engine), Client(engine, perms.key), Client(engine, "x")
    engine.consume([event, LOST])
    everything = admin.received()
    assert len(everything) == 2
    assert limited.received() == unknown.received() == [everything[1]]
    assert json.loads(everything[1])["data"]["reason"] != "forged"


def test_a_cut_down_new_names_only_the_users_minions(engine, perms):
    """Finding 10: the cut copy's tgt is the allowed minions, tgt_type "list"."""
    limited = Client(engine, perms.key)
    tag, data = new("40", "test.ping", ["db-1", "web-2"])
    data.update(tgt="db-1,web-2,secret-9", tgt_type="list", missing=["secret-9"])
    engine.consume([(tag, data)])
    [cut] = limited.received()
    shown = json.loads(cut)["data"]
    assert (shown["tgt"], shown["tgt_type"]) == (["web-2"], "list")
    assert (shown["minions"], shown["missing"]) == (["web-2"], [])
    assert "db-1" not in cut and "secret-9" not in cut


# -- Engine: admitting sessions and refreshing their targets ------------------------------------


def test_admit_resolves_targets_once_per_permission_set(engine):
    fleet = FakeFleet(RESOLVED)
    engine.fleet = fleet  # type: ignore[assignment]
    engine.auth = FakeAuth({"alice": ACL, "bob": ACL, "root": [".*", "@runner"]})  # type: ignore[assignment]

    async def main() -> list[Permissions]:
        return [
            await engine.admit({"name": name, "eauth": "pam"}) for name in ("alice", "bob", "root")
        ]

    alice, bob, root = asyncio.run(main())
    assert alice is bob  # one audience for one permission set
    assert fleet.asked == [{"web-*", "L@db-1"}]  # resolved once; root has no targets
    assert alice.may("test.ping", "web-2") and not alice.may("test.ping", "db-1")
    assert root.admin and root.key == ADMIN
    assert engine.audiences == {alice.key: alice, ADMIN: root}


def test_refresh_re_resolves_targets_and_forgets_the_cached_view(engine, perms):
    engine.view_changed(engine.view.seed(GRAINS))
    before = engine.view.render_minions(perms)
    assert sorted(minions_of(before)) == ["db-1", "web-1", "web-2"]
    engine.fleet = FakeFleet({"web-*": {"web-1"}})  # type: ignore[assignment]
    asyncio.run(engine._refresh_audiences())
    assert sorted(minions_of(engine.view.render_minions(perms))) == ["web-1"]
    assert not perms.may("cmd.run", "db-1")


def test_include_master_names_the_master_in_both_tables():
    import json as _json

    from salt_ws.view import FormattedView

    view = FormattedView(master="master-b", accepted=["m1"])
    view.apply("salt/minion/m1/start", {"id": "m1"}, 1.0)
    assert _json.loads(view.render_minions()) == {
        "minions": {"m1": {"id": "m1", "grains": {}}},
        "master": "master-b",
    }
    assert _json.loads(view.render_jobs()) == {"jobs": {}, "master": "master-b"}


def test_a_new_is_cut_to_accepted_minions_once_before_any_audience(engine, perms):
    """Red team a7: a 150,000-id forged new cost every audience a check per id."""
    limited = Client(engine, perms.key)
    tag, data = new("40", "test.ping", ["web-1"] + [f"x{i}" for i in range(1000)])
    calls = []
    real = perms.allowed
    perms.allowed = lambda fun, mids, arg=None: (
        calls.append(len(list(mids))) or real(fun, mids, arg)
    )
    engine.consume([(tag, data)])
    [message] = limited.received()
    assert json.loads(message)["data"]["minions"] == ["web-1"]
    assert max(calls) == 1


@pytest.mark.parametrize("marker", [LOST, LinkChange(True, NOW)], ids=["lost", "restored"])
def test_a_bus_gap_restarts_what_the_job_registry_vouches_for(engine, marker):
    """Red team b3: after a gap the real new of a running job may be lost; a new forged
    for it afterwards must not lend its prog events a function."""
    engine._spawn = lambda coro: coro.close()  # (the view's re-seed is not under test)
    before = time.time()
    engine.consume([marker])
    assert engine.job_funs.watching_since >= before


def test_dropped_events_restart_what_the_job_registry_vouches_for(engine):
    from salt_ws.bus import Dropped

    engine._spawn = lambda coro: coro.close()
    before = time.time()
    engine.consume([Dropped(NOW)])
    assert engine.job_funs.watching_since >= before
