"""salt_ws.config: engine options, their defaults, validation and TLS loading."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import socket
import ssl
import threading

import pytest

from salt_ws.config import (
    DEFAULTS,
    OPTIONS,
    Config,
    ConfigError,
    docs_table,
    docs_yaml,
    parse,
    ssl_context,
)

PLAIN = {"disable_ssl": True}  # the smallest valid configuration


def plain(**options):
    return {**PLAIN, **options}


# -- defaults ----------------------------------------------------------------------------------


# Written out by hand, apart from the declaration, so that a default changed there shows here.
DEFAULT_VALUES = [
    ("port", 8000),
    ("address", "0.0.0.0"),
    ("ssl_crt", None),
    ("ssl_key", None),
    ("disable_ssl", False),
    ("debug", False),
    ("cors_origin", None),
    ("websockets", True),
    ("backlog", 128),
    ("num_processes", 1),
    ("client_queue_size", 10000),
    ("bind_retry_interval", 10.0),
    ("max_jobs", 1000),
    ("job_max_age", 86400.0),
    ("job_timeout", 600.0),
    ("max_connections", 1000),
    ("max_connections_per_token", 100),
    ("max_message_size", 65536),
    ("max_body_size", 65536),
    ("handshake_timeout", 10.0),
    ("login_max_failures", 5),
    ("login_failure_window", 60.0),
    ("acl_refresh_interval", 30.0),
    ("include_master", False),
    ("max_unauthenticated", 64),
    ("max_unauthenticated_per_address", 8),
    ("http_timeout", 10.0),
    ("max_http_connections", 1000),
    ("max_http_connections_per_address", 32),
    ("max_connections_per_user", 200),
    ("trusted_proxies", ()),
    ("max_pending_logins", 16),
    ("cookie_secure", False),
    ("client_queue_bytes", 128 * 1024 * 1024),
    ("frame_cache_bytes", 64 * 1024 * 1024),
    ("bus_queue_bytes", 256 * 1024 * 1024),
    ("max_minions", 100_000),
    ("max_jobs_bytes", 64 * 1024 * 1024),
    ("history_size", 10000),
    ("history_max_bytes", 64 * 1024 * 1024),
    ("ping_interval", 20.0),
    ("ping_timeout", 20.0),
    ("tick_interval", 15.0),
    ("max_filters", 64),
    ("max_filter_length", 1024),
    ("view_interval", 0.5),
    ("view_grains", None),
    ("metrics", False),
    ("metrics_allow", ("127.0.0.1/32", "::1/128")),
    ("dashboard", True),
]


@pytest.mark.parametrize(("option", "default"), DEFAULT_VALUES, ids=str)
def test_default(option, default):
    assert getattr(DEFAULTS, option) == default
    assert type(getattr(DEFAULTS, option)) is type(default)
    if option != "disable_ssl":
        assert getattr(parse(PLAIN), option) == default


def test_the_defaults_table_covers_every_declared_option_in_order():
    assert [name for name, _ in DEFAULT_VALUES] == list(OPTIONS)
    assert [f.name for f in dataclasses.fields(Config)] == list(OPTIONS)


def test_disable_ssl_alone_is_a_complete_configuration():
    assert parse(PLAIN) == Config(disable_ssl=True)
    assert parse(PLAIN).tls is False


@pytest.mark.parametrize("raw", [None, {}], ids=["none", "empty"])
def test_tls_is_on_by_default_so_an_empty_entry_needs_ssl_crt(raw):
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert err.value.option == "ssl_crt"
    assert "disable_ssl" in err.value.message


# -- valid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "option", "expected"),
    [
        ({"port": 1}, "port", 1),
        ({"port": 65535}, "port", 65535),
        ({"port": "8080"}, "port", 8080),
        ({"port": " 8080 "}, "port", 8080),
        ({"address": "127.0.0.1"}, "address", "127.0.0.1"),
        ({"address": " ::1 "}, "address", "::1"),
        ({"address": "localhost"}, "address", "localhost"),
        ({"disable_ssl": "true"}, "disable_ssl", True),
        ({"disable_ssl": "True"}, "disable_ssl", True),
        ({"disable_ssl": " YES "}, "disable_ssl", True),
        ({"debug": True}, "debug", True),
        ({"debug": False}, "debug", False),
        ({"debug": "yes"}, "debug", True),
        ({"debug": "no"}, "debug", False),
        ({"debug": "FALSE"}, "debug", False),
        ({"websockets": True}, "websockets", True),
        ({"websockets": "true"}, "websockets", True),
        ({"backlog": 1}, "backlog", 1),
        ({"backlog": 65535}, "backlog", 65535),
        ({"backlog": "512"}, "backlog", 512),
        ({"num_processes": 1}, "num_processes", 1),
        ({"num_processes": "1"}, "num_processes", 1),
        ({"client_queue_size": 10}, "client_queue_size", 10),
        ({"client_queue_size": 10_000_000}, "client_queue_size", 10_000_000),
        ({"client_queue_size": "250"}, "client_queue_size", 250),
        ({"bind_retry_interval": 1}, "bind_retry_interval", 1.0),
        ({"bind_retry_interval": 3600}, "bind_retry_interval", 3600.0),
        ({"bind_retry_interval": "5"}, "bind_retry_interval", 5.0),
        ({"max_jobs": 1}, "max_jobs", 1),
        ({"max_jobs": 1_000_000}, "max_jobs", 1_000_000),
        ({"max_jobs": "50"}, "max_jobs", 50),
        ({"job_max_age": 60}, "job_max_age", 60.0),
        ({"job_max_age": 365 * 86400}, "job_max_age", 365 * 86400.0),
        ({"job_timeout": 1}, "job_timeout", 1.0),
        ({"job_timeout": 7 * 86400}, "job_timeout", 7 * 86400.0),
        ({"job_timeout": "30"}, "job_timeout", 30.0),
        ({"job_timeout": 2.5}, "job_timeout", 2.5),
        ({"bind_retry_interval": 10.0}, "bind_retry_interval", 10.0),
        ({"cors_origin": None}, "cors_origin", None),
        ({"cors_origin": "*"}, "cors_origin", "*"),
        ({"cors_origin": "https://ui.example"}, "cors_origin", "https://ui.example"),
        ({"cors_origin": ["https://a.example", "https://b.example"]}, "cors_origin",
         ("https://a.example", "https://b.example")),
        ({"cors_origin": ("https://a.example",)}, "cors_origin", ("https://a.example",)),
        ({"ssl_crt": ""}, "ssl_crt", None),
        ({"ssl_key": None}, "ssl_key", None),
        ({"history_size": 0}, "history_size", 0),
        ({"history_size": "500"}, "history_size", 500),
        ({"history_max_bytes": 0}, "history_max_bytes", 0),
        ({"ping_interval": 0}, "ping_interval", 0.0),
        ({"ping_interval": "0"}, "ping_interval", 0.0),
        ({"ping_interval": 2.5}, "ping_interval", 2.5),
        ({"ping_timeout": "30"}, "ping_timeout", 30.0),
        ({"tick_interval": 0}, "tick_interval", 0.0),
        ({"tick_interval": 1}, "tick_interval", 1.0),
        ({"view_interval": 0}, "view_interval", 0.0),
        ({"view_interval": 0.25}, "view_interval", 0.25),
        ({"view_grains": None}, "view_grains", None),
        ({"view_grains": []}, "view_grains", ()),
        ({"view_grains": ["os", "osrelease"]}, "view_grains", ("os", "osrelease")),
        ({"view_grains": ("os",)}, "view_grains", ("os",)),
        ({"view_grains": [" os ", "os", "id"]}, "view_grains", ("os", "id")),
        ({"view_grains": "os"}, "view_grains", ("os",)),
        ({"view_grains": "os, osrelease,ip4_interfaces"}, "view_grains",
         ("os", "osrelease", "ip4_interfaces")),
        ({"metrics": True}, "metrics", True),
        ({"metrics": "yes"}, "metrics", True),
        ({"dashboard": False}, "dashboard", False),
        ({"dashboard": "no"}, "dashboard", False),
        ({"metrics_allow": None}, "metrics_allow", ()),
        ({"metrics_allow": []}, "metrics_allow", ()),
        ({"metrics_allow": "10.1.2.0/24"}, "metrics_allow", ("10.1.2.0/24",)),
        ({"metrics_allow": ["127.0.0.1", "::1"]}, "metrics_allow", ("127.0.0.1/32", "::1/128")),
        ({"max_filters": "8"}, "max_filters", 8),
        ({"max_filter_length": 200}, "max_filter_length", 200),
    ],
    ids=repr,
)  # fmt: skip
def test_valid_value(raw, option, expected):
    config = parse(plain(**raw))
    value = getattr(config, option)
    assert value == expected
    assert type(value) is type(expected)


def test_disable_ssl_false_with_a_certificate_serves_tls(tls_files):
    config = parse({"disable_ssl": "no", "ssl_crt": str(tls_files.crt)})
    assert config.disable_ssl is False
    assert config.tls is True


# -- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("port", 0, "between 1 and 65535"),
        ("port", 65536, "between 1 and 65535"),
        ("port", -1, "between 1 and 65535"),
        ("port", "http", "expected an integer"),
        ("port", "", "expected an integer"),
        ("port", "8e3", "expected an integer"),
        ("port", 8000.0, "expected an integer"),
        ("port", True, "expected an integer"),
        ("port", None, "expected an integer"),
        ("port", [8000], "expected an integer"),
        ("address", "", "non-empty string"),
        ("address", "   ", "non-empty string"),
        ("address", 127, "non-empty string"),
        ("address", None, "non-empty string"),
        ("disable_ssl", "maybe", "expected True or False"),
        ("disable_ssl", "", "expected True or False"),
        ("disable_ssl", 1, "expected True or False"),
        ("disable_ssl", None, "expected True or False"),
        ("debug", "on", "expected True or False"),
        ("debug", 0, "expected True or False"),
        ("websockets", "sure", "expected True or False"),
        ("websockets", False, "only serves websockets"),
        ("websockets", "false", "only serves websockets"),
        ("websockets", "no", "only serves websockets"),
        ("backlog", 0, "between 1 and 65535"),
        ("backlog", 65536, "between 1 and 65535"),
        ("backlog", "many", "expected an integer"),
        ("num_processes", 0, "between 1 and 1"),
        ("num_processes", 2, "between 1 and 1"),
        ("num_processes", "4", "between 1 and 1"),
        ("client_queue_size", 9, "between 10 and 10000000"),
        ("client_queue_size", 10_000_001, "between 10 and 10000000"),
        ("client_queue_size", False, "expected an integer"),
        ("bind_retry_interval", 0, "between 1 and 3600"),
        ("bind_retry_interval", 3601, "between 1 and 3600"),
        ("bind_retry_interval", "soon", "expected a number"),
        ("bind_retry_interval", float("nan"), "between 1 and 3600"),
        ("max_jobs", 0, "between 1 and 1000000"),
        ("max_jobs", 1_000_001, "between 1 and 1000000"),
        ("max_jobs", None, "expected an integer"),
        ("job_max_age", 59, "between 60 and 31536000"),
        ("job_max_age", 365 * 86400 + 1, "between 60 and 31536000"),
        ("job_max_age", "a day", "expected a number"),
        ("job_timeout", 0, "between 1 and 604800"),
        ("job_timeout", 7 * 86400 + 1, "between 1 and 604800"),
        ("job_timeout", True, "expected a number"),
        ("cors_origin", "", "non-empty string"),
        ("cors_origin", 5, "list of origins"),
        ("cors_origin", ["https://a.example", ""], "list of origins"),
        ("cors_origin", ["https://a.example", 3], "list of origins"),
        ("cors_origin", {"https://a.example"}, "list of origins"),
        ("cors_origin", {"https://a.example": True}, "list of origins"),
        ("ssl_crt", 5, "non-empty string"),
        ("ssl_crt", "   ", "non-empty string"),
        ("ssl_key", ["key.pem"], "non-empty string"),
        ("history_size", 1.5, "expected an integer"),
        ("history_size", "lots", "expected an integer"),
        ("ping_interval", 0.5, "must be 0 (off) or between 1 and 3600, got 0.5"),
        ("ping_interval", -1, "must be 0 (off) or between 1 and 3600, got -1"),
        ("ping_interval", 3601, "must be 0 (off) or between 1 and 3600, got 3601"),
        ("ping_interval", float("nan"), "must be 0 (off) or between 1 and 3600"),
        ("ping_interval", float("inf"), "must be 0 (off) or between 1 and 3600"),
        ("ping_interval", "often", "expected a number"),
        ("ping_interval", True, "expected a number"),
        ("ping_timeout", 0, "between 1 and 3600, got 0"),
        ("tick_interval", 0.9, "must be 0 (off) or between 1 and 3600"),
        ("tick_interval", None, "expected a number"),
        ("view_interval", 61, "between 0 and 60"),
        ("view_interval", -0.5, "between 0 and 60"),
        ("view_grains", 5, "expected a list of grain names"),
        ("view_grains", {"os": True}, "expected a list of grain names"),
        ("view_grains", {"os"}, "expected a list of grain names"),
        ("view_grains", ["os", 5], "not a grain name: 5"),
        ("view_grains", ["os", None], "not a grain name: None"),
        ("view_grains", ["os", ""], "not a grain name: ''"),
        ("view_grains", "", "not a grain name: ''"),
        ("view_grains", "os,,id", "not a grain name: ''"),
        ("view_grains", ["os:family"], "top-level grain names only"),
        ("metrics", "on", "expected True or False"),
        ("dashboard", 1, "expected True or False"),
        ("metrics_allow", ["localhost"], "not an address or network: 'localhost'"),
        ("metrics_allow", 5, "list of addresses or networks"),
        ("max_filters", "all", "expected an integer"),
    ],
    ids=lambda v: repr(v),
)
def test_invalid_value_names_the_option(option, value, says):
    with pytest.raises(ConfigError) as err:
        parse(plain(**{option: value}))
    assert err.value.option == option
    assert says in err.value.message
    assert str(err.value) == f"option '{option}': {err.value.message}"


# Every numeric option's accepted range, written out by hand: both ends are accepted, the next
# value past either end is refused with the range in the message.
BOUNDS = [
    ("port", 1, 65535),
    ("backlog", 1, 65535),
    ("num_processes", 1, 1),
    ("client_queue_size", 10, 10_000_000),
    ("bind_retry_interval", 1.0, 3600.0),
    ("max_jobs", 1, 1_000_000),
    ("job_max_age", 60.0, 365 * 86400.0),
    ("job_timeout", 1.0, 7 * 86400.0),
    ("max_connections", 1, 1_000_000),
    ("max_connections_per_token", 1, 1_000_000),
    ("max_message_size", 64, 16 * 1024 * 1024),
    ("max_body_size", 1024, 16 * 1024 * 1024),
    ("handshake_timeout", 0.1, 3600.0),
    ("login_max_failures", 1, 1_000_000),
    ("login_failure_window", 1.0, 86400.0),
    ("acl_refresh_interval", 1.0, 86400.0),
    ("max_unauthenticated", 1, 1_000_000),
    ("max_unauthenticated_per_address", 1, 1_000_000),
    ("http_timeout", 0.5, 3600.0),
    ("max_http_connections", 1, 1_000_000),
    ("max_http_connections_per_address", 1, 1_000_000),
    ("max_connections_per_user", 1, 1_000_000),
    ("max_pending_logins", 1, 10_000),
    ("client_queue_bytes", 65536, 1 << 40),
    ("frame_cache_bytes", 0, 1 << 40),
    ("bus_queue_bytes", 1 << 20, 1 << 40),
    ("max_minions", 1, 10_000_000),
    ("max_jobs_bytes", 1 << 20, 1 << 40),
    ("history_size", 0, 10_000_000),
    ("history_max_bytes", 0, 1 << 40),
    ("ping_interval", 1.0, 3600.0),  # or 0 (off)
    ("ping_timeout", 1.0, 3600.0),
    ("tick_interval", 1.0, 3600.0),  # or 0 (off)
    ("view_interval", 0.0, 60.0),
    ("max_filters", 1, 10_000),
    ("max_filter_length", 1, 65536),
]


def _shown(number):
    return str(int(number)) if float(number).is_integer() else str(number)


@pytest.mark.parametrize(("option", "lo", "hi"), BOUNDS, ids=str)
def test_numeric_bounds(option, lo, hi):
    for value in (lo, hi, str(lo), str(hi)):
        parsed = getattr(parse(plain(**{option: value})), option)
        assert parsed == type(lo)(value)
        assert type(parsed) is type(lo)
    if isinstance(lo, int):
        outside = (lo - 1, hi + 1)
    else:
        outside = (math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf))
    for value in outside:
        with pytest.raises(ConfigError) as err:
            parse(plain(**{option: value}))
        assert err.value.option == option
        assert f"between {_shown(lo)} and {_shown(hi)}, got " in err.value.message


def test_the_bounds_table_covers_every_numeric_option():
    numeric = {name for name, default in DEFAULT_VALUES if type(default) in (int, float)}
    assert {name for name, _, _ in BOUNDS} == numeric


@pytest.mark.parametrize("option", ["ping_interval", "tick_interval"])
def test_zero_turns_an_interval_off(option):
    assert getattr(parse(plain(**{option: 0})), option) == 0.0


@pytest.mark.parametrize(
    ("raw", "option"),
    [
        ({"prot": 8000}, "prot"),
        ({"ssl_cert": "/etc/pki/server.crt"}, "ssl_cert"),
        ({"zeta": 1, "alpha": 2}, "alpha"),
        ({"Port": 8000}, "Port"),
    ],
    ids=["typo", "near-miss", "first-of-several", "case-sensitive"],
)
def test_unknown_option_is_named(raw, option):
    with pytest.raises(ConfigError) as err:
        parse(plain(**raw))
    assert err.value.option == option
    assert "unknown option" in err.value.message
    assert "client_queue_size" in err.value.message  # lists what is known


def test_unknown_options_are_reported_before_any_value_check():
    with pytest.raises(ConfigError) as err:
        parse({"port": "bad", "colour": "blue"})
    assert err.value.option == "colour"


@pytest.mark.parametrize(
    "webhook",
    [
        {"webhook_url": "/hook"},
        {"webhook_disable_auth": True},
        {"webhook_url": 5, "webhook_disable_auth": "whatever"},
    ],
    ids=["url", "disable_auth", "odd-values"],
)
def test_webhook_options_of_rest_tornado_are_accepted_and_ignored(webhook):
    assert parse(plain(**webhook)) == parse(PLAIN)


def test_parse_leaves_the_callers_mapping_alone():
    raw = plain(port="8001", webhook_url="/hook")
    parse(raw)
    assert raw == {"disable_ssl": True, "port": "8001", "webhook_url": "/hook"}


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse(PLAIN).port = 1  # type: ignore[misc]


def test_config_error_is_a_value_error_carrying_option_and_message():
    err = ConfigError("port", "must be between 1 and 65535, got 0")
    assert isinstance(err, ValueError)
    assert err.option == "port"
    assert err.message == "must be between 1 and 65535, got 0"
    assert str(err) == "option 'port': must be between 1 and 65535, got 0"


# -- TLS files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [{}, {"ssl_crt": ""}, {"ssl_crt": None}, {"disable_ssl": False}],
    ids=["absent", "empty", "none", "disable_ssl-false"],
)
def test_tls_without_ssl_crt_names_ssl_crt(raw):
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert err.value.option == "ssl_crt"
    assert "disable_ssl: True" in err.value.message


def test_a_key_alone_is_not_enough_for_tls(tls_files):
    with pytest.raises(ConfigError) as err:
        parse({"ssl_key": str(tls_files.key)})
    assert err.value.option == "ssl_crt"


@pytest.mark.parametrize("option", ["ssl_crt", "ssl_key"])
def test_missing_tls_file_names_the_option(option, tls_files, tmp_path):
    missing = tmp_path / "nope.pem"
    raw = {"ssl_crt": str(tls_files.crt), option: str(missing)}
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert err.value.option == option
    assert str(missing) in err.value.message
    assert "does not exist" in err.value.message


@pytest.mark.parametrize("option", ["ssl_crt", "ssl_key"])
def test_a_directory_is_not_a_tls_file(option, tls_files, tmp_path):
    with pytest.raises(ConfigError) as err:
        parse({"ssl_crt": str(tls_files.crt), option: str(tmp_path)})
    assert err.value.option == option


@pytest.mark.parametrize("option", ["ssl_crt", "ssl_key"])
def test_unreadable_tls_file_names_the_option(option, tls_files, monkeypatch):
    # os.access() is what the check relies on; faking it keeps the test valid under root.
    unreadable = str(tls_files.crt if option == "ssl_crt" else tls_files.key)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: path != unreadable and real_access(path, mode, **kw)
    )
    with pytest.raises(ConfigError) as err:
        parse({"ssl_crt": str(tls_files.crt), "ssl_key": str(tls_files.key)})
    assert err.value.option == option
    assert "not readable" in err.value.message


def test_tls_files_are_checked_even_with_disable_ssl(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse(plain(ssl_crt=str(tmp_path / "nope.crt")))
    assert err.value.option == "ssl_crt"


def test_tls_file_paths_are_kept(tls_files):
    config = parse({"ssl_crt": f" {tls_files.crt} ", "ssl_key": str(tls_files.key)})
    assert config.ssl_crt == str(tls_files.crt)
    assert config.ssl_key == str(tls_files.key)
    assert config.tls is True


# -- ssl_context -------------------------------------------------------------------------------


def test_no_tls_context_when_tls_is_disabled():
    assert ssl_context(parse(PLAIN)) is None


def _served_common_name(context: ssl.SSLContext, ca_file: str) -> str:
    """Handshake over a socketpair and return the CN the server presented."""
    client_context = ssl.create_default_context(cafile=ca_file)
    server_sock, client_sock = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with context.wrap_socket(server_sock, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(client_sock, server_hostname="localhost") as tls:
            subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
            tls.sendall(b"x")
    finally:
        thread.join(5)
    assert not errors
    return subject["commonName"]


@pytest.mark.parametrize("layout", ["crt+key", "combined"])
def test_tls_context_serves_the_configured_certificate(layout, tls_files):
    if layout == "crt+key":
        raw = {"ssl_crt": str(tls_files.crt), "ssl_key": str(tls_files.key)}
    else:
        raw = {"ssl_crt": str(tls_files.combined)}
    context = ssl_context(parse(raw))
    assert isinstance(context, ssl.SSLContext)
    assert _served_common_name(context, str(tls_files.crt)) == "localhost"


@pytest.mark.parametrize(
    ("crt", "key", "option"),
    [
        ("crt", "other_key", "ssl_key"),
        ("crt", "garbage", "ssl_key"),
        ("crt", None, "ssl_crt"),
        ("garbage", None, "ssl_crt"),
        ("key", None, "ssl_crt"),
    ],
    ids=[
        "key-does-not-match",
        "key-is-garbage",
        "crt-without-key-inside",
        "crt-is-garbage",
        "key-given-as-crt",
    ],
)
def test_unusable_tls_pair_names_the_option(crt, key, option, tls_files):
    raw = {"ssl_crt": str(getattr(tls_files, crt))}
    if key:
        raw["ssl_key"] = str(getattr(tls_files, key))
    with pytest.raises(ConfigError) as err:
        ssl_context(parse(raw))
    assert err.value.option == option
    assert "cannot load" in err.value.message


def test_a_garbage_certificate_names_ssl_crt_even_with_a_key(tls_files):
    config = parse({"ssl_crt": str(tls_files.garbage), "ssl_key": str(tls_files.key)})
    with pytest.raises(ConfigError) as err:
        ssl_context(config)
    assert err.value.option == "ssl_crt"


@pytest.mark.parametrize("raw", [{1: True}, {1: True, "foo": 1}], ids=["int", "mixed"])
def test_non_string_option_names_are_config_errors(raw):
    with pytest.raises(ConfigError) as err:
        parse({**PLAIN, **raw})
    assert isinstance(err.value.option, str)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (None, ()),
        ("10.0.0.5", ("10.0.0.5/32",)),
        (["10.0.0.0/24", "::1"], ("10.0.0.0/24", "::1/128")),
        (["10.0.0.7/24"], ("10.0.0.0/24",)),
    ],
    ids=str,
)
def test_trusted_proxies_are_networks(raw, parsed):
    assert parse({**PLAIN, "trusted_proxies": raw}).trusted_proxies == parsed


@pytest.mark.parametrize("raw", [["not-an-ip"], 5, {"a": 1}, ["10.0.0.0/33"]], ids=str)
def test_trusted_proxies_refuse_what_is_not_an_address(raw):
    with pytest.raises(ConfigError) as err:
        parse({**PLAIN, "trusted_proxies": raw})
    assert err.value.option == "trusted_proxies"


# -- the declaration and the documents derived from it ----------------------------------------

ROOT = pathlib.Path(__file__).parents[2]


def test_every_config_field_is_a_declared_option():
    for field in dataclasses.fields(Config):
        option = OPTIONS[field.name]
        assert option.name == field.name
        assert option.default == field.default
        # the hand-written annotation (what mypy sees) is the type the option's kind produces
        assert field.type == option.kind.annotation, field.name
        assert option.doc and option.details, field.name


@pytest.mark.parametrize("name", list(OPTIONS), ids=str)
def test_an_option_checks_its_own_default(name):
    option = OPTIONS[name]
    if option.example is None:
        assert option.kind.check(name, option.default) == option.default


def _docstring_yaml() -> str:
    import salt_ws.ext_engines.ws as engine_shim

    doc = engine_shim.__doc__
    start = doc.index(".. code-block:: yaml\n\n") + len(".. code-block:: yaml\n\n")
    return doc[start : doc.index("\n\n", start)]


def _readme_table() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| option | default | meaning |")
    return readme[start : readme.index("\n\n", start)]


def test_the_engine_docstring_block_is_the_declaration_rendered():
    # on failure: .venv/bin/python scripts/config_docs.py (rewrites the block)
    assert _docstring_yaml() == docs_yaml()


def test_the_readme_options_table_is_the_declaration_rendered():
    # on failure: .venv/bin/python scripts/config_docs.py (rewrites the table)
    assert _readme_table() == docs_table()


def test_the_engine_docstring_documents_every_option_with_its_default():
    import yaml

    documented = yaml.safe_load(_docstring_yaml())["engines"][0]["ws"]
    assert list(documented) == list(OPTIONS)
    for name, value in documented.items():
        option = OPTIONS[name]
        if option.example is None:
            assert option.kind.check(name, value) == option.default, name
        else:
            assert value == option.example, name
    assert {name for name, option in OPTIONS.items() if option.example is not None} == {
        "ssl_crt",
        "ssl_key",
    }


def test_the_engine_docstring_stays_within_the_line_length():
    assert max(len(line) for line in docs_yaml().splitlines()) <= 100


def test_the_readme_options_table_documents_every_option_with_its_default():
    import yaml

    rows = _readme_table().splitlines()
    assert rows[0] == "| option | default | meaning |"
    documented = {}
    for row in rows[2:]:
        name, default, meaning = (cell.strip() for cell in row.strip("|").split("|"))
        assert meaning, row
        documented[re.fullmatch(r"`([a-z_]+)`", name).group(1)] = default
    assert list(documented) == list(OPTIONS)
    for name, default in documented.items():
        value = yaml.safe_load(default.strip("`"))
        assert OPTIONS[name].kind.check(name, value) == OPTIONS[name].default, name


def _config_docs_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "config_docs", ROOT / "scripts" / "config_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_script_rewrites_only_the_generated_parts():
    script = _config_docs_script()
    stale_doc = (
        '"""Intro.\n\n.. code-block:: yaml\n\n'
        "    engines:\n      - ws:\n          port: 1\n\nAfter.\n"
        '"""\n'
    )
    assert script.with_docstring_block(stale_doc) == (
        '"""Intro.\n\n.. code-block:: yaml\n\n' + docs_yaml() + '\n\nAfter.\n"""\n'
    )
    stale_readme = (
        "# T\n\n| option | default | meaning |\n|---|---|---|\n| `port` | 1 | x |\n\nEnd\n"
    )
    assert script.with_readme_table(stale_readme) == "# T\n\n" + docs_table() + "\n\nEnd\n"
    assert script.main(["--check"]) == 0
