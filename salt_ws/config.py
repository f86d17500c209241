"""Engine options: declared once, with their defaults, bounds, validation and docs.

Pure: no Salt, no tornado. Each option is declared once, as a field of
:class:`Config`: its name, its type (the annotation, which mypy reads), its
default, its kind (how a value is checked, with its bounds) and a one-line doc.
From that declaration come :data:`OPTIONS`, :data:`DEFAULTS`, the validation in
:func:`parse`, the YAML block of the engine module docstring (``_engines/ws.py``,
:func:`docs_yaml`) and the README's options table (:func:`docs_table`);
``scripts/config_docs.py`` rewrites both documents and the unit tests check them
byte for byte.

The option names follow Salt's ``rest_tornado`` netapi so that a
``rest_tornado:`` block can be moved under the engine unchanged. Everything
here is checked before the engine binds anything, and a problem is reported as
:class:`ConfigError` naming the offending option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import ssl
import types
from typing import Any, ClassVar, Generic, Mapping, TypeVar

__all__ = [
    "DEFAULTS",
    "IGNORED_REST_TORNADO_OPTIONS",
    "OPTIONS",
    "Bool",
    "Config",
    "ConfigError",
    "GrainNames",
    "Int",
    "Kind",
    "Networks",
    "Number",
    "Option",
    "Origins",
    "Text",
    "TlsFile",
    "docs_table",
    "docs_yaml",
    "parse",
    "ssl_context",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, always naming the option at fault."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"option '{option}': {message}")
        self.option = option
        self.message = message


# -- kinds: how one option's value is checked ----------------------------------------------------


class Kind(Generic[T]):
    """How an option's raw value (YAML from the master config) becomes a typed value.

    ``annotation`` is the type of the :class:`Config` field, as written there; a
    unit test holds the two together, and :func:`_option`'s signature makes mypy
    check a field's annotation against its kind.
    """

    annotation: ClassVar[str]

    def check(self, name: str, value: Any) -> T:
        """The validated value, or :class:`ConfigError` naming ``name``."""
        raise NotImplementedError

    def limits(self) -> str:
        """The accepted range in words, for the README (empty when there is none)."""
        return ""


@dataclasses.dataclass(frozen=True)
class Int(Kind[int]):
    """An integer within ``[lo, hi]`` (numeric strings accepted)."""

    lo: int
    hi: int
    annotation: ClassVar[str] = "int"

    def check(self, name: str, value: Any) -> int:
        return int(_within(name, _numeric(name, value, int), self.lo, self.hi))

    def limits(self) -> str:
        if self.lo == self.hi:
            return f"only {_bound(self.lo)}"
        return f"{_bound(self.lo)} to {_bound(self.hi)}"


@dataclasses.dataclass(frozen=True)
class Number(Kind[float]):
    """A number within ``[lo, hi]``, or exactly 0 when ``off`` (0 turns the feature off)."""

    lo: float
    hi: float
    off: bool = False
    annotation: ClassVar[str] = "float"

    def check(self, name: str, value: Any) -> float:
        number = float(_numeric(name, value, float))
        if self.off and number == 0:
            return 0.0
        return float(_within(name, number, self.lo, self.hi, self.off))

    def limits(self) -> str:
        span = f"{_bound(self.lo)} to {_bound(self.hi)}"
        return f"0 (off) or {span}" if self.off else span


@dataclasses.dataclass(frozen=True)
class Bool(Kind[bool]):
    """True or False (also the strings true/false/yes/no); ``refuse_false`` rejects False."""

    refuse_false: str = ""
    annotation: ClassVar[str] = "bool"

    def check(self, name: str, value: Any) -> bool:
        flag = _bool(name, value)
        if not flag and self.refuse_false:
            raise ConfigError(name, self.refuse_false)
        return flag


@dataclasses.dataclass(frozen=True)
class Text(Kind[str]):
    """A non-empty string, stripped."""

    annotation: ClassVar[str] = "str"

    def check(self, name: str, value: Any) -> str:
        return _str(name, value)


@dataclasses.dataclass(frozen=True)
class TlsFile(Kind["str | None"]):
    """An optional path to a readable file (empty or null: none)."""

    annotation: ClassVar[str] = "str | None"

    def check(self, name: str, value: Any) -> str | None:
        if value is None or value == "":
            return None
        return _readable(name, _str(name, value))


@dataclasses.dataclass(frozen=True)
class Origins(Kind["str | tuple[str, ...] | None"]):
    """rest_tornado's ``cors_origin``: ``'*'``, one origin or a list of origins."""

    annotation: ClassVar[str] = "str | tuple[str, ...] | None"

    def check(self, name: str, value: Any) -> str | tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return _str(name, value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        raise ConfigError(name, f"expected '*', an origin or a list of origins, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Networks(Kind["tuple[str, ...]"]):
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``), kept as networks."""

    annotation: ClassVar[str] = "tuple[str, ...]"

    def check(self, name: str, value: Any) -> tuple[str, ...]:
        return _networks(name, value)


@dataclasses.dataclass(frozen=True)
class GrainNames(Kind["tuple[str, ...] | None"]):
    """Top-level grain names: a list, or one string of comma-separated names; null: all."""

    annotation: ClassVar[str] = "tuple[str, ...] | None"

    def check(self, name: str, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            items: list[Any] = value.split(",")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(
                name,
                f"expected a list of grain names (or one comma-separated string), got {value!r}",
            )
        names: list[str] = []
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(name, f"not a grain name: {item!r}")
            grain = item.strip()
            if ":" in grain:
                raise ConfigError(name, f"top-level grain names only (no ':' paths), got {grain!r}")
            if grain not in names:
                names.append(grain)
        return tuple(names)


# -- the declaration ---------------------------------------------------------------------------

_SPEC = "salt_ws.option"


@dataclasses.dataclass(frozen=True)
class Option:
    """One engine option, as declared on :class:`Config` (see :data:`OPTIONS`).

    Attributes:
        name: the option's name under ``engines: - ws:``.
        default: the value when the option is absent (as :func:`parse` returns it).
        kind: how a value is checked, with its bounds.
        doc: one line, the comment in the engine docstring's YAML block.
        details: the README table's meaning (``doc`` when not given).
        example: a value shown in the YAML block instead of the default.
        shown: how the default is written in YAML, when it differs from the parsed form.
        heading: a comment line put before the option in the YAML block.
    """

    name: str
    default: Any
    kind: Kind[Any]
    doc: str
    details: str
    example: Any = None
    shown: str = ""
    heading: str = ""

    @property
    def yaml_value(self) -> str:
        """The value as the engine docstring's YAML block shows it."""
        if self.example is not None:
            return _yaml(self.example)
        return self.shown or _yaml(self.default)


def _option(
    default: T,
    kind: Kind[T],
    doc: str,
    *,
    details: str = "",
    example: Any = None,
    shown: str = "",
    heading: str = "",
) -> T:
    """Declare a :class:`Config` field as an engine option (name and type come from the field)."""
    spec = {"kind": kind, "doc": doc, "details": details or doc}
    spec.update(example=example, shown=shown, heading=heading)
    return dataclasses.field(default=default, metadata={_SPEC: spec})


_SECONDS_1H = Number(1, 3600)
_COUNT = Int(1, 1_000_000)
_SECURITY = 'see README "Security"'


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated engine configuration: every engine option, declared once.

    Each field is one ``engines: - ws:`` option; its annotation is its type,
    and :func:`_option` gives its default, its kind (validation and bounds) and
    its documentation. :data:`OPTIONS` lists them in this order.
    """

    port: int = _option(
        8000, Int(1, 65535), "TCP port", details="TCP port of the HTTP/websocket server"
    )
    address: str = _option(
        "0.0.0.0", Text(), "address to bind (0.0.0.0: all interfaces)", details="address to bind"
    )
    ssl_crt: str | None = _option(
        None,
        TlsFile(),
        "required unless disable_ssl",
        details="server certificate (PEM), with the key in the same file or in `ssl_key`; "
        "required unless `disable_ssl: True`. TLS version floor and ciphers follow Python's "
        "secure defaults",
        example="/etc/pki/api/certs/server.crt",
    )
    ssl_key: str | None = _option(
        None,
        TlsFile(),
        "optional if the crt file holds both",
        details="server key (PEM), when it is not in the `ssl_crt` file",
        example="/etc/pki/api/certs/server.key",
    )
    disable_ssl: bool = _option(
        False,
        Bool(),
        "plain HTTP must be asked for",
        details="serve plain HTTP/ws; without it and without `ssl_crt` the engine refuses to start",
    )
    debug: bool = _option(
        False,
        Bool(),
        "accepted for rest_tornado; no effect",
        details="accepted for rest_tornado compatibility (no tracebacks are ever served)",
    )
    cors_origin: str | tuple[str, ...] | None = _option(
        None,
        Origins(),
        "'*', one origin, or a list (as rest_tornado)",
        details="rest_tornado's rule: `*`, one origin or a list; also governs websocket `Origin` "
        "checks (none set: same-origin only)",
    )
    websockets: bool = _option(
        True,
        Bool(refuse_false="this engine only serves websockets; remove the option or set it True"),
        "accepted for rest_tornado; always on",
        details="accepted; `False` is refused (this engine only serves websockets)",
    )
    backlog: int = _option(
        128, Int(1, 65535), "listen backlog", details="listen backlog, as rest_tornado"
    )
    num_processes: int = _option(
        1, Int(1, 1), "only 1 is supported inside an engine", details="as rest_tornado"
    )
    client_queue_size: int = _option(
        10000,
        Int(10, 10_000_000),
        "messages a client may fall behind before it is cut",
        details="per-client bound: a client more than this many messages behind is closed with "
        "4001",
    )
    bind_retry_interval: float = _option(
        10.0,
        _SECONDS_1H,
        "seconds between retries while the port is in use",
        details="seconds between quiet retries while the port is in use",
    )
    max_jobs: int = _option(
        1000,
        _COUNT,
        "jobs kept in the formatted view (oldest dropped first)",
        details="jobs kept in the formatted view; the oldest is dropped first",
    )
    job_max_age: float = _option(
        86400.0, Number(60, 365 * 86400), "seconds a job stays in the formatted view"
    )
    job_timeout: float = _option(
        600.0,
        Number(1, 7 * 86400),
        "seconds after which silent minions are marked failed",
        details="seconds after a job's start when minions that never answered are marked "
        "`success: false` (with an `error`) and the job completes",
    )
    max_connections: int = _option(1000, _COUNT, "open websockets in all (HTTP 503 beyond)")
    max_connections_per_token: int = _option(
        100, _COUNT, "open websockets per token (HTTP 429 beyond)"
    )
    max_message_size: int = _option(
        65536,
        Int(64, 16 * 1024 * 1024),
        "bytes of one inbound websocket message (close 1009)",
        details="bytes of an inbound websocket message; a bigger one closes the socket with 1009",
    )
    max_body_size: int = _option(
        65536,
        Int(1024, 16 * 1024 * 1024),
        "bytes of a /login or /logout body",
        details="bytes of a `/login` or `/logout` body",
    )
    handshake_timeout: float = _option(
        10.0,
        Number(0.1, 3600),
        "seconds to send the token message / ready (4408)",
        details="seconds to send the token message and `websocket client ready`, then close 4408",
    )
    login_max_failures: int = _option(
        5,
        _COUNT,
        "failed logins per address within the window (then 429)",
        details="failed logins per address within `login_failure_window` before HTTP 429",
    )
    login_failure_window: float = _option(
        60.0,
        Number(1, 86400),
        "seconds",
        details="seconds over which `login_max_failures` counts",
    )
    acl_refresh_interval: float = _option(
        30.0,
        Number(1, 86400),
        "seconds between re-resolutions of eauth ACL targets",
    )
    include_master: bool = _option(
        False,
        Bool(),
        'add "master": <master id> to every message',
        details='add `"master": <this master\'s id>` to every event, notice and table (clients of '
        "several masters)",
    )
    max_unauthenticated: int = _option(
        64,
        _COUNT,
        "websockets open without a checked token, in all",
        details="websockets open without a checked token (waiting for their first-message token), "
        "in all; a budget of their own, apart from `max_connections`",
        heading=f"hardening: {_SECURITY} for each limit",
    )
    max_unauthenticated_per_address: int = _option(
        8,
        _COUNT,
        "... from one address (IPv6: one /64)",
        details="websockets open without a checked token, per address (IPv6: per /64)",
    )
    http_timeout: float = _option(
        10.0,
        Number(0.5, 3600),
        "seconds to send headers and body; keep-alive idle",
        details="seconds a client has to send a request's headers, and its body; also how long an "
        "idle keep-alive connection stays open",
    )
    max_http_connections: int = _option(
        1000,
        _COUNT,
        "open HTTP connections not yet upgraded, in all",
        details="open HTTP connections not (yet) upgraded to a websocket, in all; more are closed "
        "at once",
    )
    max_http_connections_per_address: int = _option(
        32,
        _COUNT,
        "... from one address (IPv6: one /64)",
        details="open HTTP connections not (yet) upgraded to a websocket, per address (IPv6: per "
        "/64); more are closed at once",
    )
    max_connections_per_user: int = _option(
        200,
        _COUNT,
        "open websockets per user (eauth + name)",
        details="open websockets per user (`eauth` + name), whatever tokens they use (HTTP 429 "
        "beyond)",
    )
    trusted_proxies: tuple[str, ...] = _option(
        (),
        Networks(),
        "addresses/networks whose X-Forwarded-For is believed",
        details="addresses or networks of reverse proxies whose `X-Forwarded-For` names the client "
        "(for login throttling and per-address limits); from anyone else the header is ignored",
    )
    max_pending_logins: int = _option(
        16,
        Int(1, 10_000),
        "logins waiting for eauth (HTTP 503 beyond)",
        details="logins waiting for the eauth backend; one more gets HTTP 503 (token checks never "
        "wait behind logins)",
    )
    cookie_secure: bool = _option(
        False,
        Bool(),
        "always mark the session cookie Secure",
        details="mark the `session_id` cookie `Secure` even on plain HTTP (TLS terminated by a "
        "proxy in front)",
    )
    client_queue_bytes: int = _option(
        128 * 1024 * 1024,
        Int(65536, 1 << 40),
        "bytes a client may fall behind before it is cut",
        details="bytes a client may fall behind before it is closed with 4001 (with "
        "`client_queue_size`, whichever comes first)",
    )
    frame_cache_bytes: int = _option(
        64 * 1024 * 1024,
        Int(0, 1 << 40),
        "bytes of encoded frames shared between clients",
        details="bytes of encoded websocket frames kept to share between clients",
    )
    bus_queue_bytes: int = _option(
        256 * 1024 * 1024,
        Int(1 << 20, 1 << 40),
        "bytes of bus events waiting for the engine loop",
        details="bytes of bus events read but not yet handled by the engine loop; beyond, events "
        "are dropped (counted) and clients told once (`salt_ws/bus/dropped`, `missed: true`)",
    )
    max_minions: int = _option(
        100_000,
        Int(1, 10_000_000),
        "minions in the formatted view (more are refused)",
        details="minions in the formatted view; further ids are refused and counted",
    )
    max_jobs_bytes: int = _option(
        64 * 1024 * 1024,
        Int(1 << 20, 1 << 40),
        "bytes of the encoded jobs table (oldest dropped)",
        details="bytes of the encoded jobs table (with the arguments kept per job); the oldest "
        "jobs are dropped first beyond it. Python holds up to ~8\u00d7 this as objects, plus one "
        "encoded table per audience, and saltnado's protocol re-sends the whole table on every "
        "change: keep it well below `client_queue_bytes`",
    )
    history_size: int = _option(
        10000,
        Int(0, 10_000_000),
        "events kept for resume; 0 turns resume off",
        details="events kept for resume (`?since=`, `Last-Event-ID`); 0 turns resume off",
        heading="streams: resume, heartbeats and tag filters",
    )
    history_max_bytes: int = _option(
        64 * 1024 * 1024,
        Int(0, 1 << 40),
        "bytes of encoded events kept for resume",
        details="bytes of encoded events kept for resume (with `history_size`, whichever bound is "
        "reached first)",
    )
    ping_interval: float = _option(
        20.0,
        Number(1, 3600, off=True),
        "seconds between websocket pings (0: none)",
        details="seconds between websocket pings; 0 sends none",
    )
    ping_timeout: float = _option(
        20.0,
        _SECONDS_1H,
        "seconds to answer a ping before the close",
        details="seconds a peer has to answer a ping before it is closed; tornado waits at most "
        "one `ping_interval`, so a larger value acts as `ping_interval`",
    )
    tick_interval: float = _option(
        15.0,
        Number(1, 3600, off=True),
        "seconds of silence before a tick (0: none)",
        details="seconds of silence after which envelope clients get `salt_ws/stream/tick` and "
        "SSE clients a `: keepalive` comment; 0 sends none",
    )
    max_filters: int = _option(
        64,
        Int(1, 10_000),
        "tag filters one client may hold",
        details="tag filters one client may hold (`?tag=` and `subscribe` together)",
    )
    max_filter_length: int = _option(1024, Int(1, 65536), "characters of one tag filter")
    view_interval: float = _option(
        0.5,
        Number(0, 60),
        "seconds over which table changes are coalesced",
        details="seconds within which `/formatted_events` table changes are coalesced into one "
        "message (0: every change is sent)",
        heading="formatted view",
    )
    view_grains: tuple[str, ...] | None = _option(
        None,
        GrainNames(),
        "grains kept per minion (null: all)",
        details="grains kept per minion in the formatted view: a list of top-level grain names, "
        "or one comma-separated string (`os, osrelease`); `null` keeps every grain, `[]` none",
    )
    metrics: bool = _option(
        False,
        Bool(),
        "serve Prometheus metrics at /metrics",
        details="serve Prometheus metrics at `/metrics`",
        heading="metrics and dashboard",
    )
    metrics_allow: tuple[str, ...] = _option(
        ("127.0.0.1/32", "::1/128"),
        Networks(),
        "who may read /metrics without an admin token",
        details="addresses or networks that may read `/metrics` without an administrator's "
        "token (`[]`: a token is always needed)",
        shown='["127.0.0.1", "::1"]',
    )
    dashboard: bool = _option(
        True, Bool(), "serve the dashboard page at /", details="serve the dashboard page at `/`"
    )

    @property
    def tls(self) -> bool:
        """True when the engine serves https/wss."""
        return not self.disable_ssl


def _declared() -> Mapping[str, Option]:
    options = {}
    for field in dataclasses.fields(Config):
        if _SPEC not in field.metadata:  # pragma: no cover - a programming error
            raise TypeError(f"Config.{field.name} is not declared with _option()")
        options[field.name] = Option(
            name=field.name, default=field.default, **field.metadata[_SPEC]
        )
    return types.MappingProxyType(options)


#: Every engine option, by name, in declaration order.
OPTIONS: Mapping[str, Option] = _declared()

DEFAULTS = Config()

# rest_tornado options that make sense only for salt-api's other endpoints.
# They are accepted (so a rest_tornado block moves over unchanged) and ignored.
IGNORED_REST_TORNADO_OPTIONS = frozenset({"webhook_disable_auth", "webhook_url"})


# -- checks ------------------------------------------------------------------------------------


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _numeric(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (int or float); numeric strings accepted, booleans refused."""
    what = "an integer" if kind is int else "a number"
    accepted = (int, str) if kind is int else (int, float, str)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(name, f"expected {what}, got {type(value).__name__} {value!r}")
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(name, f"expected {what}, got {value!r}") from None


def _within(name: str, number: float, lo: float, hi: float, off: bool = False) -> float:
    if not lo <= number <= hi:
        zero = "0 (off) or " if off else ""
        raise ConfigError(
            name, f"must be {zero}between {_fmt(lo)} and {_fmt(hi)}, got {_fmt(number)}"
        )
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise ConfigError(name, f"expected True or False, got {value!r}")


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(name, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _networks(name: str, value: Any) -> tuple[str, ...]:
    """A list of addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(name, f"expected a list of addresses or networks, got {value!r}")
    found = []
    for item in value:
        try:
            found.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise ConfigError(name, f"not an address or network: {item!r}") from None
    return tuple(found)


def _readable(name: str, path: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(name, f"file {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise ConfigError(name, f"file {path!r} is not readable by this user")
    return path


def parse(raw: Mapping[str, Any] | None) -> Config:
    """Validate the engine's keyword arguments and build a :class:`Config`.

    Args:
        raw: the mapping given under ``engines: - ws:`` (``None`` for an
            entry without options).

    Returns:
        The validated configuration; TLS files are checked for readability
        but not loaded (see :func:`ssl_context`).

    Raises:
        ConfigError: on an unknown option, a wrong type or value, or a
            missing TLS file, naming the option (the first in declaration order).
    """
    raw = {str(k): v for k, v in dict(raw or {}).items()}
    for name in IGNORED_REST_TORNADO_OPTIONS:
        raw.pop(name, None)
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        known = ", ".join(sorted(OPTIONS))
        raise ConfigError(unknown[0], f"unknown option (known options: {known})")
    values = {
        name: option.kind.check(name, raw[name]) for name, option in OPTIONS.items() if name in raw
    }
    config = Config(**values)
    if config.tls and not config.ssl_crt:
        raise ConfigError(
            "ssl_crt",
            "required unless 'disable_ssl: True' is set (plain HTTP is refused by default)",
        )
    return config


# -- documents derived from the declaration ----------------------------------------------------

_YAML_INDENT = " " * 10  # under "    engines:\n      - ws:" in the docstring's code block
_YAML_COMMENT_AT = 28  # column of the comments, after "name: value" (or two spaces past it)


def _yaml(value: Any) -> str:
    """``value`` written as YAML that loads back to it (or, for tuples, to the list)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return _fmt(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def _bound(number: float) -> str:
    """A bound for the README: whole MiB, GiB or TiB as such, ``1,000,000`` style otherwise."""
    if not float(number).is_integer():
        return str(number)
    whole = int(number)
    if whole >= 1 << 20:
        for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
            if whole % size == 0:
                return f"{whole // size} {unit}"
    return f"{whole:,}"


def docs_yaml() -> str:
    """The ``engines:`` YAML block of the engine module docstring (indented for its code block).

    Every option with its default (or its example value) and its one-line doc.
    ``scripts/config_docs.py`` writes it into ``_engines/ws.py``.
    """
    lines = ["    engines:", "      - ws:"]
    for option in OPTIONS.values():
        if option.heading:
            lines.append(f"{_YAML_INDENT}# {option.heading}")
        setting = f"{option.name}: {option.yaml_value}".ljust(_YAML_COMMENT_AT - 2)
        lines.append(f"{_YAML_INDENT}{setting}  # {option.doc}")
    return "\n".join(lines)


def docs_table() -> str:
    """The README's options table (``| option | default | meaning |``), one row per option.

    ``scripts/config_docs.py`` writes it into README.md.
    """
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for option in OPTIONS.values():
        default = option.shown or _yaml(option.default)
        if not isinstance(option.default, (int, float)) or isinstance(option.default, bool):
            default = f"`{default}`"
        meaning = option.details
        if option.kind.limits():
            meaning += f"; accepted: {option.kind.limits()}"
        rows.append(f"| `{option.name}` | {default} | {meaning} |")
    return "\n".join(rows)


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """Build the server TLS context, or None when TLS is disabled.

    Python's secure defaults decide protocol floor and ciphers.

    Raises:
        ConfigError: naming ``ssl_crt`` or ``ssl_key`` when the pair cannot be loaded.
    """
    if not config.tls:
        return None
    assert config.ssl_crt is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # A password callback makes an encrypted key fail here instead of
        # prompting on the master's terminal.
        context.load_cert_chain(config.ssl_crt, config.ssl_key, password=_no_passphrase)
    except (ssl.SSLError, OSError) as exc:
        if config.ssl_key and _holds_certificate(config.ssl_crt):
            raise ConfigError(
                "ssl_key", f"cannot load the key (or it does not match ssl_crt): {exc}"
            ) from None
        what = "certificate" if config.ssl_key else "certificate (with its key in the same file)"
        raise ConfigError("ssl_crt", f"cannot load the {what}: {exc}") from None
    return context


def _no_passphrase() -> bytes:
    raise ValueError("encrypted private keys are not supported; use an unencrypted key file")


def _holds_certificate(path: str) -> bool:
    """True if ``path`` holds at least one PEM certificate Python can parse."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read()
        begin = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        ssl.PEM_cert_to_DER_cert(text[begin:end])
    except (OSError, ValueError):
        return False
    return True
