"""FormattedView on a master of masters: minions behind syndics and their jobs.

Event shapes follow Salt 3008.4: a syndic forwards its master's events as
``syndic/<syndic id>/<tag>`` (Salt also re-fires most of them under the plain
tag, after the prefixed one; 3007 fires the plain one first), and forwards
returns, which the master of masters fires as ordinary ``salt/job/<jid>/ret/<id>``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from salt_ws import events as ev
from salt_ws.view import FormattedView, LoadGrains, ViewLimits

WAIT = 5.0  # Salt's default syndic_wait
JID = "20261128090000000001"
SECONDS = itertools.cycle(range(1, 60))


# keys accepted on the master of masters: its direct minion and the syndics below it
ACCEPTED = ["direct-1", "direct-2", "syndic-1", "syndic-2", "top", "a-top"]


def mom(**limits: Any) -> FormattedView:
    view = FormattedView(ViewLimits(syndic_wait=WAIT, **limits), syndics=True)
    view.seed({"direct-1": {"os": "Debian"}}, accepted=ACCEPTED)
    return view


def new(jid: str, minions: list[str], tgt: str = "*", fun: str = "test.ping") -> dict:
    stamp = "2026-11-28T09:00:00.000001+00:00"
    return {"jid": jid, "tgt": tgt, "tgt_type": "glob", "fun": fun, "arg": [], "user": "root",
            "minions": minions, "missing": [], "_stamp": stamp}  # fmt: skip


def ret(jid: str, mid: str, value: Any = True, retcode: int = 0, fun: str = "test.ping") -> dict:
    stamp = f"2026-11-28T09:00:{next(SECONDS):02d}+00:00"  # each return later than the last
    return {"id": mid, "jid": jid, "fun": fun, "return": value, "retcode": retcode,
            "success": retcode == 0, "_stamp": stamp}  # fmt: skip


def presence(mids: list[str]) -> dict:
    return {"present": mids, "_stamp": "2026-11-28T09:00:00+00:00"}


def job(view: FormattedView, jid: str = JID) -> dict:
    return view.tables()["jobs"][jid]


def minions(view: FormattedView) -> dict:
    return view.tables()["minions"]


# -- parsing --------------------------------------------------------------------------------


def test_forwarded_tags_parse_to_the_inner_event_and_the_syndic_chain():
    fwd = ev.parse(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"]))
    assert isinstance(fwd, ev.Forwarded)
    assert fwd.via == ("syndic-1",) and fwd.syndic == "syndic-1"
    assert isinstance(fwd.event, ev.JobNew) and fwd.event.minions == ("behind-1",)

    nested = ev.parse("syndic/top/syndic/low/salt/presence/present", presence(["b"]))
    assert nested == ev.Forwarded(("top", "low"), ev.PresencePresent(frozenset({"b"})))


@pytest.mark.parametrize(
    "tag",
    [
        "syndic//salt/presence/present",  # no syndic id
        "syndic/s1",  # nothing forwarded
        "/".join(["syndic/s"] * 9) + "/salt/presence/present",  # deeper than any real topology
    ],
)
def test_odd_forwarded_tags_parse_to_nothing(tag):
    assert ev.parse(tag, presence(["b"])) is None


@pytest.mark.parametrize("tag", ["syndic/s1/salt/run/1/new", "syndic/s1/salt/auth", "syndic/s1/x"])
def test_untracked_forwarded_events_still_name_their_syndic(tag):
    assert ev.parse(tag, {"id": "x"}) == ev.Forwarded(("s1",), None)


def test_any_forwarded_event_makes_its_syndic_known():
    """Salt 3007, presence off on the syndic's master: its auth events still tell."""
    view = mom()
    view.apply("syndic/syndic-1/salt/auth", {"id": "behind-1", "act": "accept"}, 0.0)
    view.apply(f"salt/job/{JID}/new", new(JID, ["direct-1", "syndic-1"]), 0.1)
    assert set(job(view)["minions"]) == {"direct-1"}


def test_a_syndic_start_must_name_the_syndic():
    assert ev.parse("salt/syndic/s1/start", {"id": "s1"}) == ev.SyndicStart("s1")
    assert ev.parse("salt/syndic/s1/start", {"id": "other"}) is None


# -- jobs ---------------------------------------------------------------------------------


def test_a_job_expects_the_minions_a_syndic_announced_instead_of_the_syndic():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, ["direct-1", "syndic-1"]), 0.0)
    view.apply(f"salt/job/{JID}/ret/direct-1", ret(JID, "direct-1"), 0.2)
    # syndic-1 is not known as a syndic yet: the job waits for it like a minion
    assert job(view)["state"] == "running"
    assert set(job(view)["minions"]) == {"direct-1", "syndic-1"}

    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1", "behind-2"]), 0.6)
    assert set(job(view)["minions"]) == {"direct-1", "behind-1", "behind-2"}
    assert view.syndic_ids == ["syndic-1"]

    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1"), 1.0)
    last = ret(JID, "behind-2", False, 1)
    view.apply(f"salt/job/{JID}/ret/behind-2", last, 1.1)
    # every announced minion answered, but another syndic may still report (syndic_wait)
    assert job(view)["state"] == "running"
    assert view.expire(WAIT - 0.1).jobs is False

    assert view.expire(WAIT).jobs is True
    done = job(view)
    assert done["state"] == "complete" and done["success"] is False
    assert done["end_time"] == last["_stamp"]  # the last return's time, not the wait's
    assert done["minions"]["behind-2"] == {"return": False, "retcode": 1, "success": False}
    # the minions that answered through the syndic are listed, marked with it
    assert minions(view)["behind-1"] == {"id": "behind-1", "grains": {}, "syndic": "syndic-1"}
    assert "syndic" not in minions(view)["direct-1"]


def test_a_known_syndic_is_never_expected_as_a_minion():
    view = mom()
    view.apply("salt/syndic/syndic-1/start", {"id": "syndic-1", "cmd": "_minion_event"}, 0.0)
    view.apply(f"salt/job/{JID}/new", new(JID, ["direct-1", "syndic-1"]), 0.1)
    assert set(job(view)["minions"]) == {"direct-1"}


def test_syndics_known_at_seed_come_from_the_master():
    view = FormattedView(ViewLimits(syndic_wait=WAIT), syndics=True)
    view.seed({}, syndics=["syndic-1"])
    view.apply(f"salt/job/{JID}/new", new(JID, ["syndic-1"]), 0.0)
    assert job(view)["minions"] == {}
    assert view.syndic_ids == ["syndic-1"]


def test_returns_that_overtake_the_syndics_announcement_count():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, [], tgt="behind-*"), 0.0)
    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1"), 0.5)
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"]), 0.6)
    view.expire(WAIT)
    assert job(view)["state"] == "complete" and job(view)["success"] is True
    assert minions(view)["behind-1"]["syndic"] == "syndic-1"


def test_a_job_that_only_syndics_can_answer_waits_for_them():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, [], tgt="behind-1"), 0.0)
    assert job(view)["state"] == "running"  # the master of masters itself matched nobody
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"]), 0.5)
    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1"), 0.7)
    view.expire(WAIT)
    assert job(view)["state"] == "complete"
    assert set(job(view)["minions"]) == {"behind-1"}


def test_a_job_nobody_answers_completes_after_syndic_wait():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, [], tgt="nobody"), 0.0)
    view.expire(WAIT - 1)
    assert job(view)["state"] == "running"
    view.expire(WAIT)
    assert job(view)["state"] == "complete" and job(view)["minions"] == {}


def test_a_late_announcement_reopens_a_completed_job():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, ["direct-1"]), 0.0)
    view.apply(f"salt/job/{JID}/ret/direct-1", ret(JID, "direct-1"), 0.1)
    view.expire(WAIT)
    assert job(view)["state"] == "complete"
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"]), WAIT + 1)
    assert job(view)["state"] == "running" and job(view)["end_time"] is None
    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1"), WAIT + 2)
    assert job(view)["state"] == "complete"


def test_a_syndic_that_never_forwards_the_return_times_the_minion_out():
    view = mom(job_timeout=60)
    view.apply(f"salt/job/{JID}/new", new(JID, ["syndic-1"]), 0.0)
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"]), 0.5)
    view.expire(60)
    entry = job(view)["minions"]["behind-1"]
    assert job(view)["state"] == "complete" and entry["success"] is False and entry["error"]


def test_the_syndics_announcement_alone_creates_a_job_the_engine_missed():
    view = mom()
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"], fun="cmd.run"), 0.0)
    assert job(view)["fun"] == "cmd.run" and job(view)["state"] == "running"


def test_nested_syndics_each_stand_for_their_own_minions():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, ["top"]), 0.0)
    # top's master targeted its own minion and the lower syndic's id ...
    view.apply(f"syndic/top/salt/job/{JID}/new", new(JID, ["top-minion", "low"]), 0.2)
    # ... and the lower syndic's master, forwarded through both, its own minion
    view.apply(f"syndic/top/syndic/low/salt/job/{JID}/new", new(JID, ["low-minion"]), 0.3)
    assert set(job(view)["minions"]) == {"top-minion", "low-minion"}
    assert view.syndic_ids == ["low", "top"]
    view.apply(f"salt/job/{JID}/ret/low-minion", ret(JID, "low-minion"), 0.5)
    assert minions(view)["low-minion"]["syndic"] == "low"


def test_grains_of_a_minion_behind_a_syndic_come_from_its_grains_items_return():
    view = mom()
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1"], "grains.items"), 0)
    grains = {"os": "Debian", "kernel": "Linux"}
    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1", grains, fun="grains.items"), 1)
    assert minions(view)["behind-1"] == {"id": "behind-1", "grains": grains, "syndic": "syndic-1"}


# -- minions ------------------------------------------------------------------------------


def test_presence_of_each_syndic_is_its_own_and_plain_presence_tags_are_ignored():
    view = mom()
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1", "behind-2"]), 0)
    # Salt re-fires the syndic's presence under the plain tag: not this master's
    view.apply("salt/presence/present", presence(["behind-1", "behind-2"]), 0)
    view.apply("salt/presence/change", {"new": [], "lost": ["direct-1"]}, 0)
    assert set(minions(view)) == {"direct-1", "behind-1", "behind-2"}

    view.apply("syndic/syndic-2/salt/presence/present", presence(["far-1"]), 1)
    view.apply("syndic/syndic-1/salt/presence/change", {"new": [], "lost": ["behind-2"]}, 2)
    assert set(minions(view)) == {"direct-1", "behind-1", "far-1"}
    assert minions(view)["far-1"]["syndic"] == "syndic-2"

    # this master's own presence (the engine's check) replaces only its own minions
    view.presence(["direct-2"])
    assert set(minions(view)) == {"direct-2", "behind-1", "far-1"}
    view.apply("syndic/syndic-1/salt/presence/present", presence([]), 3)
    assert set(minions(view)) == {"direct-2", "far-1"}


def test_a_minion_both_connected_here_and_behind_a_syndic_is_ours():
    view = mom()
    view.apply("syndic/syndic-1/salt/presence/present", presence(["direct-1", "b"]), 0)
    assert "syndic" not in minions(view)["direct-1"]
    view.presence([])
    assert minions(view)["direct-1"]["syndic"] == "syndic-1"  # still reported by the syndic


@pytest.mark.parametrize("plain_first", [False, True], ids=["salt-3008", "salt-3007"])
def test_a_syndic_minions_start_event_refired_under_the_plain_tag_stays_the_syndics(plain_first):
    view = mom()
    start = {"id": "behind-1", "cmd": "_minion_event", "data": "Minion behind-1 started"}
    fired = [
        ("syndic/syndic-1/salt/minion/behind-1/start", start),
        ("salt/minion/behind-1/start", start),
    ]
    commands = []
    for tag, data in reversed(fired) if plain_first else fired:
        commands += view.apply(tag, data, 0).commands
    assert minions(view)["behind-1"] == {"id": "behind-1", "grains": {}, "syndic": "syndic-1"}
    if not plain_first:  # nothing to read: the master of masters has no grains of it
        assert not any("behind-1" in c.mids for c in commands if isinstance(c, LoadGrains))


def test_a_key_deleted_on_a_syndics_master_removes_its_minion():
    view = mom()
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1"]), 0)
    view.apply("syndic/syndic-1/salt/key", {"act": "delete", "id": "behind-1", "result": True}, 1)
    assert "behind-1" not in minions(view)


def test_a_reseed_keeps_the_minions_syndics_reported():
    view = mom()
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1"]), 0)
    update = view.seed({"direct-2": None})
    assert set(minions(view)) == {"direct-2", "behind-1"}
    assert update.commands == [LoadGrains(("direct-2",))]


def test_a_master_without_order_masters_ignores_anything_prefixed_syndic():
    """Any minion can fire any tag: only a master of masters listens to syndics."""
    view = FormattedView()
    view.seed({"m1": {}}, accepted=["m1", "m2", "evil"])
    view.apply(f"salt/job/{JID}/new", new(JID, ["m1"]), 0.0)
    for tag, data in [
        (f"syndic/evil/salt/job/{JID}/new", new(JID, ["ghost"])),
        ("syndic/evil/salt/presence/present", presence(["ghost"])),
        ("salt/syndic/evil/start", {"id": "evil"}),
    ]:
        assert not view.apply(tag, data, 0.1)
    assert set(job(view)["minions"]) == {"m1"} and set(minions(view)) == {"m1"}
    assert view.syndic_ids == []
    view.apply("salt/presence/present", presence(["m1", "m2"]), 0.2)  # its own: followed
    assert set(minions(view)) == {"m1", "m2"}


def test_the_wire_shape_stays_saltnados_plus_the_syndic_field():
    view = mom()
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1"]), 0)
    message = json.loads(view.render_minions())
    assert set(message) == {"minions"}
    assert set(message["minions"]["behind-1"]) == {"id", "grains", "syndic"}
    assert set(message["minions"]["direct-1"]) == {"id", "grains"}


def test_a_syndic_connected_like_a_minion_is_not_listed_as_one():
    view = mom()
    view.presence(["direct-1", "syndic-1"])  # Salt counts the syndic's connection as a minion's
    assert "syndic-1" in minions(view)
    view.apply("salt/syndic/syndic-1/start", {"id": "syndic-1", "cmd": "_minion_event"}, 0)
    assert set(minions(view)) == {"direct-1"}
    view.presence(["direct-1", "syndic-1"])
    assert set(minions(view)) == {"direct-1"}
    view.seed({"direct-1": None, "syndic-1": None}, syndics=["syndic-1"])  # bus reconnected
    assert set(minions(view)) == {"direct-1"}


def test_a_syndics_own_id_in_its_masters_target_list_is_not_waited_for():
    """On the syndic's host a minion often shares the syndic's id; Salt's CLI skips it too."""
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, ["syndic-1"]), 0.0)
    view.apply(f"syndic/syndic-1/salt/job/{JID}/new", new(JID, ["behind-1", "syndic-1"]), 0.1)
    assert set(job(view)["minions"]) == {"behind-1"}
    view.apply(f"salt/job/{JID}/ret/behind-1", ret(JID, "behind-1"), 0.2)
    view.expire(WAIT)
    assert job(view)["state"] == "complete"


# -- engine wiring --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "wait", "follows"),
    [
        ({"order_masters": True, "syndic_wait": 7}, 7.0, True),
        ({"order_masters": True}, 5.0, True),  # Salt's default syndic_wait
        ({"syndic_wait": 7}, 0.0, False),  # not a master of masters
    ],
)
def test_the_engine_follows_syndics_only_on_a_master_of_masters(opts, wait, follows):
    from salt_ws.config import parse
    from salt_ws.engine import Engine

    engine = Engine(opts=opts, config=parse({"disable_ssl": True}))
    assert engine.view.limits.syndic_wait == wait
    engine.view.seed({}, accepted=["s1"])
    engine.view.apply("syndic/s1/salt/presence/present", presence(["behind-1"]), 0)
    assert ("behind-1" in engine.view.minion_ids) is follows
    assert engine.status()["syndics"] == (["s1"] if follows else [])


# -- review regressions ---------------------------------------------------------------------


def test_a_parent_syndics_refire_of_a_nested_syndics_presence_is_not_its_own():
    """MoM <- top <- low (Salt 3008): top's master re-fires low's presence under the plain
    tag and the top syndic forwards that too, as syndic/top/salt/presence/present."""
    view = mom()
    view.apply("syndic/top/syndic/low/salt/presence/present", presence(["low-minion"]), 0)
    view.apply("syndic/low/salt/presence/present", presence(["low-minion"]), 0)
    view.apply("syndic/top/salt/presence/present", presence(["top-minion", "low"]), 1)
    assert set(minions(view)) == {"direct-1", "top-minion", "low-minion"}
    view.apply("syndic/top/syndic/low/salt/presence/present", presence(["low-minion"]), 10)
    view.apply("syndic/top/salt/presence/present", presence(["low-minion"]), 10)  # the re-fire
    assert "top-minion" in minions(view)
    assert minions(view)["low-minion"]["syndic"] == "low"
    # after the echo window, the same content from top is top's own again
    view.apply("syndic/top/salt/presence/present", presence(["low-minion"]), 13)
    assert "top-minion" not in minions(view)


def test_a_nested_minion_is_labelled_with_its_own_syndic_whatever_the_ids_sort_to():
    view = mom()
    view.apply("syndic/a-top/syndic/z-low/salt/presence/present", presence(["low-minion"]), 0)
    view.apply("syndic/a-top/salt/presence/present", presence(["low-minion"]), 0)  # re-fire
    assert minions(view)["low-minion"]["syndic"] == "z-low"


def test_a_syndic_id_answering_grains_items_is_still_not_listed():
    view = mom()
    view.apply(f"salt/job/{JID}/new", new(JID, ["top"], fun="grains.items"), 0.0)
    view.apply(f"syndic/top/salt/job/{JID}/new", new(JID, ["top-minion", "low"], "*", "g"), 0.1)
    view.apply(f"syndic/top/syndic/low/salt/job/{JID}/new", new(JID, ["low-minion"]), 0.2)
    grains = ret(JID, "low", {"os": "Debian"}, fun="grains.items")
    view.apply(f"salt/job/{JID}/ret/low", grains, 0.3)  # the minion on low's host, low's id
    assert "low" not in minions(view)


def test_the_minions_behind_a_syndic_that_disconnected_drop_out():
    view = mom()
    view.apply("salt/syndic/syndic-1/start", {"id": "syndic-1"}, 0)
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1"]), 0)
    view.presence(["direct-1", "syndic-1"])  # this master sees the syndic connected
    assert set(minions(view)) == {"direct-1", "behind-1"}
    view.presence(["direct-1"])  # and then no more: nothing behind it is reachable
    assert set(minions(view)) == {"direct-1"}
    view.apply("syndic/syndic-1/salt/presence/present", presence(["behind-1"]), 5)  # back
    assert set(minions(view)) == {"direct-1", "behind-1"}


def test_a_job_known_only_from_a_return_does_not_wait_for_syndics():
    """Scheduled jobs have no new event: nothing can announce more minions for them."""
    view = mom()
    view.apply(f"salt/job/{JID}/ret/direct-1", ret(JID, "direct-1"), 0.0)
    assert job(view)["state"] == "complete"


def test_a_syndic_ids_start_event_loads_no_grains():
    view = mom()
    view.apply("salt/syndic/syndic-1/start", {"id": "syndic-1"}, 0)
    assert not view.apply("salt/minion/syndic-1/start", {"id": "syndic-1"}, 0)
