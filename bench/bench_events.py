#!/usr/bin/env python
"""Event delivery benchmark: the ``ws`` engine vs salt-api's rest_tornado and rest_cherrypy.

One run starts ONE salt-master on 127.0.0.1 (``scripts/devenv.py``) with the
``ws`` engine, plus one salt-api serving ``rest_tornado`` (websockets) and
``rest_cherrypy``. Events are fired on the real master event bus by separate
firing processes; websocket clients (asyncio, a few per process) count what
each target delivers. See ``bench/README.md`` for the scenarios and targets.

    /tmp/v/bin/python bench/bench_events.py [--quick] [--scenario NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from typing import Any, Awaitable, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

from devenv import DevMaster, free_port  # noqa: E402
from machine import machine_state  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None

ENGINE, TORNADO, CHERRYPY = "ws_engine", "rest_tornado", "rest_cherrypy"
TARGETS = (ENGINE, TORNADO, CHERRYPY)
BUS = "bus_direct"  # optional baseline: Salt's own bus subscriber, no websocket
READY = "websocket client ready"
SLOW_SUBSCRIBER = "Publisher discarding slow subscriber"
CLOSE_TOO_SLOW = 4001  # salt_ws.wire.CLOSE_TOO_SLOW

# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Scenario:
    name: str
    events: int  # events fired per target run
    clients: int  # live clients per target
    targets: tuple[str, ...]
    rate: float | None = None  # total events/s (paced); None: as fast as the firers can
    firers: int = 2
    stalled: int = 0  # clients that connect, say ready, then never read (engine only)
    text: str = ""
    filters: int = 0  # clients split over this many distinct ?tag= filters (0: none)
    per_proc: int | None = None  # clients per client process (default: --clients-per-proc)
    resume: bool = False  # the resume scenario (run_resume), not run_target


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("burst10k_1client", 2000, 1, TARGETS, text="burst, 1 client/target"),
            Scenario("burst5k_20clients", 1000, 5, TARGETS, text="burst, 5 clients/target"),
            Scenario("steady_50clients", 300, 10, TARGETS, rate=100.0, text="100 ev/s for 3 s"),
            Scenario("stalled_1_of_20", 25000, 4, (ENGINE,), stalled=1, text="1 stalled + 4 live"),
            Scenario("steady_200clients", 300, 40, (ENGINE,), rate=100.0, per_proc=20),
            Scenario("filtered_500clients", 300, 50, (ENGINE,), rate=100.0, filters=5, per_proc=25),
            Scenario("resume_10k", 2000, 1, (ENGINE,), rate=200.0, resume=True),
        ]
    return [
        Scenario("burst10k_1client", 10_000, 1, TARGETS, text="burst, 1 client/target"),
        Scenario("burst5k_20clients", 5_000, 20, TARGETS, text="burst, 20 clients/target"),
        Scenario("steady_50clients", 2_000, 50, TARGETS, rate=200.0, text="200 ev/s for 10 s"),
        Scenario("stalled_1_of_20", 50_000, 19, (ENGINE,), stalled=1, text="1 stalled + 19 live"),
        Scenario(
            "steady_200clients",
            2_000,
            200,
            (ENGINE,),
            rate=200.0,
            per_proc=20,
            text="200 ev/s, 10 s",
        ),
        Scenario(
            "filtered_500clients",
            2_000,
            500,
            (ENGINE,),
            rate=200.0,
            filters=5,
            per_proc=25,
            text="200 ev/s for 10 s; 5 ?tag= filters, each matching a fifth of the events",
        ),
        # 10,000 events missed, then ?since= while 200 ev/s keep coming (run_resume)
        Scenario("resume_10k", 10_000, 1, (ENGINE,), rate=200.0, resume=True),
    ]


# --------------------------------------------------------------------------
# A small RFC 6455 client (asyncio), fast enough not to be the bottleneck
# --------------------------------------------------------------------------


def _mask_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def _handshake_request(host: str, port: int, path: str) -> tuple[bytes, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return req.encode(), key


def parse_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete frames at the start of ``buf`` as (opcode, payload); bytes consumed."""
    frames = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        n = b1 & 0x7F
        hdr = 2
        if n == 126:
            if size - pos < 4:
                break
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            hdr = 4
        elif n == 127:
            if size - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            hdr = 10
        if b1 & 0x80:
            hdr += 4  # servers do not mask; tolerate it anyway
        if size - pos < hdr + n:
            break
        payload = bytes(buf[pos + hdr : pos + hdr + n])
        if b1 & 0x80:
            mask = buf[pos + hdr - 4 : pos + hdr]
            payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        frames.append((b0, payload))
        pos += hdr + n
    return frames, pos


class Client:
    """One websocket client: connects, says ready, records every bench event."""

    def __init__(self, idx: int, spec: dict[str, Any], shared: dict[str, Any]) -> None:
        self.idx = idx
        self.spec = spec
        self.shared = shared
        self.host, self.port = spec["host"], spec["port"]
        self.path = spec["paths"][idx]
        self.strip = spec["strip"].encode()
        self.marker = f"bench/{spec['run']}/".encode()
        self.probe_marker = f"benchprobe/{spec['run']}/".encode()
        filters = spec.get("filters") or 0
        # a filtered client gets the events whose seq % filters is its class (see filter_paths)
        self.expected = (
            len(range(idx % filters, spec["expected"], filters)) if filters else spec["expected"]
        )
        self.seen = bytearray(spec["expected"])
        self.last_seq: dict[int, int] = {}
        self.lat = array.array("d")
        self.fire_t = array.array("d")  # each delivered event's firing time (beside lat)
        self.delivered = self.dups = self.out_of_order = self.other = 0
        self.first_recv = self.last_recv = None
        self.max_t = -1.0
        self.max_t_recv = None
        self.max_t_seq = None
        self.ready = False
        self.connected = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.error = ""
        self.timed_out = False
        self.eof = False
        self._frag: list[bytes] = []
        self._frag_op = 0

    def result(self) -> dict[str, Any]:
        return {
            "idx": self.idx,
            "expected": self.expected,
            "connected": self.connected,
            "ready": self.ready,
            "delivered": self.delivered,
            "dups": self.dups,
            "out_of_order": self.out_of_order,
            "other_messages": self.other,
            "first_recv": self.first_recv,
            "last_recv": self.last_recv,
            "max_t": self.max_t if self.max_t >= 0 else None,
            "max_t_recv": self.max_t_recv,
            "max_t_seq": self.max_t_seq,
            "lat": self.lat.tobytes(),
            "fire_t": self.fire_t.tobytes(),
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "eof": self.eof,
            "error": self.error,
            "timed_out": self.timed_out,
        }

    def on_text(self, payload: bytes, now: float) -> None:
        if self.marker not in payload:
            if self.probe_marker in payload:
                self.on_probe()
            else:
                self.other += 1
            return
        if self.strip and payload.startswith(self.strip):
            payload = payload[len(self.strip) :]
        self.on_event(json.loads(payload)["data"], now)

    def on_probe(self) -> None:
        if not self.ready:
            self.ready = True
            with self.shared["ready"].get_lock():
                self.shared["ready"].value += 1

    def on_event(self, data: dict[str, Any], now: float) -> None:
        seq, src, t = data["seq"], data["src"], data["t"]
        if self.seen[seq]:
            self.dups += 1
            return
        self.seen[seq] = 1
        self.delivered += 1
        if seq <= self.last_seq.get(src, -1):
            self.out_of_order += 1
        self.last_seq[src] = seq
        self.lat.append(now - t)
        self.fire_t.append(t)
        if self.first_recv is None:
            self.first_recv = now
        self.last_recv = now
        if t > self.max_t:
            self.max_t, self.max_t_recv, self.max_t_seq = t, now, seq

    def finished(self, now: float) -> bool:
        shared = self.shared
        if shared["abort"].is_set():
            return True
        if self.delivered >= self.expected:
            return True
        if now > shared["hard_deadline"]:
            self.timed_out = True
            return True
        if shared["fire_done"].is_set():
            done_at = shared["fire_done_at"].value
            last = max(done_at, self.last_recv or 0.0)
            if now - last > self.spec["settle"] or now - done_at > self.spec["drain_max"]:
                return True
        return False

    async def run(self) -> None:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 22), 30
            )
            req, _ = _handshake_request(self.host, self.port, self.path)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b"\r\n", 1)[0]
            if b" 101" not in status:
                self.error = f"handshake refused: {status.decode(errors='replace')}"
                return
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connected = True
            writer.write(_mask_frame(0x1, READY.encode()))
            await self._read_loop(reader, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None:
                with contextlib.suppress(Exception):
                    if self.close_code is None and not self.eof:
                        writer.write(_mask_frame(0x8, struct.pack("!H", 1000)))
                    writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 0.25)
            except asyncio.TimeoutError:
                chunk = None
            now = time.time()
            if chunk == b"":
                self.eof = True
                return
            if chunk:
                buf += chunk
                frames, used = parse_frames(buf)
                if used:
                    del buf[:used]
                for b0, payload in frames:
                    opcode = b0 & 0x0F
                    fin = b0 & 0x80
                    if opcode == 0x0:  # continuation
                        self._frag.append(payload)
                        if fin:
                            payload, opcode = b"".join(self._frag), self._frag_op
                            self._frag = []
                        else:
                            continue
                    elif opcode in (0x1, 0x2) and not fin:
                        self._frag, self._frag_op = [payload], opcode
                        continue
                    if opcode in (0x1, 0x2):
                        self.on_text(payload, now)
                    elif opcode == 0x8:
                        if len(payload) >= 2:
                            self.close_code = struct.unpack("!H", payload[:2])[0]
                            self.close_reason = payload[2:].decode("utf-8", "replace")
                        else:
                            self.close_code = 1005
                        with contextlib.suppress(Exception):
                            writer.write(_mask_frame(0x8, payload[:2]))
                        return
                    elif opcode == 0x9:
                        writer.write(_mask_frame(0xA, payload))
            if self.finished(now):
                return


def _run_and_report(
    wid: int, clients: list[Client], main: Callable[[], Awaitable[None]], shared: dict[str, Any]
) -> None:
    """Run a worker's loop; send its CPU/wall time and every client's result to the parent."""
    cpu0, wall0 = time.process_time(), time.time()
    try:
        asyncio.run(main())
    except Exception as exc:  # pylint: disable=broad-except
        for c in clients:
            c.error = c.error or f"worker failed: {exc!r}"
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    shared["results"].put(
        ("clients", wid, {"cpu_s": cpu, "wall_s": wall}, [c.result() for c in clients])
    )


def client_worker(wid: int, idxs: list[int], spec: dict[str, Any], shared: dict[str, Any]) -> None:
    """A client process: a few clients on one asyncio loop; one result message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and aborts us
    clients = [Client(i, spec, shared) for i in idxs]

    async def main() -> None:
        await asyncio.gather(*(c.run() for c in clients))

    _run_and_report(wid, clients, main, shared)


def bus_worker(wid: int, idxs: list[int], spec: dict[str, Any], shared: dict[str, Any]) -> None:
    """Baseline: subscribers on the master event bus itself (Salt's client, no websocket).

    Each "client" is its own bus subscription, read the way the engine's bus
    thread reads it (``set_event_handler``); the latency it sees is what the
    bus alone costs on this machine.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(spec["master_conf"])
    clients = [Client(i, spec, shared) for i in idxs]
    bench = f"bench/{spec['run']}/"
    probe = f"benchprobe/{spec['run']}/"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        events = []
        for client in clients:
            event = salt.utils.event.get_master_event(
                opts, opts["sock_dir"], listen=True, io_loop=loop
            )

            def handler(raw: bytes, client: Client = client, event: Any = event) -> Any:
                async def on_message() -> None:
                    tag, data = event.unpack(raw)
                    if tag.startswith(bench):
                        client.on_event(data, time.time())
                    elif tag.startswith(probe):
                        client.on_probe()

                return on_message()

            event.set_event_handler(handler)
            client.connected = True
            events.append(event)
        try:
            while not all(c.finished(time.time()) for c in clients):
                await asyncio.sleep(0.1)
        finally:
            for event in events:
                event.destroy()

    _run_and_report(wid, clients, main, shared)


# --------------------------------------------------------------------------
# Firing processes: the real master event bus
# --------------------------------------------------------------------------


def firer_worker(k: int, conf: dict[str, Any], shared: dict[str, Any]) -> None:
    """Fire this process's share of the events (seq = k, k+nsrc, ...)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(conf["master_conf"])
    run, nsrc, total = conf["run"], conf["nsrc"], conf["events"]
    rate = conf["rate"]
    filters = conf.get("filters") or 0
    pad = "x" * conf["pad"]
    report: dict[str, Any] = {"k": k, "fired": 0, "failed": 0, "errors": []}

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        if conf["api"] == "async":
            # The pusher's direct async path (what async MWorkers use): same IPC
            # push socket and bytes as fire_event, minus a thread per call.
            opts["master_async_mworker"] = True
            event = salt.utils.event.get_master_event(
                opts, opts["sock_dir"], listen=False, io_loop=loop
            )

            async def fire(data: dict, tag: str) -> None:
                await event.fire_event_async(data, tag)

        else:
            event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)

            async def fire(data: dict, tag: str) -> None:
                if event.fire_event(data, tag) is False:
                    raise RuntimeError("fire_event returned False")

        try:
            shared["results"].put(("firer_ready", k))
            n = 0
            while not shared["go"].is_set():
                if shared["abort"].is_set():
                    return
                if k == 0:  # probes: clients count as ready once they see one
                    await fire({"probe": n}, f"benchprobe/{run}/{n}")
                    n += 1
                await asyncio.sleep(0.2)
            t_go = shared["go_at"].value
            per_src = rate / nsrc if rate else None
            for i, seq in enumerate(range(k, total, nsrc)):
                if per_src:
                    delay = t_go + (i + k / nsrc) / per_src - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif i % 512 == 0 and shared["abort"].is_set():
                    return
                t = time.time()
                try:
                    tag = f"bench/{run}/{seq % filters}/{seq}" if filters else f"bench/{run}/{seq}"
                    await fire({"seq": seq, "src": k, "t": t, "pad": pad}, tag)
                except Exception as exc:  # pylint: disable=broad-except
                    report["failed"] += 1
                    if len(report["errors"]) < 5:
                        report["errors"].append(f"{seq}: {exc!r}")
                    continue
                if report["fired"] == 0:
                    report["first_t"] = t
                report["fired"] += 1
                report["last_t"], report["last_seq"] = t, seq
            report["end"] = time.time()
        finally:
            event.destroy()

    try:
        asyncio.run(amain())
    except Exception as exc:  # pylint: disable=broad-except
        report["errors"].append(f"firer crashed: {exc!r}")
    shared["results"].put(("fired", k, report))


# --------------------------------------------------------------------------
# A client that stalls: connects, says ready, never reads (raw blocking socket)
# --------------------------------------------------------------------------


class StalledClient:
    def __init__(self, host: str, port: int, path: str, rcvbuf: int) -> None:
        self.sock = socket.socket()
        # Before connect, so the advertised window stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.sock.settimeout(30)
        self.sock.connect((host, port))
        req, _ = _handshake_request(host, port, path)
        self.sock.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: leave every frame in the kernel buffer
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if b" 101" not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head[:80]!r}")
        self.sock.sendall(_mask_frame(0x1, READY.encode()))
        self.connected_at = time.time()

    def drain_until_close(self, timeout: float = 30.0) -> dict[str, Any]:
        """Read everything until a close frame, EOF or reset; report what ended it."""
        out: dict[str, Any] = {"messages": 0, "bytes": 0, "close_code": None, "close_reason": ""}
        out["read_started"] = time.time()
        buf = bytearray()
        deadline = time.monotonic() + timeout
        self.sock.settimeout(2.0)
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = self.sock.recv(1 << 20)
                except TimeoutError:
                    continue
                if not chunk:
                    out["ended_by"] = "EOF without a close frame"
                    return out
                out["bytes"] += len(chunk)
                buf += chunk
                frames, used = parse_frames(buf)
                del buf[:used]
                for b0, payload in frames:
                    opcode = b0 & 0x0F
                    if opcode == 0x8:
                        if len(payload) >= 2:
                            out["close_code"] = struct.unpack("!H", payload[:2])[0]
                            out["close_reason"] = payload[2:].decode("utf-8", "replace")
                        out["ended_by"] = "close frame"
                        return out
                    if opcode in (0x1, 0x2, 0x0):
                        out["messages"] += 1
            out["ended_by"] = f"timeout ({timeout}s)"
            return out
        except ConnectionResetError:
            out["ended_by"] = "connection reset (RST) without a close frame"
            return out
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()


# --------------------------------------------------------------------------
# The environment: one master + salt-api
# --------------------------------------------------------------------------


def _http_login(port: int) -> str:
    body = json.dumps({"username": "bench", "password": "bench", "eauth": "auto"}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/login",
        data=body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["return"][0]["token"]


def _listener(root_pid: int, port: int) -> Any:
    """The process (root or a descendant) listening on ``port``."""
    if psutil is None:
        return None
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.Error, ValueError):
        return None
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return proc
        except psutil.Error:
            continue
    return None


# Engine options of the benchmark's master (README, "How it measures"): every client is the
# same eauth user on 127.0.0.1, so the per-user and per-address limits are raised; the resume
# scenario misses 10,000 events while the bus carries other events too (probes, presence), so
# the history holds 20,000 (its default, 10,000, would make that resume a "too old" gap).
BENCH_ENGINE_OPTIONS = {
    "max_connections_per_user": 2000,
    "max_http_connections": 2000,
    "max_http_connections_per_address": 2000,
    "history_size": 20_000,
}


class Env:
    def __init__(self, root: str, engine: dict[str, Any] | None = None) -> None:
        self.tornado_port = free_port()
        self.cherrypy_port = free_port()
        self.master = DevMaster(
            root,
            engine={**BENCH_ENGINE_OPTIONS, **(engine or {})},
            extra={
                "log_level_logfile": "info",
                "rest_tornado": {
                    "port": self.tornado_port,
                    "address": "127.0.0.1",
                    "disable_ssl": True,
                    "websockets": True,
                },
                "rest_cherrypy": {
                    "port": self.cherrypy_port,
                    "host": "127.0.0.1",
                    "disable_ssl": True,
                },
            },
        )
        self.log_path = os.path.join(root, "master.log")
        self.api_log_path = os.path.join(root, "var", "log", "salt", "api")
        self.tokens: dict[str, list[str]] = {}
        self.procs: dict[str, Any] = {}
        self.sock_dir = ""
        self._event: Any = None

    @property
    def master_conf(self) -> str:
        return os.path.join(self.master.conf_dir, "master")

    def port(self, target: str) -> int:
        if target == BUS:
            return 0
        return {
            ENGINE: self.master.ws_port,
            TORNADO: self.tornado_port,
            CHERRYPY: self.cherrypy_port,
        }[target]

    def start(self, api: bool = True) -> None:
        self.master.start(minions=0)
        if api:
            self.master.start_api([self.tornado_port, self.cherrypy_port], timeout=120)
        for target in TARGETS if api else (ENGINE,):
            self.tokens[target] = [_http_login(self.port(target))]
        self.sock_dir = self.master.master_opts_loaded()["sock_dir"]
        self.refresh_procs()

    def refresh_procs(self) -> None:
        master_pid = self.master.procs[0].pid
        api_pid = self.master.procs[-1].pid if len(self.master.procs) > 1 else -1
        self.procs = {
            ENGINE: _listener(master_pid, self.master.ws_port),
            TORNADO: _listener(api_pid, self.tornado_port),
            CHERRYPY: _listener(api_pid, self.cherrypy_port),
        }

    def paths(self, target: str, n: int, first: int = 0) -> list[str]:
        """Websocket paths for clients ``first`` .. ``first + n - 1``, one login each.

        Each client has a token (a session for rest_cherrypy) of its own, as
        separate users' dashboards would: the engine limits connections per
        token (``max_connections_per_token``, default 20).
        """
        if target == BUS:
            return [""] * n
        tokens = self.tokens[target]
        while len(tokens) < first + n:
            tokens.append(_http_login(self.port(target)))
        if target == CHERRYPY:
            return [f"/ws/{token}" for token in tokens[first : first + n]]
        return [f"/all_events/{token}" for token in tokens[first : first + n]]

    def log_offset(self, path: str | None = None) -> int:
        try:
            return os.path.getsize(path or self.log_path)
        except OSError:
            return 0

    def log_since(self, offset: int, path: str | None = None) -> str:
        try:
            with open(path or self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def engine_status(self) -> dict[str, Any]:
        try:
            from salt_ws import status  # pylint: disable=import-outside-toplevel

            path = status.socket_path({"sock_dir": self.sock_dir}, self.master.ws_port)
            return status.query(path, timeout=2.0)
        except Exception as exc:  # pylint: disable=broad-except
            return {"error": repr(exc)}

    def fire(self, tag: str, data: dict[str, Any]) -> None:
        """One event from this process (housekeeping only, never measured)."""
        if self._event is None:
            import salt.utils.event  # pylint: disable=import-outside-toplevel

            opts = self.master.master_opts_loaded()
            self._event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
        with contextlib.suppress(Exception):
            self._event.fire_event(data, tag)

    def close(self) -> None:
        if self._event is not None:
            with contextlib.suppress(Exception):
                self._event.destroy()
            self._event = None

    def cherrypy_children(self) -> int:
        proc = self.procs.get(CHERRYPY)
        if proc is None:
            return 0
        n = 0
        try:
            children = proc.children()
        except psutil.Error:
            return 0
        for child in children:  # exited but not yet reaped ones do not count
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    n += 1
        return n


def proc_mem_cpu(proc: Any) -> tuple[float | None, float | None]:
    if proc is None:
        return None, None
    try:
        times = proc.cpu_times()
        return proc.memory_info().rss / 2**20, times.user + times.system
    except psutil.Error:
        return None, None


# --------------------------------------------------------------------------
# Machine state
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# One scenario against one target
# --------------------------------------------------------------------------


ALONGSIDE = 1_000_000  # worker id of the bus subscriber run beside the engine's clients


def _latency(r: dict[str, Any]) -> dict[str, Any]:
    """p50/p99/max (ms) and count of one client's result (its latencies unpacked)."""
    lat = array.array("d")
    lat.frombytes(r.get("lat", b""))
    ordered = sorted(lat)
    return {
        "delivered": r.get("delivered"),
        "p50_ms": _ms(pct(ordered, 0.50)),
        "p99_ms": _ms(pct(ordered, 0.99)),
        "max_ms": _ms(ordered[-1] if ordered else None),
    }


def worst_windows(pairs: list[tuple[float, float]], first: float, n: int = 5) -> list[Any]:
    """The ``n`` 100-ms windows of firing time whose events were delivered latest.

    ``pairs``: (firing time, latency s) of every delivered event of every client. Each
    window: [its start in s after the first firing, the worst latency in it (ms), how many
    deliveries of it took over 25 ms]. A stall of the engine (or of the machine) shows as
    one window with every client late.
    """
    windows: dict[int, list[float]] = {}
    for t, lat in pairs:
        w = windows.setdefault(int((t - first) * 10), [0.0, 0])
        w[0] = max(w[0], lat)
        w[1] += lat > 0.025
    ranked = sorted(windows.items(), key=lambda kv: -kv[1][0])[:n]
    return [[k / 10, round(v[0] * 1000, 1), int(v[1])] for k, v in ranked]


def pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def filter_paths(paths: list[str], run: str, filters: int) -> list[str]:
    """Client ``i`` asks for the events of class ``i % filters`` (and the ready probes).

    With ``filters`` classes the firers tag event ``seq`` ``bench/<run>/<seq % filters>/<seq>``,
    so the clients form ``filters`` groups of distinct filter sets, each due a fifth (for 5)
    of the events.
    """
    if not filters:
        return paths
    return [
        f"{path}?tag=bench/{run}/{i % filters}/*&tag=benchprobe/{run}/*"
        for i, path in enumerate(paths)
    ]


def run_target(env: Env, sc: Scenario, target: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    run = f"{args.session}-{sc.name}-{target}"
    host, port = "127.0.0.1", env.port(target)
    n_live = 1 if target == BUS else sc.clients  # the bus baseline: one subscription
    fire_time = sc.events / sc.rate if sc.rate else sc.events / 300.0  # generous
    shared = {
        "ready": ctx.Value("i", 0),
        "go": ctx.Event(),
        "go_at": ctx.Value("d", 0.0),
        "fire_done": ctx.Event(),
        "fire_done_at": ctx.Value("d", 0.0),
        "abort": ctx.Event(),
        "results": ctx.Queue(),
        "hard_deadline": time.time() + args.ready_timeout + fire_time + args.drain_max + 120,
    }
    spec = {
        "host": host,
        "port": port,
        "paths": filter_paths(env.paths(target, n_live), run, sc.filters),
        "filters": sc.filters if target != BUS else 0,  # the bus baseline gets every event
        "strip": "data: " if target == CHERRYPY else "",
        "run": run,
        "expected": sc.events,
        "settle": args.settle,
        "drain_max": args.drain_max,
        "master_conf": env.master_conf,
    }
    fconf = {
        "master_conf": env.master_conf,
        "run": run,
        "nsrc": sc.firers,
        "events": sc.events,
        "rate": sc.rate,
        "pad": args.pad,
        "api": args.fire_api,
        "filters": sc.filters,
    }
    out: dict[str, Any] = {"target": target, "run": run, "clients": n_live, "stalled": sc.stalled}
    procs: list[Any] = []
    stalled: list[StalledClient] = []
    log_off = env.log_offset()
    api_log_off = env.log_offset(env.api_log_path)
    env.refresh_procs()
    engine = env.procs.get(ENGINE)
    server = env.procs.get(target)
    cp_children0 = env.cherrypy_children() if target == CHERRYPY else None
    try:
        for k in range(sc.firers):
            procs.append(ctx.Process(target=firer_worker, args=(k, fconf, shared), daemon=True))
        per_proc = args.clients_per_proc or sc.per_proc or 5
        groups = [list(range(i, min(i + per_proc, n_live))) for i in range(0, n_live, per_proc)]
        for wid, idxs in enumerate(groups):
            worker = bus_worker if target == BUS else client_worker
            procs.append(ctx.Process(target=worker, args=(wid, idxs, spec, shared), daemon=True))
        # the bare bus subscriber beside the engine's clients, at the same time (same load)
        alongside = target == ENGINE and BUS in args.target_list and not sc.stalled
        if alongside:
            bus_spec = {**spec, "paths": [""], "filters": 0}
            procs.append(
                ctx.Process(target=bus_worker, args=(ALONGSIDE, [0], bus_spec, shared), daemon=True)
            )
        for p in procs:
            p.start()
        for _ in range(sc.stalled):
            stalled.append(
                StalledClient(
                    host, port, env.paths(target, 1, first=n_live)[0], rcvbuf=args.stalled_rcvbuf
                )
            )
        # Wait for firers to load and every live client to see a probe event.
        results: dict[str, Any] = {"fired": {}, "clients": {}, "workers": {}}
        firers_ready: set[int] = set()

        def pump(timeout: float) -> None:
            try:
                msg = shared["results"].get(timeout=timeout)
            except queue.Empty:
                return
            if msg[0] == "firer_ready":
                firers_ready.add(msg[1])
            elif msg[0] == "fired":
                results["fired"][msg[1]] = msg[2]
            elif msg[0] == "clients" and msg[1] == ALONGSIDE:
                results["alongside"] = msg[3][0]
            elif msg[0] == "clients":
                results["workers"][msg[1]] = msg[2]
                for r in msg[3]:
                    results["clients"][r["idx"]] = r

        deadline = time.monotonic() + args.ready_timeout
        while time.monotonic() < deadline:
            pump(0.1)
            if shared["ready"].value >= n_live + alongside and len(firers_ready) == sc.firers:
                break
        out["ready_clients"] = shared["ready"].value
        out["ready_wait_s"] = round(args.ready_timeout - (deadline - time.monotonic()), 2)
        if target == ENGINE:
            out["status_before"] = env.engine_status()
        rss0, cpu0 = proc_mem_cpu(engine)
        srss0, scpu0 = proc_mem_cpu(server)
        rss_peak = rss0
        spy = start_py_spy(args, engine, run) if target == ENGINE else None
        shared["go_at"].value = time.time() + 0.05
        shared["go"].set()
        # Firing.
        fire_deadline = time.monotonic() + fire_time * 3 + 120
        while len(results["fired"]) < sc.firers and time.monotonic() < fire_deadline:
            pump(0.25)
            rss, _ = proc_mem_cpu(engine)
            if rss is not None and (rss_peak is None or rss > rss_peak):
                rss_peak = rss
        shared["fire_done_at"].value = time.time()
        shared["fire_done"].set()
        # Delivery.
        collect_deadline = time.monotonic() + args.drain_max + args.settle + 30
        while (
            len(results["workers"]) < len(groups) or (alongside and "alongside" not in results)
        ) and time.monotonic() < collect_deadline:
            pump(0.25)
            rss, _ = proc_mem_cpu(engine)
            if rss is not None and (rss_peak is None or rss > rss_peak):
                rss_peak = rss
        out["profile"] = stop_py_spy(spy)
        rss1, cpu1 = proc_mem_cpu(engine)
        srss1, scpu1 = proc_mem_cpu(server)
        if target == ENGINE:
            out["status_after"] = env.engine_status()
            out["writes"] = _delta(out["status_before"], out["status_after"], "writes")
        if sc.stalled:
            out["stalled_clients"] = [s.drain_until_close(args.stalled_drain) for s in stalled]
            for s, r in zip(stalled, out["stalled_clients"], strict=True):
                r["rcvbuf"] = s.rcvbuf
            stalled = []
        out["engine_rss_mb"] = {"before": rss0, "after": rss1, "peak": rss_peak}
        out["engine_cpu_s"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        out["server_cpu_s"] = None if scpu0 is None or scpu1 is None else scpu1 - scpu0
        out["server_rss_mb"] = {"before": srss0, "after": srss1}
        out["fired"] = results["fired"]
        out["client_results"] = results["clients"]
        if results.get("alongside"):
            out["alongside"] = _latency(results["alongside"])
        out["workers"] = results["workers"]
    finally:
        shared["abort"].set()
        for s in stalled:
            with contextlib.suppress(OSError):
                s.sock.close()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
    if target == CHERRYPY:
        # ws4py per-connection processes end at their next send after the close.
        # Fire a few unrelated events so that they notice their closed socket.
        deadline = time.monotonic() + 20
        n = 0
        while env.cherrypy_children() > (cp_children0 or 0) and time.monotonic() < deadline:
            env.fire(f"benchflush/{run}/{n}", {"flush": n})
            n += 1
            time.sleep(0.5)
        out["cherrypy_children_left"] = env.cherrypy_children() - (cp_children0 or 0)
    logtext = env.log_since(log_off)
    api_lines = [
        line[:300]
        for line in env.log_since(api_log_off, env.api_log_path).splitlines()
        if "[WARNING " in line or "[ERROR " in line or "[CRITICAL" in line
    ]
    out["api_log"] = {"warnings_errors": len(api_lines), "lines": api_lines[:10]}
    for st in out.get("stalled_clients", []):
        cut_at = _log_time(logtext, "client too slow")
        st["cut_at"] = cut_at
        st["read_started_after_cut_s"] = st["read_started"] - cut_at if cut_at else None
    out["log"] = {
        "slow_subscriber_discards": logtext.count(SLOW_SUBSCRIBER),
        "salt_ws_cut_lines": logtext.count("client too slow"),
        "salt_ws_bus_lost_lines": logtext.count("lost the master event bus connection"),
        "lines": [
            line[:300]
            for line in logtext.splitlines()
            if SLOW_SUBSCRIBER in line or ("salt_ws" in line and "WARNING" in line)
        ][:20],
    }
    out = summarize(out, sc)
    delivered = out["agg"]["delivered_total"]
    cpu = out.get("engine_cpu_s") if target == ENGINE else None
    out["agg"]["engine_cpu_us_per_msg"] = cpu / delivered * 1e6 if cpu and delivered else None
    prof = out.get("profile") or {}
    if cpu and prof.get("stages"):
        busy = sum(share for name, share in prof["stages"].items() if name != "idle")
        out["stage_us_per_msg"] = {
            name: round(cpu * 1e6 / delivered * share / busy, 2)
            for name, share in prof["stages"].items()
            if name != "idle" and busy
        }
    return out


def _delta(before: dict[str, Any], after: dict[str, Any], key: str) -> dict[str, int] | None:
    """``after[key] - before[key]`` for a ws.status dict of counters (None if absent)."""
    a, b = after.get(key), before.get(key)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    return {k: v - b.get(k, 0) for k, v in a.items() if isinstance(v, int)}


def _log_time(text: str, needle: str) -> float | None:
    """Epoch time of the first log line containing ``needle`` (Salt's log format)."""
    for line in text.splitlines():
        if needle in line:
            with contextlib.suppress(ValueError):
                stamp = time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
                return time.mktime(stamp) + int(line[20:23]) / 1000.0
    return None


def summarize(out: dict[str, Any], sc: Scenario) -> dict[str, Any]:
    fired = out.get("fired", {})
    n_fired = sum(f.get("fired", 0) for f in fired.values())
    firsts = [f["first_t"] for f in fired.values() if "first_t" in f]
    lasts = [(f["last_t"], f["last_seq"]) for f in fired.values() if "last_t" in f]
    first_fire = min(firsts) if firsts else None
    last_fire_t, last_fire_seq = max(lasts) if lasts else (None, None)
    out["fire"] = {
        "fired": n_fired,
        "failed": sum(f.get("failed", 0) for f in fired.values()),
        "errors": [e for f in fired.values() for e in f.get("errors", [])][:5],
        "rate": (
            n_fired / (last_fire_t - first_fire)
            if first_fire and last_fire_t and last_fire_t > first_fire
            else None
        ),
        "first_t": first_fire,
        "last_t": last_fire_t,
        "last_seq": last_fire_seq,
    }
    per_client = []
    all_lat: list[float] = []
    pairs: list[tuple[float, float]] = []
    for idx in sorted(out.get("client_results", {})):
        r = out["client_results"][idx]
        lat = array.array("d")
        lat.frombytes(r.pop("lat"))
        fire_t = array.array("d")
        fire_t.frombytes(r.pop("fire_t", b""))
        pairs.extend(zip(fire_t, lat, strict=True))
        lat_sorted = sorted(lat)
        all_lat.extend(lat)
        span = (r["last_recv"] - first_fire) if r["last_recv"] and first_fire else None
        lag = None
        if r["max_t_seq"] is not None and r["max_t_seq"] == last_fire_seq:
            lag = r["max_t_recv"] - r["max_t"]
        due = r.get("expected", sc.events)
        if n_fired != sc.events:  # not all fired: the client's share of what was
            due = round(due * n_fired / sc.events)
        per_client.append(
            {
                "client": idx,
                "ready": r["ready"],
                "expected": due,
                "delivered": r["delivered"],
                "lost": due - r["delivered"],
                "dups": r["dups"],
                "out_of_order": r["out_of_order"],
                "in_order": r["out_of_order"] == 0,
                "msg_s": r["delivered"] / span if span else None,
                "p50_ms": _ms(pct(lat_sorted, 0.50)),
                "p99_ms": _ms(pct(lat_sorted, 0.99)),
                "max_ms": _ms(lat_sorted[-1] if lat_sorted else None),
                "last_event_lag_s": lag,
                "close_code": r["close_code"],
                "close_reason": r["close_reason"],
                "eof": r["eof"],
                "error": r["error"],
                "timed_out": r["timed_out"],
                "last_recv": r["last_recv"],
            }
        )
    out.pop("client_results", None)
    all_lat.sort()
    delivered = [c["delivered"] for c in per_client]
    total = sum(delivered)
    max_last = max((c["last_recv"] for c in per_client if c["last_recv"]), default=None)
    workers = out.get("workers", {})
    cpu = [w["cpu_s"] / w["wall_s"] * 100 for w in workers.values() if w.get("wall_s")]
    lags = [c["last_event_lag_s"] for c in per_client]
    out["per_client"] = per_client
    out["agg"] = {
        "clients": len(per_client),
        "fired": n_fired,
        "delivered_total": total,
        "delivered_min": min(delivered, default=0),
        "delivered_max": max(delivered, default=0),
        "lost_total": sum(c["lost"] for c in per_client),
        "expected_total": sum(c["expected"] for c in per_client),
        "lost_max": max((c["lost"] for c in per_client), default=None),
        "clients_with_loss": sum(1 for c in per_client if c["lost"] > 0),
        "in_order_all": all(c["in_order"] for c in per_client),
        "dups": sum(c["dups"] for c in per_client),
        "msg_s": total / (max_last - first_fire) if max_last and first_fire else None,
        "p50_ms": _ms(pct(all_lat, 0.50)),
        "p99_ms": _ms(pct(all_lat, 0.99)),
        "worst_windows": worst_windows(pairs, first_fire) if first_fire else [],
        "max_ms": _ms(all_lat[-1] if all_lat else None),
        "last_event_lag_s_max": (None if not lags or any(x is None for x in lags) else max(lags)),
        "client_cpu_pct_max": max(cpu, default=None),
        "errors": sorted({c["error"] for c in per_client if c["error"]})[:5],
        "closed_by_server": sorted(
            {f"{c['close_code']} {c['close_reason']}" for c in per_client if c["close_code"]}
        ),
    }
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


# --------------------------------------------------------------------------
# Resume: a client misses events, then comes back with ?since=
# --------------------------------------------------------------------------

LIVE_SECONDS = 5.0  # live events fired while the resumer reconnects (at the scenario's rate)
RECONNECT_AFTER = 1.0  # seconds into the live firing at which it reconnects
CAUGHT_UP_MS = 50.0  # a live event received this soon after its firing: the client is live


async def ws_open(host: str, port: int, path: str) -> tuple[Any, Any]:
    """Connect, upgrade and say ready; the (reader, writer) of the websocket."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    req, _ = _handshake_request(host, port, path)
    writer.write(req)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if b" 101" not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head[:120]!r}")
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(_mask_frame(0x1, READY.encode()))
    return reader, writer


async def ws_messages(reader: Any, writer: Any, buf: bytearray) -> list[tuple[float, Any]]:
    """The text messages of the next read, decoded, with their receive time ([] on timeout)."""
    try:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 0.25)
    except asyncio.TimeoutError:
        return []
    if not chunk:
        raise ConnectionError("the engine closed the stream")
    now = time.time()
    buf += chunk
    frames, used = parse_frames(buf)
    del buf[:used]
    out = []
    for b0, payload in frames:
        opcode = b0 & 0x0F
        if opcode == 0x1:
            out.append((now, json.loads(payload)))
        elif opcode == 0x9:
            writer.write(_mask_frame(0xA, payload))
        elif opcode == 0x8:
            raise ConnectionError(f"closed by the engine: {payload[:2].hex()} {payload[2:]!r}")
    return out


class Firing:
    """Firing processes for one run of events (see :func:`firer_worker`), driven step by step."""

    def __init__(self, env: Env, run: str, events: int, rate: float | None, args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.shared = {
            "ready": ctx.Value("i", 0),
            "go": ctx.Event(),
            "go_at": ctx.Value("d", 0.0),
            "fire_done": ctx.Event(),
            "fire_done_at": ctx.Value("d", 0.0),
            "abort": ctx.Event(),
            "results": ctx.Queue(),
        }
        conf = {
            "master_conf": env.master_conf,
            "run": run,
            "nsrc": 2,
            "events": events,
            "rate": rate,
            "pad": args.pad,
            "api": args.fire_api,
        }
        self.procs = [
            ctx.Process(target=firer_worker, args=(k, conf, self.shared), daemon=True)
            for k in range(2)
        ]
        self.ready: set[int] = set()
        self.fired: dict[int, Any] = {}
        for proc in self.procs:
            proc.start()

    def poll(self) -> None:
        while True:
            try:
                msg = self.shared["results"].get_nowait()
            except queue.Empty:
                return
            if msg[0] == "firer_ready":
                self.ready.add(msg[1])
            elif msg[0] == "fired":
                self.fired[msg[1]] = msg[2]

    async def start(self) -> None:
        while len(self.ready) < len(self.procs):
            self.poll()
            await asyncio.sleep(0.05)
        self.shared["go_at"].value = time.time() + 0.05
        self.shared["go"].set()

    async def done(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while len(self.fired) < len(self.procs) and time.monotonic() < deadline:
            self.poll()
            await asyncio.sleep(0.05)
        return sum(f.get("fired", 0) for f in self.fired.values())

    def close(self) -> None:
        self.shared["abort"].set()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def run_resume(env: Env, sc: Scenario, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """A client reads, leaves, misses ``sc.events`` events, and resumes with ``?since=``.

    It reconnects :data:`RECONNECT_AFTER` s into :data:`LIVE_SECONDS` of live events at
    ``sc.rate``; it must get every missed event once and in order, then every live one
    (no hole at the seam, no duplicate, no gap notice), and be live (a live event within
    :data:`CAUGHT_UP_MS` of its firing) within 2 s of reconnecting.
    """
    base = f"{args.session}-{sc.name}"
    miss, live = f"bench/{base}-miss/", f"bench/{base}-live/"
    host, port = "127.0.0.1", env.port(ENGINE)
    path = env.paths(ENGINE, 1)[0]
    out: dict[str, Any] = {"target": target, "missed": sc.events}
    env.refresh_procs()
    engine = env.procs.get(ENGINE)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # 1. a reading client learns the id of an anchor event, then leaves
        reader, writer = await ws_open(host, port, path + "?envelope=1")
        anchor, buf, since = f"benchanchor/{base}", bytearray(), None
        deadline = time.monotonic() + 60
        while since is None and time.monotonic() < deadline:
            await loop.run_in_executor(None, env.fire, anchor, {"anchor": True})
            for _, msg in await ws_messages(reader, writer, buf):
                if msg.get("tag") == anchor:
                    since = msg["id"]
        writer.close()
        if since is None:
            raise RuntimeError("the anchor event never arrived")
        out["since"] = since
        # 2. it misses sc.events events (a burst), all taken in by the engine
        before = env.engine_status().get("events_received", 0)
        firing = Firing(env, f"{base}-miss", sc.events, None, args)
        try:
            await firing.start()
            out["missed_fired"] = await firing.done(300)
        finally:
            firing.close()
        deadline = time.monotonic() + 60
        while env.engine_status().get("events_received", 0) < before + sc.events:
            assert time.monotonic() < deadline, "the engine did not receive the missed events"
            await asyncio.sleep(0.1)
        # 3. live events flow; it comes back with ?since= meanwhile
        n_live = int(sc.rate * LIVE_SECONDS) if sc.rate else 1000
        firing = Firing(env, f"{base}-live", n_live, sc.rate, args)
        rss0, cpu0 = proc_mem_cpu(engine)
        status0 = env.engine_status()
        try:
            await firing.start()
            await asyncio.sleep(RECONNECT_AFTER)
            t0 = time.time()
            reader, writer = await ws_open(host, port, f"{path}?since={since}")
            out["connect_s"] = time.time() - t0
            missed: list[tuple[int, int]] = []  # (src, seq)
            lives: list[tuple[float, int, int, float]] = []  # (received, src, seq, fired)
            gaps: list[Any] = []
            first = None
            buf = bytearray()
            fired_live = None
            end = time.monotonic() + LIVE_SECONDS + 30
            while time.monotonic() < end:
                for now, msg in await ws_messages(reader, writer, buf):
                    tag = msg.get("tag", "")
                    first = first or tag
                    if tag == "salt_ws/stream/gap":
                        gaps.append(msg.get("data"))
                    elif tag.startswith(miss):
                        missed.append((msg["data"]["src"], msg["data"]["seq"]))
                        if len(missed) == sc.events:
                            out["replayed_s"] = now - t0
                    elif tag.startswith(live):
                        d = msg["data"]
                        lives.append((now, d["src"], d["seq"], d["t"]))
                firing.poll()
                if fired_live is None and len(firing.fired) == len(firing.procs):
                    fired_live = sum(f.get("fired", 0) for f in firing.fired.values())
                if fired_live is not None and len(lives) >= fired_live:
                    break
            writer.close()
            out["live_fired"] = fired_live
        finally:
            firing.close()
        rss1, cpu1 = proc_mem_cpu(engine)
        out["engine_cpu_s"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        out["engine_rss_mb"] = {"before": rss0, "after": rss1}
        out["stream"] = _delta(status0, env.engine_status(), "stream")
        out["first_tag"] = first
        out["gaps"] = gaps
        out["missed_received"] = len(missed)
        out["missed_unique"] = len(set(missed))
        out["missed_in_order"] = all(  # each firing process's events in its order
            [q for s, q in missed if s == src] == sorted(q for s, q in missed if s == src)
            for src in {s for s, _ in missed}
        )
        live_seqs = [seq for _, _, seq, _ in lives]
        out["live_received"] = len(lives)
        out["live_unique"] = len(set(live_seqs))
        by_src: dict[int, list[int]] = {}
        for _, src, seq, _ in lives:
            by_src.setdefault(src, []).append(seq)
        out["live_in_order"] = all(v == sorted(v) for v in by_src.values())
        out["live_before_reconnect"] = sum(1 for _, _, _, t in lives if t < t0)
        caught = next(
            (now for now, _, _, t in lives if now >= t0 and (now - t) * 1000 <= CAUGHT_UP_MS),
            None,
        )
        if caught is not None and out.get("replayed_s") is not None:
            caught = max(caught, t0 + out["replayed_s"])
        out["live_after_s"] = None if caught is None else caught - t0
        after = sorted((now - t) * 1000 for now, _, _, t in lives if caught and now > caught)
        out["live_p99_ms_after"] = pct(after, 0.99)

    try:
        asyncio.run(scenario())
    except Exception as exc:  # pylint: disable=broad-except
        out["error"] = repr(exc)
    return out


def resume_lines(r: dict[str, Any]) -> list[str]:
    return [
        f"since {r.get('since')}: missed {r.get('missed_fired')} fired, "
        f"{r.get('missed_received')} replayed ({r.get('missed_unique')} distinct, in order "
        f"{_f(r.get('missed_in_order'))}) in {_f(r.get('replayed_s'), 3)} s; first message "
        f"{r.get('first_tag')!r}; gap notices {len(r.get('gaps') or [])}",
        f"live: {r.get('live_received')} of {r.get('live_fired')} received "
        f"({r.get('live_unique')} distinct, in order {_f(r.get('live_in_order'))}; "
        f"{r.get('live_before_reconnect')} fired before the reconnect); live "
        f"{_f(r.get('live_after_s'), 3)} s after reconnecting; p99 after that "
        f"{_f(r.get('live_p99_ms_after'), 1)} ms; engine CPU {_f(r.get('engine_cpu_s'), 2)} s; "
        f"ws.status stream during the run {r.get('stream')}"
        + (f"; ERROR {r['error']}" if r.get("error") else ""),
    ]


def resume_verdicts(sc: Scenario, r: dict[str, Any]) -> list[tuple[bool | None, str]]:
    out: list[tuple[bool | None, str]] = []
    if r.get("error"):
        out.append((False, f"resume scenario failed: {r['error']}"))
    n = sc.events
    ok = r.get("missed_received") == r.get("missed_unique") == n and r.get("missed_in_order")
    out.append((bool(ok), f"engine: the {n} missed events replayed once each, in order"))
    out.append((not r.get("gaps"), f"engine: no gap notice (got {len(r.get('gaps') or [])})"))
    fired = r.get("live_fired")
    ok = fired is not None and r.get("live_received") == r.get("live_unique") == fired
    out.append(
        (
            bool(ok and r.get("live_in_order")),
            f"engine: every live event once, in order, no hole at the seam "
            f"({r.get('live_received')} of {fired})",
        )
    )
    live = r.get("live_after_s")
    out.append((live is not None and live <= 2.0, f"engine: live within 2 s ({_f(live, 3)} s)"))
    return out


# --------------------------------------------------------------------------
# Optional: sample the engine with py-spy during a run
# --------------------------------------------------------------------------


def start_py_spy(args: argparse.Namespace, proc: Any, run: str) -> Any:
    if not args.profile or proc is None:
        return None
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        print("  (py-spy not found; --profile ignored)")
        return None
    os.makedirs(args.profile, exist_ok=True)
    path = os.path.join(args.profile, f"{run}.txt")
    cmd = [
        exe,
        "record",
        "--pid",
        str(proc.pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--output",
        path,
        "--nonblocking",
    ]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (spy, path)


def stop_py_spy(spy: Any) -> dict[str, Any] | None:
    if spy is None:
        return None
    proc, path = spy
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return {"raw": path, **top_frames(path)}


INTERESTING = ("salt_ws/", "tornado/websocket", "tornado/iostream", "salt/transport", "json/")

# Per-stage breakdown of the engine's samples: the innermost frame (leaf first) that names a
# stage decides. bus read: the bus thread reading and unpacking Salt's frames; hand-off:
# Handoff.put (bus thread) and drain + unpack (loop); publish: numbering, history, filters,
# encoding, the hub's queues (Engine.consume/publish, pipeline, hub); view: the formatted
# view; write: the flushes (framing, send, tornado's write path); idle: the loop's select.
STAGES = (
    (
        "write",
        (
            "_flush (salt_ws/handlers",
            "_write (salt_ws/handlers",
            "_run (salt_ws/handlers",
            "_written (salt_ws/handlers",
            "tornado/iostream",
            "tornado/websocket",
        ),
    ),
    (
        "publish",
        (
            "publish (salt_ws/engine",
            "salt_ws/pipeline",
            "salt_ws/hub",
            "salt_ws/wire",
            "consume (salt_ws/engine",
        ),
    ),
    ("view", ("salt_ws/view", "view_changed (salt_ws/engine")),
    (
        "hand-off",
        ("drain (salt_ws/bus", "open (salt_ws/bus", "put (salt_ws/bus", "reject (salt_ws/bus"),
    ),
    ("bus read", ("salt_ws/bus", "salt/transport", "salt/utils/event", "zmq/", "msgpack")),
    ("idle", ("select (selectors.py", "_run_once (asyncio/base_events")),
)


def stage_of(frames: list[str]) -> str:
    """The stage a sampled stack belongs to (see :data:`STAGES`); ``other`` if none."""
    for frame in reversed(frames):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return "other"


def top_frames(path: str, n: int = 10) -> dict[str, Any]:
    """Where the sampled engine spent its time (py-spy raw output).

    ``leaf``: share of samples whose innermost frame is this one (self time;
    ``EpollSelector.select`` is the loop waiting). ``inclusive``: share of
    samples with this function anywhere on the stack, for salt_ws, tornado's
    websocket/iostream, Salt's transport and json.
    """
    leaf: dict[str, int] = {}
    incl: dict[str, int] = {}
    stages: dict[str, int] = {}
    total = 0
    try:
        with open(path) as fh:
            for line in fh:
                stack, _, count = line.rstrip().rpartition(" ")
                if not count.isdigit():
                    continue
                c = int(count)
                frames = stack.split(";")
                total += c
                leaf[frames[-1]] = leaf.get(frames[-1], 0) + c
                stage = stage_of(frames)
                stages[stage] = stages.get(stage, 0) + c
                names = {re.sub(r":\d+\)$", ")", f) for f in frames}
                for name in names:
                    if any(key in name for key in INTERESTING):
                        incl[name] = incl.get(name, 0) + c
    except OSError:
        return {}
    if not total:
        return {}

    def top(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [(k, round(100.0 * v / total, 1)) for k, v in ranked]

    return {
        "samples": total,
        "leaf": top(leaf),
        "inclusive": top(incl),
        "stages": {k: round(100.0 * v / total, 1) for k, v in sorted(stages.items())},
    }


# --------------------------------------------------------------------------
# Verdicts and printing
# --------------------------------------------------------------------------


def verdicts(
    sc: Scenario, runs: dict[str, dict[str, Any]], done: dict[str, Any] | None = None
) -> list[tuple[bool | None, str]]:
    """PASS/FAIL (or None: information) against the targets of the product issues.

    ``done``: the scenarios already run in this invocation (for cross-scenario targets).
    """
    out: list[tuple[bool | None, str]] = []

    def check(ok: bool | None, text: str) -> None:
        out.append((ok, text))

    eng = runs.get(ENGINE)
    if eng is None:
        return [(None, "ws engine not run")]
    if sc.resume:
        return resume_verdicts(sc, eng)
    a = eng["agg"]
    fired = eng["fire"]["fired"]
    check(fired == sc.events, f"all {sc.events} events fired (fired {fired})")
    ready = eng.get("ready_clients", 0)
    check(ready >= sc.clients, f"engine: all {sc.clients} clients ready ({ready})")
    lost = f"lost {a['lost_total']}, clients with loss {a['clients_with_loss']}/{a['clients']}"
    if sc.name.startswith("burst10k"):
        check(a["lost_total"] == 0, f"engine: 0 lost ({lost})")
        check(a["in_order_all"], f"engine: in order ({_f(a['in_order_all'])})")
        lag = a["last_event_lag_s_max"]
        ok = lag is not None and lag <= 0.5
        check(ok, f"engine: last event held within 0.5 s of its firing (lag {_f(lag, 3)} s)")
    elif sc.name.startswith("burst5k"):
        check(a["lost_total"] == 0, f"engine: 0 lost for every client ({lost})")
        check(a["in_order_all"], f"engine: in order ({_f(a['in_order_all'])})")
        cp = runs.get(CHERRYPY)
        if cp is None:
            check(None, "engine msg/s vs rest_cherrypy: rest_cherrypy not run")
        else:
            mine, theirs = a["msg_s"] or 0.0, cp["agg"]["msg_s"] or 0.0
            ratio = mine / theirs if theirs else float("inf")
            check(
                ratio >= 3.0,
                f"engine msg/s >= 3x rest_cherrypy's ({mine:.0f} vs {theirs:.0f}: {ratio:.2f}x)",
            )
        tor = runs.get(TORNADO)
        if tor is not None:
            t = tor["agg"]
            due = t["fired"] * t["clients"]
            share = t["lost_total"] / max(1, due) * 100
            check(
                None,
                f"rest_tornado lost {t['lost_total']} of {due} ({share:.1f}%); "
                f"{t['clients_with_loss']}/{t['clients']} clients lost events",
            )
    elif sc.name.startswith("steady_200"):
        check(a["lost_total"] == 0, f"engine: 0 lost ({lost})")
        p99 = a["p99_ms"]
        along = (eng.get("alongside") or {}).get("p99_ms")
        before = (runs.get(BUS) or {}).get("agg", {}).get("p99_ms")
        bus = along if along is not None else before
        if along is not None and before is not None:
            check(None, f"bare bus p99: {_f(before, 1)} ms alone, {_f(along, 1)} ms alongside")
        if bus is None:
            check(None, f"engine p99 {_f(p99, 1)} ms; no bus_direct baseline in this run")
        else:
            check(
                p99 is not None and p99 <= bus + 25.0,
                f"engine: p99 within 25 ms of the bare bus subscriber's "
                f"(p99 {_f(p99, 1)} ms vs {_f(bus, 1)} ms: {_f((p99 or 0) - bus, 1)} ms)",
            )
    elif sc.filters:
        check(a["lost_total"] == 0, f"engine: 0 lost for every client ({lost})")
        check(a["in_order_all"], f"engine: in order ({_f(a['in_order_all'])})")
        mine = a.get("engine_cpu_us_per_msg")
        ref = (done or {}).get("steady_50clients", {}).get("runs", {}).get(ENGINE)
        base = ref["agg"].get("engine_cpu_us_per_msg") if ref else None
        if base is None or mine is None:
            check(None, f"engine CPU {_f(mine, 1)} us per delivered message; no 50-client run")
        else:
            check(
                mine <= 2 * base,
                f"engine CPU per delivered message within 2x of steady_50clients' "
                f"({mine:.1f} vs {base:.1f} us: {mine / base:.2f}x)",
            )
    elif sc.name.startswith("steady"):
        check(a["lost_total"] == 0, f"engine: 0 lost ({lost})")
        p99 = a["p99_ms"]
        check(p99 is not None and p99 <= 35.0, f"engine: p99 <= 35 ms (p99 {_f(p99, 1)} ms)")
        rate = eng["fire"]["rate"]
        check(None, f"paced firing achieved {_f(rate, 1)} ev/s (asked {sc.rate:.0f})")
    elif sc.name.startswith("stalled"):
        ok = a["lost_total"] == 0 and a["clients"] == sc.clients
        check(ok, f"engine: the {sc.clients} live clients lose nothing ({lost})")
        st = (eng.get("stalled_clients") or [{}])[0]
        code, reason = st.get("close_code"), st.get("close_reason", "")
        check(
            code == CLOSE_TOO_SLOW,
            f"engine: stalled client, read after the run, closed with 4001 "
            f"(got {code} {reason!r}; ended by {st.get('ended_by')})",
        )
        before = (eng.get("status_before") or {}).get("clients_cut_slow", 0) or 0
        after = (eng.get("status_after") or {}).get("clients_cut_slow", 0) or 0
        check(
            after - before >= 1,
            f"engine: the stalled client was cut (ws.status clients_cut_slow +{after - before}, "
            f"'client too slow' log lines {eng['log']['salt_ws_cut_lines']})",
        )
        rss = eng["engine_rss_mb"]
        if rss["before"] is not None and rss["peak"] is not None:
            growth, end = rss["peak"] - rss["before"], rss["after"] - rss["before"]
            check(
                growth <= 30.0,
                f"engine: RSS growth <= 30 MB (peak {growth:+.1f} MB, after {end:+.1f} MB)",
            )
        else:
            check(None, "engine RSS unknown (psutil missing?)")
    return out


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


COLUMNS = (
    "target",
    "cli",
    "ready",
    "fired",
    "fire/s",
    "deliv(min)",
    "lost",
    "lossy",
    "order",
    "msg/s",
    "p50ms",
    "p99ms",
    "maxms",
    "last_lag_s",
    "cli_cpu%",
    "srv_cpu_s",
    "cpu_us/msg",
    "slow_sub",
)


def table_row(target: str, r: dict[str, Any]) -> list[Any]:
    a, f = r["agg"], r["fire"]
    return [
        target,
        a["clients"],
        r.get("ready_clients"),
        f["fired"],
        _f(f["rate"], 0),
        a["delivered_min"],
        a["lost_total"],
        f"{a['clients_with_loss']}/{a['clients']}",
        _f(a["in_order_all"]),
        _f(a["msg_s"], 0),
        _f(a["p50_ms"], 1),
        _f(a["p99_ms"], 1),
        _f(a["max_ms"], 0),
        _f(a["last_event_lag_s_max"], 3),
        _f(a["client_cpu_pct_max"], 0),
        _f(r.get("server_cpu_s"), 1),
        _f(a.get("engine_cpu_us_per_msg"), 1),
        r["log"]["slow_subscriber_discards"],
    ]


def notes(target: str, r: dict[str, Any]) -> list[str]:
    a = r["agg"]
    extra = []
    if target == ENGINE:
        rss = r["engine_rss_mb"]
        if rss["before"] is not None:
            extra.append(
                f"engine RSS {rss['before']:.1f} -> {rss['after']:.1f} MB "
                f"(peak {rss['peak']:.1f}); engine CPU {_f(r.get('engine_cpu_s'), 1)} s"
            )
    if a["errors"]:
        extra.append(f"client errors: {a['errors']}")
    if a["closed_by_server"]:
        extra.append(f"closed by server: {a['closed_by_server']}")
    if r["fire"]["failed"]:
        extra.append(f"fire failures: {r['fire']['failed']} {r['fire']['errors']}")
    if r.get("cherrypy_children_left"):
        extra.append(f"cherrypy per-client processes still alive: {r['cherrypy_children_left']}")
    if r.get("api_log", {}).get("warnings_errors") and target in (TORNADO, CHERRYPY):
        extra.append(f"salt-api log: {r['api_log']['warnings_errors']} warning/error lines")
    if r["log"]["salt_ws_bus_lost_lines"]:
        extra.append(f"engine lost the bus link {r['log']['salt_ws_bus_lost_lines']}x")
    for st in r.get("stalled_clients", []):
        extra.append(
            f"stalled client (SO_RCVBUF {st.get('rcvbuf')}): read after the run: "
            f"{st.get('messages')} msgs, then {st.get('ended_by')}; close code "
            f"{st.get('close_code')} {st.get('close_reason')!r}; reading began "
            f"{_f(st.get('read_started_after_cut_s'), 1)} s after the engine cut it"
        )
    if r.get("status_after"):
        s = r["status_after"]
        extra.append(
            f"ws.status: clients_cut_slow={s.get('clients_cut_slow')} "
            f"queue_high_water={s.get('queue_high_water')} "
            f"events_received={s.get('events_received')} messages_sent={s.get('messages_sent')}"
        )
    prof = r.get("profile") or {}
    if prof.get("leaf"):
        extra.append(
            f"py-spy ({prof['samples']} samples), self: "
            + "; ".join(f"{p}% {k}" for k, p in prof["leaf"][:6])
        )
        extra.append(
            "py-spy inclusive: " + "; ".join(f"{p}% {k}" for k, p in prof["inclusive"][:8])
        )
        if prof.get("stages"):
            extra.append(
                "stages (% of samples): "
                + "; ".join(f"{k} {v}%" for k, v in prof["stages"].items())
            )
    if r.get("stage_us_per_msg"):
        extra.append(
            "engine CPU per delivered message by stage (us): "
            + "; ".join(f"{k} {v}" for k, v in r["stage_us_per_msg"].items())
        )
    if r.get("writes"):
        extra.append(f"ws.status writes during the run: {r['writes']}")
    if r.get("alongside"):
        b = r["alongside"]
        extra.append(
            f"bare bus subscriber alongside (same time): p50 {_f(b['p50_ms'], 1)} p99 "
            f"{_f(b['p99_ms'], 1)} max {_f(b['max_ms'], 0)} ms ({b['delivered']} events)"
        )
    if target == ENGINE and a.get("worst_windows"):
        extra.append(
            "worst 100-ms firing windows [s after first firing, max ms, deliveries > 25 ms]: "
            + str(a["worst_windows"])
        )
    return extra


def print_scenario(
    sc: Scenario, runs: dict[str, dict[str, Any]], checks: list, per_client: bool
) -> None:
    rate = f"paced {sc.rate:.0f} ev/s" if sc.rate else f"burst, {sc.firers} firing processes"
    stalled = f", +{sc.stalled} stalled" if sc.stalled else ""
    if sc.resume:
        print(f"\n=== {sc.name}: {sc.events} events missed, then ?since= while {rate} ===")
        for r in runs.values():
            print("  " + "\n  ".join(resume_lines(r)))
        for ok, text in checks:
            print(f"  {'INFO' if ok is None else ('PASS' if ok else 'FAIL')}  {text}")
        return
    print(f"\n=== {sc.name}: {sc.events} events, {rate}, {sc.clients} live client(s){stalled} ===")
    rows = [table_row(target, r) for target, r in runs.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(COLUMNS, *rows, strict=True)]
    for row in (COLUMNS, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for target, r in runs.items():
        extra = notes(target, r)
        if extra:
            print(f"  {target}: " + "\n    ".join(extra))
        if per_client:
            for c in r["per_client"]:
                print(
                    f"    client {c['client']:>2}: delivered {c['delivered']} lost {c['lost']} "
                    f"in_order {_f(c['in_order'])} msg/s {_f(c['msg_s'], 0)} "
                    f"p50 {_f(c['p50_ms'], 1)} p99 {_f(c['p99_ms'], 1)} "
                    f"lag {_f(c['last_event_lag_s'], 3)} close {c['close_code']} {c['error']}"
                )
    for ok, text in checks:
        tag = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {tag}  {text}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke check, < 2 min)")
    parser.add_argument(
        "--scenario", action="append", default=[], help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma list of targets; add {BUS} for a bus-only baseline",
    )
    parser.add_argument("--json", help="write results as JSON to this file")
    parser.add_argument(
        "--pad", type=int, default=256, help="bytes of padding per event (default 256)"
    )
    parser.add_argument(
        "--fire-api",
        choices=("async", "sync"),
        default="async",
        help="async: await fire_event_async (async pusher path, fast); sync: fire_event",
    )
    parser.add_argument(
        "--clients-per-proc",
        type=int,
        default=None,
        help="clients per client process (default: the scenario's, else 5)",
    )
    parser.add_argument(
        "--settle", type=float, default=None, help="idle seconds before a client gives up"
    )
    parser.add_argument(
        "--drain-max", type=float, default=60.0, help="max seconds to wait after firing"
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--stalled-rcvbuf", type=int, default=4096)
    parser.add_argument("--stalled-drain", type=float, default=30.0)
    parser.add_argument("--per-client", action="store_true", help="print one line per client")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="metrics: True on the engine, and GET /metrics scraped every second (issue 12: "
        "compare a run with and without)",
    )
    parser.add_argument(
        "--history-size",
        type=int,
        default=BENCH_ENGINE_OPTIONS["history_size"],
        help="the engine's history_size (default 20000: resume_10k needs more than 10000)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the engine into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the master's root dir")
    args = parser.parse_args(argv)
    if args.settle is None:
        args.settle = 2.0 if args.quick else 4.0
    args.session = uuid.uuid4().hex[:8]
    targets = tuple(t for t in args.targets.split(",") if t)
    args.target_list = targets
    unknown = set(targets) - {*TARGETS, BUS}
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join((*TARGETS, BUS))}")
    chosen = scenarios(args.quick)
    if args.scenario:
        names = {s.name for s in chosen}
        bad = [n for n in args.scenario if n not in names]
        if bad:
            parser.error(f"unknown scenario(s) {bad}; known: {', '.join(sorted(names))}")
        chosen = [s for s in chosen if s.name in args.scenario]

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.time()
    report: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "quick": args.quick,
        "fire_api": args.fire_api,
        "pad": args.pad,
        "clients_per_proc": args.clients_per_proc,
        "machine_before": machine_state(REPO),
        "scenarios": {},
    }
    ms = report["machine_before"]
    print(
        f"machine: nproc={ms['nproc']} load={ms['loadavg']} cpu={ms.get('cpu')} "
        f"python={ms['python']} salt={ms.get('salt')} tornado={ms.get('tornado')}"
    )
    print(f"uptime: {ms.get('uptime')}; salt_ws at {ms.get('git')}")
    if ms.get("other_busy_processes"):
        print(
            "other busy processes (>=5% CPU): "
            + "; ".join(
                f"{p['pid']} {p['cpu_pct']}% {p['cmd'][:60]}" for p in ms["other_busy_processes"]
            )
        )
    print(
        f"firing: {args.fire_api} API, {args.pad} B pad; clients: asyncio, "
        f"{args.clients_per_proc or 'the scenario decides how many (default 5)'} per process "
        "(spawned)"
    )
    root = tempfile.mkdtemp(prefix="salt-ws-bench-", dir="/tmp")
    env = Env(root, {"history_size": args.history_size, "metrics": args.metrics})
    rc = 0
    scraping = threading.Event()
    scrapes: list[int] = []
    try:
        t0 = time.time()
        env.start(api=bool({TORNADO, CHERRYPY} & set(targets)))
        if args.metrics:

            def scrape() -> None:
                url = f"http://127.0.0.1:{env.master.ws_port}/metrics"
                while not scraping.wait(1.0):
                    try:
                        with urllib.request.urlopen(url, timeout=5) as answer:
                            scrapes.append(len(answer.read()))
                    except OSError as exc:
                        print(f"metrics scrape failed: {exc}", flush=True)

            threading.Thread(target=scrape, daemon=True).start()
        print(
            f"{'master + salt-api' if len(env.master.procs) > 1 else 'master'} up in "
            f"{time.time() - t0:.1f}s (root {root}); ports: "
            f"engine {env.master.ws_port}, rest_tornado {env.tornado_port}, "
            f"rest_cherrypy {env.cherrypy_port}; "
            f"engine pid {getattr(env.procs.get(ENGINE), 'pid', None)}"
        )
        for sc in chosen:
            runs: dict[str, dict[str, Any]] = {}
            order = (
                (BUS,) if BUS in targets and not (sc.stalled or sc.resume) else ()
            ) + sc.targets
            for target in order:
                if target not in targets:
                    continue
                print(f"-- {sc.name} / {target} ...", flush=True)
                run = run_resume if sc.resume else run_target
                runs[target] = run(env, sc, target, args)
            checks = verdicts(sc, runs, report["scenarios"])
            print_scenario(sc, runs, checks, args.per_client)
            if any(ok is False for ok, _ in checks):
                rc = 1
            report["scenarios"][sc.name] = {
                "config": dataclasses.asdict(sc),
                "runs": runs,
                "checks": [{"pass": ok, "text": text} for ok, text in checks],
            }
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the daemons")
        rc = 130
    finally:
        scraping.set()
        if args.metrics:
            print(f"/metrics scraped {len(scrapes)} times, last {scrapes[-1:]} bytes")
            report["metrics_scrapes"] = len(scrapes)
        env.close()
        env.master.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["machine_after"] = {"loadavg": [round(x, 2) for x in os.getloadavg()]}
    report["elapsed_s"] = round(time.time() - started, 1)
    print(f"\ndone in {report['elapsed_s']}s; load after {report['machine_after']['loadavg']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
