"""Salt eauth: login, token lookup, logout, and token redaction for logs.

Login and token checks go through :class:`salt.auth.LoadAuth`, exactly as
salt-api does, so every eauth backend, ``token_expire`` and the master's
token store behave as users know them. ``LoadAuth`` is synchronous and may
touch disk or PAM, so callers run these methods off the event loop (see
:meth:`Authenticator.run`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import hashlib
import logging
import re
import threading
import time
import urllib.parse
from typing import Any, Callable, Mapping, TypeVar

__all__ = [
    "Authenticator",
    "LoginFailed",
    "RedactingFilter",
    "Session",
    "install_log_redaction",
    "redact",
    "token_pattern",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


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


class Session(dict):
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

    Args:
        opts: the master's opts.
        load_auth: factory for the Salt auth object (tests inject a fake).
    """

    def __init__(
        self, opts: Mapping[str, Any], load_auth: Callable[[Any], Any] | None = None
    ) -> None:
        if load_auth is None:
            import salt.auth  # pylint: disable=import-outside-toplevel

            load_auth = salt.auth.LoadAuth
        self._opts = opts
        self._auth = load_auth(opts)
        self._pattern = token_pattern(opts.get("hash_type") or "sha256")
        # token -> expire, for tokens this engine issued or saw: see reap()
        self._known: dict[str, float] = {}
        self._known_lock = threading.Lock()
        # One worker: LoadAuth is not documented as thread-safe, and logins are rare.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="salt_ws-auth")

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking method of this class on the auth worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    def shutdown(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def well_formed(self, token: Any) -> bool:
        """True if ``token`` has the shape of this master's tokens."""
        return isinstance(token, str) and bool(self._pattern.fullmatch(token))

    def login(
        self, username: str, password: str, eauth: str, token_expire: float | None = None
    ) -> dict[str, Any]:
        """Authenticate and return saltnado's login payload (blocking).

        ``token_expire`` (seconds) is honoured only where the master's
        ``token_expire_user_override`` allows it, as in salt-api.

        Raises:
            LoginFailed: the eauth backend refused the credentials, or the
                user has no ``external_auth`` entry for that backend.
        """
        import salt.netapi  # pylint: disable=import-outside-toplevel

        creds: dict[str, Any] = {"username": username, "password": password, "eauth": eauth}
        if token_expire is not None:
            creds["token_expire"] = token_expire
        token = self._auth.mk_token(creds)
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
            self._auth.rm_token(token["token"])
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
        if not self.well_formed(token):
            return None
        data = self._auth.get_tok(token)
        if not data:
            return None
        session = Session(data)
        if session.expired(time.time() if now is None else now):
            return None
        self._remember(token, session.expire)
        return session

    def _remember(self, token: str, expire: float) -> None:
        with self._known_lock:
            self._known[token] = expire

    def reap(self, now: float) -> list[str]:
        """Tokens this engine knows that are expired at ``now``; they are forgotten here.

        The engine removes them from the token store (:meth:`forget`) a moment
        *before* they expire: Salt's own clean-up of expired tokens logs each
        token it finds expired, and no token may reach a log line.
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
