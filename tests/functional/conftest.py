"""Functional tests run ``async def`` test functions on a fresh asyncio loop each.

No pytest plugin is needed: :func:`pytest_pyfunc_call` runs the coroutine with
``asyncio.run`` and a timeout. The harness (app on a loopback socket, fake eauth) is in
:mod:`.harness`.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

TEST_TIMEOUT = 15.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with ``asyncio.run`` (one loop per test)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT))
    return True
