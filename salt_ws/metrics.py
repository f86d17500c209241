"""One registry of the engine's numbers, read by ``salt-run ws.status`` and ``GET /metrics``.

Pure: no tornado, no salt, no I/O. Every metric is declared once in :data:`METRICS`:
its public name, kind, help text, labels, and how it is read from the object
that already holds the number (the engine's ``Counters``, the hub's
``HubStats``, the pipeline's stats, the bus reader, the formatted view).
Numbers that had no home yet live here: :class:`Traffic` (per endpoint:
messages and bytes sent, connections, closes by reason; logins by result),
kept by the handlers, and :class:`Histogram` (the fan-out time), kept by the
engine. :class:`Registry` reads them all: :meth:`Registry.status` for
``ws.status`` (key ``metrics``), :meth:`Registry.exposition` for ``/metrics``.

``prometheus_client`` is imported only by :meth:`Registry.exposition` (and
:func:`require`): it is not one of Salt's dependencies, and a master with Salt
alone (gitfs install) runs the engine with ``metrics: False``. With
``metrics: True`` and no ``prometheus_client``, :func:`require` raises
:class:`~salt_ws.config.ConfigError` and the engine does not start (``ws.status``
says why).
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import importlib.util
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from salt_ws.config import ConfigError
from salt_ws.hub import Channel
from salt_ws.pipeline import Format
from salt_ws.wire import CloseCode

__all__ = [
    "CLOSE_REASONS",
    "CONTENT_TYPE",
    "ENDPOINTS",
    "FANOUT_BUCKETS",
    "LOGIN_RESULTS",
    "METRICS",
    "RESUME_RESULTS",
    "Histogram",
    "Kind",
    "Metric",
    "Registry",
    "Traffic",
    "close_reason",
    "require",
]

ENDPOINTS = ("all_events", "formatted_events", "events")  # label ``endpoint``
# label ``reason`` of salt_ws_clients_closed_total: why a connected client's stream ended
CLOSE_REASONS = (
    "too_slow",  # 4001: a queue bound, or a write not taken within WRITE_TIMEOUT
    "token_expired",  # 4401: its token expired
    "logout",  # 4401: its token was logged out
    "ping_timeout",  # no pong within ping_timeout
    "handshake_timeout",  # 4408: no token message / 'websocket client ready' in time
    "policy",  # 1003, 1008, 1009, 1013, 4401 (bad first-message token): closed for what it sent
    "shutdown",  # 1001: the master is stopping
    "client",  # the client closed, or the connection dropped
)
LOGIN_RESULTS = ("ok", "bad_credentials", "throttled", "malformed")  # label ``result``
RESUME_RESULTS = ("hit", "gap")  # label ``result``
# seconds; the fan-out of a batch usually takes well under a millisecond
FANOUT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what /metrics answers

_BY_CODE: dict[int, str] = {
    CloseCode.GOING_AWAY: "shutdown",
    CloseCode.TOO_SLOW: "too_slow",
    CloseCode.HANDSHAKE_TIMEOUT: "handshake_timeout",
}


def close_reason(code: int | None) -> str:
    """The ``reason`` label of a close the engine sends with ``code``.

    Token expiry and logout also close with 4401; their callers name the reason
    themselves (``token_expired``, ``logout``). Any other code the engine sends
    is for something the client did (``policy``).
    """
    if code is None:
        return "client"
    return _BY_CODE.get(code, "policy")


def require() -> None:
    """Check that ``metrics: True`` can be served.

    Raises:
        ConfigError: ``prometheus_client`` is not installed.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            "metrics",
            "serving /metrics needs the prometheus_client package, which is not installed "
            "(pip install 'prometheus_client>=0.17', or set metrics: False)",
        )


class Traffic:
    """What the stream handlers count: per endpoint and close reason, and logins.

    Plain dicts keyed by label values, every combination present from the start
    (a series that exists only after its first increment confuses ``rate()``).
    """

    __slots__ = ("bytes", "closed", "connections", "logins", "messages")

    def __init__(self) -> None:
        self.messages: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.bytes: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.connections: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self.closed: dict[tuple[str, str], int] = {
            (endpoint, reason): 0 for endpoint in ENDPOINTS for reason in CLOSE_REASONS
        }
        self.logins: dict[str, int] = dict.fromkeys(LOGIN_RESULTS, 0)

    def sent(self, endpoint: str, messages: int, nbytes: int) -> None:
        """``messages`` of ``nbytes`` in all were handed to a client's socket."""
        self.messages[endpoint] += messages
        self.bytes[endpoint] += nbytes

    def connected(self, endpoint: str) -> None:
        """A client opened a stream (websocket upgraded, SSE stream begun)."""
        self.connections[endpoint] += 1

    def ended(self, endpoint: str, reason: str) -> None:
        """A client's stream ended, for ``reason`` (one of :data:`CLOSE_REASONS`)."""
        key = (endpoint, reason if reason in CLOSE_REASONS else "client")
        self.closed[key] += 1

    def login(self, result: str) -> None:
        """A ``POST /login`` was answered with ``result`` (one of :data:`LOGIN_RESULTS`)."""
        self.logins[result] += 1


class Histogram:
    """Observations counted into buckets (upper bounds, inclusive), with their sum.

    Args:
        bounds: the buckets' upper bounds; ``+Inf`` is added.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = FANOUT_BUCKETS) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` per bucket, ``+Inf`` last (Prometheus' shape)."""
        found, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            found.append(("+Inf" if bound == float("inf") else _number(bound), total))
        return found

    def status(self) -> dict[str, Any]:
        """For ``ws.status``: count, sum and the cumulative buckets."""
        return {"count": self.count, "sum": round(self.sum, 6), "buckets": dict(self.buckets())}


def _number(value: float) -> str:
    return repr(float(value))


class Kind(str, enum.Enum):
    """A metric's Prometheus type."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One public metric: its name, type, help, labels and where its number lives.

    ``read(sources)`` returns a number (no labels), a mapping of label values to
    numbers (one label: the value; several: a tuple of values), or a
    :class:`Histogram`.
    """

    name: str
    kind: Kind
    help: str
    read: Callable[[Any], Any]
    labels: tuple[str, ...] = ()


_EMPTY = Traffic()


def _traffic(engine: Any) -> Traffic:
    services = getattr(engine, "services", None)
    found = getattr(services, "traffic", None)
    return found if isinstance(found, Traffic) else _EMPTY


def _clients(engine: Any) -> dict[str, int]:
    """Subscribed clients per endpoint, from the hub (an SSE client's group has fmt sse)."""
    counts = dict.fromkeys(ENDPOINTS, 0)
    for channel in Channel:
        for sub in engine.hub.subscribers(channel):
            sse = getattr(sub.key, "fmt", None) is Format.SSE
            counts["events" if sse else channel.value] += 1
    return counts


def _resumes(engine: Any) -> dict[str, int]:
    stats = engine.stream.stats
    return {"hit": stats.replays - stats.gaps, "gap": stats.gaps}


#: Every public metric (names, labels and meanings are the documented API).
METRICS: tuple[Metric, ...] = (
    Metric("salt_ws_up", Kind.GAUGE, "1 while the engine serves HTTP", lambda e: int(e.listening)),
    Metric(
        "salt_ws_bus_connected",
        Kind.GAUGE,
        "1 while the master event bus subscription delivers",
        lambda e: int(bool(e.bus is not None and e.bus.connected)),
    ),
    Metric(
        "salt_ws_bus_reconnects_total",
        Kind.COUNTER,
        "times the event bus link came back after it was lost",
        lambda e: e.stream.bus_reconnects,
    ),
    Metric(
        "salt_ws_events_received_total",
        Kind.COUNTER,
        "bus items taken by the engine (events and link notices)",
        lambda e: e.counters.events_received,
    ),
    Metric(
        "salt_ws_messages_sent_total",
        Kind.COUNTER,
        "messages handed to clients' sockets",
        lambda e: _traffic(e).messages,
        ("endpoint",),
    ),
    Metric(
        "salt_ws_bytes_sent_total",
        Kind.COUNTER,
        "bytes of messages handed to clients' sockets (websocket framing included)",
        lambda e: _traffic(e).bytes,
        ("endpoint",),
    ),
    Metric(
        "salt_ws_clients",
        Kind.GAUGE,
        "clients receiving a stream now",
        _clients,
        ("endpoint",),
    ),
    Metric(
        "salt_ws_connections_total",
        Kind.COUNTER,
        "streams opened (websockets upgraded, SSE streams begun)",
        lambda e: _traffic(e).connections,
        ("endpoint",),
    ),
    Metric(
        "salt_ws_clients_closed_total",
        Kind.COUNTER,
        "streams ended, by why",
        lambda e: _traffic(e).closed,
        ("endpoint", "reason"),
    ),
    Metric(
        "salt_ws_queue_high_water",
        Kind.GAUGE,
        "the most messages that waited in one client's queue",
        lambda e: e.hub.stats.queue_high_water,
    ),
    Metric(
        "salt_ws_logins_total",
        Kind.COUNTER,
        "POST /login answers, by result",
        lambda e: _traffic(e).logins,
        ("result",),
    ),
    Metric(
        "salt_ws_resume_total",
        Kind.COUNTER,
        "resumes from a cursor: complete (hit) or with a gap notice (gap)",
        _resumes,
        ("result",),
    ),
    Metric(
        "salt_ws_view_minions",
        Kind.GAUGE,
        "minions in the formatted view",
        lambda e: len(e.view.minion_ids),
    ),
    Metric(
        "salt_ws_view_jobs", Kind.GAUGE, "jobs in the formatted view", lambda e: e.view.job_count
    ),
    Metric(
        "salt_ws_fanout_seconds",
        Kind.HISTOGRAM,
        "seconds from the bus read of a batch to the last client write of it",
        lambda e: e.fanout,
    ),
)


def _labelled(metric: Metric, values: Mapping[Any, Any]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, value in values.items():
        labels = key if isinstance(key, tuple) else (key,)
        if len(labels) != len(metric.labels):  # pragma: no cover - a declaration error
            raise ValueError(f"{metric.name}: labels {labels!r} for {metric.labels!r}")
        yield tuple(str(label) for label in labels), value


class Registry:
    """Reads :data:`METRICS` from ``sources`` (the engine, or anything shaped like it).

    Args:
        sources: what each metric's ``read`` is given.
        metrics: the declarations (default: :data:`METRICS`).
    """

    def __init__(self, sources: Any, metrics: Iterable[Metric] = METRICS) -> None:
        self.sources = sources
        self.metrics = tuple(metrics)
        self._prometheus: Any = None  # prometheus_client's registry, built on first use

    def read(self) -> list[tuple[Metric, Any]]:
        """Each metric with its value now."""
        return [(metric, metric.read(self.sources)) for metric in self.metrics]

    def status(self) -> dict[str, Any]:
        """For ``salt-run ws.status`` (key ``metrics``): name -> value; labelled values
        nested by label (``{"all_events": {"too_slow": 1, ...}, ...}``)."""
        found: dict[str, Any] = {}
        for metric, value in self.read():
            if isinstance(value, Histogram):
                found[metric.name] = value.status()
            elif metric.labels:
                nested: dict[str, Any] = {}
                for labels, number in _labelled(metric, value):
                    place = nested
                    for label in labels[:-1]:
                        place = place.setdefault(label, {})
                    place[labels[-1]] = number
                found[metric.name] = nested
            else:
                found[metric.name] = value
        return found

    def collect(self) -> Iterator[Any]:
        """prometheus_client metric families (a custom collector's ``collect``)."""
        from prometheus_client.core import (  # here: not a Salt dependency
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for metric, value in self.read():
            if metric.kind is Kind.HISTOGRAM:
                yield HistogramMetricFamily(
                    metric.name, metric.help, buckets=value.buckets(), sum_value=value.sum
                )
                continue
            family_type = CounterMetricFamily if metric.kind is Kind.COUNTER else GaugeMetricFamily
            if not metric.labels:
                yield family_type(metric.name, metric.help, value=value)
                continue
            family = family_type(metric.name, metric.help, labels=metric.labels)
            for labels, number in _labelled(metric, value):
                family.add_metric(labels, number)
            yield family

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric now, and its Content-Type."""
        from prometheus_client import (  # here: not a Salt dependency
            CollectorRegistry,
            generate_latest,
        )

        if self._prometheus is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self)  # a custom collector: collect() reads the sources
            self._prometheus = registry
        # generate_latest writes the classic text format (0.0.4), whatever the newest
        # CONTENT_TYPE_LATEST of the installed prometheus_client names
        return generate_latest(self._prometheus), CONTENT_TYPE
