"""The dashboard's assets, their embedded copy (gitfs installs) and the eauth names it offers."""

from __future__ import annotations

import base64
import pathlib
import subprocess
import sys

import pytest

from salt_ws import dashboard

PACKAGE = pathlib.Path(dashboard.__file__).resolve().parent


def test_the_embedded_copy_is_the_files_byte_for_byte():
    """gitfs copies only .py files: _assets.py must carry exactly what pip installs."""
    sources = dashboard.read_sources()
    assert sources is not None, "every asset of the page is in salt_ws/dashboard/"
    generated = (PACKAGE / "_assets.py").read_text(encoding="utf-8")
    assert generated == dashboard.render_module(sources), (
        "salt_ws/dashboard/_assets.py is stale: run `python -m salt_ws.dashboard`"
    )


def test_render_module_round_trips_and_is_deterministic():
    sources = {"index.html": b"<!doctype html>\n", "app.js": "\u00e9\u2026\n".encode() * 100}
    text = dashboard.render_module(sources)
    assert text == dashboard.render_module(dict(reversed(sources.items())))
    namespace: dict[str, object] = {}
    exec(compile(text, "_assets.py", "exec"), namespace)
    files = namespace["FILES"]
    assert {name: base64.b64decode("".join(b64)) for name, b64 in files.items()} == sources  # type: ignore[union-attr]
    assert max(len(line) for line in text.splitlines()) <= 100  # ruff's line length


def test_the_generated_module_is_lint_and_format_clean(tmp_path):
    ruff = pathlib.Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this interpreter")
    path = tmp_path / "_assets.py"
    # sizes around one and two lines of base64 (66 bytes a line), and nothing at all
    sizes = [0, 1, 3, 65, 66, 67, 69, 132, 135, 500]
    sources = {f"f{size}.js": b"x" * size for size in sizes}
    path.write_text(dashboard.render_module(sources), encoding="utf-8")
    for argv in (
        [str(ruff), "check", "--no-cache", str(path)],
        [str(ruff), "format", "--check", str(path)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_without_the_files_the_embedded_copy_is_served(tmp_path):
    """A gitfs sync leaves no .html/.js/.css next to the module: the page still loads."""
    (tmp_path / "index.html").write_bytes(b"only one of the files")
    source, assets = dashboard.load_assets(tmp_path)
    assert source == "embedded"
    assert set(assets) == set(dashboard.ASSETS)
    assert assets["app.js"].body == (PACKAGE / "app.js").read_bytes()
    assert assets["index.html"].content_type == "text/html; charset=utf-8"


def test_with_the_files_they_are_served():
    source, assets = dashboard.load_assets()
    assert source == "files"
    assert assets["app.css"].body == (PACKAGE / "app.css").read_bytes()
    assert assets["app.css"].etag != assets["app.js"].etag


@pytest.mark.parametrize(
    ("external_auth", "names"),
    [
        ({"file": {}, "pam": {"u": [".*"]}, "ldap": {}}, ["pam", "file", "ldap"]),
        ({"auto": {"*": [".*"]}}, ["auto"]),
        ({"pam": {}}, ["pam"]),
        ({}, []),
        (None, []),
        ("pam", []),  # not a mapping: nothing
        ({"pam": {}, "<script>": {}, "a b": {}, 7: {}, "x" * 65: {}}, ["pam"]),
    ],
)
def test_eauth_backends_are_names_only_pam_first(external_auth, names):
    assert dashboard.eauth_backends({"external_auth": external_auth}) == names


def test_eauth_backends_without_opts():
    assert dashboard.eauth_backends(None) == []


def test_csp_forbids_inline_script_and_other_origins():
    directives = dict(part.split(" ", 1) for part in dashboard.CSP.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in dashboard.CSP
    assert directives["frame-ancestors"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"


def test_the_page_has_no_inline_script_or_style():
    html = (PACKAGE / "index.html").read_text(encoding="utf-8")
    assert "<style" not in html
    assert " style=" not in html
    assert " on" not in html.replace(" one ", " ")  # no onclick= & co.
    for line in html.splitlines():
        if "<script" in line:
            assert 'src="/dashboard/' in line and "></script>" in line
    assert "http://" not in html and "https://" not in html  # no third-party origin


def test_the_script_builds_no_html_from_strings():
    script = (PACKAGE / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
