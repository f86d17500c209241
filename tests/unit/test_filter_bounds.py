"""What one client's tag filters may cost the engine: characters, changes per minute, cache."""

from __future__ import annotations

import json

import pytest

from salt_ws import pipeline as pl
from salt_ws import session as sn
from salt_ws.session import ReplyKind, RequestError, Session, State, check_tags


def streaming() -> Session:
    client = Session("all_events", authenticated=True, max_filters=64, max_filter_length=1024)
    client.advance(State.STREAMING)
    return client


def test_a_clients_filters_hold_at_most_max_filter_chars_in_all():
    four = ["*" + "a" * 1023 + str(i) for i in range(4)]  # 4 x 1025 > 4096
    with pytest.raises(RequestError, match="characters of tag filters in all"):
        check_tags(four, 64, 2048)
    assert len(check_tags(four[:3], 64, 2048)) == 3


def test_a_subscribe_over_the_character_budget_closes_and_keeps_the_filters():
    client = streaming()
    client.on_text(json.dumps({"subscribe": ["salt/key"]}))
    reply = client.on_text(
        json.dumps({"subscribe": ["x" * 1024] * 1 + ["y" * 1024] * 1 + ["z" * 1024, "w" * 1024]})
    )
    assert reply.kind is ReplyKind.CLOSE and reply.code == 1008
    assert client.filters == ["salt/key"]


def test_filter_changes_are_rate_limited_per_connection():
    client = streaming()
    for n in range(sn.FILTER_CHANGES):
        reply = client.on_text(json.dumps({"subscribe": [f"t/{n}"]}), now=100.0 + n)
        assert reply.kind is ReplyKind.SUBSCRIBED
    reply = client.on_text(json.dumps({"unsubscribe": ["t/0"]}), now=100.0 + sn.FILTER_CHANGES)
    assert (reply.kind, reply.code) == (ReplyKind.CLOSE, 1008)
    assert "too many subscribe" in reply.reason
    # a minute after the first change, there is room again
    later = streaming()
    for n in range(sn.FILTER_CHANGES):
        later.on_text(json.dumps({"subscribe": [f"t/{n}"]}), now=float(n))
    reply = later.on_text(json.dumps({"unsubscribe": ["t/0"]}), now=sn.FILTER_WINDOW + 0.5)
    assert reply.kind is ReplyKind.SUBSCRIBED


def test_the_compiled_filter_cache_is_bounded_in_characters(monkeypatch):
    stream = pl.Pipeline()
    monkeypatch.setattr(pl, "MAX_FILTER_CACHE_CHARS", 1000)
    for n in range(10):
        stream.tag_filter(frozenset({f"{n}" + "a" * 299}))  # 300 characters each
    assert stream.status()["filter_sets"] == 3
    assert stream._filter_chars == 900
