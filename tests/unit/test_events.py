"""salt_ws.events.parse: Salt tags and payloads into typed events.

One table per kind of tag. Each row is ``(tag, data) -> expected event`` (``None``: the view does
not track it). Parsing never raises, whatever the bus carries.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salt_ws import events as ev
from salt_ws.events import (
    JobNew,
    JobReturn,
    KeyAction,
    KeyChange,
    MinionDataRefreshed,
    MinionStart,
    PresenceChange,
    PresencePresent,
)

RECORDED = pathlib.Path(__file__).parents[1] / "files" / "events-salt-3008.4.json"
STAMP = "2026-11-28T06:41:57.388573+00:00"
JID = "20261128064157383392"


def case(id_: str, tag: Any, data: Any, expected: ev.Event | None) -> Any:
    return pytest.param(tag, data, expected, id=id_)


def check(tag: Any, data: Any, expected: ev.Event | None) -> None:
    assert ev.parse(tag, data) == expected


# -- salt/job/<jid>/new ------------------------------------------------------------------------

JOB_NEW = [
    case(
        "recorded-test.ping",
        f"salt/job/{JID}/new",
        {
            "_stamp": STAMP,
            "arg": [],
            "fun": "test.ping",
            "jid": JID,
            "minions": ["minion-2", "minion-1"],
            "missing": [],
            "tgt": "*",
            "tgt_type": "glob",
            "user": "root",
        },
        JobNew(JID, "test.ping", "*", "glob", ("minion-2", "minion-1"), "root", STAMP, []),
    ),
    case(
        "arg-kept-in-salts-format",
        "salt/job/1/new",
        {"fun": "test.arg", "arg": ["a", {"k": 1, "__kwarg__": True}], "minions": ["m1"]},
        JobNew(
            "1", "test.arg", None, "glob", ("m1",), None, None, ["a", {"k": 1, "__kwarg__": True}]
        ),
    ),
    case(
        "arg-not-a-list-is-unknown",
        "salt/job/1/new",
        {"fun": "test.arg", "arg": "a", "minions": ["m1"]},
        JobNew("1", "test.arg", None, "glob", ("m1",), None, None, None),
    ),
    case(
        "path-like-minion-ids-are-kept-for-the-view-to-refuse-and-count",
        "salt/job/1/new",
        {"minions": ["../../x", "m1"]},
        JobNew("1", "", None, "glob", ("../../x", "m1"), None, None),
    ),
    case(
        "list-target-kept-as-list",
        "salt/job/1/new",
        {"fun": "test.arg", "tgt": ["m1", "m2"], "tgt_type": "list", "minions": ["m1", "m2"]},
        JobNew("1", "test.arg", ["m1", "m2"], "list", ("m1", "m2"), None, None),
    ),
    case(
        "empty-payload-defaults",
        "salt/job/1/new",
        {},
        JobNew("1", "", None, "glob", (), None, None),
    ),
    case(
        "junk-field-types",
        "salt/job/1/new",
        {"fun": 3, "tgt_type": ["list"], "user": {"u": 1}, "_stamp": 1.5, "minions": "m1"},
        JobNew("1", "", None, "glob", (), None, None),
    ),
    case(
        "junk-minion-ids-dropped-and-deduplicated",
        "salt/job/1/new",
        {"minions": ["b", "", None, 3, ["x"], "a", "b"]},
        JobNew("1", "", None, "glob", ("b", "a"), None, None),  # in order; the view sorts
    ),
    case(
        "minions-as-tuple",
        "salt/job/1/new",
        {"minions": ("m1",)},
        JobNew("1", "", None, "glob", ("m1",), None, None),
    ),
    case("none-data", "salt/job/1/new", None, JobNew("1", "", None, "glob", (), None, None)),
    case("list-data", "salt/job/1/new", ["m1"], JobNew("1", "", None, "glob", (), None, None)),
    case("trailing-part", "salt/job/1/new/x", {"fun": "test.ping"}, None),
    case("trailing-slash", "salt/job/1/new/", {"fun": "test.ping"}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), JOB_NEW)
def test_job_new(tag, data, expected):
    check(tag, data, expected)


# -- salt/job/<jid>/ret/<mid> ------------------------------------------------------------------


def ret(mid="m1", ret=None, retcode=None, success=None, **kw) -> JobReturn:
    return JobReturn(
        jid=kw.pop("jid", "1"),
        mid=mid,
        fun=kw.pop("fun", None),
        ret=ret,
        retcode=retcode,
        success=success,
        stamp=kw.pop("stamp", None),
        **kw,
    )


JOB_RET = [
    case(
        "recorded-test.ping",
        f"salt/job/{JID}/ret/minion-1",
        {
            "_stamp": STAMP,
            "cmd": "_return",
            "fun": "test.ping",
            "fun_args": [],
            "id": "minion-1",
            "jid": JID,
            "retcode": 0,
            "return": True,
            "success": True,
            "user": "root",
        },
        ret("minion-1", True, 0, True, jid=JID, fun="test.ping", stamp=STAMP, fun_args=[]),
    ),
    case(
        "fun-args-kept",
        "salt/job/1/ret/m1",
        {"id": "m1", "fun": "test.arg", "fun_args": ["x"], "retcode": 0, "return": True},
        ret("m1", True, 0, True, fun="test.arg", fun_args=["x"]),
    ),
    case(
        "recorded-retcode-3",
        "salt/job/1/ret/m1",
        {"id": "m1", "fun": "test.retcode", "retcode": 3, "return": True, "success": False},
        ret("m1", True, 3, False, fun="test.retcode"),
    ),
    case(
        "recorded-scheduled-carries-target",
        "salt/job/1/ret/minion-2",
        {
            "id": "minion-2",
            "fun": "test.ping",
            "retcode": 0,
            "return": True,
            "success": True,
            "schedule": "ws_probe",
            "tgt": "minion-2",
            "tgt_type": "glob",
        },
        ret("minion-2", True, 0, True, fun="test.ping", tgt="minion-2", tgt_type="glob"),
    ),
    case(
        "no-retcode-no-success",  # e.g. scheduled jobs on old minions (#15582)
        "salt/job/1/ret/m1",
        {"id": "m1", "return": {"a": 1}},
        ret("m1", {"a": 1}, None, None),
    ),
    case(
        "only-retcode-zero",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": 0},
        ret("m1", None, 0, True),
    ),
    case(
        "only-retcode-nonzero",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": 2},
        ret("m1", None, 2, False),
    ),
    case(
        "bool-retcode-true",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": True},
        ret("m1", None, 1, False),
    ),
    case(
        "bool-retcode-false",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": False},
        ret("m1", None, 0, True),
    ),
    case(
        "str-retcode-ignored",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": "0"},
        ret("m1", None, None, None),
    ),
    case("float-retcode-ignored", "salt/job/1/ret/m1", {"id": "m1", "retcode": 0.0}, ret("m1")),
    case(
        "success-wins-over-retcode",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": 0, "success": False},
        ret("m1", None, 0, False),
    ),
    case(
        "success-not-bool-falls-back-to-retcode",
        "salt/job/1/ret/m1",
        {"id": "m1", "retcode": 5, "success": "true"},
        ret("m1", None, 5, False),
    ),
    case(
        "success-not-bool-no-retcode",
        "salt/job/1/ret/m1",
        {"id": "m1", "success": 1},
        ret("m1", None, None, None),
    ),
    case(
        "success-only",
        "salt/job/1/ret/m1",
        {"id": "m1", "success": True},
        ret("m1", None, None, True),
    ),
    case(
        "junk-field-types",
        "salt/job/1/ret/m1",
        {
            "id": "m1",
            "fun": ["x"],
            "_stamp": 3,
            "tgt_type": 1,
            "tgt": {"a": 1},
            "return": [1, "two"],
        },
        ret("m1", [1, "two"], tgt={"a": 1}),
    ),
    case(
        "mid-with-slash",
        "salt/job/1/ret/a/b",
        {"id": "a/b", "retcode": 0},
        ret("a/b", None, 0, True),
    ),
    case("none-data", "salt/job/1/ret/m1", None, None),
    case("list-data", "salt/job/1/ret/m1", [{"retcode": 0}], None),
    # any minion can fire any tag: a return must name its own minion
    case("forged-for-another-minion", "salt/job/1/ret/m2", {"id": "m1", "retcode": 0}, None),
    case("no-id", "salt/job/1/ret/m1", {"retcode": 0, "return": True}, None),
    case("empty-mid", "salt/job/1/ret/", {"retcode": 0}, None),
    case("no-mid", "salt/job/1/ret", {"retcode": 0}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), JOB_RET)
def test_job_return(tag, data, expected):
    check(tag, data, expected)


# -- job and runner tags the view does not track ----------------------------------------------

UNTRACKED_JOB = [
    case("prog", "salt/job/1/prog/m1/0", {"data": {"ret": {}}, "len": 3}, None),
    case("prog-higher-n", "salt/job/1/prog/m1/12", {"data": {}}, None),
    case("publish", f"salt/job/{JID}/publish", {"fun": "test.ping", "tgt": "*"}, None),
    case("job-unknown-kind", "salt/job/1/other", {}, None),
    case("run-new", "salt/run/1/new", {"fun": "runner.test.arg", "user": "root"}, None),
    case("run-ret", "salt/run/1/ret", {"fun": "runner.test.arg", "return": {}}, None),
    case("run-args", "salt/run/1/args", {"type": "runner"}, None),
    case("run-event", "salt/run/1/event/x", {}, None),
    case("wheel-new", "salt/wheel/1/new", {"fun": "wheel.key.list_all"}, None),
    case("auth", "salt/auth", {"act": "accept", "id": "m1"}, None),
    case("legacy-minion-start", "minion_start", {"id": "m1"}, None),
    case("resource-refresh", "resource/refresh/m1", {}, None),
    case("salt-error", "_salt_error", {"id": "m1", "data": {}}, None),
    case("key-rotate", "key", {"rotate_aes_key": True}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), UNTRACKED_JOB)
def test_untracked_tags(tag, data, expected):
    check(tag, data, expected)


# -- salt/key ----------------------------------------------------------------------------------

KEY = [
    *(
        case(
            f"act-{act.value}",
            "salt/key",
            {"act": act.value, "id": "m1", "result": True},
            KeyChange(act, "m1"),
        )
        for act in KeyAction
    ),
    case(
        "recorded-delete",
        "salt/key",
        {"_stamp": STAMP, "act": "delete", "id": "minion-2", "result": True},
        KeyChange(KeyAction.DELETE, "minion-2"),
    ),
    case(
        "no-result-field",
        "salt/key",
        {"act": "accept", "id": "m1"},
        KeyChange(KeyAction.ACCEPT, "m1"),
    ),
    case(
        "result-none-is-not-false",
        "salt/key",
        {"act": "reject", "id": "m1", "result": None},
        KeyChange(KeyAction.REJECT, "m1"),
    ),
    case("result-false", "salt/key", {"act": "accept", "id": "m1", "result": False}, None),
    case("bad-act", "salt/key", {"act": "frobnicate", "id": "m1", "result": True}, None),
    case("upper-case-act", "salt/key", {"act": "ACCEPT", "id": "m1"}, None),
    case("missing-act", "salt/key", {"id": "m1"}, None),
    case("list-act", "salt/key", {"act": ["accept"], "id": "m1"}, None),
    case("dict-act", "salt/key", {"act": {"accept": 1}, "id": "m1"}, None),
    case("missing-id", "salt/key", {"act": "accept"}, None),
    case("empty-id", "salt/key", {"act": "accept", "id": ""}, None),
    case("non-str-id", "salt/key", {"act": "accept", "id": ["m1"]}, None),
    case("none-data", "salt/key", None, None),
    case("list-data", "salt/key", ["accept", "m1"], None),
    case("sub-tag", "salt/key/m1", {"act": "accept", "id": "m1"}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), KEY)
def test_key(tag, data, expected):
    check(tag, data, expected)


# -- salt/presence/* ---------------------------------------------------------------------------

PRESENCE = [
    case(
        "present-recorded",
        "salt/presence/present",
        {"present": ["minion-1", "minion-2"]},
        PresencePresent(frozenset({"minion-1", "minion-2"})),
    ),
    case("present-empty", "salt/presence/present", {"present": []}, PresencePresent(frozenset())),
    case(
        "present-junk-members",
        "salt/presence/present",
        {"present": ["m1", "", None, 7, ["m2"], {"m3": 1}, "m1"]},
        PresencePresent(frozenset({"m1"})),
    ),
    # only the master's shape counts (a minion can fire this tag with any payload)
    case("present-not-a-list", "salt/presence/present", {"present": "m1"}, None),
    case("present-dict", "salt/presence/present", {"present": {"m1": True}}, None),
    case("present-missing", "salt/presence/present", {}, None),
    case(
        "present-forged-by-a-minion",
        "salt/presence/present",
        {"cmd": "_minion_event", "id": "m1", "tag": "salt/presence/present", "data": {}},
        None,
    ),
    case(
        "change-recorded-new",
        "salt/presence/change",
        {"lost": [], "new": ["minion-1", "minion-2"]},
        PresenceChange(frozenset({"minion-1", "minion-2"}), frozenset()),
    ),
    case(
        "change-recorded-lost",
        "salt/presence/change",
        {"lost": ["minion-2"], "new": []},
        PresenceChange(frozenset(), frozenset({"minion-2"})),
    ),
    case(
        "change-junk-members",
        "salt/presence/change",
        {"new": ["a", 1, None, ""], "lost": [b"b", "c", {"d"}]},
        PresenceChange(frozenset({"a"}), frozenset({"c"})),
    ),
    case("change-not-lists", "salt/presence/change", {"new": "a", "lost": 3}, None),
    case("change-list-data", "salt/presence/change", ["a"], None),
    case("change-one-list-missing", "salt/presence/change", {"lost": ["m1"]}, None),
    case("unknown-presence-kind", "salt/presence/other", {"present": ["m1"]}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), PRESENCE)
def test_presence(tag, data, expected):
    check(tag, data, expected)


# -- minion start and data refresh ------------------------------------------------------------

MINION = [
    case(
        "start-recorded",
        "salt/minion/minion-1/start",
        {"cmd": "_minion_event", "id": "minion-1", "tag": "salt/minion/minion-1/start"},
        MinionStart("minion-1"),
    ),
    case("start-fired-by-another-minion", "salt/minion/m1/start", {"id": "other"}, None),
    case("start-none-data", "salt/minion/m1/start", None, None),
    case("start-empty-id", "salt/minion//start", {}, None),
    case("start-extra-part", "salt/minion/a/b/start", {}, None),
    case("minion-other-kind", "salt/minion/m1/stop", {}, None),
    case(
        "refresh-recorded",
        "minion/refresh/minion-2",
        {"Minion data cache refresh": "minion-2"},
        MinionDataRefreshed("minion-2"),
    ),
    case("refresh-list-data", "minion/refresh/m1", [1], MinionDataRefreshed("m1")),
    case("refresh-empty-id", "minion/refresh/", {}, None),
    case("refresh-extra-part", "minion/refresh/a/b", {}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), MINION)
def test_minion(tag, data, expected):
    check(tag, data, expected)


# -- malformed tags ----------------------------------------------------------------------------

MALFORMED = [
    case("empty", "", {}, None),
    case("salt", "salt", {}, None),
    case("salt-slash", "salt/", {}, None),
    case("salt-job", "salt/job", {}, None),
    case("salt-job-slash", "salt/job/", {}, None),
    case("salt-job-jid-only", "salt/job/1", {}, None),
    case("salt-job-empty-jid-new", "salt/job//new", {"minions": ["m1"]}, None),
    case("salt-job-empty-jid-ret", "salt/job//ret/m1", {"retcode": 0}, None),
    case("leading-slash", "/salt/job/1/new", {}, None),
    case("upper-case", "SALT/JOB/1/NEW", {}, None),
    case("random-text", "hello world", {"present": ["m1"]}, None),
    case("non-str-none", None, {}, None),
    case("non-str-int", 3, {}, None),
    case("non-str-bytes", b"salt/job/1/new", {"minions": ["m1"]}, None),
    case("non-str-list", ["salt", "job", "1", "new"], {}, None),
]


@pytest.mark.parametrize(("tag", "data", "expected"), MALFORMED)
def test_malformed(tag, data, expected):
    check(tag, data, expected)


# -- recorded events ---------------------------------------------------------------------------


def recorded() -> list[tuple[str, Any]]:
    return [(tag, data) for tag, data in json.loads(RECORDED.read_text())]


@pytest.mark.parametrize(("tag", "data"), recorded(), ids=[t for t, _ in recorded()])
def test_every_recorded_event_parses(tag, data):
    event = ev.parse(tag, data)
    assert event is None or isinstance(event, ev.Event)


def test_recorded_events_parse_to_the_expected_kinds():
    kinds: dict[str, int] = {}
    for tag, data in recorded():
        event = ev.parse(tag, data)
        name = type(event).__name__ if event is not None else "None"
        kinds[name] = kinds.get(name, 0) + 1
    assert kinds == {
        "JobNew": 8,
        "JobReturn": 14,
        "KeyChange": 1,
        "MinionDataRefreshed": 2,
        "MinionStart": 2,
        "PresenceChange": 2,
        "PresencePresent": 29,
        "None": 18,
    }


def test_parse_does_not_mutate_the_payload():
    data = {"minions": ["b", "a"], "fun": "test.ping", "_stamp": STAMP}
    before = json.dumps(data)
    ev.parse("salt/job/1/new", data)
    assert json.dumps(data) == before


# -- ids and function names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mid", "valid"),
    [
        ("minion-1", True),
        ("web.example.com", True),
        ("münchen", True),
        ("a b", True),
        ("...", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("../minions/real/data", False),
        ("a\\b", False),
        ("a\0b", False),
        (None, False),
        (3, False),
    ],
)
def test_valid_id(mid, valid):
    assert ev.valid_id(mid) is valid


@settings(max_examples=300, deadline=None, database=None)
@given(mid=st.text(max_size=12) | st.sampled_from([".", "..", "", "a/..", "..\\x"]))
def test_valid_id_agrees_with_salts_own(tmp_path_factory, mid):
    """The pure rule equals salt.utils.verify.valid_id over a pki dir without symlinks."""
    import salt.utils.verify

    pki = tmp_path_factory.getbasetemp() / "pki-for-valid-id"
    pki.mkdir(exist_ok=True)
    assert ev.valid_id(mid) == salt.utils.verify.valid_id({"pki_dir": str(pki)}, mid)
