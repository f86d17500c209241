"""The live dashboard page: ``/`` and its assets, served by the engine (option ``dashboard``).

The page (``index.html``, ``app.js``, ``app.css``, ``icon.svg`` in this directory) is plain
HTML/CSS/JS that uses only the engine's public API: ``POST /login`` (the ``session_id``
cookie carries the token; the page never sees it in a URL), ``/formatted_events?delta=1``
for the minions and jobs tables and ``/all_events?envelope=1`` (``since``, ``tag``,
``subscribe``) for the event tail. It is therefore also the example of how to consume that
API from JavaScript.

Two ways of shipping, one set of bytes:

* **pip** installs the files as package data; they are read from this directory.
* **gitfs** (``salt-run saltutil.sync_all``) copies only ``.py``/``.pyx``/``.so``/``.zip``
  files: the same bytes are embedded in the generated module :mod:`salt_ws.dashboard._assets`
  (base64), which the sync copies with the rest of the package. When the files are absent,
  the page is served from it. ``python -m salt_ws.dashboard`` regenerates it, and a unit
  test fails while it differs from the files.

Embedding was chosen over reading ``salt://_utils/salt_ws/...`` from the master's
fileserver at run time: it needs no fileserver access (nor gitfs cache, locks or
``fileserver_backend`` order) from the engine process, serves the same bytes however the
package arrived (gitfs, ``roots``, a copied directory) and is checked by a test.

Routes (none of them when ``dashboard: False``, so they answer 404 like any unknown path):

* ``GET /`` the page; ``GET /dashboard/<asset>`` its script, style sheet and icon. Each with
  its content type, ``Cache-Control: no-cache`` and a strong ``ETag`` (a 304 when it
  matches), and a Content-Security-Policy that allows scripts, styles, images and
  connections from this origin only: no inline script or style, no third-party origin,
  Trusted Types required (no HTML built from strings), no framing.
* ``GET /dashboard/eauth`` ``{"eauth": [...]}``: the names of the master's ``external_auth``
  backends (``pam`` first when present), for the login form's select. Names only.
* ``GET /dashboard/session`` ``{"user": ..., "eauth": ..., "expire": ...}`` for the
  ``session_id`` cookie's token, or ``{"user": null}`` (200 either way: the page asks it
  before reconnecting, to tell an ended session from an unreachable engine). Unknown
  tokens count against the per-address unknown-token throttle, as on the websockets.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import pathlib
import re
import time
from collections.abc import Mapping
from typing import Any

import tornado.web

from salt_ws.handlers import AUTH_COOKIE, BaseHandler, Services
from salt_ws.limits import address_key

__all__ = [
    "ASSETS",
    "CSP",
    "Asset",
    "Dashboard",
    "eauth_backends",
    "load_assets",
    "read_sources",
    "render_module",
    "routes",
]

log = logging.getLogger(__name__)

HERE = pathlib.Path(__file__).resolve().parent

# name -> content type; every file of the page (index.html is served at "/")
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",  # CSP 3: also ws:/wss: to this host and port
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_BACKEND = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_WRAP = 88  # base64 characters per line of the generated module (ruff's 100 columns)


class Asset:
    """One file of the page: its bytes, content type and strong ETag."""

    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def read_sources(directory: pathlib.Path = HERE) -> dict[str, bytes] | None:
    """The page's files from ``directory``, or None unless every one of them is there."""
    found = {}
    for name in ASSETS:
        path = directory / name
        if not path.is_file():
            return None
        found[name] = path.read_bytes()
    return found


def render_module(sources: Mapping[str, bytes]) -> str:
    """The text of :mod:`salt_ws.dashboard._assets` embedding ``sources`` (deterministic)."""
    lines = [
        '"""The dashboard\'s files, embedded for installs that copy only Python modules (gitfs).',
        "",
        "Generated by ``python -m salt_ws.dashboard`` from the files next to it; do not edit.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "# file name -> its bytes, base64, in lines",
        "FILES: dict[str, list[str]] = {",
    ]
    for name in sorted(sources):
        text = base64.b64encode(sources[name]).decode("ascii")
        if not text:
            lines.append(f'    "{name}": [],')
            continue
        lines.append(f'    "{name}": [')  # one string per line and a trailing comma: as ruff has it
        lines.extend(f'        "{text[i : i + _WRAP]}",' for i in range(0, len(text), _WRAP))
        lines.append("    ],")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _embedded() -> dict[str, bytes]:
    module = importlib.import_module("salt_ws.dashboard._assets")
    return {name: base64.b64decode("".join(lines)) for name, lines in module.FILES.items()}


def load_assets(directory: pathlib.Path = HERE) -> tuple[str, dict[str, Asset]]:
    """(``"files"`` or ``"embedded"``, the page's assets by name).

    The files next to this module when all are there (pip, a checkout), else the
    embedded copy (a gitfs sync, which copies no ``.html``/``.js``/``.css``).
    """
    sources = read_sources(directory)
    source = "files"
    if sources is None:
        sources, source = _embedded(), "embedded"
    return source, {name: Asset(sources[name], ctype) for name, ctype in ASSETS.items()}


def eauth_backends(opts: Mapping[str, Any] | None) -> list[str]:
    """The master's ``external_auth`` backend names for the login form, ``pam`` first.

    Only names (nothing of the users or permissions under them), in the config's order,
    and only names shaped like a Salt auth module.
    """
    configured = (opts or {}).get("external_auth")
    if not isinstance(configured, Mapping):
        return []
    names = [name for name in configured if isinstance(name, str) and _BACKEND.fullmatch(name)]
    return sorted(names, key=lambda name: name != "pam")  # stable: the rest keep their order


class Dashboard:
    """What the dashboard's handlers share: the assets and the eauth backend names.

    Args:
        services: the handlers' :class:`~salt_ws.handlers.Services`.
        backends: the ``external_auth`` backend names (:func:`eauth_backends`).
        assets: the page's files (default: :func:`load_assets`).
    """

    def __init__(
        self,
        services: Services,
        backends: list[str],
        assets: tuple[str, dict[str, Asset]] | None = None,
    ) -> None:
        self.services = services
        self.backends = backends
        self.source, self.assets = assets if assets is not None else load_assets()
        self.served = 0  # asset responses with a body
        self.not_modified = 0  # 304s
        self.sessions_checked = 0

    def stats(self) -> dict[str, Any]:
        """For ``salt-run ws.status``."""
        return {
            "source": self.source,
            "served": self.served,
            "not_modified": self.not_modified,
            "sessions_checked": self.sessions_checked,
        }


class _DashboardHandler(BaseHandler):
    dashboard: Dashboard

    def initialize(self, services: Services, dashboard: Dashboard) -> None:  # type: ignore[override]
        super().initialize(services)
        self.dashboard = dashboard

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)


class AssetHandler(_DashboardHandler):
    """``GET /`` and ``GET /dashboard/<asset>``: a file of the page."""

    asset: Asset | None = None

    def compute_etag(self) -> str | None:
        return self.asset.etag if self.asset is not None else None

    def get(self, name: str = "index.html") -> None:
        asset = self.dashboard.assets.get(name)
        if asset is None:
            raise tornado.web.HTTPError(404)
        self.asset = asset
        self.set_header("Content-Type", asset.content_type)
        self.set_header("Cache-Control", "no-cache")  # revalidate: the ETag makes that a 304
        self.set_etag_header()
        if self.check_etag_header():
            self.dashboard.not_modified += 1
            self.set_status(304)
            self.finish()
            return
        self.dashboard.served += 1
        self.finish(asset.body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


class EauthHandler(_DashboardHandler):
    """``GET /dashboard/eauth``: the login form's backend names."""

    def get(self) -> None:
        self.reply({"eauth": self.dashboard.backends})


class SessionHandler(_DashboardHandler):
    """``GET /dashboard/session``: who the ``session_id`` cookie logs in, if anyone."""

    async def get(self) -> None:
        services = self.services
        self.dashboard.sessions_checked += 1
        token = self.get_cookie(AUTH_COOKIE)
        if not token:
            self.reply({"user": None})
            return
        key = address_key(services.client_address(self.request))
        if services.token_throttle.retry_after(key, time.time()) > 0:
            services.refuse("unknown_token_throttled")
            self.fail(429, "too many unknown tokens from this address; retry later")
            return
        auth = services.auth
        session = await auth.run(auth.session, token)
        if session is None:
            services.token_throttle.failed(key, time.time())
            self.clear_cookie(AUTH_COOKIE)
            self.reply({"user": None})
            return
        self.reply(
            {
                "user": session.get("name"),
                "eauth": session.get("eauth"),
                "expire": session.get("expire"),
            }
        )


def _master_opts(services: Services) -> Mapping[str, Any] | None:
    """The master's opts, as far as the handlers can see them."""
    opts = getattr(services, "opts", None)
    if opts is None:  # Services has no opts (yet): the authenticator holds them
        opts = getattr(services.auth, "_opts", None)
    return opts if isinstance(opts, Mapping) else None


def routes(services: Services, dashboard: Dashboard | None = None) -> list[Any]:
    """The dashboard's routes, or none when the ``dashboard`` option is off (then 404)."""
    if not services.config.dashboard:
        return []
    if dashboard is None:
        dashboard = Dashboard(services, eauth_backends(_master_opts(services)))
    services.dashboard = dashboard  # its counters, for ws.status
    kwargs = {"services": services, "dashboard": dashboard}
    names = "|".join(re.escape(name) for name in ASSETS if name != "index.html")
    return [
        (r"/", AssetHandler, kwargs),
        (rf"/dashboard/({names})", AssetHandler, kwargs),
        (r"/dashboard/eauth", EauthHandler, kwargs),
        (r"/dashboard/session", SessionHandler, kwargs),
    ]
