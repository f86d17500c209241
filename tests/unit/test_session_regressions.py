"""Session regressions found by the integration tests of issue 10 (test_streams.py)."""

from __future__ import annotations

import pytest

from salt_ws.pipeline import Cursor
from salt_ws.session import Session, State, StreamRequest, parse_request


def streaming(fmt: str) -> Session:
    request = StreamRequest(envelope=fmt == "envelope")
    session = Session(
        "events" if fmt == "sse" else "all_events", request, authenticated=True, sse=fmt == "sse"
    )
    session.advance(State.STREAMING)
    return session


@pytest.mark.parametrize("fmt", ["envelope", "sse"])
def test_a_new_client_is_not_ticked_before_tick_interval_of_silence(fmt):
    # the engine's clock is monotonic: large at any real call; a client that began
    # streaming at 1000 has heard nothing for 0.5 s at 1000.5, not for 1000.5 s
    session = streaming(fmt)
    assert session.tick_due(1000.0, 0, 15) is False
    assert session.tick_due(1000.5, 0, 15) is False
    assert session.tick_due(1014.9, 0, 15) is False
    assert session.tick_due(1015.0, 0, 15) is True
    assert session.tick_due(1016.0, 0, 15) is False  # the next one 15 s later
    assert session.tick_due(1030.0, 0, 15) is True


def test_a_first_look_at_a_replayed_client_counts_from_then():
    session = streaming("envelope")
    assert session.tick_due(500.0, 40, 15) is False  # a replay of 40 messages was queued
    assert session.tick_due(514.0, 40, 15) is False
    assert session.tick_due(515.0, 40, 15) is True


@pytest.mark.parametrize(
    ("since", "last_event_id", "expected"),
    [
        ("e1:3", "e1:9", "e1:9"),  # EventSource reconnecting to a URL opened with ?since=
        ("e1:9", "e1:3", "e1:9"),  # a later ?since= of the same stream
        ("e0:50", "e1:2", "e1:2"),  # the stream it last read is of the new epoch
        ("e1:2", "e0:50", "e0:50"),  # other epochs: the header is what it last read
    ],
    ids=["header-later", "since-later", "since-old-epoch", "header-old-epoch"],
)
def test_eventsource_reconnecting_with_since_in_its_url_resumes_after_its_last_event_id(
    since, last_event_id, expected
):
    # EventSource keeps its URL: a page that opened /events?since=<id> sends that ?since=
    # again on every reconnect, beside the Last-Event-ID of what it read since; taking
    # ?since= would replay everything after <id> again (duplicates).
    request = parse_request({"since": [since]}, "events", last_event_id)
    assert request.since == Cursor.parse(expected)
