"""salt_ws.config: engine options, their defaults, validation and TLS loading."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import threading

import pytest

from salt_ws.config import DEFAULTS, Config, ConfigError, parse, ssl_context

PLAIN = {"disable_ssl": True}  # the smallest valid configuration


def plain(**options):
    return {**PLAIN, **options}


# -- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "default"),
    [
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
    ],
    ids=str,
)
def test_default(option, default):
    assert getattr(DEFAULTS, option) == default
    if option != "disable_ssl":
        assert getattr(parse(PLAIN), option) == default


def test_the_defaults_table_covers_every_option():
    assert {f.name for f in dataclasses.fields(Config)} == {
        "port",
        "address",
        "ssl_crt",
        "ssl_key",
        "disable_ssl",
        "debug",
        "cors_origin",
        "websockets",
        "backlog",
        "num_processes",
        "client_queue_size",
        "bind_retry_interval",
        "max_jobs",
        "job_max_age",
        "job_timeout",
        "max_connections",
        "max_connections_per_token",
        "max_message_size",
        "max_body_size",
        "handshake_timeout",
        "login_max_failures",
        "login_failure_window",
        "acl_refresh_interval",
        "include_master",
        "max_unauthenticated",
        "max_unauthenticated_per_address",
        "http_timeout",
        "max_http_connections",
        "max_http_connections_per_address",
        "max_connections_per_user",
        "trusted_proxies",
        "max_pending_logins",
        "cookie_secure",
        "client_queue_bytes",
        "frame_cache_bytes",
        "bus_queue_bytes",
        "max_minions",
        "max_jobs_bytes",
    }


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
    ],
    ids=lambda v: repr(v),
)
def test_invalid_value_names_the_option(option, value, says):
    with pytest.raises(ConfigError) as err:
        parse(plain(**{option: value}))
    assert err.value.option == option
    assert says in err.value.message
    assert str(err.value) == f"option '{option}': {err.value.message}"


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


def test_engine_docstring_documents_every_option_with_its_default():
    import salt_ws.ext_engines.ws as engine_shim
    import yaml

    doc = engine_shim.__doc__
    block = doc[doc.index("engines:") : doc.index("``webhook_url``")]
    documented = yaml.safe_load(block)["engines"][0]["ws"]
    assert set(documented) == {f.name for f in dataclasses.fields(Config)}
    for option, value in documented.items():
        if option not in ("ssl_crt", "ssl_key", "address"):  # examples, not defaults
            default = getattr(DEFAULTS, option)
            assert value == (list(default) if isinstance(default, tuple) else default), option


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


def test_the_readme_options_table_documents_every_option():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("| option | default | meaning |") :]
    table = table[: table.index("\n\n")]
    documented = set(
        re.findall(r"`([a-z_]+)`", "\n".join(r.split("|")[1] for r in table.splitlines()[2:]))
    )
    assert documented >= {f.name for f in dataclasses.fields(Config)}
