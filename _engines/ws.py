"""Salt's master event bus over websockets (saltnado-compatible), served by the master itself.

The ``ws`` engine runs inside the salt-master, subscribes once to the master
event bus and serves Salt's rest_tornado websocket API without salt-api:

* ``POST /login`` (``username``, ``password``, ``eauth``; form or JSON) returns
  ``{"return": [{"perms", "start", "token", "expire", "user", "eauth"}]}``;
  ``POST /logout`` invalidates a token (``X-Auth-Token`` header or cookie).
* ``GET /all_events/<token>`` (websocket): after the client sends
  ``websocket client ready``, every master event as ``{"tag": ..., "data": ...}``,
  in bus order. A client that falls more than ``client_queue_size`` messages
  behind is closed with code 4001 and a reason; nothing is dropped silently.
  If the engine loses the bus link, clients get a ``salt_ws/bus/lost`` event and,
  on reconnection, ``salt_ws/bus/restored`` (``missed: true``). Engine shutdown
  closes sockets with 1001.
* ``GET /formatted_events/<token>`` (websocket): after the ready message, the
  current ``{"minions": ...}`` and ``{"jobs": ...}`` tables (saltnado's shapes),
  then the changed table each time something changes. One shared view, built
  from engine start: minions from accepted keys, presence and the master's
  cached grains (no ``grains.items`` job is ever run); jobs complete when every
  targeted minion returned, or after ``job_timeout`` with the silent minions
  marked ``success: false``. Enable ``presence_events`` and a small
  ``loop_interval`` on the master, as for saltnado.

On a master of masters (``order_masters: True``) the view also lists the
minions behind syndics (from the presence, start and return events syndics
forward; enable ``presence_events`` on the syndics' masters too), each with
``"syndic": <syndic id>``; a job expects the minions each syndic's master
targeted, and completes no sooner than the master's ``syndic_wait``.

Tokens may also come in the ``X-Auth-Token`` header, the ``session_id``
cookie, or (browsers) a first message ``{"token": "..."}`` on ``/all_events``
or ``/formatted_events``. Each token sees what its eauth permissions allow
(Salt's publish ACL; ``.*`` or ``@events`` see everything). Close codes:
1001 shutdown, 1003 binary message, 1008 unexpected message, 1009 message too
big, 4001 too slow, 4401 token expired/revoked/invalid, 4408 handshake timeout.

``salt-run ws.status`` shows the engine's live state; ``salt-run ws.view``
(``minion=<id>``, ``jid=<jid>``) prints the formatted view.

Configuration (master config; a ``rest_tornado:`` block moves over unchanged):

.. code-block:: yaml

    engines:
      - ws:
          port: 8000                  # TCP port
          address: 0.0.0.0            # address to bind (0.0.0.0: all interfaces)
          ssl_crt: /etc/pki/api/certs/server.crt  # required unless disable_ssl
          ssl_key: /etc/pki/api/certs/server.key  # optional if the crt file holds both
          disable_ssl: False          # plain HTTP must be asked for
          debug: False                # accepted for rest_tornado; no effect
          cors_origin: null           # '*', one origin, or a list (as rest_tornado)
          websockets: True            # accepted for rest_tornado; always on
          backlog: 128                # listen backlog
          num_processes: 1            # only 1 is supported inside an engine
          client_queue_size: 10000    # messages a client may fall behind before it is cut
          bind_retry_interval: 10     # seconds between retries while the port is in use
          max_jobs: 1000              # jobs kept in the formatted view (oldest dropped first)
          job_max_age: 86400          # seconds a job stays in the formatted view
          job_timeout: 600            # seconds after which silent minions are marked failed
          max_connections: 1000       # open websockets in all (HTTP 503 beyond)
          max_connections_per_token: 100  # open websockets per token (HTTP 429 beyond)
          max_message_size: 65536     # bytes of one inbound websocket message (close 1009)
          max_body_size: 65536        # bytes of a /login or /logout body
          handshake_timeout: 10       # seconds to send the token message / ready (4408)
          login_max_failures: 5       # failed logins per address within the window (then 429)
          login_failure_window: 60    # seconds
          acl_refresh_interval: 30    # seconds between re-resolutions of eauth ACL targets
          include_master: False       # add "master": <master id> to every message
          # hardening: see README "Security" for each limit
          max_unauthenticated: 64     # websockets open without a checked token, in all
          max_unauthenticated_per_address: 8  # ... from one address (IPv6: one /64)
          http_timeout: 10            # seconds to send headers and body; keep-alive idle
          max_http_connections: 1000  # open HTTP connections not yet upgraded, in all
          max_http_connections_per_address: 32  # ... from one address (IPv6: one /64)
          max_connections_per_user: 200  # open websockets per user (eauth + name)
          trusted_proxies: []         # addresses/networks whose X-Forwarded-For is believed
          max_pending_logins: 16      # logins waiting for eauth (HTTP 503 beyond)
          cookie_secure: False        # always mark the session cookie Secure
          client_queue_bytes: 134217728  # bytes a client may fall behind before it is cut
          frame_cache_bytes: 67108864  # bytes of encoded frames shared between clients
          bus_queue_bytes: 268435456  # bytes of bus events waiting for the engine loop
          max_minions: 100000         # minions in the formatted view (more are refused)
          max_jobs_bytes: 67108864    # bytes of the encoded jobs table (oldest dropped)
          # streams: resume, heartbeats and tag filters
          history_size: 10000         # events kept for resume; 0 turns resume off
          history_max_bytes: 67108864  # bytes of encoded events kept for resume
          ping_interval: 20           # seconds between websocket pings (0: none)
          ping_timeout: 20            # seconds to answer a ping before the close
          tick_interval: 15           # seconds of silence before a tick (0: none)
          max_filters: 64             # tag filters one client may hold
          max_filter_length: 1024     # characters of one tag filter
          # formatted view
          view_interval: 0.5          # seconds over which table changes are coalesced
          view_grains: null           # grains kept per minion (null: all)
          # metrics and dashboard
          metrics: False              # serve Prometheus metrics at /metrics
          metrics_allow: ["127.0.0.1", "::1"]  # who may read /metrics without an admin token
          dashboard: True             # serve the dashboard page at /

``webhook_url`` and ``webhook_disable_auth`` are accepted and ignored. Any
other option, a wrong type, an unreadable certificate or a missing
``ssl_crt`` without ``disable_ssl: True`` is reported once at ERROR naming
the option; the engine then stays idle (the master keeps running).

Clients authenticate with any eauth backend configured in ``external_auth``.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "ws"

try:
    import salt_ws.engine

    HAS_SALT_WS = True
    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the install
    HAS_SALT_WS = False
    _IMPORT_ERROR = str(exc)


def __virtual__():
    if not HAS_SALT_WS:
        return (False, f"the salt_ws package is not importable: {_IMPORT_ERROR}")
    return __virtualname__


def start(**config):
    """Run the engine until the master stops it."""
    salt_ws.engine.run(__opts__, config)  # noqa: F821 - injected by Salt's loader
