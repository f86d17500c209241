"""salt_ws.acl: eauth permissions applied to events and to the formatted view.

The rule is Salt's publish ACL (``CkMinions.auth_check``): a user sees a job's events on
minion ``m`` exactly when their eauth permissions would let them run the job's function on
``m``. The differential tests hold :class:`salt_ws.acl.Permissions` to a real ``CkMinions``
over a throwaway pki dir; the rest are tables.
"""

from __future__ import annotations

import functools
import itertools
import pathlib
import re
from typing import Any

import pytest
import salt.config
import salt.utils.minions

from salt_ws.acl import ADMIN, Permissions, audience_key, is_admin, targets_of

WEB = {"web-*": {"web-1"}}

# -- is_admin / audience_key / targets_of -------------------------------------------------------


@pytest.mark.parametrize(
    ("auth_list", "admin"),
    [
        ([".*"], True),
        (["@events"], True),
        ([".*", "@runner", "@wheel"], True),
        (["test.*", "@events"], True),
        (["@runner"], False),
        (["@runner", "@wheel", "@jobs"], False),
        (["test.*"], False),
        ([".+"], False),  # matches every function, but only ".*" is the admin spelling
        ([{"*": [".*"]}], False),  # every function on every minion, but scoped: not admin
        ([{".*": ["@events"]}], False),
        ([], False),
        ([None, 1, [".*"]], False),
    ],
)
def test_is_admin(auth_list, admin):
    assert is_admin(auth_list) is admin
    assert Permissions(auth_list).admin is admin
    assert (audience_key(auth_list) == ADMIN) is admin


def test_audience_key_ignores_dict_key_order():
    first = ["test.*", {"web-*": [{"cmd.run": {"args": ["ls"], "kwargs": {"cwd": "/"}}}]}]
    second = ["test.*", {"web-*": [{"cmd.run": {"kwargs": {"cwd": "/"}, "args": ["ls"]}}]}]
    assert audience_key(first) == audience_key(second)
    assert Permissions(first).key == Permissions(second).key


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["test.*"], ["test.ping"]),
        ([{"web-*": ["test.*"]}], [{"db-*": ["test.*"]}]),
        ([{"web-*": ["test.*"]}], [{"web-*": ["cmd.*"]}]),
        (["@runner"], ["@wheel"]),
        ([], ["test.*"]),
    ],
)
def test_different_permissions_get_different_keys(first, second):
    assert audience_key(first) != audience_key(second)
    assert ADMIN not in (audience_key(first), audience_key(second))


def test_audience_key_of_a_non_json_value_does_not_raise():
    assert isinstance(audience_key([{"web-*": [b"test.*"]}]), str)


@pytest.mark.parametrize(
    ("auth_list", "targets"),
    [
        ([], set()),
        ([".*", "@runner", "test.*"], set()),
        ([{"web-*": ["test.*"]}], {"web-*"}),
        ([{"*": ["test.*"]}], set()),  # every minion: nothing to resolve
        ([{"@runner": [".*"]}, {"@wheel": ["key.*"]}], set()),  # matches no minion
        (
            ["test.*", {"web-*": ["cmd.run"]}, {"L@minion-1,db-1": ["grains.*"]}, {"*": ["x"]}],
            {"web-*", "L@minion-1,db-1"},
        ),
        ([{"web-*": ["a"]}, {"web-*": ["b"]}], {"web-*"}),
        ([{"web-*": ["a"], "db-*": ["b"]}], set()),  # malformed (two keys): ignored, as Salt does
        ([{1: ["a"]}, {None: ["b"]}], set()),
        ([{"G@os:Debian and E@^web": ["test.*"]}], {"G@os:Debian and E@^web"}),
    ],
)
def test_targets_of(auth_list, targets):
    assert targets_of(auth_list) == targets


# -- Permissions.may / may_target ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "fun", "salt_says"),
    [
        ("test.*", "test.ping", True),
        ("test.*", "test_x", True),  # "." is any character
        ("test.*", "testing", True),  # re.match: anchored at the start only ...
        ("test.ping", "test.ping_extra", True),  # ... and not at the end
        ("test.*", "xtest.ping", False),
        ("test.ping", "Test.ping", False),
        ("test\\.ping$", "test.ping", True),
        ("test\\.ping$", "test.pingx", False),
        ("(test|grains)\\..*", "grains.items", True),
        ("", "test.ping", True),  # an empty regex matches every function
    ],
)
def test_function_regexes_use_re_match_as_salt_does(regex, fun, salt_says):
    assert bool(re.match(regex, fun)) is salt_says  # what Salt's CkMinions.match_check does
    assert Permissions([regex]).may(fun, "web-1") is salt_says
    assert Permissions([{"*": [regex]}]).may(fun, "web-1") is salt_says


@pytest.mark.parametrize(
    ("auth_list", "fun", "mid", "allowed"),
    [
        # string entries: valid on every minion, resolved or not
        (["test.*"], "test.ping", "web-1", True),
        (["test.*"], "test.ping", "unknown", True),
        (["test.*"], "cmd.run", "web-1", False),
        (["test.*", "cmd.run"], "cmd.run", "db-1", True),
        # dict entries: valid on the minions their target resolved to
        ([{"web-*": ["test.*"]}], "test.ping", "web-1", True),
        ([{"web-*": ["test.*"]}], "test.ping", "web-2", False),  # not (yet) resolved
        ([{"web-*": ["test.*"]}], "cmd.run", "web-1", False),
        ([{"web-*": "test.*"}], "test.ping", "web-1", True),  # one regex, not in a list
        ([{"web-*": ["test.*"]}, {"db-*": ["cmd.*"]}], "cmd.run", "web-1", False),
        ([{"web-*": ["test.*"]}, "cmd.*"], "cmd.run", "web-1", True),
        # "*" is every minion, "@..." no minion
        ([{"*": ["test.*"]}], "test.ping", "anything", True),
        ([{"*": ["test.*"]}], "cmd.run", "anything", False),
        ([{"@runner": [".*"]}], "test.ping", "web-1", False),
        ([{"@wheel": [".*"]}], "key.list_all", "web-1", False),
        (["@runner", "@wheel"], "runner.jobs.list_jobs", "web-1", False),
        # function entries with argument restrictions count by their function name
        ([{"*": [{"cmd.run": {"args": ["ls"]}}]}], "cmd.run", "web-1", True),
        ([{"web-*": [{"cmd.*": {"kwargs": {"cwd": "/tmp"}}}]}], "cmd.script", "web-1", True),
        ([{"web-*": [{"cmd.run": {"args": ["ls"]}}]}], "cmd.script", "web-1", False),
        ([{"web-*": [{"cmd.run": {"args": ["ls"]}}]}], "cmd.run", "db-1", False),
        # broken entries grant nothing
        (["["], "test.ping", "web-1", False),
        ([{"*": ["(unclosed"]}], "test.ping", "web-1", False),
        (["[", "test.*"], "test.ping", "web-1", True),
        ([{"web-*": ["test.*"], "*": ["test.*"]}], "test.ping", "web-1", False),  # two keys
        ([{"web-*": None}], "test.ping", "web-1", False),
        ([{"web-*": 5}], "test.ping", "web-1", False),
        ([None, 3, ["test.*"]], "test.ping", "web-1", False),
        ([], "test.ping", "web-1", False),
        # no function, no access (a ret event without "fun", an unknown job's prog event)
        (["test.*"], None, "web-1", False),
        (["test.*"], "", "web-1", False),
        ([{"*": [".*"]}], "", "web-1", False),
        (["test.*"], 5, "web-1", False),
        # administrators may everything, even without a function name
        ([".*"], None, "anything", True),
        (["@events"], "cmd.run", "anything", True),
    ],
)
def test_may(auth_list, fun, mid, allowed):
    assert Permissions(auth_list, resolved=WEB).may(fun, mid) is allowed


@pytest.mark.parametrize(
    ("auth_list", "mid", "allowed"),
    [
        ([".*"], "db-1", True),
        (["@events"], "db-1", True),
        (["test.*"], "db-1", True),  # a global function: every minion is a target
        (["@runner", "@wheel"], "db-1", False),
        ([{"web-*": ["test.*"]}], "web-1", True),
        ([{"web-*": ["test.*"]}], "db-1", False),
        ([{"web-*": []}], "web-1", False),  # no function at all
        ([{"*": ["test.*"]}], "db-1", True),
        ([{"*": []}], "db-1", False),
        ([{"@runner": [".*"]}], "db-1", False),
        (["@runner", {"web-*": ["test.*"]}], "web-1", True),
        (["@runner", {"web-*": ["test.*"]}], "db-1", False),
        ([{"web-*": [{"cmd.run": {"args": ["ls"]}}]}], "web-1", True),
        ([], "db-1", False),
    ],
)
def test_may_target(auth_list, mid, allowed):
    assert Permissions(auth_list, resolved=WEB).may_target(mid) is allowed


def test_resolve_replaces_the_target_sets():
    perms = Permissions([{"web-*": ["test.*"]}], resolved={"web-*": ["web-1"]})
    assert perms.may("test.ping", "web-1")
    assert not perms.may("test.ping", "web-2")
    perms.resolve({"web-*": ["web-2"]})
    assert not perms.may("test.ping", "web-1")
    assert perms.may("test.ping", "web-2")
    assert perms.may_target("web-2")
    perms.resolve({})
    assert not perms.may_target("web-2")


def test_the_auth_list_is_copied():
    auth_list: list[Any] = ["test.*"]
    perms = Permissions(auth_list)
    auth_list.append(".*")
    assert not perms.admin
    assert perms.auth_list == ["test.*"]


# -- the differential test against Salt's own publish ACL ---------------------------------------

MINIONS = ("minion-1", "minion-2", "web-1", "db-1")
FUNS = (
    "test.ping",
    "test.version",
    "testing.x",
    "cmd.run",
    "cmd.script",
    "grains.items",
    "grains.get",
    "state.apply",
    "saltutil.find_job",
    "runner.jobs.list_jobs",
)
AUTH_LISTS = {
    "string": ["test.*"],
    "strings": ["test.ping", "grains.get"],
    "anchored": ["test\\.ping$", "cmd\\..*"],
    "glob": [{"web-*": ["test.*", "cmd.run"]}],
    "glob-one-regex": [{"minion-*": "grains.*"}],
    "list": [{"L@minion-1,db-1": ["grains.*"]}],
    "pcre": [{"E@^minion-[12]$": ["state.*"]}],
    "compound-not": [{"minion-* and not minion-2": ["test.*"]}],
    "compound-or": [{"web-1 or L@db-1": ["cmd.*"]}],
    "bare-id": [{"db-1": ["saltutil.*"]}],
    "star": [{"*": ["test.*"]}],
    "runner": ["@runner"],
    "runner-dict": [{"@runner": [".*"]}],
    "no-match": [{"nomatch-*": [".*"]}],
    "mixed": [
        "grains.get",
        "@runner",
        "@wheel",
        {"web-*": ["cmd.*"]},
        {"L@minion-1,db-1": ["state.apply", "test.*"]},
        {"*": ["saltutil.find_job"]},
    ],
    "args": [{"web-*": [{"cmd.run": {"args": ["ls"]}}, "test.*"]}],
    "args-and-kwargs": [{"*": [{"cmd.*": {"args": [None, "-l"]}}]}],
    "invalid-regex": ["[", {"*": ["(unclosed"]}, {"web-*": ["test.*"]}],
    "malformed-dict": [{"web-*": ["cmd.*"], "db-*": ["cmd.*"]}, {"db-1": ["grains.*"]}],
    "junk": [None, 5, ["test.*"], {"web-*": None}, {"db-1": ["grains.items"]}],
}
# Argument lists to try: an entry with argument restrictions lets a user run the function
# with *some* arguments, and their events are what the user is shown.
ARGS = ([], ["ls"], ["ls", "-l"])


@pytest.fixture(scope="module")
def ckminions(tmp_path_factory: pytest.TempPathFactory) -> salt.utils.minions.CkMinions:
    """A real CkMinions over a pki dir with four accepted minion keys."""
    root = tmp_path_factory.mktemp("master")
    opts = salt.config.master_config(None)
    for name in ("pki_dir", "cachedir", "sock_dir"):
        opts[name] = str(root / name)
        (root / name).mkdir()
    # Compound matching in this Salt needs the data cache switched on (with it off,
    # _check_compound_minions fails and matches nothing); glob/list/pcre never read it.
    opts["minion_data_cache"] = True
    accepted = pathlib.Path(opts["pki_dir"], "minions")
    accepted.mkdir()
    for mid in MINIONS:
        (accepted / mid).write_text("-----BEGIN PUBLIC KEY-----\n")
    ck = salt.utils.minions.CkMinions(opts)
    # The keys do not change during the module: resolve each expression once (speed only).
    ck.check_minions = functools.lru_cache(maxsize=None)(ck.check_minions)
    assert sorted(ck.check_minions("*", "compound")["minions"]) == sorted(MINIONS)
    return ck


def salt_resolution(ck: salt.utils.minions.CkMinions, auth_list: list[Any]) -> dict[str, set]:
    """What the engine's Fleet.resolve computes: each ACL target through compound matching."""
    return {t: set(ck.check_minions(t, "compound")["minions"]) for t in targets_of(auth_list)}


@pytest.fixture(scope="module")
def salt_says(ckminions) -> dict[str, dict[tuple[str, str], bool]]:
    """Per auth list: may ``fun`` run on ``mid`` (with some arguments), per Salt's publish ACL?"""
    return {
        name: {
            (fun, mid): any(
                bool(ckminions.auth_check(auth_list, fun, args, mid, "list")) for args in ARGS
            )
            for fun, mid in itertools.product(FUNS, MINIONS)
        }
        for name, auth_list in AUTH_LISTS.items()
    }


@pytest.mark.parametrize("name", list(AUTH_LISTS))
def test_may_agrees_with_salts_auth_check(ckminions, salt_says, name):
    auth_list = AUTH_LISTS[name]
    perms = Permissions(auth_list, resolved=salt_resolution(ckminions, auth_list))
    assert {pair: perms.may(*pair) for pair in salt_says[name]} == salt_says[name]


# may_target does not compile regexes: an entry that is not a valid regex still makes its
# minions targets (see test_may_target's table); those lists are left out here.
BROKEN_REGEX_LISTS = {"invalid-regex"}


@pytest.mark.parametrize("name", sorted(set(AUTH_LISTS) - BROKEN_REGEX_LISTS))
def test_may_target_is_may_for_some_function(ckminions, salt_says, name):
    auth_list = AUTH_LISTS[name]
    perms = Permissions(auth_list, resolved=salt_resolution(ckminions, auth_list))
    expected = {mid: any(salt_says[name][fun, mid] for fun in FUNS) for mid in MINIONS}
    assert {mid: perms.may_target(mid) for mid in MINIONS} == expected


def test_salt_lets_a_target_of_unknown_minions_pass_acl_may_does_not(ckminions):
    """Documented difference: Salt checks a *target*; an id with no accepted key matches no
    minion, and an empty target is vacuously inside every ACL target. Events for such an id
    (a ret from a minion deleted meanwhile) are not shown to a scoped user."""
    auth_list = [{"web-*": ["test.*"]}]
    perms = Permissions(auth_list, resolved=salt_resolution(ckminions, auth_list))
    assert ckminions.auth_check(auth_list, "test.ping", [], "gone-1", "list")
    assert not ckminions.auth_check(
        auth_list, "test.ping", [], "gone-1", "list", minions=["gone-1"]
    )
    assert not perms.may("test.ping", "gone-1")


def test_admin_permissions_agree_with_salt_on_every_function(ckminions):
    perms = Permissions([".*"])
    for fun, mid in itertools.product(FUNS, MINIONS):
        assert ckminions.auth_check([".*"], fun, [], mid, "list")
        assert perms.may(fun, mid)


# -- filter_event ------------------------------------------------------------------------------

SCOPED = Permissions(
    [{"web-*": ["test.*"]}, {"L@db-1": ["cmd.*"]}],
    resolved={"web-*": ["web-1", "web-2"], "L@db-1": ["db-1"]},
)
JOB_FUNS = {"1": "test.ping", "2": "cmd.run"}


def new(fun: str, minions: Any, **extra: Any) -> dict[str, Any]:
    return {"jid": "1", "fun": fun, "tgt": "*", "tgt_type": "glob", "minions": minions, **extra}


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        ("salt/job/1/new", new("cmd.run", ["db-9"])),
        ("salt/auth", {"act": "accept", "id": "web-1"}),
        ("salt/key", {"act": "delete", "id": "web-1", "result": True}),
        ("salt/presence/present", {"present": ["web-1"]}),
        ("salt/presence/change", {"new": ["web-1"], "lost": []}),
        ("salt/minion/web-1/start", {"id": "web-1"}),
        ("salt/run/2/new", {"fun": "runner.jobs.list_jobs"}),
        ("salt/wheel/3/new", {"fun": "wheel.key.list_all"}),
        ("custom/tag", {"x": 1}),
        ("salt_ws/bus/lost", None),
    ],
)
def test_an_admin_sees_every_event_unchanged(tag, data):
    for admin in (Permissions([".*"]), Permissions(["@events", {"web-*": ["x"]}])):
        assert admin.filter_event(tag, data, JOB_FUNS) is data


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        ("salt_ws/bus/lost", {"missed": True}),
        ("salt_ws/bus/restored", {"missed": True, "down_since": None}),
        ("salt_ws/anything", None),
    ],
)
def test_engine_notices_reach_everyone(tag, data):
    for perms in (SCOPED, Permissions([]), Permissions(["@runner"])):
        assert perms.filter_event(tag, data, {}) is data


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        ("salt/auth", {"act": "accept", "id": "web-1"}),
        ("salt/key", {"act": "accept", "id": "web-1", "result": True}),
        ("salt/presence/present", {"present": ["web-1"]}),
        ("salt/presence/change", {"new": ["web-1"], "lost": []}),
        ("salt/minion/web-1/start", {"id": "web-1"}),
        ("minion/refresh/web-1", {"Minion data cache refresh": "web-1"}),
        ("salt/run/20260101/new", {"fun": "runner.test.arg", "user": "alice"}),
        ("salt/run/20260101/ret", {"fun": "runner.test.arg", "return": True}),
        ("salt/wheel/20260101/new", {"fun": "wheel.key.list_all"}),
        ("salt/beacon/web-1/inotify//etc", {"id": "web-1"}),
        ("salt/stats/master", {}),
        ("custom/web-1/test.ping", {"fun": "test.ping", "id": "web-1"}),
        ("20260101000000000000", {"minions": ["web-1"]}),  # the bare-jid event
        ("salt/job", {"fun": "test.ping"}),
        ("salt/job/1", {"fun": "test.ping"}),
        ("salt/job/1/ret", {"fun": "test.ping"}),  # no minion id
        ("salt/job/1/new/web-1", {"fun": "test.ping", "minions": ["web-1"]}),
        ("salt/job/1/other/web-1", {"fun": "test.ping"}),
        ("salt/jobs/1/ret/web-1", {"fun": "test.ping"}),
        ("Salt/job/1/ret/web-1", {"fun": "test.ping"}),
    ],
)
def test_a_scoped_user_sees_no_other_events(tag, data):
    assert SCOPED.filter_event(tag, data, JOB_FUNS) is None


def test_a_new_event_with_every_minion_allowed_is_the_same_object():
    data = new("test.ping", ["web-1", "web-2"], missing=["web-9"])
    assert SCOPED.filter_event("salt/job/1/new", data, JOB_FUNS) is data


@pytest.mark.parametrize(
    ("data", "minions", "missing"),
    [
        (new("test.ping", ["web-1", "db-1", "minion-1"]), ["web-1"], None),
        (new("cmd.run", ["web-1", "db-1"]), ["db-1"], None),
        (new("test.ping", ["db-1", "web-2", "web-1"]), ["web-2", "web-1"], None),
        (new("test.ping", ["web-1", "db-1"], missing=["db-9"]), ["web-1"], []),
        (new("test.ping", ["web-1", 5, None]), ["web-1"], None),
        (new("test.ping", ["web-1", "db-1"], missing="db-9"), ["web-1"], "db-9"),
    ],
)
def test_a_partly_allowed_new_event_is_a_cut_down_copy(data, minions, missing):
    original = {**data, "minions": list(data["minions"])}
    shown = SCOPED.filter_event("salt/job/1/new", data, JOB_FUNS)
    assert shown is not data
    assert shown["minions"] == minions
    if missing is None:
        assert "missing" not in shown
    else:
        assert shown["missing"] == missing
    assert {k: v for k, v in shown.items() if k not in ("minions", "missing")} == {
        k: v for k, v in data.items() if k not in ("minions", "missing")
    }
    assert data == original  # the shared payload is not touched


@pytest.mark.parametrize(
    "data",
    [
        new("cmd.run", ["web-1", "web-2"]),
        new("test.ping", ["db-1", "minion-1"]),
        new("test.ping", []),
        new(None, ["web-1"]),
        new("", ["web-1"]),
        {"fun": "test.ping"},  # no minions
        new("test.ping", "web-1"),  # minions not a list
        new("test.ping", {"web-1": True}),
        new("test.ping", None),
    ],
)
def test_a_new_event_with_no_allowed_minion_is_dropped(data):
    assert SCOPED.filter_event("salt/job/1/new", data, JOB_FUNS) is None


@pytest.mark.parametrize(
    ("tag", "data", "shown"),
    [
        ("salt/job/1/ret/web-1", {"fun": "test.ping", "return": True}, True),
        ("salt/job/1/ret/web-2", {"fun": "test.version", "return": "3008.4"}, True),
        ("salt/job/1/ret/db-1", {"fun": "test.ping", "return": True}, False),
        ("salt/job/2/ret/db-1", {"fun": "cmd.run", "return": ""}, True),
        ("salt/job/2/ret/web-1", {"fun": "cmd.run", "return": ""}, False),
        ("salt/job/1/ret/web-1", {"return": True}, False),  # no fun: not provably allowed
        ("salt/job/1/ret/web-1", {"fun": 5, "return": True}, False),
        # the tag, not the payload, names the minion
        ("salt/job/1/ret/db-1", {"fun": "test.ping", "id": "web-1"}, False),
        ("salt/job/1/ret/web-1", {"fun": "test.ping", "id": "db-1"}, True),
    ],
)
def test_ret_events_are_shown_by_function_and_minion(tag, data, shown):
    assert SCOPED.filter_event(tag, data, JOB_FUNS) is (data if shown else None)


@pytest.mark.parametrize(
    ("tag", "shown"),
    [
        ("salt/job/1/prog/web-1/0", True),  # job 1 is test.ping
        ("salt/job/1/prog/db-1/0", False),
        ("salt/job/2/prog/db-1/3", True),  # job 2 is cmd.run
        ("salt/job/2/prog/web-1/3", False),
        ("salt/job/3/prog/web-1/0", False),  # unknown job: its function is unknown
        ("salt/job/1/prog/web-1", True),
    ],
)
def test_prog_events_use_the_function_of_their_job(tag, shown):
    data = {"fun": "cmd.run", "data": {"ret": {}}}  # prog payloads' "fun" is not trusted
    assert SCOPED.filter_event(tag, data, JOB_FUNS) is (data if shown else None)


@pytest.mark.parametrize("data", [None, "text", ["web-1"], 5, b"{}"])
@pytest.mark.parametrize(
    "tag", ["salt/job/1/new", "salt/job/1/ret/web-1", "salt/job/1/prog/web-1/0"]
)
def test_malformed_job_payloads_are_dropped(tag, data):
    assert SCOPED.filter_event(tag, data, JOB_FUNS) is None
