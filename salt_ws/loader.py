"""Salt Extension entry point: where Salt's loader finds the ``ws`` modules.

Registered in ``setup.cfg`` as a ``salt.loader`` entry point. Salt calls
:func:`get_loader_dirs` and adds the directories to its search paths, so a
master with this package installed needs only the ``engines:`` block. The
loader modules live once, in the repository's ``_engines/`` and ``_runners/``
(where gitfs serves them from); ``setup.cfg`` installs them as
``salt_ws.ext_engines`` and ``salt_ws.ext_runners``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["get_loader_dirs"]


def _locations(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


def get_loader_dirs() -> dict[str, list[str]]:
    """Map Salt loader types to the directories holding this project's modules."""
    return {
        "engines": _locations("salt_ws.ext_engines"),
        "runners": _locations("salt_ws.ext_runners"),
    }
