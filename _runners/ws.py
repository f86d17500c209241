"""Runner for the ``ws`` engine (salt_ws): ``salt-run ws.status``.

Reports whether the engine of this master is running and its live counters.
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
    ``queue_high_water`` and the bus link state. When no engine answers, one
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
