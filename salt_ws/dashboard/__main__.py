"""``python -m salt_ws.dashboard``: regenerate :mod:`salt_ws.dashboard._assets` from the files."""

from __future__ import annotations

import sys

from salt_ws.dashboard import HERE, read_sources, render_module


def main() -> int:
    """Write ``_assets.py`` next to the page's files; 1 if a file is missing."""
    sources = read_sources()
    if sources is None:
        sys.stderr.write(f"salt_ws.dashboard: the page's files are not all in {HERE}\n")
        return 1
    (HERE / "_assets.py").write_text(render_module(sources), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
