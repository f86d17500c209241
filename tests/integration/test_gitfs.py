"""gitfs-only deployment: a master with Salt alone gets the engine from a git remote.

The project is *not* installed in the venv that runs this master. The loader
modules come from the repository root (``_engines/``, ``_runners/``) and the
package from a second view of the same remote, ``root: salt_ws`` mounted at
``salt://_utils/salt_ws``, so ``salt-run saltutil.sync_all`` puts the package
among the master's utils, which Salt's loader puts on ``sys.path`` while it
loads engine and runner modules.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import websocket
import yaml

from tests.integration.conftest import free_port, http, wait_listening, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def salt_only_venv(short_root):
    """A venv with the same Salt as the test run, and nothing of this project."""
    import salt.version

    venv = os.path.join(short_root, "salt-only")
    _run(sys.executable, "-m", "venv", venv)
    _run(
        os.path.join(venv, "bin", "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        f"salt=={salt.version.__version__}",
    )
    probe = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", "import salt_ws"],
        capture_output=True,
        check=False,
        cwd=venv,
    )
    assert probe.returncode != 0, "salt_ws must not be importable in the gitfs venv"
    return venv


@pytest.fixture(scope="module")
def bare_repo(short_root):
    """A bare git repo holding the working tree's tracked files, as a user's remote would."""
    files = _run("git", "ls-files", "-z", cwd=REPO_ROOT).stdout.split("\0")
    # a directory of its own: test_dashboard imports this fixture too (module scope, so it
    # runs once per module in the same session root)
    mine = tempfile.mkdtemp(prefix="gitfs-", dir=short_root)
    work = os.path.join(mine, "src")
    for name in filter(None, files):
        src = os.path.join(REPO_ROOT, name)
        if not os.path.isfile(src):
            continue  # deleted in the working tree
        dst = os.path.join(work, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    _run(*git, "init", "-q", "-b", "main", work)
    _run(*git, "add", "-A", cwd=work)
    _run(*git, "commit", "-q", "-m", "salt_ws", cwd=work)
    bare = os.path.join(mine, "salt_ws.git")
    _run("git", "clone", "-q", "--bare", work, bare)
    return bare


class GitfsMaster:
    def __init__(self, root: str, venv: str, repo: str) -> None:
        self.root = root
        self.bin = os.path.join(venv, "bin")
        self.port = free_port()
        self.conf_dir = os.path.join(root, "etc", "salt")
        os.makedirs(self.conf_dir, exist_ok=True)
        url = f"file://{repo}"
        config = {
            "root_dir": root,
            "user": _user(),
            "interface": "127.0.0.1",
            "publish_port": free_port(),
            "ret_port": free_port(),
            "log_file": os.path.join(root, "master.log"),
            "log_level_logfile": "info",
            "fileserver_backend": ["gitfs"],
            "gitfs_provider": "gitpython",
            "gitfs_base": "main",
            "gitfs_remotes": [
                {url: [{"name": "salt_ws-modules"}]},
                {
                    url: [
                        {"name": "salt_ws-package"},
                        {"root": "salt_ws"},
                        {"mountpoint": "salt://_utils/salt_ws"},
                    ]
                },
            ],
            "external_auth": {"auto": {"*": [".*"]}},
            "engines": [{"ws": {"port": self.port, "address": "127.0.0.1", "disable_ssl": True}}],
        }
        with open(os.path.join(self.conf_dir, "master"), "w") as fh:
            yaml.safe_dump(config, fh)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "salt-master"), "-c", self.conf_dir, "-l", "quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,  # nothing of the checkout on sys.path
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        self.proc = None

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.path.join(self.bin, "salt-run"), "-c", self.conf_dir, "--out=json", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=self.root,
        )


def _user() -> str:
    import getpass

    return getpass.getuser()


def test_engine_from_gitfs_serves_events_and_answers_status(short_root, salt_only_venv, bare_repo):
    master = GitfsMaster(
        os.path.join(short_root, f"gitfs-{uuid.uuid4().hex[:6]}"), salt_only_venv, bare_repo
    )
    master.start()
    try:
        wait_until(lambda: master.run("test.arg", "up").returncode == 0, 90, "the master")
        updated = master.run("fileserver.update")  # fetch both gitfs remotes now
        assert updated.returncode == 0, updated.stderr
        synced = master.run("saltutil.sync_all")
        assert synced.returncode == 0, synced.stderr
        report = json.loads(synced.stdout)
        assert "engines.ws" in report["engines"]
        assert "runners.ws" in report["runners"]
        assert any(m.startswith("utils.salt_ws") for m in report["utils"]), report["utils"]
        master.stop()  # engines start at master boot
        master.start()
        wait_listening(master.port, timeout=90)

        status, _, body = http(
            f"http://127.0.0.1:{master.port}/login",
            {"username": "ops", "password": "x", "eauth": "auto"},
        )
        assert status == 200, body
        token = json.loads(body)["return"][0]["token"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{master.port}/all_events/{token}", timeout=30
        )
        try:
            ws.send("websocket client ready")
            time.sleep(0.5)
            ran = master.run("test.arg", "via-gitfs")  # fires salt/run/... events
            assert ran.returncode == 0
            while True:
                event = json.loads(ws.recv())
                if event["tag"].startswith("salt/run/") and event["tag"].endswith("/new"):
                    assert event["data"]["fun"] == "runner.test.arg"
                    break
        finally:
            ws.close()

        ret = master.run("ws.status")
        assert ret.returncode == 0, ret.stderr
        data = json.loads(ret.stdout)
        assert data["running"] is True
        assert data["port"] == master.port
        assert data["state"] == "serving"
    finally:
        master.stop()
