"""salt_ws.auth: eauth login, token lookup and expiry, logout, and redaction for logs.

Salt's LoadAuth is replaced by a recording fake injected through ``load_auth``.
"""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import sys
import threading
import time
from typing import Any

import pytest

from salt_ws.auth import (
    Authenticator,
    LoginBusy,
    LoginFailed,
    RedactingFilter,
    Session,
    install_log_redaction,
    loggable,
    redact,
    token_pattern,
)

TOKEN = "0123456789abcdef" * 4  # a well-formed sha256 token
NOW = 1_700_000_000.0


class FakeLoadAuth:
    """What the Authenticator uses of salt.auth.LoadAuth, with every call recorded.

    ``accounts`` maps (username, password, eauth) to the token data ``mk_token`` creates.
    """

    def __init__(self, accounts: dict[tuple[str, str, str], dict[str, Any]] | None = None):
        self.accounts = accounts or {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []

    def mk_token(self, creds: dict[str, str]) -> dict[str, Any]:
        self.calls.append(("mk_token", creds))
        data = self.accounts.get((creds["username"], creds["password"], creds["eauth"]))
        if data is None:
            return {}
        token = {"token": TOKEN, "start": NOW, "expire": NOW + 43200, **data}
        self.tokens[token["token"]] = token
        return dict(token)

    def get_tok(self, token: str) -> dict[str, Any]:
        self.calls.append(("get_tok", token))
        return dict(self.tokens.get(token, {}))

    def rm_token(self, token: str) -> None:
        self.calls.append(("rm_token", token))
        self.tokens.pop(token, None)

    def list_tokens(self) -> list[str]:
        self.calls.append(("list_tokens", None))
        return list(self.tokens)

    def called(self, name: str) -> list[Any]:
        return [arg for call, arg in self.calls if call == name]


EXTERNAL_AUTH = {
    "pam": {
        "alice": [".*", "@runner"],
        "*": ["test.*"],
        "bob": ["@wheel"],
        "admins%": ["@jobs", {"web*": ["state.apply"]}],
    },
    "ldap": {"carol": ["grains.items"]},
}


def make_auth(
    accounts: dict[tuple[str, str, str], dict[str, Any]] | None = None, **opts: Any
) -> tuple[Authenticator, FakeLoadAuth]:
    fake = FakeLoadAuth(accounts)
    seen_opts = []

    def load_auth(given_opts):
        seen_opts.append(given_opts)
        return fake

    opts = {"external_auth": copy.deepcopy(EXTERNAL_AUTH), **opts}
    auth = Authenticator(opts, load_auth=load_auth)
    assert seen_opts and all(seen is opts for seen in seen_opts)
    return auth, fake


@pytest.fixture
def authenticators():
    made: list[Authenticator] = []

    def factory(*args: Any, **kwargs: Any) -> tuple[Authenticator, FakeLoadAuth]:
        auth, fake = make_auth(*args, **kwargs)
        made.append(auth)
        return auth, fake

    yield factory
    for auth in made:
        auth.shutdown()


ALICE = ("alice", "secret", "pam")


# -- token shape and redaction -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_type", "length"),
    [("sha256", 64), ("md5", 32), ("sha1", 40), ("sha512", 128)],
)
def test_token_pattern_fits_the_masters_hash_type(hash_type, length):
    pattern = token_pattern(hash_type)
    assert pattern.fullmatch("a" * length)
    assert pattern.fullmatch("A1" * (length // 2))
    assert not pattern.fullmatch("a" * (length - 1))
    assert not pattern.fullmatch("a" * (length + 1))
    assert not pattern.fullmatch("g" * length)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TOKEN, "012345..."),
        (f"/all_events/{TOKEN}", "/all_events/012345..."),
        (f"GET /all_events/{TOKEN.upper()} (127.0.0.1)", "GET /all_events/012345... (127.0.0.1)"),
        (f"/x?token={TOKEN}&a=1", "/x?token=012345...&a=1"),
        ("d41d8cd98f00b204e9800998ecf8427e", "d41d8c..."),  # md5-sized: 32 digits
        (f"{TOKEN} and {'f' * 64}", "012345... and ffffff..."),
        ("deadbeef" * 3 + "1234567", "deadbeef" * 3 + "1234567"),  # 31 digits: not a token
        ("/all_events/", "/all_events/"),
        ("jid 20240101120000123456", "jid 20240101120000123456"),  # a Salt jid is kept
        ("", ""),
    ],
    ids=[
        "bare",
        "in-path",
        "upper-case",
        "in-query",
        "md5",
        "two",
        "31-digits",
        "no-token",
        "jid",
        "empty",
    ],
)
def test_redact_keeps_six_digits_of_anything_token_like(text, expected):
    assert redact(text) == expected


# -- redaction of log records -----------------------------------------------------------------


def record(msg: Any, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("salt.auth", logging.WARNING, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("Token '%s' could not be loaded", (TOKEN,), "Token '012345...' could not be loaded"),
        (f"GET /all_events/{TOKEN}", (), "GET /all_events/012345..."),
        ("%(who)s used %(tok)s", ({"who": "alice", "tok": TOKEN},), "alice used 012345..."),
        (ValueError(TOKEN), (), "012345..."),  # msg need not be a str
    ],
    ids=["in-args", "in-msg", "mapping-args", "non-str-msg"],
)
def test_redacting_filter_rewrites_token_like_text(msg, args, expected):
    rec = record(msg, *args)
    assert RedactingFilter().filter(rec) is True
    assert rec.getMessage() == expected


def test_redacting_filter_leaves_clean_records_alone():
    args = ("alice", 3)
    rec = record("user %s has %d jobs", *args)
    RedactingFilter().filter(rec)
    assert rec.msg == "user %s has %d jobs"
    assert rec.args == args


def test_redacting_filter_passes_records_it_cannot_format():
    rec = record("%s and %s", "only one")
    assert RedactingFilter().filter(rec) is True
    assert rec.msg == "%s and %s"


def test_redacting_filter_redacts_tracebacks():
    try:
        raise KeyError(f"no such token {TOKEN}")
    except KeyError:
        rec = record("lookup failed", exc_info=sys.exc_info())
    RedactingFilter().filter(rec)
    assert "012345..." in rec.exc_text
    assert TOKEN not in rec.exc_text


def test_redacting_filter_redacts_an_already_formatted_traceback():
    rec = record("lookup failed")
    rec.exc_text = f"Traceback ...\nKeyError: {TOKEN}"
    RedactingFilter().filter(rec)
    assert rec.exc_text == "Traceback ...\nKeyError: 012345..."


def test_install_log_redaction_filters_every_root_handler_once():
    root = logging.Logger("test-root")
    stream = io.StringIO()
    root.addHandler(logging.StreamHandler(stream))
    root.addHandler(logging.NullHandler())
    assert install_log_redaction(root) == 2
    assert install_log_redaction(root) == 2  # idempotent
    for handler in root.handlers:
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    try:
        raise RuntimeError(TOKEN)
    except RuntimeError:
        root.exception("token %s refused", TOKEN)
    assert TOKEN not in stream.getvalue()
    assert stream.getvalue().count("012345...") == 2


def test_install_log_redaction_defaults_to_the_root_logger(monkeypatch):
    handler = logging.NullHandler()
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    assert install_log_redaction() == 1
    assert any(isinstance(f, RedactingFilter) for f in handler.filters)


# -- login -------------------------------------------------------------------------------------


def test_login_returns_saltnados_payload(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    result = auth.login(*ALICE)
    assert result == {
        "perms": [".*", "@runner", "test.*"],
        "start": NOW,
        "token": TOKEN,
        "expire": NOW + 43200,
        "user": "alice",
        "eauth": "pam",
    }
    assert fake.called("mk_token") == [{"username": "alice", "password": "secret", "eauth": "pam"}]


@pytest.mark.parametrize(
    ("token_data", "perms"),
    [
        ({"name": "alice", "eauth": "pam"}, [".*", "@runner", "test.*"]),
        ({"name": "dave", "eauth": "pam"}, ["test.*"]),
        ({"name": "bob", "eauth": "pam"}, ["@wheel", "test.*"]),
        (
            {"name": "erin", "eauth": "pam", "groups": ["admins", "users"]},
            ["@jobs", "test.*", {"web*": ["state.apply"]}],
        ),
        ({"name": "carol", "eauth": "ldap"}, ["grains.items"]),
        ({"name": "zed", "eauth": "ldap"}, []),
    ],
    ids=["user-and-star", "star-only", "sorted", "group", "other-backend", "no-entry"],
)
def test_login_perms_follow_salt_netapi(authenticators, token_data, perms):
    """The user's entry, the '*' entry and the user's groups' 'name%' entries, sorted."""
    creds = (token_data["name"], "pw", token_data["eauth"])
    auth, _ = authenticators({creds: token_data})
    assert auth.login(*creds)["perms"] == perms


def test_login_does_not_grow_the_masters_external_auth(authenticators):
    # salt.netapi.sum_permissions extends the lists it is handed, in place.
    auth, _ = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    before = copy.deepcopy(auth._opts["external_auth"])
    results = [auth.login(*ALICE)["perms"] for _ in range(3)]
    assert auth._opts["external_auth"] == before
    assert results == [[".*", "@runner", "test.*"]] * 3


def test_refused_credentials_raise_login_failed(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    with pytest.raises(LoginFailed):
        auth.login("alice", "wrong", "pam")
    assert fake.called("rm_token") == []


def test_a_backend_missing_from_external_auth_refuses_and_drops_the_token(authenticators):
    creds = ("alice", "secret", "auto")
    auth, fake = authenticators({creds: {"name": "alice", "eauth": "auto"}})
    with pytest.raises(LoginFailed, match="auto"):
        auth.login(*creds)
    assert fake.called("rm_token") == [TOKEN]
    assert fake.tokens == {}


def test_no_external_auth_at_all_refuses(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}}, external_auth=None)
    with pytest.raises(LoginFailed):
        auth.login(*ALICE)
    assert fake.called("rm_token") == [TOKEN]


# -- sessions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["", "abc", TOKEN[:-1], TOKEN + "0", "g" * 64, TOKEN + "\n", f"../{TOKEN[3:]}", TOKEN[:32]],
    ids=["empty", "short", "63", "65", "not-hex", "newline", "path", "md5-sized"],
)
def test_a_malformed_token_never_reaches_salt(authenticators, token):
    auth, fake = authenticators()
    assert auth.well_formed(token) is False
    assert auth.session(token, now=NOW) is None
    assert auth.logout(token) is False
    assert fake.calls == []


def test_token_shape_follows_hash_type(authenticators):
    auth, _ = authenticators(hash_type="md5")
    assert auth.well_formed(TOKEN[:32])
    assert not auth.well_formed(TOKEN)


@pytest.mark.parametrize("hash_type", [None, ""])
def test_token_shape_defaults_to_sha256(authenticators, hash_type):
    auth, _ = authenticators(hash_type=hash_type)
    assert auth.well_formed(TOKEN)


def test_an_unknown_token_has_no_session(authenticators):
    auth, fake = authenticators()
    assert auth.session(TOKEN, now=NOW) is None
    assert fake.called("get_tok") == [TOKEN]


@pytest.mark.parametrize(
    ("expire", "valid"),
    [(NOW - 3600, False), (NOW - 0.001, False), (NOW, False), (NOW + 0.001, True)],
    ids=["an-hour-ago", "just-before", "exactly-now", "just-after"],
)
def test_an_expired_token_has_no_session(authenticators, expire, valid):
    auth, fake = authenticators()
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "alice", "eauth": "pam", "expire": expire}
    assert (auth.session(TOKEN, now=NOW) is not None) is valid


def test_a_token_without_expiry_has_no_session(authenticators):
    auth, fake = authenticators()
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "alice", "eauth": "pam"}
    assert auth.session(TOKEN, now=NOW) is None


def test_a_valid_token_has_its_session(authenticators):
    auth, fake = authenticators()
    data = {"token": TOKEN, "name": "alice", "eauth": "pam", "expire": NOW + 60, "start": NOW}
    fake.tokens[TOKEN] = data
    session = auth.session(TOKEN, now=NOW)
    assert isinstance(session, Session)
    assert session == data
    assert session.expire == NOW + 60
    assert session.expired(NOW) is False
    assert session.expired(NOW + 60) is True


def test_session_uses_the_clock_when_now_is_not_given(authenticators):
    auth, fake = authenticators()
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "a", "expire": time.time() + 60}
    assert auth.session(TOKEN) is not None
    fake.tokens[TOKEN]["expire"] = time.time() - 1
    assert auth.session(TOKEN) is None


def test_a_login_token_opens_a_session(authenticators):
    auth, _ = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    token = auth.login(*ALICE)["token"]
    assert auth.session(token, now=NOW)["name"] == "alice"


# -- logout ------------------------------------------------------------------------------------


def test_logout_removes_the_token(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    token = auth.login(*ALICE)["token"]
    assert auth.logout(token) is True
    assert fake.called("rm_token") == [token]
    assert auth.session(token, now=NOW) is None


# -- running off the event loop ----------------------------------------------------------------


def test_run_calls_the_function_on_the_token_worker_thread(authenticators):
    auth, _ = authenticators()

    async def main():
        return await auth.run(lambda a, b: (threading.current_thread().name, a + b), 1, 2)

    name, total = asyncio.run(main())
    assert name.startswith("salt_ws-token")
    assert total == 3


def test_run_propagates_login_failed(authenticators):
    auth, _ = authenticators()

    async def main():
        await auth.run(auth.login, "nobody", "pw", "pam")

    with pytest.raises(LoginFailed):
        asyncio.run(main())


def test_reap_hands_out_known_tokens_once_they_are_due_and_forget_removes_them(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    token = auth.login(*ALICE)["token"]
    expire = fake.tokens[token]["expire"]
    assert auth.reap(expire - 5) == []
    assert auth.reap(expire) == [token]
    assert auth.reap(expire + 60) == []  # handed out once
    auth.forget([token])
    assert token not in fake.tokens
    assert auth.session(token) is None


def test_a_logged_out_token_is_not_reaped(authenticators):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    token = auth.login(*ALICE)["token"]
    expire = fake.tokens[token]["expire"]
    assert auth.logout(token)
    assert auth.reap(expire + 1) == []


# -- logins apart from token lookups (issue 9, finding 7) ---------------------------------------


class SlowLoadAuth(FakeLoadAuth):
    """mk_token takes ``delay`` seconds (PAM's fail delay); records the thread of each call.

    Instances share one token store, as LoadAuth instances share the master's.
    """

    def __init__(self, delay: float, tokens: dict[str, dict[str, Any]]) -> None:
        super().__init__({ALICE: {"name": "alice", "eauth": "pam", "expire": time.time() + 60}})
        self.tokens = tokens
        self.delay = delay
        self.threads: list[tuple[str, str]] = []

    def mk_token(self, creds):
        self.threads.append(("mk_token", threading.current_thread().name))
        time.sleep(self.delay)
        return super().mk_token(creds)

    def get_tok(self, token):
        self.threads.append(("get_tok", threading.current_thread().name))
        return super().get_tok(token)


def slow_auth(delay: float = 0.3, **kwargs: Any) -> tuple[Authenticator, list[SlowLoadAuth]]:
    made: list[SlowLoadAuth] = []
    store: dict[str, dict[str, Any]] = {}

    def load_auth(opts):
        made.append(SlowLoadAuth(delay, store))
        return made[-1]

    opts = {"external_auth": copy.deepcopy(EXTERNAL_AUTH)}
    return Authenticator(opts, load_auth=load_auth, **kwargs), made


def test_logins_and_token_lookups_use_their_own_thread_and_load_auth():
    auth, made = slow_auth(0.0)
    try:

        async def main():
            token = (await auth.run_login(auth.login, *ALICE))["token"]
            return await auth.run(auth.session, token)

        assert asyncio.run(main())["name"] == "alice"
        [login_side] = [m for m in made if m.called("mk_token")]
        [lookup_side] = [m for m in made if m.called("get_tok")]
        assert login_side is not lookup_side
        assert login_side.threads[0][1].startswith("salt_ws-login")
        assert lookup_side.threads[0][1].startswith("salt_ws-token")
    finally:
        auth.shutdown()


def test_a_token_lookup_does_not_wait_behind_slow_logins():
    auth, _ = slow_auth(0.3)
    try:

        async def main():
            logins = [
                asyncio.ensure_future(
                    auth.run_login(auth.login, f"user{i}", "wrong", "pam", user=f"user{i}")
                )
                for i in range(3)
            ]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await auth.run(auth.session, TOKEN)
            waited = time.monotonic() - started
            results = await asyncio.gather(*logins, return_exceptions=True)
            return waited, results

        waited, results = asyncio.run(main())
        assert waited < 0.2  # was: ~0.85 s behind three 0.3 s logins on one thread
        assert all(isinstance(r, LoginFailed) for r in results)
    finally:
        auth.shutdown()


def test_more_than_max_pending_logins_are_refused_at_once():
    auth, _ = slow_auth(0.2, max_pending_logins=2)
    try:

        async def main():
            first = [
                asyncio.ensure_future(auth.run_login(auth.login, "alice", "wrong", "pam"))
                for _ in range(2)
            ]
            await asyncio.sleep(0)
            assert auth.stats()["logins_pending"] == 2
            with pytest.raises(LoginBusy):
                await auth.run_login(auth.login, *ALICE)
            await asyncio.gather(*first, return_exceptions=True)
            assert auth.stats()["logins_pending"] == 0
            return await auth.run_login(auth.login, *ALICE)  # room again

        assert asyncio.run(main())["user"] == "alice"
        assert auth.stats()["logins_refused_busy"] == 1
    finally:
        auth.shutdown()


# -- token_expire (issue 9, finding 10) --------------------------------------------------------


@pytest.mark.parametrize("expire", [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e300])
def test_login_refuses_a_token_expire_that_is_not_a_sane_duration(authenticators, expire):
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    with pytest.raises(ValueError):
        auth.login(*ALICE, token_expire=expire)
    assert fake.called("mk_token") == []


# -- unknown tokens: existence first (issue 9, finding 10) -------------------------------------


class FakeCache:
    """The part of salt.cache.Cache the existence check uses."""

    def __init__(self, fake: FakeLoadAuth) -> None:
        self.fake = fake
        self.asked: list[tuple[str, str]] = []

    def contains(self, bank: str, key: str) -> bool:
        self.asked.append((bank, key))
        return key in self.fake.tokens


def test_an_unknown_token_is_not_looked_up_when_the_store_can_say_it_does_not_exist(
    authenticators,
):
    auth, fake = authenticators()
    fake.cache = FakeCache(fake)
    assert auth.session(TOKEN, now=NOW) is None
    assert fake.cache.asked == [("tokens", TOKEN)]
    assert fake.called("get_tok") == []  # Salt's get_tok logs a WARNING per unknown token
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "alice", "eauth": "pam", "expire": NOW + 60}
    assert auth.session(TOKEN, now=NOW)["name"] == "alice"
    assert fake.called("get_tok") == [TOKEN]


def test_a_store_that_cannot_answer_falls_back_to_get_tok(authenticators):
    auth, fake = authenticators()

    class Broken:
        def contains(self, bank, key):
            raise RuntimeError("no contains here")

    fake.cache = Broken()
    assert auth.session(TOKEN, now=NOW) is None
    assert fake.called("get_tok") == [TOKEN]


# -- reaping before the store's own expiry (issue 9, finding 10) -------------------------------


def test_reap_is_due_at_the_whole_second_the_store_expires_the_token(authenticators):
    # Salt's Cache.store keeps int(now + token_expire) as the entry's expiry: up to a
    # second before the token's float 'expire'. Reaping by 'expire' left a window where
    # Salt's maintenance found the entry expired and logged the token (WARNING).
    auth, fake = authenticators({ALICE: {"name": "alice", "eauth": "pam"}})
    fake.accounts[ALICE]["expire"] = 1000.9
    token = auth.login(*ALICE)["token"]
    assert auth.reap(999.99) == []
    assert auth.reap(1000.0) == [token]  # was: due only at 1000.9


def test_load_known_rebuilds_the_token_list_from_the_store(authenticators):
    auth, fake = authenticators()
    other = "fedcba9876543210" * 4
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "alice", "eauth": "pam", "expire": NOW + 60.5}
    fake.tokens[other] = {"token": other, "name": "bob", "eauth": "pam", "expire": NOW + 120}
    fake.tokens["not-a-token"] = {"expire": NOW + 5}
    assert auth.load_known(now=NOW) == 2
    assert auth.reap(NOW + 59) == []
    assert auth.reap(NOW + 60) == [TOKEN]
    assert auth.reap(NOW + 120) == [other]
    assert "not-a-token" not in fake.called("get_tok")


def test_load_known_removes_tokens_already_expired(authenticators):
    auth, fake = authenticators()
    fake.tokens[TOKEN] = {"token": TOKEN, "name": "alice", "eauth": "pam", "expire": NOW - 1}
    assert auth.load_known(now=NOW) == 0
    assert fake.called("rm_token") == [TOKEN]
    assert auth.reap(NOW + 1e9) == []


def test_load_known_survives_a_store_that_cannot_list(authenticators):
    auth, fake = authenticators()

    def broken():
        raise RuntimeError("store down")

    fake.list_tokens = broken
    assert auth.load_known(now=NOW) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/all_events", "/all_events"),
        ("/x%0aforged", "/x\\nforged"),
        ("/x\x1b[2J", "/x\\x1b[2J"),
        (f"/all_events/{TOKEN}%0d", "/all_events/012345...\\r"),
    ],
)
def test_loggable_redacts_and_escapes_control_characters(text, expected):
    assert loggable(text) == expected


def test_guesses_at_one_user_do_not_queue_another_users_login():
    # Salt makes each failed login last ~1 s (LoadAuth.time_auth): guesses at one account
    # may hold LOGINS_PER_USER login threads at most, the others serve everyone else.
    auth, made = slow_auth(0.4)
    try:

        async def main():
            guesses = [
                asyncio.ensure_future(
                    auth.run_login(auth.login, "victim", "wrong", "pam", user="victim")
                )
                for _ in range(2)
            ]
            await asyncio.sleep(0)
            with pytest.raises(LoginBusy) as busy:
                await auth.run_login(auth.login, "Victim", "wrong", "pam", user="Victim")
            assert (busy.value.status, busy.value.reason) == (429, "max_pending_logins_per_user")
            started = time.monotonic()
            result = await auth.run_login(auth.login, *ALICE, user="alice")
            waited = time.monotonic() - started
            await asyncio.gather(*guesses, return_exceptions=True)
            return result, waited

        result, waited = asyncio.run(main())
        assert result["user"] == "alice"
        assert waited < 0.7  # its own 0.4 s, not behind the two guesses (was ~1.2 s)
        logins = {name for m in made for call, name in m.threads if call == "mk_token"}
        assert len(logins) == 3  # three login threads, each with its LoadAuth
        assert len([m for m in made if m.called("mk_token")]) == 3
    finally:
        auth.shutdown()
