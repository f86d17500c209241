"""salt_ws.metrics: the registry of the engine's numbers, its ws.status view and its exposition.

The registry reads a real (unstarted) Engine: the numbers come from the objects that hold them.
The exposition is parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import salt_ws.metrics
from salt_ws.config import ConfigError, parse
from salt_ws.engine import Engine
from salt_ws.handlers import Services
from salt_ws.hub import Channel
from salt_ws.metrics import (
    CLOSE_REASONS,
    ENDPOINTS,
    LOGIN_RESULTS,
    METRICS,
    Histogram,
    Kind,
    Registry,
    Traffic,
    close_reason,
    require,
)
from salt_ws.pipeline import Cursor, Format, Group
from salt_ws.wire import CloseCode

# The public API (issue 12): every name, its type and labels.
PUBLIC = {
    "salt_ws_up": ("gauge", ()),
    "salt_ws_bus_connected": ("gauge", ()),
    "salt_ws_bus_reconnects_total": ("counter", ()),
    "salt_ws_events_received_total": ("counter", ()),
    "salt_ws_messages_sent_total": ("counter", ("endpoint",)),
    "salt_ws_bytes_sent_total": ("counter", ("endpoint",)),
    "salt_ws_clients": ("gauge", ("endpoint",)),
    "salt_ws_connections_total": ("counter", ("endpoint",)),
    "salt_ws_clients_closed_total": ("counter", ("endpoint", "reason")),
    "salt_ws_queue_high_water": ("gauge", ()),
    "salt_ws_logins_total": ("counter", ("result",)),
    "salt_ws_resume_total": ("counter", ("result",)),
    "salt_ws_view_minions": ("gauge", ()),
    "salt_ws_view_jobs": ("gauge", ()),
    "salt_ws_fanout_seconds": ("histogram", ()),
}


class FakeAuth:
    def stats(self) -> dict[str, int]:
        return {}


@pytest.fixture
def engine() -> Any:
    engine = Engine(opts={}, config=parse({"disable_ssl": True}))
    engine.services = Services(
        engine.config, engine.hub, FakeAuth(), engine.counters, stream=engine.stream
    )
    yield engine
    for pool in (engine._grains_pool, engine._admit_pool):
        pool.shutdown(wait=False)


def families(registry: Registry) -> dict[str, Any]:
    body, ctype = registry.exposition()
    assert ctype.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def sample(found: dict[str, Any], name: str, **labels: str) -> float:
    """The value of the one sample named ``name`` with exactly ``labels``."""
    values = [
        s.value
        for family in found.values()
        for s in family.samples
        if s.name == name and s.labels == labels
    ]
    assert len(values) == 1, (name, labels)
    return values[0]


# -- declarations -------------------------------------------------------------------------------


def test_every_public_metric_is_declared_once_with_its_type_and_labels():
    declared = {m.name: (m.kind.value, m.labels) for m in METRICS}
    assert len(declared) == len(METRICS)
    assert declared == PUBLIC


def test_the_label_values_are_the_documented_ones():
    assert ENDPOINTS == ("all_events", "formatted_events", "events")
    assert set(CLOSE_REASONS) == {
        "too_slow",
        "token_expired",
        "logout",
        "ping_timeout",
        "handshake_timeout",
        "policy",
        "shutdown",
        "client",
    }
    assert LOGIN_RESULTS == ("ok", "bad_credentials", "throttled", "malformed")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (CloseCode.GOING_AWAY, "shutdown"),
        (CloseCode.TOO_SLOW, "too_slow"),
        (CloseCode.HANDSHAKE_TIMEOUT, "handshake_timeout"),
        (CloseCode.POLICY, "policy"),
        (CloseCode.UNSUPPORTED, "policy"),
        (CloseCode.TOO_BIG, "policy"),
        (CloseCode.TRY_AGAIN_LATER, "policy"),
        (CloseCode.TOKEN_INVALID, "policy"),  # expiry and logout name themselves
        (4001, "too_slow"),
        (None, "client"),
    ],
)
def test_close_codes_map_to_reasons(code, reason):
    assert close_reason(code) == reason


# -- Traffic and Histogram ----------------------------------------------------------------------


def test_traffic_starts_with_every_series_at_zero():
    traffic = Traffic()
    assert traffic.messages == {"all_events": 0, "formatted_events": 0, "events": 0}
    assert len(traffic.closed) == len(ENDPOINTS) * len(CLOSE_REASONS)
    assert set(traffic.closed.values()) == {0}
    assert traffic.logins == dict.fromkeys(LOGIN_RESULTS, 0)


def test_traffic_counts_per_endpoint():
    traffic = Traffic()
    traffic.sent("events", 3, 300)
    traffic.sent("events", 1, 50)
    traffic.connected("formatted_events")
    traffic.ended("all_events", "too_slow")
    traffic.ended("all_events", "no such reason")  # counted, as the client's
    traffic.login("bad_credentials")
    assert (traffic.messages["events"], traffic.bytes["events"]) == (4, 350)
    assert traffic.connections["formatted_events"] == 1
    assert traffic.closed[("all_events", "too_slow")] == 1
    assert traffic.closed[("all_events", "client")] == 1
    assert traffic.logins["bad_credentials"] == 1


def test_histogram_buckets_are_cumulative_and_inclusive():
    hist = Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.002, 0.5, 20.0):
        hist.observe(value)
    assert hist.buckets() == [("0.001", 2), ("0.01", 3), ("0.1", 3), ("+Inf", 5)]
    assert hist.count == 5
    assert math.isclose(hist.sum, 20.5035)
    assert hist.status() == {
        "count": 5,
        "sum": 20.5035,
        "buckets": {"0.001": 2, "0.01": 3, "0.1": 3, "+Inf": 5},
    }


# -- the registry over a real engine --------------------------------------------------------------


def test_a_fresh_engine_reads_zero_everywhere(engine):
    status = engine.metrics.status()
    assert set(status) == set(PUBLIC)
    assert status["salt_ws_up"] == 0  # not listening yet
    assert status["salt_ws_bus_connected"] == 0
    assert status["salt_ws_messages_sent_total"] == dict.fromkeys(ENDPOINTS, 0)
    assert status["salt_ws_clients_closed_total"]["events"] == dict.fromkeys(CLOSE_REASONS, 0)
    assert status["salt_ws_fanout_seconds"]["count"] == 0


def test_the_registry_reads_the_objects_that_hold_the_numbers(engine):
    engine.listening = True
    engine.consume([("salt/auth", {"id": "m1"}), ("custom/a", {"x": 1})])
    engine.hub.stats.queue_high_water = 7
    traffic = engine.services.traffic
    traffic.sent("all_events", 2, 120)
    traffic.connected("all_events")
    traffic.ended("events", "logout")
    traffic.login("ok")
    engine.hub.subscribe(Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key=Group())
    engine.hub.subscribe(
        Channel.ALL_EVENTS, lambda: None, lambda c, r: None, key=Group(fmt=Format.SSE)
    )
    engine.hub.subscribe(Channel.FORMATTED_EVENTS, lambda: None, lambda c, r: None)
    stream = engine.stream
    stream.replay(Cursor(stream.epoch, stream.seq), Group())  # a hit
    stream.replay(Cursor("other", 1), Group())  # a gap: another epoch
    stream.replay(Cursor(stream.epoch, 0), Group())  # a hit: everything is still kept

    status = engine.metrics.status()
    assert status["salt_ws_up"] == 1
    assert status["salt_ws_events_received_total"] == 2
    assert status["salt_ws_queue_high_water"] == 7
    assert status["salt_ws_messages_sent_total"]["all_events"] == 2
    assert status["salt_ws_bytes_sent_total"]["all_events"] == 120
    assert status["salt_ws_connections_total"]["all_events"] == 1
    assert status["salt_ws_clients_closed_total"]["events"]["logout"] == 1
    assert status["salt_ws_logins_total"]["ok"] == 1
    assert status["salt_ws_clients"] == {"all_events": 1, "formatted_events": 1, "events": 1}
    assert status["salt_ws_resume_total"] == {"hit": 2, "gap": 1}
    assert status["salt_ws_fanout_seconds"]["count"] == 1  # one batch consumed

    found = families(engine.metrics)
    assert set(found) == {n[: -len("_total")] if n.endswith("_total") else n for n in PUBLIC}
    assert sample(found, "salt_ws_up") == 1
    assert sample(found, "salt_ws_events_received_total") == 2
    assert sample(found, "salt_ws_messages_sent_total", endpoint="all_events") == 2
    assert sample(found, "salt_ws_messages_sent_total", endpoint="events") == 0
    assert sample(found, "salt_ws_clients", endpoint="events") == 1
    assert sample(found, "salt_ws_clients_closed_total", endpoint="events", reason="logout") == 1
    assert sample(found, "salt_ws_resume_total", result="gap") == 1
    assert sample(found, "salt_ws_fanout_seconds_count") == 1
    assert sample(found, "salt_ws_fanout_seconds_bucket", le="+Inf") == 1
    for name, (kind, _labels) in PUBLIC.items():
        family = name[: -len("_total")] if name.endswith("_total") else name
        assert found[family].type == kind


def test_the_exposition_is_read_again_on_every_call(engine):
    first = sample(families(engine.metrics), "salt_ws_events_received_total")
    engine.counters.events_received += 5
    assert sample(families(engine.metrics), "salt_ws_events_received_total") == first + 5


def test_the_engine_status_carries_the_registry_and_keeps_its_keys(engine):
    status = engine.status()
    assert status["metrics"] == engine.metrics.status()
    for key in ("clients", "connections_total", "messages_sent", "events_received", "stream"):
        assert key in status


def test_a_histogram_metric_is_exposed_with_its_buckets():
    hist = Histogram((0.01, 0.1))
    hist.observe(0.05)
    registry = Registry(
        object(),
        [salt_ws.metrics.Metric("x_seconds", Kind.HISTOGRAM, "help", lambda _s: hist)],
    )
    found = families(registry)
    assert sample(found, "x_seconds_bucket", le="0.01") == 0
    assert sample(found, "x_seconds_bucket", le="0.1") == 1
    assert sample(found, "x_seconds_sum") == pytest.approx(0.05)


# -- prometheus_client is optional ----------------------------------------------------------------


def test_require_passes_with_prometheus_client_installed():
    require()


def test_metrics_on_without_prometheus_client_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(salt_ws.metrics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as err:
        Engine(opts={}, config=parse({"disable_ssl": True, "metrics": True}))
    assert "option 'metrics'" in str(err.value)
    assert "prometheus_client" in str(err.value)


def test_metrics_off_needs_no_prometheus_client(monkeypatch):
    monkeypatch.setattr(salt_ws.metrics.importlib.util, "find_spec", lambda name: None)
    engine = Engine(opts={}, config=parse({"disable_ssl": True}))
    try:
        assert engine.metrics.status()["salt_ws_up"] == 0  # ws.status works without it
    finally:
        for pool in (engine._grains_pool, engine._admit_pool):
            pool.shutdown(wait=False)


def test_importing_salt_ws_loads_no_prometheus_client():
    import subprocess
    import sys

    code = (
        "import sys, salt_ws.metrics, salt_ws.engine, salt_ws.status\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_the_readme_documents_every_metric_with_its_labels():
    import pathlib

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[3].strip()
        for line in section.splitlines()
        if line.startswith("| `salt_ws_")
    }
    assert set(rows) == set(PUBLIC)
    for name, (_kind, labels) in PUBLIC.items():
        assert rows[name] == ", ".join(f"`{label}`" for label in labels), name
    for reason in CLOSE_REASONS:
        assert f"`{reason}`" in section
