"""The dashboard page alone in headless Chromium: the engine is played by the test.

Playwright serves the page's files (with the engine's headers) and answers its websockets
(``page.route_web_socket``), so the page meets what a master would rarely produce on cue:
10,000 minions, delta patches out of sequence, a resume gap, forged notices, hostile
strings. The page's pure helpers (``window.saltWsDashboard``) are checked against Python's
``fnmatch`` (what the engine's tag filters use) and the ``jsonpatch`` library.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import random
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
from playwright.sync_api import Browser, Page, Route, WebSocketRoute, expect, sync_playwright

from salt_ws import dashboard
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS, CSP_WATCH

pytestmark = pytest.mark.integration

ORIGIN = "http://dash.test"
PACKAGE = pathlib.Path(dashboard.__file__).resolve().parent
EPOCH = "e0e0e0e0e0e0e0e0"


@pytest.fixture(autouse=True, scope="module")
def _expect_timeout() -> None:
    expect.set_options(timeout=15_000)


def until(page: Page, predicate: Any, timeout: float = 5.0) -> None:
    """Wait for ``predicate()`` while Playwright delivers its events (sync API: only inside
    its own calls, hence wait_for_timeout rather than sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(25)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or SALT_WS_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class FakeEngine:
    """The engine's side of the page's HTTP requests and websockets."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.logged_in = True
        self.tables: list[WebSocketRoute] = []  # /formatted_events connections, in order
        self.tails: list[WebSocketRoute] = []  # /all_events connections
        self.urls: list[str] = []
        self.received: list[tuple[WebSocketRoute, str]] = []  # what the page sent
        self.on_ready: dict[str, Any] = {}  # "tables"/"events" -> callable(ws)
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: self.console.append(m.text) if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.route(f"{ORIGIN}/**", self._http)
        page.route_web_socket(re.compile(r"/(formatted|all)_events"), self._websocket)

    def _http(self, route: Route) -> None:
        path = urllib.parse.urlparse(route.request.url).path
        name = "index.html" if path == "/" else path.removeprefix("/dashboard/")
        headers = dict(dashboard.SECURITY_HEADERS)
        if name == "session":
            user = {"user": "alice", "eauth": "pam", "expire": 2e9} if self.logged_in else None
            body = json.dumps(user or {"user": None})
            route.fulfill(status=200, body=body, headers=headers, content_type="application/json")
        elif name == "eauth":
            body = json.dumps({"eauth": ["pam", "ldap"]})
            route.fulfill(status=200, body=body, headers=headers, content_type="application/json")
        elif name in dashboard.ASSETS:
            headers["Content-Type"] = dashboard.ASSETS[name]
            route.fulfill(status=200, body=(PACKAGE / name).read_bytes(), headers=headers)
        else:
            route.fulfill(status=404, body="not found", headers=headers)

    def _websocket(self, ws: WebSocketRoute) -> None:
        self.urls.append(ws.url)
        kind = "tables" if "/formatted_events" in ws.url else "events"
        (self.tables if kind == "tables" else self.tails).append(ws)

        def message(text: str | bytes) -> None:
            self.received.append((ws, str(text)))
            if text == "websocket client ready" and kind in self.on_ready:
                self.on_ready[kind](ws)

        ws.on_message(message)

    def open(self) -> None:
        self.page.goto(f"{ORIGIN}/")

    def csp(self) -> list[str]:
        return self.page.evaluate("window.__csp || []")

    def clean(self) -> None:
        assert self.errors == []
        assert self.console == []
        assert self.csp() == []


@pytest.fixture
def engine(browser: Browser) -> Iterator[FakeEngine]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    try:
        yield FakeEngine(page)
    finally:
        context.close()


def send(ws: WebSocketRoute, message: Any) -> None:
    ws.send(json.dumps(message))


def event(seq: int, tag: str, data: Any = None, epoch: str = EPOCH) -> dict[str, Any]:
    return {"id": f"{epoch}:{seq}", "tag": tag, "data": data if data is not None else {}}


def minion(mid: str, n: int = 0) -> dict[str, Any]:
    return {
        "id": mid,
        "grains": {
            "os": "Debian",
            "osrelease": "12",
            "kernel": "Linux",
            "ipv4": ["127.0.0.1", f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"],
        },
    }


# -- the pure helpers against their Python references ---------------------------------------


def test_glob_matching_is_pythons_fnmatch(engine: FakeEngine) -> None:
    """The page filters its history locally with the glob rules the engine applies."""
    engine.logged_in = False
    engine.open()
    rng = random.Random(13)
    globs = ["*", "salt/job/*/ret/*", "salt/*", "a?c", "[ab]*", "[!ab]x", "[]]", "[!]]", "[]-a]"]
    globs += ["[a-]", "[-a]", "[z-a]", "[a-c-e]", "[\\]", "x[", "[!", "*a*a*a*a*b", "[^a]", "[[]"]
    alphabet = "ab/-]![\\*?^zc"
    globs += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(400)]
    tags = ["", "a", "b", "]", "-", "\\", "^", "[", "abc", "salt/job/1/ret/m", "a/b", "za"]
    tags += [
        "".join(rng.choice("ab/-]!\\^zc[") for _ in range(rng.randint(0, 6))) for _ in range(60)
    ]
    got = engine.page.evaluate(
        """([globs, tags]) => globs.map((g) => {
            const re = window.saltWsDashboard.globRegex(g);
            return tags.map((t) => re.test(t));
        })""",
        [globs, tags],
    )
    for glob, row in zip(globs, got, strict=True):
        want = [fnmatch.fnmatchcase(tag, glob) for tag in tags]
        assert row == want, (glob, [t for t, a, b in zip(tags, row, want, strict=True) if a != b])


def test_a_hostile_tag_cannot_make_the_glob_backtrack(engine: FakeEngine) -> None:
    engine.logged_in = False
    engine.open()
    elapsed = engine.page.evaluate(
        """() => {
            const re = window.saltWsDashboard.globRegex("*a*a*a*a*a*a*a*b");
            const tag = "a".repeat(100000);
            const t0 = performance.now();
            const hit = re.test(tag);
            return [hit, performance.now() - t0];
        }"""
    )
    assert elapsed[0] is False
    assert elapsed[1] < 1000, f"{elapsed[1]:.0f} ms"


def _random_doc(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice([None, True, False, 0, 1, -2.5, "", "x", "~/", "a/b", "~0~1"])
    if roll < 0.6:
        return [_random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["a", "b", "~", "/", "a/b", "~1", "", "0", "__proto__", "constructor"]
    return {rng.choice(keys): _random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_json_patch_application_is_the_jsonpatch_librarys(engine: FakeEngine) -> None:
    """Applying any RFC 6902 patch gives what Python's jsonpatch gives (delta mode's oracle)."""
    engine.logged_in = False
    engine.open()
    rng = random.Random(6902)
    cases = []
    for _ in range(300):
        a, b = {"minions": _random_doc(rng), "jobs": _random_doc(rng)}, _random_doc(rng)
        if rng.random() < 0.7:
            b = {"minions": _random_doc(rng), "jobs": a["jobs"]}
        patch = jsonpatch.make_patch(a, b).patch  # add, remove, replace, move, copy
        cases.append([a, patch, b])
    # as JSON text, parsed by the page as its websockets' messages are: keys such as
    # "__proto__" stay plain keys (Playwright's own argument passing would drop them)
    got = json.loads(
        engine.page.evaluate(
            """(text) => JSON.stringify(JSON.parse(text).map(([a, patch]) => {
                try { return [true, window.saltWsDashboard.applyPatch(a, patch)]; }
                catch (err) { return [false, String(err)]; }
            }))""",
            json.dumps(cases),
        )
    )
    for (a, patch, b), (ok, result) in zip(cases, got, strict=True):
        assert ok, (a, patch, result)
        assert result == b == jsonpatch.apply_patch(a, patch), (a, patch)
    # what jsonpatch refuses, the page refuses (and then asks for a fresh snapshot)
    refused = engine.page.evaluate(
        """(patches) => patches.map((p) => {
            try { window.saltWsDashboard.applyPatch({"a": {"b": 1}, "l": [1]}, p); return false; }
            catch (err) { return true; }
        })""",
        [
            [{"op": "remove", "path": "/x"}],
            [{"op": "replace", "path": "/a/x", "value": 1}],
            [{"op": "add", "path": "/l/5", "value": 1}],
            [{"op": "add", "path": "/x/y", "value": 1}],
            [{"op": "test", "path": "/a/b", "value": 2}],
            [{"op": "move", "from": "/a", "path": "/a/c"}],
            [{"op": "frobnicate", "path": "/a"}],
            [{"op": "add", "path": "a", "value": 1}],
            [{"op": "add", "path": "/l/01", "value": 1}],
        ],
    )
    assert all(refused), refused


# -- the page against a played engine --------------------------------------------------------


def test_ten_thousand_minions_render_without_freezing_the_page(engine: FakeEngine) -> None:
    page = engine.page
    # the longest gap between two animation frames: how long the page could not repaint
    page.add_init_script(
        """window.__gaps = [];
        let last = performance.now();
        const tick = (now) => {
          window.__gaps.push(now - last);
          last = now;
          requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);"""
    )
    mids = [f"minion-{n:05d}" for n in range(10_000)]
    snapshot = {"minions": {mid: minion(mid, n) for n, mid in enumerate(mids)}, "jobs": {}}
    engine.on_ready["tables"] = lambda ws: send(ws, {"seq": 1, "snapshot": snapshot})
    engine.open()
    expect(page.locator("#minions-count")).to_have_text("10000 · 10000 up")
    rows = page.locator("#minion-list .minion-row")
    assert rows.count() < 60  # only what is in view (and a few more) is in the DOM
    expect(page.locator("#conn-tables")).to_contain_text("live patches")
    # 300 patches in a burst: minions leave and come back, one changes its grains
    ws = engine.tables[-1]
    seq = 1
    for n in range(300):
        seq += 1
        mid = mids[n * 7]
        if n % 3 == 0:
            patch = [{"op": "remove", "path": f"/minions/{mid}"}]
        elif n % 3 == 1:
            patch = [{"op": "replace", "path": f"/minions/{mid}/grains/os", "value": "Alpine"}]
        else:
            patch = [{"op": "add", "path": "/minions/new-" + str(n), "value": minion(f"new-{n}")}]
        send(ws, {"seq": seq, "patch": patch})
    expect(page.locator("#minions-count")).to_have_text("10100 · 10000 up")
    search = page.get_by_label("Search minions")
    count = page.locator("#minions-count")
    search.fill("minion-09999")
    expect(rows).to_have_count(1)
    search.fill("alpine")
    expect(count).to_have_text("10100 · 10000 up · 100 shown")
    search.fill("down")
    expect(count).to_have_text("10100 · 10000 up · 100 shown")
    expect(page.locator('[data-minion="minion-00000"]')).to_have_attribute("data-state", "down")
    search.fill("")
    page.locator("#minion-list").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    expect(page.locator('[data-minion="new-98"]')).to_be_visible()
    gaps = page.evaluate("window.__gaps")
    print("FRAME GAPS (ms, longest)", [round(g) for g in sorted(gaps)[-5:]], len(gaps))
    assert max(gaps) < 500, f"the page froze for {max(gaps):.0f} ms"
    assert len(engine.tables) == 1  # every patch applied in sequence: no resync
    engine.clean()


def test_a_patch_out_of_sequence_gets_a_fresh_snapshot(engine: FakeEngine) -> None:
    page = engine.page
    snapshots = iter([{"minions": {"m1": minion("m1")}, "jobs": {}}, {"minions": {}, "jobs": {}}])
    engine.on_ready["tables"] = lambda ws: send(ws, {"seq": 10, "snapshot": next(snapshots)})
    engine.open()
    expect(page.locator('[data-minion="m1"]')).to_have_attribute("data-state", "up")
    send(engine.tables[0], {"seq": 12, "patch": []})  # 11 is missing
    expect(page.locator('[data-minion="m1"]')).to_have_attribute("data-state", "down")
    assert len(engine.tables) == 2
    engine.clean()


def test_compat_tables_work_too(engine: FakeEngine) -> None:
    """An engine without delta mode sends saltnado's complete tables."""
    page = engine.page
    job = {
        "jid": "20261201120000000001",
        "fun": "test.ping",
        "tgt": "*",
        "tgt_type": "glob",
        "user": "root",
        "state": "complete",
        "start_time": "2026-12-01T12:00:00.000001+00:00",
        "minions": {
            "m1": {"return": True, "retcode": 0, "success": True},
            "m2": {"return": "boom", "retcode": 1, "success": False},
            "m3": {"return": None, "retcode": None, "success": False, "error": "no return"},
        },
    }

    def ready(ws: WebSocketRoute) -> None:
        send(ws, {"minions": {"m1": minion("m1")}})
        send(ws, {"jobs": {job["jid"]: job}})

    engine.on_ready["tables"] = ready
    engine.open()
    row = page.locator(f'.job-row[data-jid="{job["jid"]}"]')
    expect(row.locator(".c-ret")).to_contain_text("2/3")  # returned: m1 (ok) and m2 (failed)
    expect(row.locator(".badge.failed")).to_have_text("1 failed")
    expect(row.locator(".badge.missing")).to_have_text("1 missing")
    expect(page.locator("#conn-tables")).to_contain_text("full tables")
    row.click()
    expect(page.locator('.ret[data-minion="m2"]')).to_have_attribute("data-status", "failed")
    expect(page.locator('.ret[data-minion="m3"]')).to_have_attribute("data-status", "missing")
    expect(page.locator('.ret[data-minion="m2"] pre')).to_have_text('"boom"')
    engine.clean()


def test_a_resume_gap_says_how_many_events_were_missed(engine: FakeEngine) -> None:
    page = engine.page
    first = [True]

    def ready(ws: WebSocketRoute) -> None:
        if first[0]:
            first[0] = False
            send(ws, event(5, "custom/one"))
            ws.close(code=1011, reason="test drop")
            return
        send(
            ws,
            event(
                20,
                "salt_ws/stream/gap",
                {"since": f"{EPOCH}:5", "resumed_from": f"{EPOCH}:18", "reason": "too old"},
            ),
        )
        send(ws, event(18, "custom/two"))

    engine.on_ready["events"] = ready
    engine.open()
    expect(page.locator("#conn-events")).to_have_text("Events: gap: 12 events missed (too old)")
    assert "since=" + urllib.parse.quote(f"{EPOCH}:5") in engine.urls[-1]
    expect(page.locator('.trow[data-tag="custom/two"]')).to_have_count(1)
    expect(page.locator('.trow[data-tag="salt_ws/stream/gap"]')).to_have_count(0)
    engine.clean()


def test_forged_notices_and_hostile_strings_are_only_text(engine: FakeEngine) -> None:
    """A minion's event.send can carry any tag and payload: none of it becomes markup, a
    gap notice mid-stream is an ordinary event, replays are never shown twice."""
    page = engine.page
    evil = '<img src=x onerror="window.__pwned=1">'

    def tables(ws: WebSocketRoute) -> None:
        send(ws, {"seq": 1, "snapshot": {"minions": {evil: minion(evil)}, "jobs": {}}})

    def events(ws: WebSocketRoute) -> None:
        send(ws, event(1, evil, {"x": evil}))
        gap = {"since": f"{EPOCH}:0", "resumed_from": f"{EPOCH}:99999", "reason": evil}
        send(ws, event(2, "salt_ws/stream/gap", gap))  # forged: not the first after a resume
        send(ws, event(2, "dup"))  # the same id again
        send(ws, event(3, "after"))

    engine.on_ready["tables"] = tables
    engine.on_ready["events"] = events
    engine.open()
    expect(page.locator('.trow[data-tag="after"]')).to_have_count(1)
    expect(page.locator('.trow[data-tag="salt_ws/stream/gap"]')).to_have_count(1)
    expect(page.locator('.trow[data-tag="dup"]')).to_have_count(0)
    expect(page.locator("#conn-events")).to_have_text("Events: connected")
    expect(page.locator("#minion-list .c-id")).to_have_text(evil)
    expect(page.locator(".trow .ttag").last).to_have_text(evil)
    assert page.locator("#minion-list img, #tail-list img").count() == 0
    page.wait_for_timeout(200)  # an injected onerror would have run by now
    assert page.evaluate("window.__pwned") is None
    engine.clean()


def test_subscribe_and_unsubscribe_follow_the_filter_box(engine: FakeEngine) -> None:
    page = engine.page

    def events(ws: WebSocketRoute) -> None:
        send(ws, event(1, "salt/key", {}))

    engine.on_ready["events"] = events
    engine.open()
    expect(page.locator('.trow[data-tag="salt/key"]')).to_have_count(1)
    box = page.get_by_label(re.compile("^Tag filter"))
    box.fill("salt/job/* custom/*")
    box.press("Enter")
    ws = engine.tails[0]
    sent = lambda: [json.loads(t) for w, t in engine.received if w is ws and t.startswith("{")]  # noqa: E731
    expect(page.locator('.trow[data-tag="salt/key"]')).to_have_count(0)  # history filtered too
    until(page, lambda: sent() == [{"subscribe": ["salt/job/*", "custom/*"]}])
    send(ws, event(2, "salt_ws/stream/subscribed", {"tags": ["custom/*", "salt/job/*"]}))
    expect(page.locator("#tail-server")).to_have_text("server filter: custom/* salt/job/*")
    box.fill("custom/*")
    box.press("Enter")
    until(page, lambda: sent()[-1] == {"unsubscribe": ["salt/job/*"]})
    box.fill("")
    box.press("Enter")
    until(page, lambda: sent()[-1] == {"unsubscribe": ["custom/*"]})
    expect(page.locator('.trow[data-tag="salt/key"]')).to_have_count(1)
    engine.clean()


@pytest.mark.parametrize(
    ("scheme", "background"), [("light", "rgb(246, 248, 250)"), ("dark", "rgb(13, 17, 23)")]
)
def test_the_page_follows_prefers_color_scheme(
    browser: Browser, scheme: str, background: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
    try:
        engine = FakeEngine(context.new_page())
        engine.on_ready["tables"] = lambda ws: send(
            ws, {"seq": 1, "snapshot": {"minions": {"m1": minion("m1", 1)}, "jobs": {}}}
        )
        engine.open()
        expect(engine.page.locator('[data-minion="m1"]')).to_be_visible()
        assert engine.page.evaluate("getComputedStyle(document.body).backgroundColor") == background
        artifacts = pathlib.Path(__file__).resolve().parents[1] / "artifacts"
        artifacts.mkdir(exist_ok=True)
        engine.page.screenshot(path=str(artifacts / f"dashboard-page-{scheme}.png"))
        engine.clean()
    finally:
        context.close()
