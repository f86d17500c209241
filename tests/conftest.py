"""Test-suite wide setup: keep salt-factories' helper servers on loopback."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # salt-factories' log server binds 0.0.0.0 by default; the daemons it
    # starts here only ever talk to it over loopback.
    log_server = config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener, bound to 127.0.0.1 instead of 0.0.0.0."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener


def pytest_unconfigure(config: pytest.Config) -> None:
    # Salt's logging setup in this process flushes a buffered handler into
    # pytest's already-closed capture stream at exit; nothing is lost by
    # not printing that traceback.
    import logging

    logging.raiseExceptions = False
