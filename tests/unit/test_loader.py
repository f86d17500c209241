"""The Salt loader side: where Salt finds the ``ws`` modules, and the two thin shims.

The shims are loaded from their files, as Salt's loader does, with the dunders Salt would
inject (``__opts__``, ``__context__``) set by hand.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import types
from typing import Any

import pytest

import salt_ws.engine
import salt_ws.status
from salt_ws.loader import get_loader_dirs

OPTS = {"sock_dir": "/nonexistent/salt/master", "hash_type": "sha256"}


def load_shim(kind: str, **dunders: Any) -> types.ModuleType:
    """Import ``<loader dir>/ws.py`` for ``kind`` ('engines' or 'runners') as a fresh module."""
    [directory] = get_loader_dirs()[kind]
    path = os.path.join(directory, "ws.py")
    spec = importlib.util.spec_from_file_location(f"salt_ws_test_{kind}_ws", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in dunders.items():
        setattr(module, name, value)
    return module


@pytest.mark.parametrize("kind", ["engines", "runners"])
def test_loader_dirs_hold_the_ws_module(kind):
    dirs = get_loader_dirs()[kind]
    assert dirs
    for directory in dirs:
        assert pathlib.Path(directory, "ws.py").is_file()


def test_loader_dirs_cover_only_engines_and_runners():
    assert set(get_loader_dirs()) == {"engines", "runners"}


def test_loader_dirs_are_the_entry_point_salt_calls():
    from importlib.metadata import entry_points

    [entry] = [ep for ep in entry_points(group="salt.loader") if ep.name == "salt_ws"]
    assert entry.load() is get_loader_dirs


@pytest.mark.parametrize("kind", ["engines", "runners"])
def test_shim_is_virtual_ws(kind):
    shim = load_shim(kind)
    assert shim.__virtualname__ == "ws"
    assert shim.__virtual__() == "ws"


@pytest.mark.parametrize("kind", ["engines", "runners"])
def test_shim_without_the_package_declines_with_a_reason(kind):
    shim = load_shim(kind)
    shim.HAS_SALT_WS = False
    shim._IMPORT_ERROR = "No module named 'salt_ws'"
    ok, reason = shim.__virtual__()
    assert ok is False
    assert "No module named 'salt_ws'" in reason


def test_engine_start_hands_opts_and_options_to_the_package(monkeypatch):
    calls = []
    monkeypatch.setattr(salt_ws.engine, "run", lambda opts, config: calls.append((opts, config)))
    shim = load_shim("engines", __opts__=OPTS)
    shim.start(port=8001, disable_ssl=True)
    assert calls == [(OPTS, {"port": 8001, "disable_ssl": True})]


@pytest.mark.parametrize(
    ("answer", "retcode"),
    [
        ({"running": True, "state": "serving"}, None),
        ({"running": False, "message": "the ws engine is not running"}, 1),
        ({"running": False, "state": "failed", "message": "not started"}, 1),
        ({"running": False, "engines": {"8000": {"running": False}}}, 1),
    ],
    ids=["running", "not-running", "parked", "several-one-down"],
)
def test_runner_status_returns_the_report_and_fails_when_not_running(monkeypatch, answer, retcode):
    seen = []

    def fake_report(opts):
        seen.append(opts)
        return dict(answer)

    monkeypatch.setattr(salt_ws.status, "report", fake_report)
    context: dict[str, Any] = {}
    shim = load_shim("runners", __opts__=OPTS, __context__=context)
    expected = answer if retcode is None else {**answer, "retcode": retcode}
    assert shim.status() == expected
    assert seen == [OPTS]
    assert context.get("retcode") == retcode


@pytest.mark.parametrize(
    ("kwargs", "answer", "retcode"),
    [
        ({}, {"minions": {}, "jobs": {}}, None),
        ({"minion": "web1"}, {"minions": {"web1": {}}}, None),
        ({"jid": "123"}, {"error": "job '123' is not in the view"}, 1),
        ({}, {"running": False, "message": "the ws engine is not running"}, 1),
    ],
    ids=["all", "one-minion", "unknown-job", "not-running"],
)
def test_runner_view_passes_the_filter_and_fails_on_errors(monkeypatch, kwargs, answer, retcode):
    seen = []

    def fake_view(opts, minion=None, jid=None):
        seen.append((opts, minion, jid))
        return dict(answer)

    monkeypatch.setattr(salt_ws.status, "view", fake_view)
    context: dict[str, Any] = {}
    shim = load_shim("runners", __opts__=OPTS, __context__=context)
    expected = answer if retcode is None else {**answer, "retcode": retcode}
    assert shim.view(**kwargs) == expected
    assert seen == [(OPTS, kwargs.get("minion"), kwargs.get("jid"))]
    assert context.get("retcode") == retcode


@pytest.mark.parametrize(
    ("answer", "retcode"),
    [
        ([{"endpoint": "all_events", "user": "alice"}], None),
        ([], None),
        ({"running": False, "message": "the ws engine is not running"}, 1),
    ],
    ids=["rows", "nobody", "not-running"],
)
def test_runner_clients_returns_the_rows_and_fails_when_not_running(monkeypatch, answer, retcode):
    seen = []

    def fake_clients(opts):
        seen.append(opts)
        return answer.copy()

    monkeypatch.setattr(salt_ws.status, "clients", fake_clients)
    context: dict[str, Any] = {}
    shim = load_shim("runners", __opts__=OPTS, __context__=context)
    expected = answer if retcode is None else {**answer, "retcode": retcode}
    assert shim.clients() == expected
    assert seen == [OPTS]
    assert context.get("retcode") == retcode
