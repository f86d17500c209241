"""The dashboard page in headless Chromium against a real master with two real minions.

Run twice: with the package installed (``installed``: the engine through its entry point,
the page read from the package's files) and on a gitfs-only master (``gitfs``: Salt alone in
a venv, the engine synced from a git remote, the page served from the embedded copy, as
``tests/integration/test_gitfs.py`` sets it up). The browser reaches the engine through a
TCP proxy (:class:`Cutter`) that can drop every connection and hold new ones, which is how
the test makes "the server-side connection dropped" happen at a moment it chooses.

The tests run in order on one page per master. Screenshots (1280x800 and 375 px wide) go
to ``tests/artifacts/`` (git-ignored). Chromium: Debian's ``/usr/bin/chromium`` (or
``SALT_WS_CHROMIUM``) driven by Playwright; no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.conftest import (
    Collector,
    EngineMaster,
    http,
    loopback_minion,
    start_master,
    wait_listening,
    wait_until,
)
from tests.integration.test_gitfs import (  # noqa: F401 - fixtures, used by name
    GitfsMaster,
    bare_repo,
    salt_only_venv,
)

pytestmark = pytest.mark.integration

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("SALT_WS_CHROMIUM", "/usr/bin/chromium")
# the machine's closed network refuses Chromium's background connections: ask for none
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MINIONS = {"dash-a": "127.0.0.7", "dash-b": "127.0.0.8"}
WAIT = 60_000  # ms: daemons on 2 shared cores are slow to start and to notice things


@pytest.fixture(autouse=True, scope="module")
def _expect_timeout() -> None:
    expect.set_options(timeout=30_000)


class Cutter:
    """A TCP proxy to the engine that can drop every connection and hold new ones.

    :meth:`cut` closes every proxied connection at once (the browser sees its websockets
    drop) and holds the connections that arrive after it, unanswered, until
    :meth:`release` passes them through: the page's reconnects wait instead of failing, so
    the test decides what happens on the bus in between.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self.holding = False
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.holding:
                    self._held.append(client)
                    continue
            self._pipe(client)

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.update((client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._copy, args=(src, dst), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Drop every connection; hold new ones until :meth:`release`."""
        with self._lock:
            self.holding = True
            self.cuts += 1
            sockets = list(self._open)
        for sock in sockets:
            self._drop(sock)

    def release(self) -> None:
        with self._lock:
            self.holding = False
            held, self._held = self._held, []
        for client in held:
            self._pipe(client)

    def close(self) -> None:
        self.listener.close()
        self.cut()


class Fleet:
    """What the browser tests need of a master, whichever way the engine was installed."""

    def __init__(
        self,
        name: str,
        port: int,
        eauth: str,
        user: tuple[str, str],
        salt: Callable[..., Any],
        fire: Callable[[list[tuple[str, dict[str, Any]]]], None],
        stop_minion: Callable[[str], None],
        view: Callable[[], dict[str, Any]],
    ) -> None:
        self.name = name
        self.port = port
        self.eauth = eauth
        self.user = user
        self.salt = salt  # (target, function, *args)
        self.fire = fire
        self.stop_minion = stop_minion
        self.view = view
        self.proxy = Cutter(port)

    def login(self, **extra: Any) -> dict[str, Any]:
        """A token straight from the engine (not through the proxy)."""
        body = {"username": self.user[0], "password": self.user[1], "eauth": self.eauth, **extra}
        status, _, raw = http(f"http://127.0.0.1:{self.port}/login", body)
        assert status == 200, raw
        return json.loads(raw)["return"][0]

    def collector(self, path: str) -> Collector:
        return Collector(f"ws://127.0.0.1:{self.port}{path}/{self.login()['token']}")


# -- the installed engine ---------------------------------------------------------------------


@contextlib.contextmanager
def installed_fleet(salt_factories: Any, users_file: str) -> Iterator[Fleet]:
    factory, port = start_master(
        salt_factories,
        users_file,
        {"disable_ssl": True, "job_timeout": 30},
        loop_interval=1,
        token_expire_user_override=True,
    )
    with factory.started(start_timeout=120):
        wait_listening(port)
        master = EngineMaster(factory, port)
        minions: dict[str, Any] = {}
        try:
            for mid, address in MINIONS.items():
                minion = loopback_minion(factory, mid, address)
                minion.start(start_timeout=120)
                minions[mid] = minion

            def salt(tgt: str, fun: str, *args: str) -> Any:
                return factory.salt_cli(timeout=60).run(fun, *args, minion_tgt=tgt)

            fleet = Fleet(
                "installed",
                port,
                "file",
                ("saltdev", "saltdev-pw"),
                salt,
                master.fire,
                lambda mid: minions[mid].terminate(),
                lambda: master.run("ws.view").data,
            )
            try:
                yield fleet
            finally:
                fleet.proxy.close()
        finally:
            for minion in minions.values():
                minion.terminate()


# -- a gitfs-only master (Salt alone; engine and page from a git remote) ----------------------


class DashboardGitfsMaster(GitfsMaster):
    """test_gitfs's master, with presence events and room for two minions."""

    def __init__(self, root: str, venv: str, repo: str) -> None:
        super().__init__(root, venv, repo)
        path = os.path.join(self.conf_dir, "master")
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        config.update(
            presence_events=True,
            loop_interval=1,
            auto_accept=True,
            token_expire_user_override=True,
        )
        config["engines"][0]["ws"]["job_timeout"] = 30
        self.config = config
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh)

    def start_minion(self, mid: str, address: str) -> subprocess.Popen:
        root = os.path.join(self.root, mid)
        conf = os.path.join(root, "conf")
        os.makedirs(conf, exist_ok=True)
        config = {
            "id": mid,
            "root_dir": root,
            "user": self.config["user"],
            "master": "127.0.0.1",
            "master_port": self.config["ret_port"],
            "publish_port": self.config["publish_port"],
            "source_address": address,
            "grains": {"ipv4": [address]},
            "log_file": os.path.join(root, "minion.log"),
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
        }
        with open(os.path.join(conf, "minion"), "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh)
        return subprocess.Popen(
            [os.path.join(self.bin, "salt-minion"), "-c", conf, "-l", "quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=root,
        )

    def salt(self, tgt: str, fun: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.path.join(self.bin, "salt"), "-c", self.conf_dir, "--out=json", tgt, fun, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
        )

    def fire(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        import salt.config
        import salt.utils.event

        opts = salt.config.master_config(os.path.join(self.conf_dir, "master"))
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            for tag, data in events:
                assert bus.fire_event(data, tag), f"could not fire {tag}"


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def gitfs_fleet(short_root: str, venv: str, repo: str) -> Iterator[Fleet]:
    master = DashboardGitfsMaster(
        os.path.join(short_root, f"dash-gitfs-{uuid.uuid4().hex[:6]}"), venv, repo
    )
    master.start()
    minions: dict[str, subprocess.Popen] = {}
    try:
        wait_until(lambda: master.run("test.arg", "up").returncode == 0, 90, "the master")
        assert master.run("fileserver.update").returncode == 0
        synced = master.run("saltutil.sync_all")
        assert synced.returncode == 0, synced.stderr
        assert any(
            m.startswith("utils.salt_ws.dashboard") for m in json.loads(synced.stdout)["utils"]
        )
        # the sync copied the package's Python modules only: the page must come embedded
        [synced_dir] = pathlib.Path(master.root).glob("**/extmods/utils/salt_ws/dashboard")
        assert (synced_dir / "_assets.py").is_file()
        assert not (synced_dir / "app.js").exists()
        master.stop()  # engines start at master boot
        master.start()
        wait_listening(master.port, timeout=90)
        for mid, address in MINIONS.items():
            minions[mid] = master.start_minion(mid, address)

        def stop_minion(mid: str) -> None:
            _stop(minions[mid])

        def view() -> dict[str, Any]:
            done = master.run("ws.view")
            return json.loads(done.stdout) if done.returncode == 0 else {}

        fleet = Fleet(
            "gitfs",
            master.port,
            "auto",
            ("ops", "any-password"),
            master.salt,
            master.fire,
            stop_minion,
            view,
        )
        try:
            yield fleet
        finally:
            fleet.proxy.close()
    finally:
        for proc in minions.values():
            _stop(proc)
        master.stop()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or SALT_WS_CHROMIUM)")
    with sync_playwright() as playwright:
        # launch() gives every run a fresh, throw-away profile (user data dir)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module", params=["installed", "gitfs"])
def fleet(request: pytest.FixtureRequest, salt_factories: Any, users_file: str) -> Iterator[Fleet]:
    if request.param == "installed":
        with installed_fleet(salt_factories, users_file) as fleet:
            yield fleet
    else:
        venv = request.getfixturevalue("salt_only_venv")
        repo = request.getfixturevalue("bare_repo")
        with gitfs_fleet(request.getfixturevalue("short_root"), venv, repo) as fleet:
            yield fleet


class Dash:
    """The page under test, with everything the browser reported."""

    def __init__(self, fleet: Fleet, page: Page) -> None:
        self.fleet = fleet
        self.page = page
        self.console: list[str] = []  # errors and warnings, from the page or the browser
        self.page_errors: list[str] = []  # uncaught exceptions
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__csp || []")

    def minion(self, mid: str) -> Any:
        return self.page.locator(f'#minion-list [data-minion="{mid}"]')

    def job(self, fun: str) -> Any:
        cell = self.page.locator(".c-fun", has_text=re.compile(rf"^{re.escape(fun)}$"))
        return self.page.locator("#job-list .job-row", has=cell)

    def tail_tags(self) -> list[str]:
        return self.page.locator("#tail-list .trow").evaluate_all(
            "rows => rows.map(r => r.dataset.tag)"
        )

    def received(self) -> int:
        text = self.page.locator("#tail-count").inner_text()
        return int(text.split(" ", 1)[0])

    def screenshot(self, name: str, **kwargs: Any) -> pathlib.Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"dashboard-{self.fleet.name}-{name}.png"
        self.page.screenshot(path=str(path), **kwargs)
        return path


CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  (window.__csp = window.__csp || []).push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def dash(fleet: Fleet, browser: Browser) -> Iterator[Dash]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    dash = Dash(fleet, page)
    page.goto(fleet.proxy.url + "/")
    try:
        yield dash
    finally:
        context.close()


# -- the tests, in order ---------------------------------------------------------------------


def test_log_in_through_the_form(dash: Dash) -> None:
    page, fleet = dash.page, dash.fleet
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    eauth = page.get_by_label("eauth")
    expect(eauth.locator("option")).to_have_text([fleet.eauth])  # the master's backends
    page.get_by_label("Username").fill(fleet.user[0])
    page.get_by_label("Password").fill(fleet.user[1])
    eauth.select_option(fleet.eauth)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#dash-view")).to_be_visible()
    expect(page.locator("#who-name")).to_contain_text(fleet.user[0])
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.locator("#conn-events")).to_contain_text("connected")

    [cookie] = [c for c in page.context.cookies() if c["name"] == "session_id"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    token = cookie["value"]
    assert token not in page.url
    kept = page.evaluate(
        "JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])"
    )
    assert token not in kept
    assert page.get_by_label("Password").input_value() == ""


def test_both_minions_appear_with_their_os(dash: Dash) -> None:
    fleet = dash.fleet
    table = wait_until(
        lambda: (
            (v := fleet.view().get("minions", {}))
            and set(v) == set(MINIONS)
            and all(m["grains"].get("os") for m in v.values())
            and v
        ),
        90,
        "both minions with grains in ws.view",
    )
    for mid in MINIONS:
        row = dash.minion(mid)
        expect(row).to_have_attribute("data-state", "up", timeout=WAIT)
        grains = table[mid]["grains"]
        expect(row.locator(".c-os")).to_have_text(f"{grains['os']} {grains['osrelease']}")
        expect(row.locator(".c-ip")).to_have_text(MINIONS[mid])
        expect(row.locator(".c-kernel")).to_have_text("Linux")
    expect(dash.page.locator("#minions-count")).to_contain_text("2 · 2 up")
    # the tables come as a snapshot and JSON Patches (/formatted_events?delta=1)
    expect(dash.page.locator("#conn-tables")).to_have_text("Tables: connected (live patches)")
    # the search box narrows the list
    dash.page.get_by_label("Search minions").fill("dash-b")
    expect(dash.page.locator("#minion-list .minion-row")).to_have_count(1)
    expect(dash.minion("dash-b")).to_be_visible()
    dash.page.get_by_label("Search minions").fill("")
    expect(dash.page.locator("#minion-list .minion-row")).to_have_count(2)


def test_a_ping_goes_to_complete_with_2_of_2(dash: Dash) -> None:
    ret = dash.fleet.salt("*", "test.ping")
    assert ret.returncode == 0, ret
    row = dash.job("test.ping")
    expect(row).to_have_attribute("data-state", "complete")
    expect(row.locator(".c-ret")).to_contain_text("2/2")
    expect(row.locator(".c-ret")).to_contain_text("2 ok")
    expect(row.locator(".c-tgt")).to_have_text("*")
    expect(row).not_to_have_class(re.compile(r"\bfailed\b"))


def test_a_failing_job_is_marked_failed_for_that_minion(dash: Dash) -> None:
    page = dash.page
    dash.fleet.salt("dash-b", "cmd.run", "exit 3", "python_shell=True")
    row = dash.job("cmd.run")
    expect(row).to_have_attribute("data-state", "complete")
    expect(row).to_have_class(re.compile(r"\bfailed\b"))
    expect(row.locator(".c-ret")).to_contain_text("1/1")
    expect(row.locator(".badge.failed")).to_have_text("1 failed")
    # keyboard: focus the job and open it with Enter
    row.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    entry = dialog.locator('.ret[data-minion="dash-b"]')
    expect(entry).to_have_attribute("data-status", "failed")
    expect(entry.locator(".badge")).to_have_text("failed")
    expect(entry.locator(".retcode")).to_have_text("retcode 3")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    # a success shows its return, pretty-printed
    dash.job("test.ping").click()
    expect(dialog.locator('.ret[data-minion="dash-a"] pre')).to_have_text("true")
    expect(dialog.locator('.ret[data-minion="dash-a"] .retcode')).to_have_text("retcode 0")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


def _filter(dash: Dash, globs: str) -> None:
    box = dash.page.get_by_label(re.compile("^Tag filter"))
    box.fill(globs)
    box.press("Enter")
    expect(dash.page.locator("#tail-server")).to_have_text(f"server filter: {globs}")


def test_the_tail_filter_shows_only_matching_tags(dash: Dash) -> None:
    run = uuid.uuid4().hex[:8]
    _filter(dash, "dash/keep/*")
    before = dash.received()
    dash.fleet.fire(
        [
            (f"dash/skip/{run}/1", {"n": 1}),
            (f"dash/keep/{run}/1", {"n": 2}),
            (f"other/{run}", {"n": 3}),
            (f"dash/keep/{run}/2", {"n": 4}),
        ]
    )
    last = dash.page.locator(f'#tail-list .trow[data-tag="dash/keep/{run}/2"]')
    expect(last).to_have_count(1)
    tags = dash.tail_tags()
    assert tags[:2] == [f"dash/keep/{run}/2", f"dash/keep/{run}/1"]  # newest first
    assert all(tag.startswith("dash/keep/") for tag in tags), tags
    # filtered by the server: the page never received the others (nor presence, nor jobs)
    assert dash.received() == before + 2


def test_pause_counts_what_arrives_and_resume_shows_it(dash: Dash) -> None:
    page, run = dash.page, uuid.uuid4().hex[:8]
    page.get_by_role("button", name="Pause").click()
    dash.fleet.fire([(f"dash/keep/{run}/p1", {}), (f"dash/keep/{run}/p2", {})])
    expect(page.locator("#tail-count")).to_contain_text("paused: 2 new")
    assert not [t for t in dash.tail_tags() if run in t]
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(f'#tail-list .trow[data-tag="dash/keep/{run}/p2"]')).to_have_count(1)
    expect(page.locator(f'#tail-list .trow[data-tag="dash/keep/{run}/p1"]')).to_have_count(1)
    expect(page.locator("#tail-count")).not_to_contain_text("paused")


def test_a_dropped_connection_resumes_without_a_hole(dash: Dash) -> None:
    page, fleet, run = dash.page, dash.fleet, uuid.uuid4().hex[:8]
    witness = fleet.collector("/all_events")  # straight to the engine, not through the proxy
    try:
        fleet.proxy.cut()
        expect(page.locator("#conn-events")).to_contain_text("reconnecting")
        tag = f"dash/keep/{run}/meanwhile"
        fleet.fire([(tag, {"while": "disconnected"})])
        witness.wait_for(lambda m: m.get("tag") == tag)  # the engine has it
    finally:
        fleet.proxy.release()
        witness.close()
    expect(page.locator("#conn-events")).to_contain_text("resumed from", timeout=WAIT)
    expect(page.locator(f'#tail-list .trow[data-tag="{tag}"]')).to_have_count(1)
    after = f"dash/keep/{run}/after"
    fleet.fire([(after, {})])
    expect(page.locator(f'#tail-list .trow[data-tag="{after}"]')).to_have_count(1)
    assert dash.tail_tags().count(tag) == 1  # once, not replayed twice
    expect(page.locator("#conn-tables")).to_contain_text("connected")


def test_a_stopped_minion_goes_down(dash: Dash) -> None:
    dash.fleet.stop_minion("dash-b")
    row = dash.minion("dash-b")
    expect(row).to_have_attribute("data-state", "down", timeout=WAIT)
    expect(row.locator(".badge")).to_have_text("down")
    expect(dash.minion("dash-a")).to_have_attribute("data-state", "up")
    expect(dash.page.locator("#minions-count")).to_contain_text("2 · 1 up")


def test_screenshots_at_desktop_and_phone_width(dash: Dash) -> None:
    page = dash.page
    page.set_viewport_size({"width": 1280, "height": 800})
    desktop = dash.screenshot("desktop")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(page.locator(".jump")).to_be_visible()  # the phone layout
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow} px wider than a 375 px screen"
    phone = dash.screenshot("phone", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    assert desktop.stat().st_size > 10_000 and phone.stat().st_size > 10_000


def test_a_revoked_session_gives_a_clear_message_and_the_form(dash: Dash) -> None:
    page, fleet = dash.page, dash.fleet
    [cookie] = [c for c in page.context.cookies() if c["name"] == "session_id"]
    status, _, _ = http(
        f"http://127.0.0.1:{fleet.port}/logout", {}, headers={"X-Auth-Token": cookie["value"]}
    )
    assert status == 200
    expect(page.locator("#login-message")).to_contain_text("logged out")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.locator("#dash-view")).to_be_hidden()


def test_an_expired_session_gives_a_clear_message_and_the_form(dash: Dash) -> None:
    page, fleet = dash.page, dash.fleet
    user, password = fleet.user
    # a short-lived token, as the page's own form would get it (token_expire is allowed
    # by token_expire_user_override on these masters)
    status = page.evaluate(
        """async ([username, password, eauth]) => (await fetch("/login", {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({username, password, eauth, token_expire: 4}),
        })).status""",
        [user, password, fleet.eauth],
    )
    assert status == 200
    page.reload()
    expect(page.locator("#dash-view")).to_be_visible()
    expect(page.locator("#conn-tables")).to_contain_text("connected")
    expect(page.locator("#login-message")).to_contain_text("expired", timeout=WAIT)
    expect(page.get_by_label("Username")).to_be_visible()


def test_log_out_button(dash: Dash) -> None:
    page, fleet = dash.page, dash.fleet
    page.get_by_label("Username").fill(fleet.user[0])
    page.get_by_label("Password").fill(fleet.user[1])
    page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    expect(page.locator("#dash-view")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-message")).to_have_text("You are logged out.")
    assert not [c for c in page.context.cookies() if c["name"] == "session_id" and c["value"]]


def test_no_console_errors_and_no_csp_violations(dash: Dash) -> None:
    assert dash.page_errors == []
    assert dash.console == []
    assert dash.csp_violations() == []
    if dash.fleet.name == "gitfs":
        # the gitfs master serves the page from the embedded copy, byte for byte
        status, headers, body = http(f"http://127.0.0.1:{dash.fleet.port}/dashboard/app.js")
        assert status == 200
        assert body == (REPO_ROOT / "salt_ws" / "dashboard" / "app.js").read_bytes()
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
