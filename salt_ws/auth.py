"""Salt eauth: login, token lookup, logout, and token redaction for logs.

Login and token checks go through :class:`salt.auth.LoadAuth`, exactly as
salt-api does, so every eauth backend, ``token_expire`` and the master's
token store behave as users know them. ``LoadAuth`` is synchronous and may
touch disk or PAM, so callers run these methods off the event loop: logins
(:meth:`Authenticator.run_login`) on a worker thread and ``LoadAuth`` of their
own, with a bounded queue, because a failing PAM login sleeps for seconds;
token lookups, permissions, logout and token clean-up
(:meth:`Authenticator.run`) on another, so no websocket's token check waits
behind a login.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import hashlib
import logging
import math
import re
import threading
import time
import urllib.parse
from typing import Any, Callable, Mapping, TypeVar

__all__ = [
    "MAX_TOKEN_EXPIRE",
    "Authenticator",
    "LoginBusy",
    "LoginFailed",
    "RedactingFilter",
    "Session",
    "check_token_expire",
    "install_log_redaction",
    "loggable",
    "redact",
    "token_pattern",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TOKEN_EXPIRE = 10 * 365 * 86400.0  # a requested token_expire beyond this is refused
MAX_KNOWN = 100_000  # tokens the engine keeps track of for early removal (see reap)


def token_pattern(hash_type: str) -> re.Pattern[str]:
    """The exact token shape for the master's ``hash_type`` (sha256: 64 hex digits)."""
    length = len(getattr(hashlib, hash_type)().hexdigest())
    return re.compile(rf"[0-9A-Fa-f]{{{length}}}")


_HEX_RUN = re.compile(r"[0-9A-Fa-f]{32,}")


def redact(text: str) -> str:
    """Replace anything token-like (32+ hex digits) with its first 6 digits and an ellipsis.

    Percent-escapes are decoded first, so an escaped token is caught too.
    """
    if "%" in text:
        text = urllib.parse.unquote(text)
    return _HEX_RUN.sub(lambda m: m.group(0)[:6] + "...", text)


def loggable(text: str) -> str:
    """``text`` for a log line: :func:`redact`-ed, with control characters escaped.

    For what a client wrote (a request's path): :func:`redact` decodes
    percent-escapes, and a decoded ``%0a`` must not start a log line of the
    client's choosing.
    """
    text = redact(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RedactingFilter(logging.Filter):
    """Rewrites any log record whose text holds something token-like.

    Salt itself logs tokens in places (``salt.auth`` warns ``Token '<token>'
    could not be loaded``); in the engine process every record passes here
    before any handler formats it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # pylint: disable=broad-except
            return True
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(root: logging.Logger | None = None) -> int:
    """Add a :class:`RedactingFilter` to every handler of the root logger (idempotent).

    Returns:
        How many handlers carry the filter.
    """
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    return len(root.handlers)


class LoginFailed(Exception):
    """Credentials were refused (HTTP 401)."""


LOGIN_WORKERS = 4  # eauth threads for logins (Salt sleeps ~1 s in each failed one)
LOGINS_PER_USER = 2  # logins of one username running or waiting at most


class LoginBusy(Exception):
    """Too many logins are waiting for eauth: in all (HTTP 503) or for one username (429).

    Attributes:
        reason: ``"max_pending_logins"`` or ``"max_pending_logins_per_user"``.
        status: the HTTP status to answer.
    """

    def __init__(self, message: str, reason: str = "max_pending_logins", status: int = 503):
        super().__init__(message)
        self.reason = reason
        self.status = status


def check_token_expire(value: float) -> float:
    """``value`` if it is a sane token lifetime in seconds.

    Raises:
        ValueError: for NaN, an infinity, zero or less (an already expired
            token), or more than :data:`MAX_TOKEN_EXPIRE` (Salt's token store
            fails on dates past year 9999).
    """
    if not math.isfinite(value) or not 0 < value <= MAX_TOKEN_EXPIRE:
        raise ValueError(
            "field 'token_expire' must be a number of seconds above 0 and at most "
            f"{MAX_TOKEN_EXPIRE:.0f}"
        )
    return value


class Session(dict[str, Any]):
    """A token's data as Salt's token store has it (``name``, ``eauth``, ``expire``, ...)."""

    @property
    def expire(self) -> float:
        """Epoch seconds at which the token stops being valid."""
        return float(self.get("expire", 0))

    def expired(self, now: float) -> bool:
        """True once ``now`` is past the token's expiry."""
        return now >= self.expire


class Authenticator:
    """Salt eauth for the engine's handlers.

    Logins run on :data:`LOGIN_WORKERS` threads of their own, everything else
    (token lookups, permissions, logout, clean-up) on one other thread, so a
    slow eauth never delays a token check. Each thread has its own
    ``LoadAuth`` (which is not documented as thread-safe). Salt's
    ``LoadAuth.time_auth`` makes every failed login last about as long as the
    slowest one seen (at least ~1 s): several login threads, and at most
    :data:`LOGINS_PER_USER` logins of one username at a time, keep guesses
    against one account from queueing everyone else behind them.

    Args:
        opts: the master's opts.
        load_auth: factory for the Salt auth object (tests inject a fake).
        max_pending_logins: logins running or waiting at most; one more raises
            :class:`LoginBusy` at once.
    """

    def __init__(
        self,
        opts: Mapping[str, Any],
        load_auth: Callable[[Any], Any] | None = None,
        max_pending_logins: int = 16,
    ) -> None:
        if load_auth is None:
            import salt.auth  # pylint: disable=import-outside-toplevel

            load_auth = salt.auth.LoadAuth
        self._opts = opts
        self._load_auth = load_auth
        self._auth = load_auth(opts)  # token lookups, permissions, logout, clean-up
        self._login_local = threading.local()  # each login thread's own LoadAuth
        self._pattern = token_pattern(opts.get("hash_type") or "sha256")
        # token -> whole second at which it ends, for tokens this engine issued or saw:
        # see reap()
        self._known: dict[str, float] = {}
        self._known_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="salt_ws-token")
        self._logins = concurrent.futures.ThreadPoolExecutor(
            LOGIN_WORKERS, thread_name_prefix="salt_ws-login"
        )
        self.max_pending_logins = max_pending_logins
        self.logins_pending = 0  # only touched on the event loop
        self._pending_users: dict[str, int] = {}  # casefolded username -> logins in flight
        self.logins_refused_busy = 0

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking method of this class on the token worker thread (not for logins)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def run_login(self, func: Callable[..., T], *args: Any, user: str = "") -> T:
        """Run a login (:meth:`login`) on a login worker thread.

        Args:
            func: the blocking call.
            *args: its arguments.
            user: the username tried (at most :data:`LOGINS_PER_USER` at a time).

        Raises:
            LoginBusy: ``max_pending_logins`` logins are running or waiting,
                or :data:`LOGINS_PER_USER` of this username.
        """
        if self.logins_pending >= self.max_pending_logins:
            self.logins_refused_busy += 1
            raise LoginBusy(
                f"too many logins waiting (max_pending_logins: {self.max_pending_logins})"
            )
        key = user.casefold()
        if self._pending_users.get(key, 0) >= LOGINS_PER_USER:
            self.logins_refused_busy += 1
            raise LoginBusy(
                "a login for this user is already in progress; retry in a moment",
                "max_pending_logins_per_user",
                429,
            )
        self.logins_pending += 1
        self._pending_users[key] = self._pending_users.get(key, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._logins, func, *args)
        finally:
            self.logins_pending -= 1
            left = self._pending_users.pop(key) - 1
            if left:
                self._pending_users[key] = left

    def _login_side(self) -> Any:
        """This login thread's own ``LoadAuth`` (made on first use)."""
        auth = getattr(self._login_local, "auth", None)
        if auth is None:
            auth = self._login_local.auth = self._load_auth(self._opts)
        return auth

    def stats(self) -> dict[str, int]:
        """Logins in flight and refused, tokens tracked for early removal."""
        return {
            "logins_pending": self.logins_pending,
            "logins_refused_busy": self.logins_refused_busy,
            "tokens_known": len(self._known),
        }

    def shutdown(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._logins.shutdown(wait=False, cancel_futures=True)

    def well_formed(self, token: Any) -> bool:
        """True if ``token`` has the shape of this master's tokens."""
        return isinstance(token, str) and bool(self._pattern.fullmatch(token))

    def login(
        self, username: str, password: str, eauth: str, token_expire: float | None = None
    ) -> dict[str, Any]:
        """Authenticate and return saltnado's login payload (blocking).

        ``token_expire`` (seconds) is honoured only where the master's
        ``token_expire_user_override`` allows it, as in salt-api. Runs on the
        login thread (:meth:`run_login`).

        Raises:
            LoginFailed: the eauth backend refused the credentials, or the
                user has no ``external_auth`` entry for that backend.
            ValueError: ``token_expire`` is not a sane lifetime
                (:func:`check_token_expire`).
        """
        import salt.netapi  # pylint: disable=import-outside-toplevel

        creds: dict[str, Any] = {"username": username, "password": password, "eauth": eauth}
        if token_expire is not None:
            creds["token_expire"] = check_token_expire(float(token_expire))
        login_auth = self._login_side()
        token = login_auth.mk_token(creds)
        if "token" not in token:
            raise LoginFailed("could not authenticate using the provided credentials")
        try:
            eauth_config = self._opts["external_auth"][token["eauth"]]
            perms = salt.netapi.sorted_permissions(
                # sum_permissions extends the lists it is given: hand it a copy,
                # or every login would grow the master's external_auth config.
                salt.netapi.sum_permissions(token, copy.deepcopy(dict(eauth_config)))
            )
        except (KeyError, AttributeError, TypeError):
            login_auth.rm_token(token["token"])
            raise LoginFailed(f"no external_auth permissions for this user with eauth '{eauth}'")
        self._remember(token["token"], float(token["expire"]))
        return {
            "perms": perms,
            "start": token["start"],
            "token": token["token"],
            "expire": token["expire"],
            "user": token["name"],
            "eauth": token["eauth"],
        }

    def session(self, token: str, now: float | None = None) -> Session | None:
        """The token's session, or None if malformed, unknown or expired (blocking)."""
        if not self.well_formed(token) or not self._exists(token):
            return None
        data = self._auth.get_tok(token)
        if not data:
            return None
        session = Session(data)
        if session.expired(time.time() if now is None else now):
            return None
        self._remember(token, session.expire)
        return session

    def _exists(self, token: str) -> bool:
        """False if the token store says, cheaply, that ``token`` is not there.

        Salt's ``get_tok`` logs a WARNING, with the token, for every token it
        cannot load (Salt 3008: ``Token '...' could not be loaded``), unknown
        ones included. Salt 3008 keeps tokens in the cache bank ``tokens``
        (``LoadAuth.cache``), whose ``contains`` is a file test for localfs; with
        any other store, or if the check fails, ``get_tok`` decides.
        """
        cache = getattr(self._auth, "cache", None)
        if cache is None or self._opts.get("eauth_tokens.cache_driver") == "rediscluster":
            return True
        try:
            return bool(cache.contains("tokens", token))
        except Exception:  # pylint: disable=broad-except
            log.debug("salt_ws: the token store cannot say whether a token exists", exc_info=True)
            return True

    def _remember(self, token: str, expire: float) -> None:
        # Salt's Cache.store keeps int(now + token_expire) as the entry's own expiry,
        # up to a second before the token's float 'expire': the whole second counts.
        ends = math.floor(expire) if math.isfinite(expire) else expire
        with self._known_lock:
            if token in self._known or len(self._known) < MAX_KNOWN:
                self._known[token] = ends

    def load_known(self, now: float | None = None) -> int:
        """Track every token already in the store, as if this engine had issued it (blocking).

        At engine start, so that tokens issued before a restart are removed
        early too (:meth:`reap`). Tokens already expired are removed now.
        Returns how many tokens are tracked.
        """
        now = time.time() if now is None else now
        try:
            tokens = list(self._auth.list_tokens() or [])
        except Exception:  # pylint: disable=broad-except
            log.warning("salt_ws: could not list the token store", exc_info=True)
            return 0
        found = 0
        for token in tokens:
            if not self.well_formed(token):
                continue
            try:
                data = self._auth.get_tok(token)
            except Exception:  # pylint: disable=broad-except
                log.debug("salt_ws: could not read a stored token", exc_info=True)
                continue
            if not data:
                continue  # Salt removed it (expired or unreadable)
            expire = Session(data).expire
            if expire <= now:
                self.forget([token])
                continue
            self._remember(token, expire)
            found += 1
        return found

    def reap(self, now: float) -> list[str]:
        """Tokens this engine knows that are expired at ``now``; they are forgotten here.

        The engine removes them from the token store (:meth:`forget`) a moment
        *before* they expire: Salt's own clean-up of expired tokens logs each
        token it finds expired, and no token may reach a log line. A token
        counts as expired from the whole second of its ``expire`` time, as
        Salt's cache keeps it.
        """
        with self._known_lock:
            due = [t for t, expire in self._known.items() if expire <= now]
            for token in due:
                del self._known[token]
        return due

    def forget(self, tokens: list[str]) -> None:
        """Remove tokens from the master's token store (blocking)."""
        for token in tokens:
            try:
                self._auth.rm_token(token)
            except Exception:  # pylint: disable=broad-except
                log.debug("salt_ws: could not remove an expired token", exc_info=True)

    def auth_list(self, session: Mapping[str, Any]) -> list[Any]:
        """The session's eauth permissions, as Salt's publish ACL computes them (blocking)."""
        load = {"eauth": session.get("eauth"), "username": session.get("name")}
        try:
            found = self._auth.get_auth_list(load, dict(session))
        except Exception:  # pylint: disable=broad-except
            log.warning("salt_ws: could not compute the permissions of a session", exc_info=True)
            return []
        return list(found or [])

    def logout(self, token: str) -> bool:
        """Invalidate ``token`` in the master's token store (blocking)."""
        if not self.well_formed(token):
            return False
        with self._known_lock:
            self._known.pop(token, None)
        self._auth.rm_token(token)
        return True
