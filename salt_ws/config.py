"""Engine options: defaults, validation and clear errors.

Pure: no Salt, no tornado. The option names follow Salt's ``rest_tornado``
netapi so that a ``rest_tornado:`` block can be moved under the engine
unchanged. Everything here is checked before the engine binds anything, and a
problem is reported as :class:`ConfigError` naming the offending option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
from typing import Any, Mapping

__all__ = [
    "DEFAULTS",
    "IGNORED_REST_TORNADO_OPTIONS",
    "Config",
    "ConfigError",
    "parse",
    "ssl_context",
]


class ConfigError(ValueError):
    """A configuration problem, always naming the option at fault."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"option '{option}': {message}")
        self.option = option
        self.message = message


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated engine configuration.

    Attributes mirror the ``engines: - ws:`` options; see the engine module
    docstring (``_engines/ws.py``) for the user-facing reference.
    """

    port: int = 8000
    address: str = "0.0.0.0"
    ssl_crt: str | None = None
    ssl_key: str | None = None
    disable_ssl: bool = False
    debug: bool = False
    cors_origin: str | tuple[str, ...] | None = None
    websockets: bool = True
    backlog: int = 128
    num_processes: int = 1
    client_queue_size: int = 10000
    bind_retry_interval: float = 10.0
    max_jobs: int = 1000
    job_max_age: float = 86400.0
    job_timeout: float = 600.0
    max_connections: int = 1000
    max_connections_per_token: int = 100
    max_message_size: int = 65536
    max_body_size: int = 65536
    handshake_timeout: float = 10.0
    login_max_failures: int = 5
    login_failure_window: float = 60.0
    acl_refresh_interval: float = 30.0
    include_master: bool = False
    # hardening (issue 9): budgets for peers that have not authenticated, HTTP time-outs,
    # login guessing, and memory bounded in bytes
    max_unauthenticated: int = 64
    max_unauthenticated_per_address: int = 8
    http_timeout: float = 10.0
    max_http_connections: int = 1000
    max_http_connections_per_address: int = 32
    max_connections_per_user: int = 200
    trusted_proxies: tuple[str, ...] = ()
    max_pending_logins: int = 16
    cookie_secure: bool = False
    client_queue_bytes: int = 128 * 1024 * 1024
    frame_cache_bytes: int = 64 * 1024 * 1024
    bus_queue_bytes: int = 256 * 1024 * 1024
    max_minions: int = 100_000
    max_jobs_bytes: int = 64 * 1024 * 1024

    @property
    def tls(self) -> bool:
        """True when the engine serves https/wss."""
        return not self.disable_ssl


DEFAULTS = Config()

# rest_tornado options that make sense only for salt-api's other endpoints.
# They are accepted (so a rest_tornado block moves over unchanged) and ignored.
IGNORED_REST_TORNADO_OPTIONS = frozenset({"webhook_disable_auth", "webhook_url"})

_BOOL_OPTIONS = ("disable_ssl", "debug", "websockets", "include_master", "cookie_secure")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _number(name: str, value: Any, lo: float, hi: float, kind: type = float) -> Any:
    """``value`` as ``kind`` (int or float) within ``[lo, hi]``; numeric strings accepted."""
    what = "an integer" if kind is int else "a number"
    accepted = (int, str) if kind is int else (int, float, str)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ConfigError(name, f"expected {what}, got {type(value).__name__} {value!r}")
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(name, f"expected {what}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(name, f"must be between {_fmt(lo)} and {_fmt(hi)}, got {_fmt(number)}")
    return number


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    return int(_number(name, value, lo, hi, int))


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


def _cors(value: Any) -> str | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _str("cors_origin", value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError("cors_origin", f"expected '*', an origin or a list of origins, got {value!r}")


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
            missing TLS file, naming the option.
    """
    raw = {str(k): v for k, v in dict(raw or {}).items()}
    for name in IGNORED_REST_TORNADO_OPTIONS:
        raw.pop(name, None)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown option (known options: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name in _BOOL_OPTIONS:
        if name in raw:
            values[name] = _bool(name, raw[name])
    if "port" in raw:
        values["port"] = _int("port", raw["port"], 1, 65535)
    if "address" in raw:
        values["address"] = _str("address", raw["address"])
    if "backlog" in raw:
        values["backlog"] = _int("backlog", raw["backlog"], 1, 65535)
    if "num_processes" in raw:
        values["num_processes"] = _int("num_processes", raw["num_processes"], 1, 1)
    if "client_queue_size" in raw:
        values["client_queue_size"] = _int(
            "client_queue_size", raw["client_queue_size"], 10, 10_000_000
        )
    for name, lo, hi in (
        ("bind_retry_interval", 1, 3600),
        ("job_max_age", 60, 365 * 86400),
        ("job_timeout", 1, 7 * 86400),
        ("handshake_timeout", 0.1, 3600),
        ("login_failure_window", 1, 86400),
        ("acl_refresh_interval", 1, 86400),
        ("http_timeout", 0.5, 3600),
    ):
        if name in raw:
            values[name] = _number(name, raw[name], lo, hi)
    for name, lo, hi in (
        ("max_jobs", 1, 1_000_000),
        ("max_connections", 1, 1_000_000),
        ("max_connections_per_token", 1, 1_000_000),
        ("max_message_size", 64, 16 * 1024 * 1024),
        ("max_body_size", 1024, 16 * 1024 * 1024),
        ("login_max_failures", 1, 1_000_000),
        ("max_unauthenticated", 1, 1_000_000),
        ("max_unauthenticated_per_address", 1, 1_000_000),
        ("max_http_connections", 1, 1_000_000),
        ("max_http_connections_per_address", 1, 1_000_000),
        ("max_connections_per_user", 1, 1_000_000),
        ("max_pending_logins", 1, 10_000),
        ("client_queue_bytes", 65536, 1 << 40),
        ("frame_cache_bytes", 0, 1 << 40),
        ("bus_queue_bytes", 1 << 20, 1 << 40),
        ("max_minions", 1, 10_000_000),
        ("max_jobs_bytes", 1 << 20, 1 << 40),
    ):
        if name in raw:
            values[name] = _int(name, raw[name], lo, hi)
    if "cors_origin" in raw:
        values["cors_origin"] = _cors(raw["cors_origin"])
    if "trusted_proxies" in raw:
        values["trusted_proxies"] = _networks("trusted_proxies", raw["trusted_proxies"])
    if values.get("websockets") is False:
        raise ConfigError(
            "websockets", "this engine only serves websockets; remove the option or set it True"
        )
    for name in ("ssl_crt", "ssl_key"):
        if raw.get(name) not in (None, ""):
            values[name] = _readable(name, _str(name, raw[name]))
    config = Config(**values)
    if config.tls and not config.ssl_crt:
        raise ConfigError(
            "ssl_crt",
            "required unless 'disable_ssl: True' is set (plain HTTP is refused by default)",
        )
    return config


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
