"""salt_ws.session, sans I/O: request parsing, handshake states, messages, filters, ticks.

Tables of inputs and the decisions that come out; time is passed in (``now``).
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from salt_ws.acl import ADMIN
from salt_ws.pipeline import Cursor, Format, Group
from salt_ws.session import (
    CLIENT_READY,
    InvalidState,
    Reply,
    ReplyKind,
    RequestError,
    Session,
    State,
    StreamRequest,
    check_tags,
    over_a_limit,
    parse_request,
    token_message,
)
from salt_ws.wire import CloseCode


def q(**kwargs: Any) -> dict[str, list[str]]:
    """Query arguments: a value or a list of values per name."""
    return {k: v if isinstance(v, list) else [v] for k, v in kwargs.items()}


# -- parse_request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "args", "last_event_id", "expected"),
    [
        ("all_events", {}, None, StreamRequest()),
        ("all_events", q(envelope="1"), None, StreamRequest(envelope=True)),
        ("all_events", q(envelope="true"), None, StreamRequest(envelope=True)),
        ("all_events", q(envelope=" YES "), None, StreamRequest(envelope=True)),
        ("all_events", q(envelope="on"), None, StreamRequest(envelope=True)),
        ("all_events", q(envelope="0"), None, StreamRequest()),
        ("all_events", q(envelope=""), None, StreamRequest()),
        ("all_events", q(envelope=["1", "0"]), None, StreamRequest()),  # the last one
        (
            "all_events",
            q(since="e1:5"),
            None,
            StreamRequest(envelope=True, since=Cursor("e1", 5)),  # since implies the envelope
        ),
        (
            "all_events",
            q(since="e1:5", envelope="0"),
            None,
            StreamRequest(envelope=True, since=Cursor("e1", 5)),
        ),
        ("all_events", q(since=" e1:5 "), None, StreamRequest(True, Cursor("e1", 5))),
        (
            "all_events",
            q(tag=["salt/key", "salt/job/*", "salt/key"]),
            None,
            StreamRequest(tags=("salt/key", "salt/job/*")),  # in order, once each
        ),
        ("formatted_events", q(delta="1"), None, StreamRequest(delta=True)),
        ("formatted_events", q(delta="off"), None, StreamRequest()),
        ("formatted_events", {}, None, StreamRequest()),
        ("events", {}, None, StreamRequest()),
        ("events", {}, "e1:3", StreamRequest(True, Cursor("e1", 3))),
        ("events", {}, "", StreamRequest()),  # EventSource sends an empty one at first
        ("events", q(since="e1:9"), "e1:3", StreamRequest(True, Cursor("e1", 9))),  # since wins
        ("events", q(tag="salt/*"), None, StreamRequest(tags=("salt/*",))),
    ],
)
def test_parse_request_accepts(channel, args, last_event_id, expected):
    assert parse_request(args, channel, last_event_id) == expected


@pytest.mark.parametrize(
    ("channel", "args", "last_event_id", "message"),
    [
        ("all_events", q(foo="1"), None, "unknown parameter 'foo' for /all_events"),
        ("all_events", q(token="x"), None, "unknown parameter 'token' for /all_events"),
        ("all_events", q(delta="1"), None, "unknown parameter 'delta' for /all_events"),
        (
            "all_events",
            q(envelope="maybe"),
            None,
            "parameter 'envelope' must be 1 or 0, got 'maybe'",
        ),
        ("all_events", q(since="nope"), None, "malformed 'since' 'nope': expected '<epoch>:<seq>'"),
        ("all_events", q(since=""), None, "malformed 'since' ''"),
        ("all_events", q(since="e1:-1"), None, "malformed 'since' 'e1:-1': the seq of an id"),
        ("all_events", q(since="e1:" + "1" * 20), None, "the seq of an id is a decimal number"),
        ("all_events", q(tag=""), None, "a tag filter is a non-empty string"),
        ("all_events", q(tag="x" * 1025), None, "a tag filter has at most 1024 characters"),
        (
            "all_events",
            q(tag=[f"t{n}" for n in range(65)]),
            None,
            "at most 64 tag filters (max_filters)",
        ),
        ("formatted_events", q(since="e1:1"), None, "unknown parameter 'since'"),
        ("formatted_events", q(tag="a"), None, "unknown parameter 'tag'"),
        ("formatted_events", q(envelope="1"), None, "unknown parameter 'envelope'"),
        ("formatted_events", q(delta="2"), None, "parameter 'delta' must be 1 or 0"),
        ("events", q(token="5a1f"), None, "a token in the query string is refused"),
        ("events", q(envelope="1"), None, "unknown parameter 'envelope' for /events"),
        ("events", {}, "garbage", "malformed 'since' 'garbage'"),
        ("events", {}, "x" * 500, "malformed 'since' '" + "x" * 100 + "'"),  # cut to 100
    ],
)
def test_parse_request_refuses_with_a_message(channel, args, last_event_id, message):
    with pytest.raises(RequestError) as caught:
        parse_request(args, channel, last_event_id)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 300


def test_parse_request_uses_the_configured_filter_bounds():
    args = q(tag=["a", "b", "c"])
    assert parse_request(args, "all_events", max_filters=3).tags == ("a", "b", "c")
    with pytest.raises(RequestError, match="at most 2 tag filters"):
        parse_request(args, "all_events", max_filters=2)
    with pytest.raises(RequestError, match="at most 4 characters"):
        parse_request(q(tag="abcde"), "all_events", max_filter_length=4)


def bounded(count: int) -> Iterator[str]:
    """``count`` distinct tags, then a failure: a caller that reads on has not stopped."""
    for n in range(count):
        yield f"tag/{n}"
    raise AssertionError(f"read past {count} tags")


def test_check_tags_stops_at_the_first_tag_over_max_filters():
    # 10,000 tags fit in a 64 KiB message or URL; matching each against the ones found
    # before is quadratic: a refusal must come at the first filter too many
    with pytest.raises(RequestError, match="at most 64 tag filters"):
        check_tags(bounded(65), 64, 1024)
    with pytest.raises(RequestError, match="at most 64 tag filters"):
        check_tags(itertools.chain(["a"] * 1000, bounded(64)), 64, 1024)  # duplicates are free
    assert check_tags(["a", "a", "b"], 2, 10) == ["a", "b"]


@pytest.mark.parametrize("tags", [[5], [None], [["a"]], [{"a": 1}], [""], [True]])
def test_check_tags_refuses_what_is_not_a_non_empty_string(tags):
    with pytest.raises(RequestError, match="non-empty string"):
        check_tags(tags, 64, 1024)


# -- State -------------------------------------------------------------------------------------


ALLOWED = {
    (State.AWAITING_TOKEN, State.AUTHENTICATING),
    (State.AWAITING_TOKEN, State.CLOSED),
    (State.AUTHENTICATING, State.AWAITING_READY),
    (State.AUTHENTICATING, State.CLOSED),
    (State.AWAITING_READY, State.STREAMING),
    (State.AWAITING_READY, State.CLOSED),
    (State.STREAMING, State.CLOSED),
}


def session_in(state: State, channel: str = "all_events", **kwargs: Any) -> Session:
    session = Session(channel, **kwargs)
    session.state = state
    return session


@pytest.mark.parametrize(("start", "to"), sorted(ALLOWED, key=str))
def test_allowed_transitions(start, to):
    session = session_in(start)
    session.advance(to)
    assert session.state is to


@pytest.mark.parametrize(
    ("start", "to"),
    [(a, b) for a in State for b in State if (a, b) not in ALLOWED],
    ids=str,
)
def test_every_other_transition_raises_invalid_state(start, to):
    session = session_in(start)
    with pytest.raises(InvalidState, match=f"{start.value} -> {to.value}"):
        session.advance(to)
    assert session.state is start


def test_a_session_starts_awaiting_its_token_or_ready():
    assert Session("all_events").state is State.AWAITING_TOKEN
    assert Session("all_events", authenticated=True).state is State.AWAITING_READY
    assert not Session("all_events", authenticated=True).streaming


@pytest.mark.parametrize("start", [State.AWAITING_TOKEN, State.AUTHENTICATING])
def test_authenticated_moves_to_awaiting_ready_and_records_whose_it_is(start):
    session = session_in(start)
    session.authenticated("tok", {"name": "alice"}, "aud")
    assert session.state is State.AWAITING_READY
    assert (session.token, session.user, session.audience) == ("tok", {"name": "alice"}, "aud")


# -- on_text -----------------------------------------------------------------------------------


def close(code: CloseCode, reason: str) -> Reply:
    return Reply(ReplyKind.CLOSE, code=int(code), reason=reason)


@pytest.mark.parametrize(
    ("state", "message", "reply", "after"),
    [
        (
            State.AWAITING_TOKEN,
            '{"token": "abc"}',
            Reply(ReplyKind.AUTHENTICATE, token="abc"),
            State.AUTHENTICATING,
        ),
        (
            State.AWAITING_TOKEN,
            CLIENT_READY,
            close(CloseCode.TOKEN_INVALID, 'authenticate first: send {"token": "..."}'),
            State.AWAITING_TOKEN,
        ),
        (
            State.AWAITING_TOKEN,
            '{"token": ""}',
            close(CloseCode.TOKEN_INVALID, 'authenticate first: send {"token": "..."}'),
            State.AWAITING_TOKEN,
        ),
        (
            State.AWAITING_TOKEN,
            '{"token": 5}',
            close(CloseCode.TOKEN_INVALID, 'authenticate first: send {"token": "..."}'),
            State.AWAITING_TOKEN,
        ),
        (State.AUTHENTICATING, CLIENT_READY, Reply(ReplyKind.NOTHING), State.AUTHENTICATING),
        (
            State.AUTHENTICATING,
            '{"token": "abc"}',
            close(CloseCode.POLICY, "unexpected message while authenticating"),
            State.AUTHENTICATING,
        ),
        (State.AWAITING_READY, CLIENT_READY, Reply(ReplyKind.START), State.AWAITING_READY),
        (
            State.AWAITING_READY,
            "hello",
            close(CloseCode.POLICY, f"unexpected message; send '{CLIENT_READY}'"),
            State.AWAITING_READY,
        ),
        (
            State.AWAITING_READY,
            '{"subscribe": ["a"]}',
            close(CloseCode.POLICY, f"unexpected message; send '{CLIENT_READY}'"),
            State.AWAITING_READY,
        ),
        (State.STREAMING, CLIENT_READY, Reply(ReplyKind.NOTHING), State.STREAMING),
        (State.STREAMING, "anything", Reply(ReplyKind.NOTHING), State.STREAMING),
        (State.STREAMING, '{"subscribe": ["a"]}', Reply(ReplyKind.SUBSCRIBED), State.STREAMING),
        (State.CLOSED, CLIENT_READY, Reply(ReplyKind.NOTHING), State.CLOSED),
        (State.CLOSED, '{"token": "abc"}', Reply(ReplyKind.NOTHING), State.CLOSED),
    ],
)
def test_on_text_in_each_state(state, message, reply, after):
    session = session_in(state)
    assert session.on_text(message) == reply
    assert session.state is after


def test_ready_while_authenticating_is_remembered():
    session = session_in(State.AUTHENTICATING)
    assert not session.ready_early
    session.on_text(CLIENT_READY)
    assert session.ready_early


@pytest.mark.parametrize(
    ("message", "token"),
    [
        ('{"token": "abc"}', "abc"),
        ('{"token": "abc", "other": 1}', "abc"),
        ('{"token": ""}', None),
        ('{"token": null}', None),
        ('["token"]', None),
        ("not json", None),
        ("[" * 100_000, None),  # too deep for json: no RecursionError escapes
    ],
)
def test_token_message(message, token):
    assert token_message(message) == token


# -- subscribe / unsubscribe -------------------------------------------------------------------


def streaming(tags: tuple[str, ...] = (), channel: str = "all_events", **kwargs: Any) -> Session:
    return session_in(State.STREAMING, channel, request=StreamRequest(tags=tags), **kwargs)


def test_subscribe_and_unsubscribe_change_the_filters_and_the_group():
    session = streaming(("salt/key",))
    assert session.group() == Group(ADMIN, frozenset({"salt/key"}), Format.PLAIN)
    assert session.on_text('{"subscribe": ["salt/auth", "salt/key"]}').kind is ReplyKind.SUBSCRIBED
    assert session.filters == ["salt/key", "salt/auth"]
    assert session.on_text('{"unsubscribe": ["salt/key", "never", 5]}').kind is (
        ReplyKind.SUBSCRIBED
    )
    assert session.filters == ["salt/auth"]
    assert session.on_text('{"unsubscribe": ["salt/auth"]}').kind is ReplyKind.SUBSCRIBED
    assert session.filters == []
    assert session.group() == Group(ADMIN, None, Format.PLAIN)  # no filter: everything
    assert session.on_text('{"subscribe": []}').kind is ReplyKind.SUBSCRIBED


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('{"subscribe": "salt/key"}', 'send {"subscribe": [<tags>]} or {"unsubscribe": [<tags>]}'),
        ('{"subscribe": ["a"], "x": 1}', 'send {"subscribe": [<tags>]}'),
        ('{"subscribe": ["a"], "unsubscribe": ["b"]}', 'send {"subscribe": [<tags>]}'),
        ('{"unsubscribe": {"a": 1}}', 'send {"subscribe": [<tags>]}'),
        ('{"subscribe": [5]}', "a tag filter is a non-empty string"),
        ('{"subscribe": [""]}', "a tag filter is a non-empty string"),
        ('{"subscribe": ["' + "x" * 33 + '"]}', "a tag filter has at most 32 characters"),
        ('{"subscribe": ["c", "d", "e"]}', "at most 4 tag filters (max_filters)"),
    ],
)
def test_a_bad_subscribe_closes_1008_and_leaves_the_filters(message, reason):
    session = streaming(("a", "b"), max_filters=4, max_filter_length=32)
    reply = session.on_text(message)
    assert reply.kind is ReplyKind.CLOSE
    assert reply.code == CloseCode.POLICY == 1008
    assert reason in reply.reason
    assert session.filters == ["a", "b"]


def test_subscribe_up_to_max_filters_and_a_duplicate_costs_nothing():
    session = streaming(("a", "b"), max_filters=4)
    assert session.on_text('{"subscribe": ["c", "a", "d"]}').kind is ReplyKind.SUBSCRIBED
    assert session.filters == ["a", "b", "c", "d"]
    assert session.on_text('{"subscribe": ["d", "c"]}').kind is ReplyKind.SUBSCRIBED
    with pytest.raises(RequestError):
        session.subscribe(["e"])
    assert session.filters == ["a", "b", "c", "d"]


def test_a_huge_subscribe_is_refused_without_reading_it_all():
    session = streaming(max_filters=64)
    with pytest.raises(RequestError, match="at most 64 tag filters"):
        session.subscribe(bounded(65))
    assert session.filters == []


@pytest.mark.parametrize(
    "message",
    [
        '{"other": 1}',
        '["subscribe"]',
        ' {"subscribe": ["a"]}',
        "{not json",
        "{" + "[" * 100_000,
        '{"subscribe": ["a"]',
    ],
)
def test_other_messages_while_streaming_are_ignored(message):
    session = streaming(("a",))
    assert session.on_text(message) == Reply(ReplyKind.NOTHING)
    assert session.filters == ["a"]


def test_formatted_events_ignores_subscribe():
    session = streaming(channel="formatted_events")
    assert session.on_text('{"subscribe": ["a"]}') == Reply(ReplyKind.NOTHING)
    assert session.filters == []


@pytest.mark.parametrize(
    ("kwargs", "fmt"),
    [
        ({}, Format.PLAIN),
        ({"request": StreamRequest(envelope=True)}, Format.ENVELOPE),
        ({"request": StreamRequest(True, Cursor("e", 1))}, Format.ENVELOPE),
        ({"sse": True}, Format.SSE),
        ({"sse": True, "request": StreamRequest(True, Cursor("e", 1))}, Format.SSE),
    ],
)
def test_the_format_follows_the_request_and_transport(kwargs, fmt):
    session = Session("all_events", **kwargs)
    assert session.fmt is fmt
    session.audience = "aud"
    assert session.group() == Group("aud", None, fmt)


# -- tick_due ----------------------------------------------------------------------------------


def ticker(fmt: str = "envelope", state: State = State.STREAMING) -> Session:
    kwargs: dict[str, Any] = {"sse": fmt == "sse"}
    if fmt == "envelope":
        kwargs["request"] = StreamRequest(envelope=True)
    return session_in(state, **kwargs)


T0 = 5_000.0  # a monotonic clock's value: far from 0


@pytest.mark.parametrize("fmt", ["envelope", "sse"])
def test_no_tick_before_tick_interval_of_silence_since_the_stream_began(fmt):
    session = ticker(fmt)
    assert not session.tick_due(T0, 0, 15)  # just started: not quiet for 15 s yet
    assert not session.tick_due(T0 + 14.9, 0, 15)
    assert session.tick_due(T0 + 15, 0, 15)


def test_a_tick_every_interval_while_nothing_else_is_sent():
    session = ticker()
    session.tick_due(T0, 0, 15)
    assert session.tick_due(T0 + 15, 0, 15)
    # the tick itself was queued (pushed 1): that starts the next quiet interval
    assert not session.tick_due(T0 + 15.5, 1, 15)
    assert not session.tick_due(T0 + 29, 1, 15)
    assert session.tick_due(T0 + 30.5, 1, 15)


def test_messages_sent_restart_the_quiet_interval():
    session = ticker()
    session.tick_due(T0, 0, 15)
    assert not session.tick_due(T0 + 10, 3, 15)  # 3 messages since
    assert not session.tick_due(T0 + 24, 3, 15)
    assert session.tick_due(T0 + 25, 3, 15)


def test_replayed_messages_count_as_sent():
    session = ticker()
    assert not session.tick_due(T0, 40, 15)  # the replay was queued before the first look
    assert not session.tick_due(T0 + 14, 40, 15)
    assert session.tick_due(T0 + 15, 40, 15)


@pytest.mark.parametrize(
    ("fmt", "state", "interval"),
    [
        ("plain", State.STREAMING, 15),  # saltnado's clients get nothing new
        ("envelope", State.STREAMING, 0),  # tick_interval 0: never
        ("envelope", State.AWAITING_READY, 15),  # not streaming yet
        ("envelope", State.CLOSED, 15),
    ],
)
def test_no_tick_for_plain_clients_with_interval_0_or_when_not_streaming(fmt, state, interval):
    session = ticker(fmt, state)
    for now in (T0, T0 + 100, T0 + 10_000):
        assert not session.tick_due(now, 0, interval)


# -- over_a_limit ------------------------------------------------------------------------------


def authed(token: str, name: str, eauth: str = "pam") -> Session:
    session = Session("all_events")
    session.authenticated(token, {"name": name, "eauth": eauth}, ADMIN)
    return session


LIMITS = SimpleNamespace(max_connections=3, max_connections_per_token=2, max_connections_per_user=2)


@pytest.mark.parametrize(
    ("others", "option"),
    [
        ([], None),
        ([authed("t2", "bob")], None),
        ([authed("t1", "alice")], None),
        ([authed("t1", "alice")] * 2, "max_connections_per_token"),
        ([authed("t2", "alice"), authed("t3", "alice")], "max_connections_per_user"),
        ([authed("t2", "alice", "ldap"), authed("t3", "alice", "ldap")], None),  # another eauth
        ([authed("t2", "bob"), authed("t3", "carol"), authed("t4", "dan")], "max_connections"),
        ([Session("all_events")] * 10, None),  # unauthenticated ones have their own budget
    ],
)
def test_over_a_limit(others, option):
    session = authed("t1", "alice")
    found = over_a_limit(session, [session, *others], LIMITS)
    assert (found[0] if found else None) == option
    if found:
        assert f"({option}: " in found[1]
