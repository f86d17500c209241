#!/usr/bin/env python
"""End-to-end fleet benchmark of the formatted view (issue 11) on a real salt-master.

    .venv/bin/python bench/bench_fleet.py [--sizes 10000,50000] [--modes all,view_grains]
                                          [--firers 2] [--json out.json] [--quick]

One master (``scripts/devenv.py``, no real minion) per fleet size, started once per
grains mode (``all``: the engine keeps every grain, as saltnado; ``view_grains``: the
issue's six). The fleet is simulated the way the master itself would know it:

* **accepted keys**: a file per minion in the master's ``pki_dir/minions/`` (Salt
  3008's ``localfs_key`` driver lists a file there as accepted; its content is not read
  for listing), written before the master starts, so the engine's first key read has
  them all (the view admits only accepted ids);
* **grains** in the master's minion data cache, bank ``grains`` (what Salt 3008.4's
  master stores on a minion's ``_pillar``; ``salt_ws.fleet.Fleet.grains`` reads it),
  ~5 KB of realistic grains each (``bench_view.make_grains``);
* **events fired on the real bus** (``salt.utils.event`` master event, from ``--firers``
  processes, ``fire_event_async`` as in ``bench_events.py``): each minion's
  ``salt/minion/<id>/start``, then ``salt/presence/change`` and ``salt/presence/present``
  naming the whole fleet; then a ``salt/job/<jid>/new`` (``test.ping`` on ``*``,
  every minion) and every minion's ``salt/job/<jid>/ret/<id>``, as fast as the bus
  takes them.

``loop_interval`` is 3600: the master's own presence check (no minion is really
connected) runs once at start, and the bench waits for it (its ``presence-data``
cache file) before firing, so it never empties the simulated fleet.

Clients (one process, asyncio, raw RFC 6455 frames): an administrator's delta client
(``?delta=1``) and compat client, both connected before the fleet starts. Reported:

* **complete after last return**: time from the last return fired (the firers'
  clock) to the delta client's patch setting the job's ``state`` to ``complete``
  (target <= 1 s), and the same for the compat client's jobs table;
* **bytes per return event**: what each client received from the first return fired
  to the job's completion, divided by the returns (delta target <= 1 KB); the ``new``
  (the job added with every minion pending) is reported on its own;
* **bytes per start event** during the fleet's arrival (start + presence events);
* **snapshots** of a new delta client (``websocket client ready`` -> first byte, and
  -> the whole message): *cold* (after the fleet arrived; the cached document had been
  invalidated by patches), *warm* (again at once) and *cold with the job* (after it
  completed; target <= 500 ms at 50,000 for the first byte of a cold one);
* engine RSS (start, after the fleet, after the job, peak) and CPU seconds per phase;
  ``ws.status`` ``view_deltas``, ``view_tables``, ``grains`` and ``writes``;
* **check**: the delta client's snapshot with every patch applied (``jsonpatch``)
  equals the compat client's latest tables.

Engine options (``ENGINE_OPTIONS``): ``client_queue_bytes`` 4 GiB (a compat minions
table with every grain is ~225 MB at 50,000 minions, and several may be queued);
everything else is the default (``view_interval`` 0.5, ``max_minions`` 100,000,
``job_timeout`` 600).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, HERE)

from bench_events import (  # noqa: E402
    _handshake_request,
    _http_login,
    _listener,
    _mask_frame,
    parse_frames,
)
from bench_view import VIEW_GRAINS, make_grains, minion_id  # noqa: E402
from devenv import DevMaster  # noqa: E402
from machine import machine_state  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None

READY = b"websocket client ready"
COMPLETE_TARGET_S = 1.0
RETURN_BYTES_TARGET = 1024
SNAPSHOT_TARGET_MS = 500.0  # cold delta snapshot at 50,000 minions
ENGINE_OPTIONS: dict[str, Any] = {"client_queue_bytes": 4 << 30}
# Salt trims an event over max_event_size (default 1 MiB): a new or presence event naming
# 50,000 ids of ~27 characters is ~1.5 MB, and its list becomes "VALUE_TRIMMED"
MAX_EVENT_SIZE = 8 << 20
FAKE_PUB = (
    "-----BEGIN PUBLIC KEY-----\n"
    + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAbenchbenchbenchbenchbe\n" * 6
    + "-----END PUBLIC KEY-----\n"
)

# --------------------------------------------------------------------------
# Firing processes
# --------------------------------------------------------------------------


def firer(k: int, nsrc: int, conf: dict[str, Any], results: Any) -> None:
    """Fire this process's share (index k, k+nsrc, ...) of ``conf["kind"]`` events."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(conf["master_conf"])
    report: dict[str, Any] = {"k": k, "fired": 0, "failed": 0}
    kind, jid, n = conf["kind"], conf.get("jid"), conf["n"]

    def event(i: int) -> tuple[dict[str, Any], str]:
        mid = minion_id(i)
        now = time.time()
        if kind == "start":
            data = {
                "cmd": "_minion_event",
                "data": f"Minion {mid} started at {time.ctime(now)}",
                "id": mid,
                "pretag": None,
                "tag": f"salt/minion/{mid}/start",
                "ts": int(now),
            }
            return data, f"salt/minion/{mid}/start"
        data = {
            "cmd": "_return",
            "fun": "test.ping",
            "fun_args": [],
            "id": mid,
            "jid": jid,
            "retcode": 0,
            "return": True,
            "success": True,
            "ts": int(now),
            "user": "root",
        }
        return data, f"salt/job/{jid}/ret/{mid}"

    async def amain() -> None:
        opts["master_async_mworker"] = True  # the pusher's direct async path
        bus = salt.utils.event.get_master_event(
            opts, opts["sock_dir"], listen=False, io_loop=asyncio.get_running_loop()
        )
        try:
            for i in range(k, n, nsrc):
                data, tag = event(i)
                t = time.time()
                try:
                    await bus.fire_event_async(data, tag)
                except Exception:  # pylint: disable=broad-except
                    report["failed"] += 1
                    continue
                report["fired"] += 1
                report.setdefault("first_t", t)
                report["last_t"] = t  # when the last one was fired (its push began)
        finally:
            bus.destroy()

    try:
        asyncio.run(amain())
    except Exception as exc:  # pylint: disable=broad-except
        report["error"] = repr(exc)
    results.put(report)


def fire_all(master_conf: str, kind: str, n: int, nsrc: int, jid: str | None = None) -> dict:
    """Fire ``n`` events of ``kind`` from ``nsrc`` processes; first/last fire times."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    conf = {"master_conf": master_conf, "kind": kind, "n": n, "jid": jid}
    procs = [ctx.Process(target=firer, args=(k, nsrc, conf, results)) for k in range(nsrc)]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join(30)
    fired = sum(r["fired"] for r in reports)
    first = min((r["first_t"] for r in reports if "first_t" in r), default=None)
    last = max((r["last_t"] for r in reports if "last_t" in r), default=None)
    return {
        "fired": fired,
        "failed": sum(r["failed"] for r in reports),
        "errors": [r["error"] for r in reports if "error" in r],
        "first_t": first,
        "last_t": last,
        "rate": fired / (last - first) if first and last and last > first else None,
    }


# --------------------------------------------------------------------------
# The client process: websocket connections on one asyncio loop, driven by commands
# --------------------------------------------------------------------------


class Conn:
    """One ``/formatted_events`` connection: every text frame's arrival time and size."""

    def __init__(self, name: str, delta: bool) -> None:
        self.name, self.delta = name, delta
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.first: bytes | None = None  # the delta snapshot
        self.patches: list[bytes] = []  # delta: every later message
        self.last: dict[str, bytes] = {}  # compat: latest raw message per table
        self.t_ready = self.t_first_byte = self.t_first = None
        self.watch: str | None = None  # a jid: note when it is added and completed
        self.job_added = self.job_complete = None
        self.grains_rows = 0
        self.close_code: int | None = None
        self.writer: asyncio.StreamWriter | None = None

    def on_message(self, payload: bytes, now: float) -> None:
        self.times.append(now)
        self.sizes.append(len(payload))
        if self.delta:  # rows with grains (added with them, or replaced once they are read)
            self.grains_rows += payload.count(b'"grains":{"')
        if self.t_first is None:
            self.t_first = now
            if self.delta:
                self.first = payload
                return
        if self.delta:
            self.patches.append(payload)
        else:
            table = "minions" if payload.startswith(b'{"minions"') else "jobs"
            self.last[table] = payload
        jid = self.watch
        if jid is None or (self.job_added and self.job_complete):
            return
        if self.delta:
            whole = b'"path":"/jobs/' + jid.encode() + b'"'
            if whole in payload:  # the job added (or replaced) whole: its state is in it
                self.job_added = self.job_added or now
                for op in json.loads(payload)["patch"]:
                    if op["path"] == f"/jobs/{jid}" and op["value"]["state"] == "complete":
                        self.job_complete = now
            state = b'"path":"/jobs/' + jid.encode() + b'/state","value":"complete"'
            if state in payload:
                self.job_complete = now
        elif not payload.startswith(b'{"minions"'):
            job = json.loads(payload)["jobs"].get(jid)
            if job is not None:
                self.job_added = self.job_added or now
                if job["state"] == "complete":
                    self.job_complete = now


async def run_conn(conn: Conn, port: int, path: str, wait: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    conn.writer = writer
    request, _ = _handshake_request("127.0.0.1", port, path)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"{conn.name}: upgrade refused: {head[:200]!r}")
    await asyncio.sleep(wait)  # the token is checked meanwhile: the timing is the snapshot's
    conn.t_ready = time.time()
    writer.write(_mask_frame(0x1, READY))
    buf = bytearray()
    while True:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        if conn.t_first_byte is None:
            conn.t_first_byte = time.time()
        buf += chunk
        frames, used = parse_frames(buf)
        if used:
            del buf[:used]
        now = time.time()
        for b0, payload in frames:
            opcode = b0 & 0x0F
            if opcode == 0x1:
                conn.on_message(payload, now)
            elif opcode == 0x8:
                conn.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                return
            elif opcode == 0x9:  # ping
                writer.write(_mask_frame(0xA, payload))


def check(delta: Conn, compat: Conn) -> dict[str, Any]:
    """The delta snapshot with every patch applied vs the compat client's latest tables."""
    import jsonpatch  # pylint: disable=import-outside-toplevel

    t0 = time.perf_counter()
    first = json.loads(delta.first or b"{}")
    doc, seq = first.get("snapshot"), first.get("seq")
    contiguous = True
    for raw in delta.patches:
        message = json.loads(raw)
        contiguous &= message["seq"] == seq + 1
        seq = message["seq"]
        jsonpatch.apply_patch(doc, message["patch"], in_place=True)
    tables = {t: json.loads(compat.last[t])[t] for t in ("minions", "jobs") if t in compat.last}
    return {
        "equal": doc == tables,
        "seq_contiguous": contiguous,
        "patches": len(delta.patches),
        "minions": len(doc["minions"]) if doc else None,
        "with_grains": sum(bool(m.get("grains")) for m in doc["minions"].values()) if doc else 0,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def client_process(port: int, commands: Any, replies: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        conns: dict[str, Conn] = {}
        tasks: dict[str, asyncio.Task[Any]] = {}
        while True:
            cmd, *args = await loop.run_in_executor(None, commands.get)
            if cmd == "open":
                name, path, delta, wait = args
                conn = conns[name] = Conn(name, delta)
                tasks[name] = asyncio.ensure_future(run_conn(conn, port, path, wait))
                while conn.t_first is None and not tasks[name].done():
                    await asyncio.sleep(0.002)
                if tasks[name].done() and tasks[name].exception():
                    replies.put(("error", repr(tasks[name].exception())))
                    continue
                reply = {"t_ready": conn.t_ready, "t_first_byte": conn.t_first_byte}
                reply.update(t_first=conn.t_first, bytes=conn.sizes[0])
                replies.put(("opened", reply))
            elif cmd == "close":
                [name] = args
                tasks[name].cancel()
                with contextlib.suppress(Exception):
                    conns[name].writer.close()
                conns.pop(name)
                replies.put(("closed", name))
            elif cmd == "watch":
                [jid] = args
                for conn in conns.values():
                    conn.watch = jid
                replies.put(("watching", jid))
            elif cmd == "wait":
                what, names, timeout = args  # "added" / "complete"
                deadline = time.time() + timeout
                attr = "job_added" if what == "added" else "job_complete"
                while time.time() < deadline and not all(getattr(conns[n], attr) for n in names):
                    await asyncio.sleep(0.002)
                replies.put((what, {n: getattr(conns[n], attr) for n in names}))
            elif cmd == "bytes":
                since, until = args
                out = {}
                for name, conn in conns.items():
                    picked = [
                        s
                        for t, s in zip(conn.times, conn.sizes, strict=True)
                        if since <= t <= until
                    ]
                    out[name] = {"bytes": sum(picked), "messages": len(picked)}
                    out[name]["last_message_t"] = conn.times[-1] if conn.times else None
                    out[name]["close_code"] = conn.close_code
                replies.put(("bytes", out))
            elif cmd == "count":
                replies.put(("count", len(conns[args[0]].times)))
            elif cmd == "grains_rows":
                replies.put(("grains_rows", conns[args[0]].grains_rows))
            elif cmd == "check":
                delta, compat = args
                replies.put(("check", check(conns[delta], conns[compat])))
            elif cmd == "quit":
                for task in tasks.values():
                    task.cancel()
                replies.put(("bye",))
                return

    asyncio.run(amain())


class Clients:
    """The client process and its command channel."""

    def __init__(self, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.commands, self.replies = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=client_process, args=(port, self.commands, self.replies))
        self.proc.start()

    def call(self, *cmd: Any, timeout: float = 600.0) -> Any:
        self.commands.put(cmd)
        reply = self.replies.get(timeout=timeout)
        if reply[0] == "error":
            raise RuntimeError(reply[1])
        return reply[1] if len(reply) > 1 else None

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit", timeout=30)
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------
# The master, its fleet and the engine process
# --------------------------------------------------------------------------


def write_fleet(master: DevMaster, n: int) -> dict[str, Any]:
    """Accepted key files and cached grains for ``n`` simulated minions (before start).

    Each minion's ``ipv4`` also lists this host's address: with one connection open to
    the master's publish port from 127.0.0.1 (:class:`Connected`), Salt's
    ``CkMinions.connected_ids`` (the master's presence check, and the engine's re-seed
    after a bus gap) then counts every simulated minion as connected.
    """
    import salt.cache  # pylint: disable=import-outside-toplevel
    import salt.utils.network  # pylint: disable=import-outside-toplevel

    host = salt.utils.network.ip_addrs(include_loopback=False)[:1]

    master.write_config()
    opts = master.master_opts_loaded()
    t0 = time.perf_counter()
    keys = os.path.join(opts["pki_dir"], "minions")
    os.makedirs(keys, mode=0o700, exist_ok=True)
    cache = salt.cache.Cache(opts)
    for i in range(n):
        mid = minion_id(i)
        with open(os.path.join(keys, mid), "w") as fh:
            fh.write(FAKE_PUB)
        grains = make_grains(i)
        grains["ipv4"] = [*grains["ipv4"], *host]
        cache.store("grains", mid, grains)
    return {"seconds": round(time.perf_counter() - t0, 1), "pki_dir": opts["pki_dir"]}


class Connected:
    """One ZeroMQ subscriber on the master's publish port: "the fleet is connected"."""

    def __init__(self, port: int) -> None:
        import zmq  # pylint: disable=import-outside-toplevel

        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.connect(f"tcp://127.0.0.1:{port}")

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


class Sampler:
    """The engine process's RSS, sampled every 0.25 s on a thread (peak kept)."""

    def __init__(self, proc: Any) -> None:
        self.proc, self.peak, self._stop = proc, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, self.rss() or 0.0)

    def rss(self) -> float | None:
        try:
            return round(self.proc.memory_info().rss / 2**20, 1)
        except (psutil.Error, AttributeError):
            return None

    def cpu(self) -> float | None:
        try:
            times = self.proc.cpu_times()
            return times.user + times.system
        except (psutil.Error, AttributeError):
            return None

    def stop(self) -> None:
        self._stop.set()


def engine_status(master: DevMaster) -> dict[str, Any]:
    from salt_ws import status  # pylint: disable=import-outside-toplevel

    path = status.socket_path({"sock_dir": master.master_opts_loaded()["sock_dir"]}, master.ws_port)
    try:
        return status.query(path, timeout=10.0)
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": repr(exc)}


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def fire_one(master: DevMaster, tag: str, data: dict[str, Any]) -> None:
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = master.master_opts_loaded()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        assert bus.fire_event(data, tag), tag


def snapshot_times(clients: Clients, name: str, path: str) -> dict[str, Any]:
    r = clients.call("open", name, path, True, 0.5)
    clients.call("close", name)
    return {
        "first_byte_ms": round((r["t_first_byte"] - r["t_ready"]) * 1000, 1),
        "whole_ms": round((r["t_first"] - r["t_ready"]) * 1000, 1),
        "mb": round(r["bytes"] / 2**20, 2),
    }


def run_mode(n: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One start of the size's master (its fleet written already) in one grains mode."""
    engine = dict(ENGINE_OPTIONS)
    if mode == "view_grains":
        engine["view_grains"] = list(VIEW_GRAINS)
    master = args.masters[n]  # its engine dict is the one in its config's engines list
    master.engine.clear()
    master.engine.update({"port": master.ws_port, "address": "127.0.0.1", "disable_ssl": True})
    master.engine.update(engine)
    out: dict[str, Any] = {"minions": n, "mode": mode, "engine_options": engine}
    opts = master.master_opts_loaded() if os.path.exists(master.conf_dir) else None
    presence_file = os.path.join(opts["cachedir"], "presence-data") if opts else None
    if presence_file and os.path.exists(presence_file):
        os.remove(presence_file)  # the master's own presence check writes it anew
    clients = connected = sampler = None
    try:
        log_at = os.path.getsize(master.master_opts["log_file"])
    except OSError:
        log_at = 0
    try:
        t0 = time.perf_counter()
        master.start(minions=0, timeout=600)
        opts = master.master_opts_loaded()
        presence_file = os.path.join(opts["cachedir"], "presence-data")
        wait_for(lambda: os.path.exists(presence_file), 300, "the master's presence check")
        connected = Connected(master.publish_port)  # from now on, connected_ids() is everyone
        status = wait_for(
            lambda: (s := engine_status(master)).get("running") and s, 300, "ws.status"
        )
        out["start_s"] = round(time.perf_counter() - t0, 1)
        proc = _listener(master.procs[0].pid, master.ws_port)
        sampler = Sampler(proc)
        out["rss_mb"] = {"start": sampler.rss()}
        cpu0 = sampler.cpu()
        token = _http_login(master.ws_port)
        delta_path = f"/formatted_events/{token}?delta=1"
        compat_path = f"/formatted_events/{token}"
        clients = Clients(master.ws_port)
        clients.call("open", "delta", delta_path, True, 0.3)
        clients.call("open", "compat", compat_path, False, 0.3)
        base = status["events_received"]

        # -- the fleet arrives: start events, then presence naming all of it ------------
        t_fleet = time.time()
        fired = fire_all(os.path.join(master.conf_dir, "master"), "start", n, args.firers)
        mids = [minion_id(i) for i in range(n)]
        fire_one(master, "salt/presence/change", {"new": mids, "lost": []})
        fire_one(master, "salt/presence/present", {"present": mids})

        def arrived() -> dict[str, Any] | None:
            s = engine_status(master)
            ok = s.get("events_received", 0) >= base + n + 2 and s.get("minions") == n
            return s if ok and not s["grains"]["wanted"] else None

        status = wait_for(arrived, 900, "the fleet in the view")
        # ws.status' grains.wanted is 0 once the loader took the ids, not once it read
        # them: the delta client counts the rows that came with grains
        wait_for(lambda: clients.call("grains_rows", "delta") >= n, 900, "every minion's grains")
        time.sleep(1.0)  # the compat client's last coalesced tables
        t_fleet_end = time.time()
        got = clients.call("bytes", t_fleet, t_fleet_end)
        cpu1 = sampler.cpu()
        out["fleet"] = {
            "start_events": fired,
            "seconds": round(t_fleet_end - t_fleet, 1),
            "engine_cpu_s": round(cpu1 - cpu0, 1) if cpu0 is not None else None,
            "delta_bytes_per_event": round(got["delta"]["bytes"] / (n + 2)),
            "compat_bytes_per_event": round(got["compat"]["bytes"] / (n + 2)),
            "delta_messages": got["delta"]["messages"],
            "compat_messages": got["compat"]["messages"],
            "compat_close_code": got["compat"]["close_code"],
        }
        out["rss_mb"]["fleet"] = sampler.rss()

        import salt.utils.jid  # pylint: disable=import-outside-toplevel

        # -- a new delta client: cold, then warm; then cold again after a small change ----
        out["snapshot_cold"] = snapshot_times(clients, "snap1", delta_path)
        out["snapshot_warm"] = snapshot_times(clients, "snap2", delta_path)
        again = []
        for k in range(args.repeats):
            seen = clients.call("count", "delta")
            tiny = salt.utils.jid.gen_jid(opts)  # a one-minion job: one patch, the cache stale
            data = {"fun": "test.ping", "jid": tiny, "minions": mids[:1], "tgt": mids[0]}
            fire_one(master, f"salt/job/{tiny}/new", {**data, "tgt_type": "glob", "arg": []})
            wait_for(lambda s=seen: clients.call("count", "delta") > s, 30, "the patch", 0.05)
            again.append(snapshot_times(clients, f"snap-again{k}", delta_path))
        out["snapshot_cold_again"] = again

        # -- the fleet-wide job ------------------------------------------------------------
        jid = salt.utils.jid.gen_jid(opts)
        clients.call("watch", jid)
        new = {
            "arg": [],
            "fun": "test.ping",
            "jid": jid,
            "minions": mids,
            "missing": [],
            "tgt": "*",
            "tgt_type": "glob",
            "user": "root",
        }
        t_new = time.time()
        fire_one(master, f"salt/job/{jid}/new", new)
        added = clients.call("wait", "added", ["delta", "compat"], 120.0)
        new_bytes = clients.call("bytes", t_new, time.time())
        t_rets = time.time()
        cpu2 = sampler.cpu()
        fired = fire_all(os.path.join(master.conf_dir, "master"), "ret", n, args.firers, jid)
        done = clients.call("wait", "complete", ["delta", "compat"], 300.0)
        t_end = max([t for t in done.values() if t] + [time.time()])
        got = clients.call("bytes", t_rets, t_end)
        cpu3 = sampler.cpu()
        last = fired["last_t"]
        out["job"] = {
            "returns": fired,
            "new_added_after_s": {k: round(v - t_new, 3) if v else None for k, v in added.items()},
            "new_delta_bytes": new_bytes["delta"]["bytes"],
            "new_compat_bytes": new_bytes["compat"]["bytes"],
            "complete_after_last_return_s": {
                k: round(v - last, 3) if v and last else None for k, v in done.items()
            },
            "delta_bytes_per_return": round(got["delta"]["bytes"] / n),
            "compat_bytes_per_return": round(got["compat"]["bytes"] / n),
            "delta_messages": got["delta"]["messages"],
            "compat_messages": got["compat"]["messages"],
            "compat_close_code": got["compat"]["close_code"],
            "engine_cpu_s": round(cpu3 - cpu2, 1) if cpu2 is not None else None,
        }
        out["rss_mb"]["job"] = sampler.rss()
        out["snapshot_cold_with_job"] = snapshot_times(clients, "snap3", delta_path)
        time.sleep(1.0)  # the compat client's last coalesced tables
        out["check"] = clients.call("check", "delta", "compat", timeout=1800)
        status = engine_status(master)
        out["status"] = {
            k: status.get(k)
            for k in ("events_received", "minions", "jobs", "view_deltas", "view_tables", "grains")
        }
        out["status"]["writes"] = status.get("writes")
        out["status"]["refused"] = status.get("view_refused") or status.get("refused")
        out["rss_mb"]["peak"] = sampler.peak
        with contextlib.suppress(OSError):
            with open(master.master_opts["log_file"], errors="replace") as fh:
                fh.seek(log_at)
                text = fh.read()  # this run's lines
            out["log"] = {
                "slow_subscriber": text.count("Publisher discarding slow subscriber"),
                "too_slow": text.count("client too slow"),
                "tracebacks": text.count("Traceback"),
                "bus_lost": text.count("lost the master event bus connection"),
            }
    finally:
        if sampler is not None:
            sampler.stop()
        if connected is not None:
            connected.close()
        if clients is not None:
            clients.quit()
        master.stop()
    return out


def print_mode(r: dict[str, Any]) -> None:
    f, j = r.get("fleet", {}), r.get("job", {})
    print(f"\n== {r['minions']:,} minions, grains: {r['mode']} ==")
    if "error" in r:
        print(f"  ERROR {r['error']}")
    print(
        f"  fleet arrival: {f.get('start_events', {}).get('fired')} start events at "
        f"{_f(f.get('start_events', {}).get('rate'), 0)}/s, {f.get('seconds')} s, engine CPU "
        f"{f.get('engine_cpu_s')} s; bytes/event delta {f.get('delta_bytes_per_event')} "
        f"compat {f.get('compat_bytes_per_event')} ({f.get('compat_messages')} compat messages, "
        f"close {f.get('compat_close_code')})"
    )
    for key in ("snapshot_cold", "snapshot_warm", "snapshot_cold_again", "snapshot_cold_with_job"):
        for s in r.get(key) if isinstance(r.get(key), list) else [r.get(key, {})]:
            print(
                f"  {key}: first byte {s.get('first_byte_ms')} ms, whole {s.get('whole_ms')} ms, "
                f"{s.get('mb')} MB"
            )
    rets = j.get("returns", {})
    print(
        f"  job: {rets.get('fired')} returns at {_f(rets.get('rate'), 0)}/s; complete after "
        f"the last return: {j.get('complete_after_last_return_s')}; bytes/return delta "
        f"{j.get('delta_bytes_per_return')} compat {j.get('compat_bytes_per_return')} "
        f"({j.get('delta_messages')} / {j.get('compat_messages')} messages); new: delta "
        f"{j.get('new_delta_bytes')} B compat {j.get('new_compat_bytes')} B; engine CPU "
        f"{j.get('engine_cpu_s')} s"
    )
    print(f"  engine RSS MB: {r.get('rss_mb')}; check: {r.get('check')}")
    print(f"  status: {json.dumps(r.get('status'), default=str)[:600]}")
    print(f"  log: {r.get('log')}")


def _f(x: Any, nd: int = 1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def verdicts(results: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    out = []
    biggest = max((r["minions"] for r in results), default=0)
    for r in results:
        if "job" not in r:
            out.append((False, f"{r['minions']:,}/{r['mode']}: did not finish ({r.get('error')})"))
            continue
        label = f"{r['minions']:,}/{r['mode']}"
        lag = r["job"]["complete_after_last_return_s"].get("delta")
        ok = lag is not None and -0.05 <= lag <= COMPLETE_TARGET_S  # (before it: wrong)
        out.append((ok, f"{label}: complete {lag} s after the last return"))
        per = r["job"]["delta_bytes_per_return"]
        out.append((per <= RETURN_BYTES_TARGET, f"{label}: {per} B per return (delta)"))
        ok = r["check"]["equal"] and r["check"]["seq_contiguous"]
        out.append((ok, f"{label}: patched snapshot == compat tables, seq contiguous"))
        if r["minions"] == biggest:
            ms = r["snapshot_cold"]["first_byte_ms"]
            out.append((ms <= SNAPSHOT_TARGET_MS, f"{label}: cold snapshot {ms} ms (first byte)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--modes", default="all,view_grains")
    parser.add_argument("--firers", type=int, default=2)
    parser.add_argument(
        "--max-event-size",
        type=int,
        default=MAX_EVENT_SIZE,
        help="the master's max_event_size (0: Salt's default, 1 MiB, which trims a new or "
        "presence event naming ~35,000 minions of this bench's ids to VALUE_TRIMMED)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="cold snapshots after a change")
    parser.add_argument("--quick", action="store_true", help="1,000 minions (smoke check)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the masters' root dirs")
    args = parser.parse_args(argv)
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    report: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine_before": machine_state(REPO),
        "results": [],
    }
    ms = report["machine_before"]
    print(f"machine: nproc={ms['nproc']} {ms.get('uptime')} git={ms.get('git')}")
    print(f"  other busy processes: {ms.get('other_busy_processes')}")
    args.masters = {}
    roots = []
    try:
        for n in sizes:
            root = tempfile.mkdtemp(prefix=f"sws-fleet-{n}-", dir="/tmp")
            roots.append(root)
            extra = {"loop_interval": 3600, "auto_accept": False}
            if args.max_event_size:
                extra["max_event_size"] = args.max_event_size
            master = DevMaster(root, engine={}, extra=extra)
            args.masters[n] = master
            written = write_fleet(master, n)
            print(f"\n{n:,} minions: keys and grains written in {written['seconds']} s")
            for mode in modes:
                try:
                    result = run_mode(n, mode, args)
                except (Exception, KeyboardInterrupt) as exc:  # pylint: disable=broad-except
                    result = {"minions": n, "mode": mode, "error": repr(exc)}
                    traceback.print_exc()
                    if isinstance(exc, KeyboardInterrupt):
                        report["results"].append(result)
                        raise
                report["results"].append(result)
                print_mode(result)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if not args.keep:
            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
    report["machine_after"] = machine_state(REPO)
    print(f"\nmachine after: {report['machine_after'].get('uptime')}")
    results = verdicts(report["results"])
    print("\nverdicts:")
    for ok, text in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    report["verdicts"] = [{"pass": ok, "text": text} for ok, text in results]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0 if results and all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
