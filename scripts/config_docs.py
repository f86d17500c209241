"""Write the engine options declared in salt_ws/config.py into the documents that list them.

The YAML block of the engine module docstring (``_engines/ws.py``, the
``.. code-block:: yaml`` block) and the README's options table
(``| option | default | meaning |`` up to the next blank line) are generated from
:data:`salt_ws.config.OPTIONS`; everything around them is left as it is. The unit
tests (tests/unit/test_config.py) fail while either document differs.

    .venv/bin/python scripts/config_docs.py           # rewrite both
    .venv/bin/python scripts/config_docs.py --check   # exit 1 and show a diff if stale
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from salt_ws.config import docs_table, docs_yaml  # noqa: E402

ENGINE = ROOT / "_engines" / "ws.py"
README = ROOT / "README.md"

_YAML_START = ".. code-block:: yaml\n\n"
_TABLE_START = "| option | default | meaning |"


def _replace(text: str, start_marker: str, skip: int, new: str) -> str:
    start = text.index(start_marker) + skip
    end = text.index("\n\n", start)
    return text[:start] + new + text[end:]


def with_docstring_block(text: str) -> str:
    """``text`` (the engine module's source) with its YAML block generated afresh."""
    return _replace(text, _YAML_START, len(_YAML_START), docs_yaml())


def with_readme_table(text: str) -> str:
    """``text`` (README.md) with its options table generated afresh."""
    return _replace(text, _TABLE_START, 0, docs_table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale documents")
    args = parser.parse_args(argv)
    stale = 0
    for path, update in ((ENGINE, with_docstring_block), (README, with_readme_table)):
        text = path.read_text()
        new = update(text)
        if new == text:
            continue
        stale += 1
        if args.check:
            name = str(path.relative_to(ROOT))
            diff = difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), name, f"{name} (generated)"
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
