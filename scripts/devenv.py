"""A throwaway salt-master (+ minions) on 127.0.0.1 running the ``ws`` engine.

Used by ``scripts/sandbox`` and the benchmarks: real Salt daemons with a root
directory and ports of their own, stopped on exit. Tests use
pytest-salt-factories instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Iterable, Iterator

import yaml

BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevMaster:
    """Config, processes and helpers for one loopback master.

    Args:
        root: an empty directory (created) for all of Salt's state.
        engine: options for the ``ws`` engine (port etc. are filled in).
        extra: more master options.
    """

    def __init__(
        self,
        root: str,
        engine: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.ws_port = free_port()
        self.publish_port = free_port()
        self.ret_port = free_port()
        self.engine = {
            "port": self.ws_port,
            "address": "127.0.0.1",
            "disable_ssl": True,
            **(engine or {}),
        }
        self.conf_dir = os.path.join(root, "etc", "salt")
        self.master_opts: dict[str, Any] = {
            "root_dir": root,
            "user": _user(),
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "auto_accept": True,
            "presence_events": True,
            "loop_interval": 5,
            "log_file": os.path.join(root, "master.log"),
            "log_level_logfile": "info",
            "external_auth": {"auto": {"*": [".*", "@runner", "@wheel", "@jobs"]}},
            "engines": [{"ws": self.engine}],
            **(extra or {}),
        }
        self.procs: list[subprocess.Popen] = []
        self._out: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}"

    def write_config(self) -> None:
        os.makedirs(self.conf_dir, exist_ok=True)
        with open(os.path.join(self.conf_dir, "master"), "w") as fh:
            yaml.safe_dump(self.master_opts, fh)

    def minion_conf_dir(self, minion_id: str) -> str:
        conf = os.path.join(self.root, "minions", minion_id, "etc", "salt")
        os.makedirs(conf, exist_ok=True)
        opts = {
            "root_dir": os.path.join(self.root, "minions", minion_id),
            "id": minion_id,
            "user": _user(),
            "master": "127.0.0.1",
            "master_port": self.ret_port,
            "publish_port": self.publish_port,
            "log_file": os.path.join(self.root, f"minion-{minion_id}.log"),
            "log_level_logfile": "info",
        }
        with open(os.path.join(conf, "minion"), "w") as fh:
            yaml.safe_dump(opts, fh)
        return conf

    def _spawn(self, *argv: str) -> None:
        # The daemons' own console chatter goes to a file, not the terminal.
        if self._out is None:
            self._out = open(os.path.join(self.root, "daemons.out"), "ab")
        self.procs.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal Ctrl-C reaches us, and we stop them
            )
        )

    def start(self, minions: int = 1, timeout: float = 60.0) -> None:
        self.write_config()
        self._spawn(os.path.join(BIN, "salt-master"), "-c", self.conf_dir, "-l", "quiet")
        for n in range(minions):
            conf = self.minion_conf_dir(f"minion-{n + 1}")
            self._spawn(os.path.join(BIN, "salt-minion"), "-c", conf, "-l", "quiet")
        self.wait_http(timeout)

    def wait_http(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.ws_port), 0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the ws engine did not listen on {self.ws_port} in {timeout}s")

    def wait_port(self, port: int, timeout: float) -> None:
        """Block until something accepts TCP connections on 127.0.0.1:``port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"nothing listened on {port} in {timeout}s")

    def start_api(self, ports: Iterable[int] = (), timeout: float = 60.0) -> subprocess.Popen:
        """Start ``salt-api`` on this master's config (its netapi blocks go in ``extra``).

        Call after :meth:`start`; waits until each of ``ports`` listens. The
        process is stopped (first) by :meth:`stop`.
        """
        self._spawn(os.path.join(BIN, "salt-api"), "-c", self.conf_dir, "-l", "quiet")
        proc = self.procs[-1]
        for port in ports:
            self.wait_port(port, timeout)
        return proc

    def salt(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(
            [os.path.join(BIN, "salt"), "-c", self.conf_dir, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        ).stdout

    def login(self, username: str = "saltdev", password: str = "saltdev") -> str:
        body = json.dumps({"username": username, "password": password, "eauth": "auto"})
        req = urllib.request.Request(
            self.url + "/login",
            data=body.encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["return"][0]["token"]

    def master_opts_loaded(self) -> dict[str, Any]:
        import salt.config

        return salt.config.master_config(os.path.join(self.conf_dir, "master"))

    def stop(self) -> None:
        leftovers = self._descendants()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self._kill(leftovers)
        if self._out is not None:
            self._out.close()
            self._out = None

    def _descendants(self) -> list[Any]:
        """The daemons' child processes (psutil, if installed), for :meth:`stop`."""
        try:
            import psutil
        except ImportError:
            return []
        found = []
        for proc in self.procs:
            try:
                found.extend(psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                continue
        return found

    @staticmethod
    def _kill(procs: list[Any]) -> None:
        """SIGKILL children that outlived their daemon (salt-api leaves some behind)."""
        if not procs:
            return
        import psutil

        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)


def _user() -> str:
    import getpass

    return getpass.getuser()


@contextlib.contextmanager
def dev_master(
    minions: int = 1,
    engine: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    keep: bool = False,
) -> Iterator[DevMaster]:
    """Start a master (and minions) in a fresh temp dir; stop and clean up after."""
    root = tempfile.mkdtemp(prefix="salt-ws-", dir="/tmp")
    master = DevMaster(root, engine=engine, extra=extra)
    try:
        master.start(minions=minions)
        yield master
    finally:
        master.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
