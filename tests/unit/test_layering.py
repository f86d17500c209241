"""Layering: the pure modules import neither tornado nor salt, not even through each other.

The pure logic (parsing, the view, the ACL, wire encoding, the hub, limits, configuration) is
tested without a loop or a master; these tests keep it that way. Add a new pure module to
``PURE``.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "salt_ws"
PURE = (
    "events",
    "view",
    "acl",
    "wire",
    "hub",
    "limits",
    "config",
    "pipeline",
    "session",
    "metrics",
    "delta",
)
BANNED = ("tornado", "salt")


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module ``tree`` imports, anywhere (functions and ``if`` blocks too), by line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if (node.level and node.module is None) or (
                not node.level and node.module == "salt_ws"
            ):
                # from . import x, from salt_ws import x: x may be a module
                found.extend((node.lineno, f"salt_ws.{alias.name}") for alias in node.names)
            elif node.level:  # from .x import y
                found.append((node.lineno, f"salt_ws.{node.module}"))
            else:
                found.append((node.lineno, node.module or ""))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def problems(module: str, source: str) -> list[str]:
    """What in ``source`` (the pure module ``module``) breaks the layering, one line each."""
    found = []
    for lineno, name in imported(ast.parse(source, filename=f"{module}.py")):
        if top(name) in BANNED:
            found.append(f"salt_ws/{module}.py:{lineno} imports {name}")
        elif top(name) == "salt_ws" and name != "salt_ws":
            inner = name.split(".")[1]
            is_module = (PACKAGE / f"{inner}.py").exists() or (PACKAGE / inner).is_dir()
            if is_module and inner not in PURE:
                found.append(f"salt_ws/{module}.py:{lineno} imports {name}, not a pure module")
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_neither_tornado_nor_salt(module):
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert problems(module, source) == []


@pytest.mark.parametrize(
    "line",
    [
        "import tornado",
        "import tornado.web",
        "from tornado.ioloop import IOLoop",
        "import salt.utils.verify",
        "from salt.utils import verify",
        "import salt",
        "from salt_ws import handlers",
        "from salt_ws.engine import Engine",
        "from .bus import Bus",
        "from . import auth",
        "def f():\n    import tornado.iostream",
        "if True:\n    from salt import config",
        "importlib.import_module('salt.utils.event')",
        "__import__('tornado')",
    ],
)
def test_the_check_sees_a_banned_import(line):
    source = line + "\n"
    assert problems("view", source)


@pytest.mark.parametrize(
    "line",
    [
        "import saltfactories",
        "import tornadoes",
        "from salt_ws import wire",
        "from salt_ws.acl import valid_fun",
        "from . import events",
        "from salt_ws import __version__",
    ],
)
def test_the_check_lets_other_imports_be(line):
    source = line + "\n"
    assert problems("view", source) == []


def test_importing_the_pure_modules_loads_neither_tornado_nor_salt():
    code = (
        "import sys\n"
        + "".join(f"import salt_ws.{module}\n" for module in PURE)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
