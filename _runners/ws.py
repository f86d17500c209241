"""Runner for the ``ws`` engine (salt_ws): ``salt-run ws.status``, ``ws.view`` and ``ws.clients``.

``ws.status`` reports whether the engine of this master is running and its
live counters; ``ws.view`` prints the formatted view (minions and jobs) that
``/formatted_events`` clients see; ``ws.clients`` lists the connected clients.
All ask the engine over a Unix socket in the master's ``sock_dir`` and answer
within a second.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "ws"

try:
    import salt_ws.status

    HAS_SALT_WS = True
    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the install
    HAS_SALT_WS = False
    _IMPORT_ERROR = str(exc)


def __virtual__():
    if not HAS_SALT_WS:
        return (False, f"the salt_ws package is not importable: {_IMPORT_ERROR}")
    return __virtualname__


def status():
    """Show the state of the ``ws`` engine on this master.

    Returns ``running``, ``state`` (serving / waiting for port / failed),
    ``pid``, ``address``, ``port``, ``tls``, ``uptime`` (s), ``clients`` per
    endpoint, ``events_received``, ``messages_sent``, ``clients_cut_slow``,
    ``queue_high_water``, the bus link state, the number of ``minions`` and
    ``jobs`` in the formatted view and ``syndics``, the syndics reporting to
    it (empty unless it is a master of masters). The hardening counters:
    ``limits`` (open websockets and HTTP connections, refusals by reason,
    what the throttles track), ``view_refused`` (ids and fields the formatted
    view refused, by reason), ``jobs_bytes``, ``acl_jobs`` (the jid registry
    of ``/all_events``: jobs, bytes, conflicts), ``frame_cache``, the byte
    bounds of client and bus queues (``clients_cut_bytes``,
    ``bus_dropped_events``, ...) and the bus link (``bus_state``,
    ``bus_outages``, probes). ``metrics`` holds every number ``/metrics``
    serves, under its Prometheus name. When no engine answers, one
    ``message`` line says so and the exit code is 1. With several engine
    instances, ``engines`` maps each port to its report.

    CLI Example:

    .. code-block:: bash

        salt-run ws.status
        salt-run ws.status --out=json
    """
    ret = salt_ws.status.report(__opts__)  # noqa: F821 - injected by Salt's loader
    if not ret.get("running"):
        # success=False for the job, and salt-run's exit code (it reads "retcode")
        __context__["retcode"] = 1  # noqa: F821
        ret["retcode"] = 1
    return ret


def view(minion=None, jid=None):
    """Show the engine's formatted view: minions and jobs, in the websocket's shapes.

    minion
        Show only this minion.
    jid
        Show only this job.

    CLI Example:

    .. code-block:: bash

        salt-run ws.view
        salt-run ws.view minion=web1 --out=json
        salt-run ws.view jid=20261128064157383392
    """
    ret = salt_ws.status.view(__opts__, minion=minion, jid=jid)  # noqa: F821
    if "error" in ret or ret.get("running") is False:
        __context__["retcode"] = 1  # noqa: F821
        ret["retcode"] = 1
    return ret


def clients():
    """List the clients connected to the ``ws`` engine: one row per open stream.

    Each row: ``endpoint`` (all_events, formatted_events, events), ``user``,
    ``eauth``, ``address``, ``connected_since``, ``connected_for`` (s),
    ``state``, ``filters``, ``last_id`` (it was handed every event up to this
    id), ``queue`` (messages waiting) and ``messages_sent``; with several
    engine instances also ``port``. Never a token. When no engine answers, one
    ``message`` line says so and the exit code is 1.

    CLI Example:

    .. code-block:: bash

        salt-run ws.clients
        salt-run ws.clients --out=table
        salt-run ws.clients --out=json
    """
    ret = salt_ws.status.clients(__opts__)  # noqa: F821
    if isinstance(ret, dict):  # not running
        __context__["retcode"] = 1  # noqa: F821
        ret["retcode"] = 1
    return ret
