"""salt_ws.pipeline, sans I/O: feed bus items, assert on the messages that come out.

No loop, no monkeypatching (python-websockets' ``tests/test_protocol.py`` style): a
:class:`Pipeline` is built with a fixed epoch, fed ``(tag, data)`` pairs and link markers at a
given ``now``, and asked for its fan-out, replays, ticks and notices.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salt_ws import wire
from salt_ws.acl import ADMIN, Permissions
from salt_ws.pipeline import (
    GAP_TAG,
    MAX_SEQ_DIGITS,
    SUBSCRIBED_TAG,
    TICK_TAG,
    Cursor,
    Dropped,
    Format,
    Group,
    LinkChange,
    Pipeline,
    TagFilter,
    sse,
)

NOW = 1_700_000_000.0
EPOCH = "e1"
ACCEPTED = frozenset({"web-1", "web-2", "db-1", "minion-1"})
ACL = [{"web-*": ["test.*"]}, {"L@db-1": ["cmd.*"]}]  # web-*: test.*, db-1: cmd.*
RESOLVED = {"web-*": {"web-1", "web-2"}, "L@db-1": {"db-1"}}
LIMITED = Permissions(ACL, resolved=RESOLVED)
ENVELOPE, PLAIN, SSE = Format.ENVELOPE, Format.PLAIN, Format.SSE


def make(**kwargs: Any) -> Pipeline:
    """A pipeline of epoch ``e1`` that knows the limited audience."""
    kwargs.setdefault("epoch", EPOCH)
    kwargs.setdefault("accepted", lambda: ACCEPTED)
    pipe = Pipeline(**kwargs)
    pipe.audiences[LIMITED.key] = LIMITED
    pipe.job_funs.watch(NOW - 60)  # the engine saw every bus event from a minute ago
    return pipe


def jid(n: int) -> str:
    """A Salt jid (local time, as without ``utc_jid``) made at NOW, job ``n``."""
    return datetime.datetime.fromtimestamp(NOW).strftime("%Y%m%d%H%M%S") + f"{n:06d}"


def new(n: int, fun: str, minions: list[str]) -> tuple[str, dict[str, Any]]:
    data = {"jid": jid(n), "fun": fun, "tgt": ",".join(minions), "tgt_type": "list"}
    return f"salt/job/{jid(n)}/new", {**data, "minions": minions, "user": "root"}


def ret(n: int, fun: str, mid: str) -> tuple[str, dict[str, Any]]:
    data = {"jid": jid(n), "fun": fun, "id": mid, "return": True, "retcode": 0, "success": True}
    return f"salt/job/{jid(n)}/ret/{mid}", data


def ev(n: int, tag: str = "custom/tag") -> tuple[str, dict[str, Any]]:
    return tag, {"n": n}


def events(count: int, start: int = 1, tag: str = "custom/tag") -> list[tuple[str, Any]]:
    return [ev(n, tag) for n in range(start, start + count)]


def envelope(message: str) -> dict[str, Any]:
    return json.loads(message)


def ids(messages: list[str]) -> list[str]:
    return [envelope(m)["id"] for m in messages]


def seqs(messages: list[str]) -> list[int]:
    return [Cursor.parse(i).seq for i in ids(messages)]


def group(audience: str = ADMIN, tags: list[str] | None = None, fmt: Format = ENVELOPE) -> Group:
    return Group(audience, frozenset(tags) if tags else None, fmt)


def parse_sse(text: str) -> list[dict[str, list[str]]]:
    """Events of an SSE stream as the HTML spec's parser dispatches them (fields -> values).

    Lines end with CRLF, LF or CR; a blank line dispatches; ``:`` starts a comment.
    """
    found: list[dict[str, list[str]]] = []
    fields: dict[str, list[str]] = {}
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if fields:
                found.append(fields)
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    return found


# -- seq, epoch, ids --------------------------------------------------------------------------


def test_entries_are_numbered_from_1_and_named_epoch_colon_seq():
    pipe = make()
    assert (pipe.seq, pipe.latest, pipe.oldest) == (0, "e1:0", 1)
    batch = pipe.feed(events(3), NOW)
    assert [e.seq for e in batch.entries] == [1, 2, 3]
    assert [pipe.id_of(e.seq) for e in batch.entries] == ["e1:1", "e1:2", "e1:3"]
    assert batch.events == events(3)  # the bus events, for the formatted view
    assert pipe.feed(events(1, 4), NOW).entries[0].seq == 4
    assert (pipe.latest, pipe.oldest) == ("e1:4", 1)


def test_engine_notices_take_a_seq_and_only_bus_events_go_to_the_view():
    pipe = make()
    items = [ev(1), LinkChange(False, NOW), LinkChange(True, NOW + 1), ev(2), Dropped(NOW + 2)]
    batch = pipe.feed(items, NOW)
    assert [(e.seq, e.tag, e.notice) for e in batch.entries] == [
        (1, "custom/tag", False),
        (2, wire.GAP_TAG, True),
        (3, wire.RESTORED_TAG, True),
        (4, "custom/tag", False),
        (5, wire.DROPPED_TAG, True),
    ]
    assert batch.events == [ev(1), ev(2)]
    assert batch.reseed is True
    assert pipe.bus_reconnects == 1
    assert pipe.feed([LinkChange(False, NOW)], NOW).reseed is False  # lost: nothing to re-read


def test_a_random_epoch_is_chosen_per_pipeline_and_a_bad_one_is_refused():
    first, second = Pipeline(), Pipeline()
    assert re.fullmatch(r"[0-9a-f]{16}", first.epoch)
    assert first.epoch != second.epoch
    with pytest.raises(ValueError):
        Pipeline(epoch="has:colon")
    with pytest.raises(ValueError):
        Pipeline(epoch="")


@pytest.mark.parametrize(
    ("text", "cursor"),
    [
        ("e1:0", Cursor("e1", 0)),
        ("e1:42", Cursor("e1", 42)),
        ("A_b-9:007", Cursor("A_b-9", 7)),
        ("e" * 64 + ":1", Cursor("e" * 64, 1)),
        ("e1:" + "9" * MAX_SEQ_DIGITS, Cursor("e1", int("9" * MAX_SEQ_DIGITS))),
    ],
)
def test_cursor_parse_accepts_ids(text, cursor):
    assert Cursor.parse(text) == cursor
    assert Cursor.parse(str(cursor)) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "e1",
        ":1",
        "e1:",
        "e1:-1",
        "e1:+1",
        "e1:1.0",
        "e1:1:2",
        "e 1:1",
        "e/1:1",
        "e" * 65 + ":1",
        "e1:" + "9" * (MAX_SEQ_DIGITS + 1),
        "e1:\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, not ASCII
        "e1:1\n",
    ],
)
def test_cursor_parse_refuses_what_is_not_an_id(text):
    with pytest.raises(ValueError):
        Cursor.parse(text)


# -- encodings ---------------------------------------------------------------------------------


def test_plain_envelope_and_sse_encodings_are_exact():
    pipe = make()
    [entry] = pipe.feed([("salt/key", {"id": "m1", "act": "accept"})], NOW).entries
    plain = '{"tag":"salt/key","data":{"id":"m1","act":"accept"}}'
    assert pipe.encoding(entry, ADMIN, PLAIN) == plain
    assert pipe.encoding(entry, ADMIN, ENVELOPE) == (
        '{"id":"e1:1","tag":"salt/key","data":{"id":"m1","act":"accept"}}'
    )
    assert pipe.encoding(entry, ADMIN, SSE) == ("tag: salt/key\nid: e1:1\ndata: " + plain + "\n\n")


def test_include_master_adds_master_to_every_encoding():
    pipe = make(master_id="mas-1")
    [entry] = pipe.feed([("a/b", {"x": 1})], NOW).entries
    plain = '{"tag":"a/b","data":{"x":1},"master":"mas-1"}'
    assert pipe.encoding(entry, ADMIN, PLAIN) == plain
    assert pipe.encoding(entry, ADMIN, ENVELOPE) == (
        '{"id":"e1:1","tag":"a/b","data":{"x":1},"master":"mas-1"}'
    )
    assert pipe.encoding(entry, ADMIN, SSE) == "tag: a/b\nid: e1:1\ndata: " + plain + "\n\n"
    assert pipe.tick(ENVELOPE) == (
        '{"id":"e1:1","tag":"salt_ws/stream/tick","data":{},"master":"mas-1"}'
    )
    assert pipe.subscribed(["x"]) == (
        '{"tag":"salt_ws/stream/subscribed","data":{"tags":["x"]},"master":"mas-1"}'
    )


@pytest.mark.parametrize(
    "tag",
    [
        "a\nid: forged\n\ndata: {}",
        "a\r\nid: forged\r\n\r\ndata: {}",
        "a\rid: forged\r\rdata: {}",
        "a\n\n",
        "\r",
    ],
    ids=["lf", "crlf", "cr", "trailing-blank", "lone-cr"],
)
def test_a_tag_with_cr_or_lf_cannot_inject_sse_lines(tag):
    pipe = make()
    [entry] = pipe.feed([(tag, {"x": 1})], NOW).entries
    text = pipe.encoding(entry, ADMIN, SSE)
    assert text.endswith("\n\n") and text.count("\n") == 4 and "\r" not in text
    [event] = parse_sse(text)
    assert sorted(event) == ["data", "id", "tag"]
    assert event["id"] == ["e1:1"]
    assert len(event["tag"]) == len(event["data"]) == 1
    assert json.loads(event["data"][0]) == {"tag": tag, "data": {"x": 1}}  # the exact tag


def test_a_payload_with_line_breaks_stays_on_one_data_line():
    pipe = make()
    data = {"out": "line 1\nline 2\r\n", "sep": "\u2028\u2029\x85"}
    [entry] = pipe.feed([("a", data)], NOW).entries
    [event] = parse_sse(pipe.encoding(entry, ADMIN, SSE))
    assert json.loads(event["data"][0])["data"] == data


def test_sse_helper_is_rest_tornados_shape():
    assert sse("t", "e:1", '{"x":1}') == 'tag: t\nid: e:1\ndata: {"x":1}\n\n'
    assert sse("a\r\nb", "e:1", "{}") == "tag: a\\r\\nb\nid: e:1\ndata: {}\n\n"


def test_tick_and_subscribed_shapes():
    pipe = make()
    assert pipe.tick(ENVELOPE) == '{"id":"e1:0","tag":"salt_ws/stream/tick","data":{}}'
    pipe.feed(events(2), NOW)
    assert json.loads(pipe.tick(ENVELOPE)) == {"id": "e1:2", "tag": TICK_TAG, "data": {}}
    assert pipe.tick(PLAIN) == '{"tag":"salt_ws/stream/tick","data":{}}'
    assert pipe.tick(SSE) == (
        'tag: salt_ws/stream/tick\nid: e1:2\ndata: {"tag":"salt_ws/stream/tick","data":{}}\n\n'
    )
    assert pipe.seq == 2  # a tick is no entry: it takes no seq
    assert pipe.subscribed(["salt/key", "salt/auth"]) == (
        '{"tag":"salt_ws/stream/subscribed","data":{"tags":["salt/auth","salt/key"]}}'
    )
    assert json.loads(pipe.subscribed([])) == {"tag": SUBSCRIBED_TAG, "data": {"tags": []}}


def test_each_encoding_is_built_once_per_entry_audience_and_format():
    pipe = make()
    batch = pipe.feed([new(1, "test.ping", ["web-1", "db-1"]), ev(2)], NOW)
    groups = [
        group(ADMIN, None, PLAIN),
        group(ADMIN, None, ENVELOPE),
        group(ADMIN, ["custom/*", "salt/*"], ENVELOPE),
        group(LIMITED.key, None, ENVELOPE),
        group(LIMITED.key, ["salt/*"], ENVELOPE),
    ]
    out = pipe.fan_out(batch.entries, groups)
    first, second = pipe.fan_out(batch.entries, groups), out
    for g in groups:
        assert all(a is b for a, b in zip(first[g], second[g], strict=True))
    assert out[groups[0]][0] is batch.entries[0].plain  # the admin's plain: the entry's own
    assert out[groups[1]][0] is out[groups[2]][0]  # same audience and format: same str
    assert out[groups[3]][0] is out[groups[4]][0]
    assert len(out[groups[3]]) == 1  # the limited audience does not see custom/tag


def test_replay_reuses_the_encodings_of_the_live_fan_out():
    pipe = make()
    batch = pipe.feed(events(3), NOW)
    live = pipe.render(batch.entries, group())
    again = pipe.replay(Cursor(EPOCH, 0), group())
    assert all(a is b for a, b in zip(live, again, strict=True))


# -- history bounds ----------------------------------------------------------------------------


def history(pipe: Pipeline) -> list[int]:
    return [e.seq for e in pipe.history]


def test_history_is_bounded_in_events():
    pipe = make(history_size=3)
    pipe.feed(events(5), NOW)
    assert history(pipe) == [3, 4, 5]
    assert pipe.oldest == 3
    assert pipe.status()["history_evicted"] == 2


def test_history_is_bounded_in_bytes_of_the_plain_encodings():
    probe = make()
    sizes = [e.size for e in probe.feed(events(4), NOW).entries]
    assert sizes[0] == wire.text_size(wire.encode_event("custom/tag", {"n": 1}))
    pipe = make(history_max_bytes=sum(sizes[1:]))  # room for exactly the last three
    pipe.feed(events(4), NOW)
    assert history(pipe) == [2, 3, 4]
    assert pipe.history_bytes == sum(sizes[1:])
    assert pipe.status()["history_evicted"] == 1


def test_history_bytes_count_the_envelope_sse_and_per_audience_encodings():
    pipe = make()
    batch = pipe.feed([new(1, "test.ping", ["web-1", "db-1"])], NOW)
    [entry] = batch.entries
    base = pipe.history_bytes
    assert base == entry.size == wire.text_size(entry.plain)
    pipe.encoding(entry, ADMIN, PLAIN)  # the entry's own: nothing more
    assert pipe.history_bytes == base
    env = pipe.encoding(entry, ADMIN, ENVELOPE)
    text = pipe.encoding(entry, ADMIN, SSE)
    cut = pipe.encoding(entry, LIMITED.key, PLAIN)  # the new cut down to web-1
    assert json.loads(cut)["data"]["minions"] == ["web-1"]
    added = wire.text_size(env) + wire.text_size(text) + wire.text_size(cut)
    assert pipe.history_bytes == base + added == entry.size
    pipe.encoding(entry, ADMIN, ENVELOPE)  # cached: counted once
    pipe.encoding(entry, LIMITED.key, PLAIN)
    assert pipe.history_bytes == base + added
    for fmt in Format:  # hidden from an audience: no text held, no bytes
        assert pipe.encoding(entry, "unregistered", fmt) == ""
    assert pipe.history_bytes == base + added == entry.size


def test_encodings_built_later_can_push_the_oldest_entries_out():
    probe = make()
    sizes = [e.size for e in probe.feed(events(3), NOW).entries]
    pipe = make(history_max_bytes=sum(sizes))
    batch = pipe.feed(events(3), NOW)
    assert history(pipe) == [1, 2, 3]
    [text] = pipe.render(batch.entries[2:], group(fmt=SSE))  # the newest one's SSE text
    assert sizes[0] < wire.text_size(text) < sizes[0] + sizes[1]  # two must go to make room
    assert history(pipe) == [3]
    assert pipe.history_bytes == sum(e.size for e in pipe.history) <= pipe.history_max_bytes
    assert not batch.entries[0].kept


def test_history_bytes_stay_the_sum_of_what_is_kept():
    pipe = make(history_size=4, history_max_bytes=2000)
    for n in range(30):
        batch = pipe.feed([ev(n), new(n + 1, "test.ping", ["web-1", "db-1"])], NOW)
        pipe.fan_out(batch.entries, [group(fmt=f) for f in Format] + [group(LIMITED.key)])
        assert pipe.history_bytes == sum(e.size for e in pipe.history)
        assert pipe.history_bytes <= 2000 and len(pipe.history) <= 4


def test_an_entry_larger_than_history_max_bytes_is_not_kept():
    pipe = make(history_max_bytes=200)
    pipe.feed([ev(1)], NOW)
    [big] = pipe.feed([("big", {"x": "y" * 1000})], NOW).entries
    assert not big.kept and pipe.history_bytes == 0 and history(pipe) == []
    assert pipe.oldest == 3  # none kept: the next one
    [gap] = pipe.replay(Cursor(EPOCH, 1), group())
    assert envelope(gap)["data"]["reason"] == "too old"


def test_history_size_0_keeps_nothing():
    pipe = make(history_size=0)
    batch = pipe.feed(events(3), NOW)
    assert history(pipe) == [] and pipe.history_bytes == 0
    assert not any(e.kept for e in batch.entries)
    assert pipe.render(batch.entries, group())  # the live stream does not need the history
    assert pipe.history_bytes == 0


def test_status_shows_the_history_and_its_bounds():
    pipe = make(history_size=2, history_max_bytes=10_000)
    pipe.feed(events(3), NOW)
    pipe.replay(Cursor(EPOCH, 0), group(tags=["custom/*"]))
    status = pipe.status()
    assert status == {
        "epoch": "e1",
        "latest": "e1:3",
        "oldest": "e1:2",
        "history": 2,
        "history_bytes": pipe.history_bytes,
        "history_size": 2,
        "history_max_bytes": 10_000,
        "history_evicted": 1,
        "replays": 1,
        "replayed": 2,
        "gaps": 1,
        "filter_sets": 1,
    }
    assert status["history_bytes"] > 0


# -- replay ------------------------------------------------------------------------------------


def gap_of(message: str) -> dict[str, Any]:
    found = envelope(message)
    assert found["tag"] == GAP_TAG
    return found


def test_an_exact_resume_continues_without_duplicate_or_hole():
    pipe = make()
    pipe.feed(events(5), NOW)
    replayed = pipe.replay(Cursor(EPOCH, 2), group())
    assert seqs(replayed) == [3, 4, 5]
    live = pipe.render(pipe.feed(events(2, 6), NOW).entries, group())
    assert seqs(replayed + live) == [3, 4, 5, 6, 7]
    assert [envelope(m)["data"]["n"] for m in replayed + live] == [3, 4, 5, 6, 7]


def test_resume_from_latest_sends_nothing_and_from_0_everything():
    pipe = make()
    pipe.feed(events(3), NOW)
    assert pipe.replay(Cursor(EPOCH, 3), group()) == []
    assert seqs(pipe.replay(Cursor(EPOCH, 0), group())) == [1, 2, 3]
    assert make().replay(Cursor(EPOCH, 0), group()) == []  # nothing yet, nothing missed
    assert pipe.status()["gaps"] == 0


def test_a_cursor_older_than_the_history_gets_a_gap_then_the_oldest_on():
    pipe = make(history_size=3)
    pipe.feed(events(5), NOW)  # 3, 4 and 5 kept
    assert seqs(pipe.replay(Cursor(EPOCH, 2), group())) == [3, 4, 5]  # 3 is kept: no gap
    gap, *rest = pipe.replay(Cursor(EPOCH, 1), group())  # 2 is gone
    assert gap_of(gap) == {
        "id": "e1:2",  # just before the first event sent: resuming from it loses nothing more
        "tag": GAP_TAG,
        "data": {"since": "e1:1", "resumed_from": "e1:3", "reason": "too old", "missed": True},
    }
    assert seqs(rest) == [3, 4, 5]
    assert pipe.status()["gaps"] == 1
    assert pipe.replay(Cursor(EPOCH, 2), group()) == rest  # the gap's id resumes cleanly


def test_a_cursor_of_another_epoch_is_an_engine_restart():
    pipe = make(history_size=3)
    pipe.feed(events(5), NOW)
    gap, *rest = pipe.replay(Cursor("e0", 3), group())
    assert gap_of(gap)["data"] == {
        "since": "e0:3",
        "resumed_from": "e1:3",
        "reason": "engine restarted",
        "missed": True,
    }
    assert gap_of(gap)["id"] == "e1:2"
    assert seqs(rest) == [3, 4, 5]
    fresh = make()  # restarted, nothing since
    [gap] = fresh.replay(Cursor("e0", 3), group())
    assert gap_of(gap)["data"]["resumed_from"] == "e1:1"
    assert gap_of(gap)["id"] == "e1:0"


def test_with_history_size_0_a_cursor_behind_gets_only_the_gap():
    pipe = make(history_size=0)
    pipe.feed(events(3), NOW)
    assert pipe.replay(Cursor(EPOCH, 3), group()) == []
    [gap] = pipe.replay(Cursor(EPOCH, 2), group())
    assert gap_of(gap) == {
        "id": "e1:3",
        "tag": GAP_TAG,
        "data": {"since": "e1:2", "resumed_from": "e1:4", "reason": "too old", "missed": True},
    }


def test_replay_applies_filters_and_resumed_from_is_the_first_event_sent():
    pipe = make(history_size=5)
    pipe.feed([ev(1, "a/1"), ev(2, "b/2"), ev(3, "b/3"), ev(4, "a/4"), ev(5, "b/5")], NOW)
    pipe.feed([ev(6, "b/6"), ev(7, "a/7")], NOW)  # 3..7 kept
    assert seqs(pipe.replay(Cursor(EPOCH, 2), group(tags=["a/*"]))) == [4, 7]  # 3 kept: no gap
    gap, *rest = pipe.replay(Cursor(EPOCH, 0), group(tags=["a/*"]))
    assert gap_of(gap)["data"]["resumed_from"] == "e1:4"  # 3 is kept but filtered out
    assert gap_of(gap)["id"] == "e1:3"
    assert seqs(rest) == [4, 7]
    [gap] = pipe.replay(Cursor(EPOCH, 0), group(tags=["nothing/*"]))
    assert gap_of(gap)["data"]["resumed_from"] == "e1:8"  # nothing sent: the next event


def test_replay_sends_only_what_the_audience_may_see():
    pipe = make()
    pipe.feed(
        [
            new(1, "test.ping", ["web-1", "db-1"]),
            ("salt/auth", {"id": "x"}),
            ret(1, "test.ping", "web-1"),
            ret(1, "test.ping", "db-1"),
        ],
        NOW,
    )
    shown = pipe.replay(Cursor(EPOCH, 0), group(LIMITED.key))
    assert seqs(shown) == [1, 3]
    assert envelope(shown[0])["data"]["minions"] == ["web-1"]
    assert pipe.replay(Cursor(EPOCH, 0), group("unregistered")) == []


def test_replay_in_sse_format_gap_included():
    pipe = make(history_size=1)
    pipe.feed(events(2), NOW)
    text = "".join(pipe.replay(Cursor(EPOCH, 0), group(fmt=SSE)))
    gap, event = parse_sse(text)
    assert (gap["tag"], gap["id"]) == ([GAP_TAG], ["e1:1"])
    assert json.loads(gap["data"][0])["data"]["reason"] == "too old"
    assert (event["tag"], event["id"]) == (["custom/tag"], ["e1:2"])


def test_check_refuses_only_a_seq_of_this_epoch_ahead_of_the_stream():
    pipe = make(history_size=1)
    pipe.feed(events(3), NOW)
    assert pipe.check(Cursor(EPOCH, 3)) is None
    assert pipe.check(Cursor(EPOCH, 0)) is None  # too old: a gap, not a refusal
    assert pipe.check(Cursor("e0", 10**9)) is None  # another epoch: a restart
    problem = pipe.check(Cursor(EPOCH, 4))
    assert problem == "id e1:4 is ahead of this stream"


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("globs", "tag", "matches"),
    [
        (["salt/key"], "salt/key", True),
        (["salt/key"], "salt/key/x", False),  # the whole tag
        (["salt/key"], "xsalt/key", False),
        (["salt/job/*/ret/*"], "salt/job/1/ret/m1", True),
        (["salt/*"], "salt/job/1/ret/m1", True),  # * crosses /
        (["*"], "", True),
        (["salt/job/*/ret/*"], "salt/job/1/new", False),
        (["Salt/key"], "salt/key", False),  # case-sensitive
        (["salt/key"], "SALT/KEY", False),
        (["salt/minion/?/start"], "salt/minion/a/start", True),
        (["salt/minion/?/start"], "salt/minion/ab/start", False),
        (["salt/[ab]*"], "salt/auth", True),
        (["salt/[!ab]*"], "salt/auth", False),
        (["a", "b/*", "c?"], "b/x", True),  # several globs: any
        (["a", "b/*", "c?"], "cd", True),
        (["a", "b/*", "c?"], "d", False),
        (["a.b"], "aXb", False),  # regex characters are literal
        (["a+"], "a+", True),
        (["(x|y)"], "x", False),
        (["tag*"], "tag\nmore", True),  # * crosses a line break too
        (["tag"], "tag\n", False),  # no $-before-newline match
    ],
)
def test_tag_filters_match_as_salt_run_state_event(globs, tag, matches):
    assert TagFilter(globs).matches(tag) is matches
    assert matches == any(fnmatch.fnmatchcase(tag, glob) for glob in globs)


def test_an_empty_filter_set_matches_everything():
    assert TagFilter([]).matches("anything/at/all")
    assert Group().filtered is False
    assert Group(tags=frozenset()).filtered is False
    assert Group(tags=frozenset({"a"})).filtered is True


@given(
    st.lists(st.text("ab/*?[]!", min_size=1, max_size=6), min_size=1, max_size=4),
    st.text("ab/\n", max_size=8),
)
def test_tag_filters_agree_with_fnmatchcase(globs, tag):
    assert TagFilter(globs).matches(tag) is any(fnmatch.fnmatchcase(tag, g) for g in globs)


def test_fan_out_filters_each_group_and_notices_pass_every_filter():
    pipe = make()
    items = [ev(1, "a/1"), ev(2, "b/2"), LinkChange(False, NOW), ev(3, "a/3")]
    batch = pipe.feed(items, NOW)
    groups = [group(tags=["a/*"]), group(tags=["b/*"]), group(), group(tags=["zzz"])]
    out = pipe.fan_out(batch.entries, groups)
    assert seqs(out[groups[0]]) == [1, 3, 4]
    assert seqs(out[groups[1]]) == [2, 3]
    assert seqs(out[groups[2]]) == [1, 2, 3, 4]
    assert seqs(out[groups[3]]) == [3]  # the engine's notice only
    assert envelope(out[groups[3]][0])["tag"] == wire.GAP_TAG


def test_fan_out_leaves_out_groups_with_nothing_to_send():
    pipe = make()
    batch = pipe.feed(events(2), NOW)
    out = pipe.fan_out(batch.entries, [group(tags=["x"]), group("unregistered"), group()])
    assert list(out) == [group()]


class CountingFilter(TagFilter):
    """A TagFilter that counts its matches."""

    calls = 0

    def matches(self, tag: str) -> bool:
        CountingFilter.calls += 1
        return super().matches(tag)


class CountingPipeline(Pipeline):
    """Hands out CountingFilters, and counts how many were compiled."""

    compiled = 0

    def tag_filter(self, tags: frozenset[str]) -> TagFilter:
        found = self._filters.get(tags)
        if found is None:
            CountingPipeline.compiled += 1
            found = self._filters[tags] = CountingFilter(tags)
        return found


def test_matching_costs_once_per_entry_and_distinct_filter_set():
    pipe = CountingPipeline(epoch=EPOCH, accepted=lambda: ACCEPTED)
    pipe.audiences[LIMITED.key] = LIMITED
    CountingFilter.calls = CountingPipeline.compiled = 0
    batch = pipe.feed([*events(3), LinkChange(False, NOW), ev(4, "salt/auth")], NOW)
    groups = [
        group(ADMIN, ["custom/*"], PLAIN),
        group(ADMIN, ["custom/*"], ENVELOPE),
        group(ADMIN, ["custom/*"], SSE),
        group(LIMITED.key, ["custom/*"], ENVELOPE),
        group("unregistered", ["custom/*"], ENVELOPE),
        group(ADMIN, ["salt/*", "custom/*"], ENVELOPE),
        group(LIMITED.key, ["custom/*", "salt/*"], PLAIN),
        group(ADMIN, None, ENVELOPE),
    ]
    pipe.fan_out(batch.entries, groups)
    # 4 bus events (the notice is not matched) x 2 distinct sets, whatever the 7 groups
    assert CountingFilter.calls == 4 * 2
    assert CountingPipeline.compiled == 2
    pipe.fan_out(batch.entries, groups)  # the next batch: compiled sets are kept
    assert CountingPipeline.compiled == 2


def test_compiled_filter_sets_are_shared_and_bounded():
    pipe = make()
    tags = frozenset({"a/*"})
    assert pipe.tag_filter(tags) is pipe.tag_filter(frozenset({"a/*"}))
    for n in range(1100):
        pipe.tag_filter(frozenset({f"x/{n}"}))
    assert pipe.status()["filter_sets"] == 1024


# -- ACL composition ---------------------------------------------------------------------------


ADMIN_ONLY = [
    ("salt/auth", {"act": "accept", "id": "web-1"}),
    ("salt/key", {"act": "delete", "id": "web-1", "result": True}),
    ("custom/tag", {"x": 1}),
    ret(9, "cmd.run", "web-1"),  # cmd.* is not allowed on web-1
]
FORGED = [
    (wire.GAP_TAG, {"reason": "forged", "missed": True}),
    (wire.RESTORED_TAG, {"reason": "forged"}),
    (wire.DROPPED_TAG, {"reason": "forged"}),
    (GAP_TAG, {"since": "e1:0", "resumed_from": "e1:1", "reason": "too old", "missed": True}),
    (TICK_TAG, {}),
    (SUBSCRIBED_TAG, {"tags": []}),
    ("salt_ws/anything", {}),
]


@pytest.mark.parametrize(
    "tags", [None, ["*"], ["salt/*"], ["salt/auth", "salt/key", "custom/*", "salt/job/*"]]
)
def test_a_limited_audiences_filter_never_widens_what_it_may_see(tags):
    pipe = make()
    batch = pipe.feed([*ADMIN_ONLY, ret(1, "test.ping", "web-1")], NOW)
    limited = group(LIMITED.key, tags)
    out = pipe.fan_out(batch.entries, [limited, group(ADMIN, tags)])
    assert seqs(out[limited]) == [5]  # only the test.ping return on web-1
    admin = [n for n, e in enumerate(batch.entries, 1) if TagFilter(tags or []).matches(e.tag)]
    assert seqs(out[group(ADMIN, tags)]) == admin
    assert seqs(pipe.replay(Cursor(EPOCH, 0), limited)) == [5]


@pytest.mark.parametrize("tags", [None, ["salt_ws/*"], ["nothing"]])
def test_engine_notices_reach_every_audience_through_any_filter(tags):
    pipe = make()
    batch = pipe.feed([LinkChange(False, NOW), LinkChange(True, NOW), Dropped(NOW)], NOW)
    for audience in (ADMIN, LIMITED.key, "unregistered"):
        shown = pipe.render(batch.entries, group(audience, tags))
        assert [envelope(m)["tag"] for m in shown] == [
            wire.GAP_TAG,
            wire.RESTORED_TAG,
            wire.DROPPED_TAG,
        ]
        assert envelope(shown[0])["data"]["missed"] is True


@pytest.mark.parametrize("tags", [None, ["salt_ws/*"], ["*"]])
def test_a_forged_salt_ws_bus_event_does_not_reach_a_limited_audience(tags):
    pipe = make()
    batch = pipe.feed(FORGED, NOW)
    assert not any(e.notice for e in batch.entries)
    for fmt in Format:
        assert pipe.render(batch.entries, group(LIMITED.key, tags, fmt)) == []
        assert pipe.render(batch.entries, group("unregistered", tags, fmt)) == []
    assert pipe.replay(Cursor(EPOCH, 0), group(LIMITED.key, tags)) == []
    # the administrators get them as ordinary events (a bus event, not the engine's)
    assert len(pipe.render(batch.entries, group(ADMIN, tags))) == len(FORGED)


def test_a_forged_notice_tag_does_not_pass_a_filter_as_a_notice_would():
    pipe = make()
    batch = pipe.feed([(wire.GAP_TAG, {"reason": "forged"}), LinkChange(False, NOW)], NOW)
    shown = pipe.render(batch.entries, group(ADMIN, ["custom/*"]))
    assert seqs(shown) == [2]  # the engine's own only
