"""Session regressions found by the integration tests of issue 10 (test_streams.py)."""

from __future__ import annotations

import pytest

from salt_ws.session import Session, State, StreamRequest


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
