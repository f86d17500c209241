"""The dashboard's routes over a real socket: content types, cache headers, CSP, the option,
the eauth names and the session check (eauth faked, see harness.FakeAuthenticator)."""

from __future__ import annotations

import json
import pathlib

import pytest

from salt_ws import dashboard
from salt_ws.config import parse
from salt_ws.engine import Counters
from salt_ws.handlers import Services
from salt_ws.hub import Hub

from .harness import GOOD_TOKEN, UNKNOWN_TOKEN, FakeAuthenticator, serve_services

PACKAGE = pathlib.Path(dashboard.__file__).resolve().parent


def services(**options: object) -> Services:
    built = Services(
        parse({"disable_ssl": True, **options}), Hub(100), FakeAuthenticator(), Counters()
    )
    built.opts = {"external_auth": {"file": {"^filename": "/x"}, "pam": {"alice": [".*"]}}}  # type: ignore[attr-defined]
    return built


@pytest.mark.parametrize(
    ("path", "name", "ctype"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/app.css", "app.css", "text/css; charset=utf-8"),
        ("/dashboard/icon.svg", "icon.svg", "image/svg+xml"),
    ],
)
async def test_assets_are_served_with_type_cache_headers_and_csp(path, name, ctype):
    async with serve_services(services()) as site:
        response = await site.fetch(path)
        assert response.code == 200
        assert response.body == (PACKAGE / name).read_bytes()
        headers = response.headers
        assert headers["Content-Type"] == ctype
        assert headers["Cache-Control"] == "no-cache"
        assert headers["Content-Security-Policy"] == dashboard.CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        etag = headers["Etag"]
        again = await site.fetch(path, headers={"If-None-Match": etag})
        assert again.code == 304
        assert again.body == b""
        assert again.headers["Etag"] == etag


@pytest.mark.parametrize(
    "path", ["/dashboard/index.html", "/dashboard/nope.js", "/dashboard/", "/x"]
)
async def test_unknown_dashboard_paths_are_404(path):
    async with serve_services(services()) as site:
        response = await site.fetch(path)
        assert response.code == 404


@pytest.mark.parametrize(
    "path", ["/", "/dashboard/app.js", "/dashboard/eauth", "/dashboard/session"]
)
async def test_dashboard_false_gives_404(path):
    async with serve_services(services(dashboard=False)) as site:
        response = await site.fetch(path)
        assert response.code == 404
        assert b"/dashboard/app.js" not in response.body  # tornado's own 404 page


async def test_eauth_lists_the_backend_names_pam_first():
    async with serve_services(services()) as site:
        response = await site.fetch("/dashboard/eauth")
        assert response.code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert json.loads(response.body) == {"eauth": ["pam", "file"]}


async def test_session_says_who_the_cookie_logs_in():
    async with serve_services(services()) as site:
        nobody = await site.fetch("/dashboard/session")
        assert (nobody.code, json.loads(nobody.body)) == (200, {"user": None})
        alice = await site.fetch(
            "/dashboard/session", headers={"Cookie": f"session_id={GOOD_TOKEN}"}
        )
        assert alice.code == 200
        assert json.loads(alice.body) == {"user": "alice", "eauth": "pam", "expire": 2e9}
        assert alice.headers["Cache-Control"] == "no-store"


async def test_session_with_unknown_tokens_is_throttled_per_address():
    svc = services()
    async with serve_services(svc) as site:
        cookie = {"Cookie": f"session_id={UNKNOWN_TOKEN}"}
        allowed = svc.config.login_max_failures * 4  # handlers.UNKNOWN_TOKEN_ALLOWANCE
        for _ in range(allowed):
            response = await site.fetch("/dashboard/session", headers=cookie)
            assert (response.code, json.loads(response.body)) == (200, {"user": None})
            assert response.headers["Set-Cookie"].startswith('session_id="";')  # cleared
        refused = await site.fetch("/dashboard/session", headers=cookie)
        assert refused.code == 429
        assert svc.refused["unknown_token_throttled"] == 1
        # a good token from the same address is not looked up either while throttled
        assert len(site.auth.called("session")) == allowed
