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

    CLI Example:

    .. code-block:: bash

        salt-run ws.status
        salt-run ws.status --out=json
    """
    ret = salt_ws.status.report(__opts__)  # noqa: F821 - injected by Salt's loader
    if not ret.get("running"):
        __context__["retcode"] = 1  # noqa: F821
    return ret
