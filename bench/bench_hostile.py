#!/usr/bin/env python
"""Hostile-load run: does the ``ws`` engine keep serving an authenticated client under attack?

One salt-master with the engine on 127.0.0.1 (``scripts/devenv.py``, own ports
and root dir, stopped at the end). After a quiet baseline phase, for
``--seconds`` the engine is attacked on loopback only, bounded in count and
time:

* **slowloris**: HTTP connections from 127.0.0.2 .. 127.0.0.50 that dribble
  header lines, or announce a body and dribble it a byte at a time (reopened
  when the server drops them);
* **upgrade flood**: websocket upgrades without a token, held without a word
  (reopened when closed or refused);
* **login guessing**: wrong passwords for one user from 49 source addresses;
* **oversized forged events** on the master bus, as any minion can fire them:
  a ``new`` listing 100,000 minions, a presence change naming 20,000, a
  return for a minion without a key and a custom event, each just under the
  master's ``max_event_size`` (past it Salt trims the event itself).

Throughout, probes are fired on the bus every 50 ms and timed at an
established admin ``/all_events`` client and at a bare bus subscriber; a fresh
login + upgrade + snapshot on ``/formatted_events`` is timed every 0.5 s. The
engine process's RSS is sampled, and ``ws.status`` is read at the end.

    .venv/bin/python bench/bench_hostile.py --seconds 30 [--json out.json]

Exit status 1 if a target is missed (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
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
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

from bench_events import _handshake_request, _listener, _mask_frame, parse_frames, pct  # noqa: E402
from devenv import DevMaster  # noqa: E402
from machine import machine_state  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None

HOST = "127.0.0.1"
POOL = [f"127.0.0.{n}" for n in range(2, 51)]  # attacker source addresses
PROBE = "hostile/probe/"
READY = b"websocket client ready"
USERS = {"bench": "bench-pw", "victim": "victim-pw"}
TARGET_MS = 100.0
BIG = 64 * 1024  # bytes: a message this big counts as one of the oversized events
LIMIT_WORDS = re.compile(  # ws.status keys (dotted, nested) that are limit counters
    r"refus|reject|drop|cut|limit|timeout|timed|throttl|denied|evict|over|bytes|budget|"
    r"unauth|queue|pending|capped|closed|conflict|invalid|too_|full|lost|trimmed"
)


# --------------------------------------------------------------------------
# Plan and small helpers
# --------------------------------------------------------------------------


def wait_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def phase_of(plan: dict[str, Any], t: float) -> str | None:
    if plan["t_start"] <= t < plan["t_attack"]:
        return "baseline"
    if plan["t_attack"] <= t < plan["t_end"]:
        return "attack"
    return None


def summary_ms(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(ordered),
        "p50": round(pct(ordered, 0.5) * 1000, 1),
        "p99": round(pct(ordered, 0.99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def set_times(plan: dict[str, Any], t0: float) -> None:
    """The phases' absolute times, once every process is set up (``t0``: the baseline starts)."""
    plan["t_start"] = t0
    plan["t_attack"] = t0 + plan["baseline"]
    plan["t_end"] = plan["t_attack"] + plan["seconds"]


def _worker(
    target: Callable[..., dict[str, Any]], name: str, plan: dict, out: Any, go: Any, t0: Any
) -> None:
    """Run one measuring or attacking role in its own process; its result goes to ``out``.

    The role calls ``ready()`` once set up (connected); it returns when every
    role is, with the phase times filled in.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def ready() -> None:
        out.put(("ready", name))
        if not go.wait(120):
            raise TimeoutError("the other roles did not get ready")
        set_times(plan, t0.value)

    try:
        result = target(plan, ready)
    except Exception as exc:  # pylint: disable=broad-except
        result = {"error": f"{type(exc).__name__}: {exc}"}
    out.put((name, result))


def _bus(plan: dict[str, Any], listen: bool) -> Any:
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(plan["master_conf"])
    return salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=listen)


# --------------------------------------------------------------------------
# Firing: probes and oversized forged events
# --------------------------------------------------------------------------


def probe_firer(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    bus = _bus(plan, listen=False)
    bus.fire_event({}, "hostile/warmup")  # the push socket connects on its first event
    ready()
    fired = {}
    seq = 0
    next_at = plan["t_start"]
    wait_until(next_at)
    while time.time() < plan["t_end"]:
        t = time.time()
        bus.fire_event({"seq": seq, "t": t}, f"{PROBE}{seq}")
        fired[seq] = t
        seq += 1
        next_at += plan["probe_interval"]
        wait_until(next_at)
    bus.destroy()
    return {"fired": fired}


def big_events(
    plan: dict[str, Any], max_size: int
) -> list[tuple[str, str, Callable[[int], dict[str, Any]]]]:
    """(kind, tag, data factory) of the oversized forged events, in firing order.

    Salt replaces the biggest values of an event larger than the master's
    ``max_event_size`` (1 MiB by default) with "VALUE_TRIMMED" when it fires
    it, a minion's too; so each event is made to just fit (short minion ids:
    100,000 of them fit in 1 MiB).
    """
    n_new, n_presence = plan["big_minions"], plan["big_presence"]
    size = plan["big_bytes"] or max_size - 4096
    ids = [f"{i:x}" for i in range(max(n_new, n_presence))]

    def jid(n: int) -> str:
        return f"2099010100000{n:07d}"

    return [
        (
            f"new_{n_new}_minions",
            "salt/job/{jid}/new",
            lambda n: {
                "jid": jid(n),
                "fun": "test.ping",
                "arg": [],
                "tgt": "*",
                "tgt_type": "glob",
                "user": "root",
                "minions": ids[:n_new],
            },
        ),
        (
            f"presence_{n_presence}_ids",
            "salt/presence/change",
            lambda n: {"new": ids[:n_presence], "lost": []},
        ),
        (
            f"ret_{size >> 10}KiB_keyless_minion",
            "salt/job/{jid}/ret/ghost-1",
            lambda n: {
                "id": "ghost-1",
                "jid": jid(n),
                "fun": "test.ping",
                "retcode": 0,
                "return": "r" * size,
            },
        ),
        (f"custom_{size >> 10}KiB", "hostile/big/{n}", lambda n: {"pad": "p" * size}),
    ]


def big_firer(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    import salt.payload  # pylint: disable=import-outside-toplevel

    bus = _bus(plan, listen=False)
    max_size = int(bus.opts["max_event_size"])
    kinds = big_events(plan, max_size)
    bus.fire_event({}, "hostile/warmup")
    ready()
    fired: list[dict[str, Any]] = []
    n = 0
    next_at = plan["t_attack"]
    wait_until(next_at)
    while time.time() < plan["t_end"] - 0.5:
        kind, tag, make = kinds[n % len(kinds)]
        data = make(n)
        size = len(salt.payload.dumps(data))
        t0 = time.time()
        ok = bus.fire_event(data, tag.format(jid=data.get("jid", ""), n=n))
        fired.append(
            {
                "kind": kind,
                "bytes": size,
                "trimmed": size > max_size,
                "ok": bool(ok),
                "fire_s": time.time() - t0,
            }
        )
        n += 1
        next_at += plan["big_every"]
        wait_until(max(next_at, time.time()))
    bus.destroy()
    return {"fired": fired, "max_event_size": max_size}


# --------------------------------------------------------------------------
# Measuring: a bare bus subscriber and an established /all_events client
# --------------------------------------------------------------------------


def bus_subscriber(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Salt's own subscriber, read as the engine's bus thread reads it."""
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(plan["master_conf"])
    got: dict[int, float] = {}
    stats: dict[str, Any] = {"messages": 0, "big": 0}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        event = salt.utils.event.get_master_event(
            opts, opts["sock_dir"], listen=True, io_loop=asyncio.get_running_loop()
        )

        def handler(raw: bytes) -> Any:
            async def on_message() -> None:
                now = time.time()
                tag, data = event.unpack(raw)
                stats["messages"] += 1
                stats["big"] += len(raw) > BIG
                if tag.startswith(PROBE) and isinstance(data, dict):
                    got[data["seq"]] = now - data["t"]

            return on_message()

        event.set_event_handler(handler)
        await asyncio.sleep(1.0)  # the subscription connects
        await loop.run_in_executor(None, ready)
        try:
            while time.time() < plan["t_end"] + plan["drain"]:
                await asyncio.sleep(0.1)
        finally:
            event.destroy()

    asyncio.run(main())
    return {"latency": got, **stats}


async def _ws_open(port: int, path: str, source: str = HOST) -> tuple[Any, Any, int]:
    """Open a websocket (raw asyncio); (reader, writer, HTTP status of the upgrade)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, local_addr=(source, 0), limit=1 << 24), 10
    )
    req, _ = _handshake_request(HOST, port, path)
    writer.write(req)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, int(head.split(b" ", 2)[1])


def ws_client(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """The established, authenticated client: every probe's delivery latency."""
    got: dict[int, float] = {}
    stats: dict[str, Any] = {"messages": 0, "big": 0, "bytes": 0, "close": None}

    async def main() -> None:
        reader, writer, status = await _ws_open(plan["port"], f"/all_events/{plan['token']}")
        if status != 101:
            stats["close"] = f"upgrade refused: {status}"
            return
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(_mask_frame(0x1, READY))
        await asyncio.get_running_loop().run_in_executor(None, ready)
        buf = bytearray()
        prefix = b'{"tag":"' + PROBE.encode()
        while time.time() < plan["t_end"] + plan["drain"]:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 0.25)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            if not chunk:
                stats["close"] = stats["close"] or "EOF"
                return
            buf += chunk
            frames, used = parse_frames(buf)
            del buf[:used]
            for b0, payload in frames:
                opcode = b0 & 0x0F
                if opcode == 0x1:
                    stats["messages"] += 1
                    stats["bytes"] += len(payload)
                    stats["big"] += len(payload) > BIG
                    if payload.startswith(prefix):
                        data = json.loads(payload)["data"]
                        got[data["seq"]] = now - data["t"]
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    stats["close"] = f"{code} {payload[2:].decode(errors='replace')}"
                    return
                elif opcode == 0x9:
                    writer.write(_mask_frame(0xA, payload))
        writer.write(_mask_frame(0x8, struct.pack("!H", 1000)))
        writer.close()

    asyncio.run(main())
    return {"latency": got, **stats}


# --------------------------------------------------------------------------
# Attacking: slowloris, token-less upgrade floods, login guessing
# --------------------------------------------------------------------------


class Held:
    """How many attacking connections are open now, and at most."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0

    def __enter__(self) -> Held:
        self.now += 1
        self.max = max(self.max, self.now)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.now -= 1


def http_attackers(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Slowloris and token-less upgrade floods, from the attacker address pool."""
    ready()
    port, t_end = plan["port"], plan["t_end"]
    slow: dict[str, Any] = {
        "opened": 0,
        "connect_errors": 0,
        "closed_by_server": 0,
        "statuses": collections.Counter(),
        "held_s": [],
        "open_at_end": 0,
        "oldest_at_end_s": 0.0,
    }
    flood: dict[str, Any] = {
        "attempts": 0,
        "connect_errors": 0,
        "statuses": collections.Counter(),
        "closes": collections.Counter(),
        "held_s": [],
        "open_at_end": 0,
    }
    slow_held, flood_held = Held(), Held()
    budget = {"slow": plan["slowloris_total"], "flood": plan["flood_total"]}

    async def slowloris(i: int) -> None:
        source = POOL[i % len(POOL)]
        body = i % 2 == 1
        while time.time() < t_end and budget["slow"] > 0:
            budget["slow"] -= 1
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port, local_addr=(source, 0)), 5
                )
            except (OSError, asyncio.TimeoutError):
                slow["connect_errors"] += 1
                await asyncio.sleep(0.5)
                continue
            slow["opened"] += 1
            opened = time.time()
            head = f"POST /login HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            if body:
                head += "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            closed = False
            with slow_held:
                writer.write(head.encode())
                while time.time() < t_end:
                    try:
                        data = await asyncio.wait_for(reader.read(4096), plan["dribble"])
                    except asyncio.TimeoutError:
                        writer.write(b" " if body else b"X-Dribble: 1\r\n")
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        closed = True
                        break
                    if data.startswith(b"HTTP/"):
                        slow["statuses"][data.split(b" ", 2)[1].decode()] += 1
            if closed:
                slow["closed_by_server"] += 1
                slow["held_s"].append(time.time() - opened)
            else:
                slow["open_at_end"] += 1
                slow["oldest_at_end_s"] = max(slow["oldest_at_end_s"], round(t_end - opened, 2))
            writer.close()

    async def upgrade_flood(i: int) -> None:
        source = POOL[(i * 7) % len(POOL)]
        while time.time() < t_end and budget["flood"] > 0:
            budget["flood"] -= 1
            flood["attempts"] += 1
            try:
                reader, writer, status = await _ws_open(port, "/all_events", source)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                flood["connect_errors"] += 1
                await asyncio.sleep(0.2)
                continue
            flood["statuses"][str(status)] += 1
            if status != 101:
                writer.close()
                await asyncio.sleep(0.05)
                continue
            opened = time.time()
            code = None
            with flood_held:
                buf = bytearray()
                while time.time() < t_end and code is None:
                    try:
                        chunk = await asyncio.wait_for(reader.read(4096), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        code = "EOF"
                        break
                    buf += chunk
                    frames, used = parse_frames(buf)
                    del buf[:used]
                    for b0, payload in frames:
                        if b0 & 0x0F == 0x8:
                            code = str(struct.unpack("!H", payload[:2])[0]) if payload else "1005"
            if code is None:
                flood["open_at_end"] += 1
            else:
                flood["closes"][code] += 1
                flood["held_s"].append(time.time() - opened)
            writer.close()

    async def main() -> None:
        wait_until(plan["t_attack"])
        tasks = [asyncio.create_task(slowloris(i)) for i in range(plan["slowloris"])]
        tasks += [asyncio.create_task(upgrade_flood(i)) for i in range(plan["flood"])]
        await asyncio.wait(tasks, timeout=plan["t_end"] - time.time() + plan["drain"])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    slow["max_held"], flood["max_held"] = slow_held.max, flood_held.max
    for stats in (slow, flood):
        stats["held_s"] = summary_s(stats["held_s"])
    return {"slowloris": slow, "upgrade_flood": flood}


def summary_s(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"n": len(ordered), "p50": round(pct(ordered, 0.5), 2), "max": round(ordered[-1], 2)}


def login_guesser(plan: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    """Wrong passwords for ``victim`` from every pool address, at ``guess_rate`` in total."""
    ready()
    port, t_end = plan["port"], plan["t_end"]
    statuses: collections.Counter[str] = collections.Counter()
    latency: list[float] = []
    interval = len(POOL) / plan["guess_rate"]

    async def guess(source: str) -> None:
        n = 0
        await asyncio.sleep(interval * POOL.index(source) / len(POOL))
        while time.time() < t_end:
            started = time.time()
            body = json.dumps({"username": "victim", "password": f"guess-{n}", "eauth": "file"})
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port, local_addr=(source, 0)), 5
                )
                writer.write(
                    (
                        f"POST /login HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: "
                        f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close"
                        f"\r\n\r\n{body}"
                    ).encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
                statuses[head.split(b" ", 2)[1].decode()] += 1
                latency.append(time.time() - started)
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                statuses["error"] += 1
            n += 1
            await asyncio.sleep(max(0.0, interval - (time.time() - started)))

    async def main() -> None:
        wait_until(plan["t_attack"])
        await asyncio.gather(*(guess(source) for source in POOL))

    asyncio.run(main())
    return {"statuses": dict(statuses), "latency": summary_ms(latency)}


# --------------------------------------------------------------------------
# In the main process: fresh logins, RSS
# --------------------------------------------------------------------------


def fresh_login(port: int) -> dict[str, Any]:
    """Login, upgrade, ready and the whole /formatted_events snapshot; phase times in s."""
    t0 = time.time()
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.connect()  # timed apart: a full accept queue shows here (SYN retries: 1 s, 3 s, 7 s)
        t_connect = time.time()
        body = json.dumps({"username": "bench", "password": USERS["bench"], "eauth": "file"})
        conn.request("POST", "/login", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return {"error": f"login {resp.status}", "login": time.time() - t0}
        token = json.loads(raw)["return"][0]["token"]
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {"error": f"login {type(exc).__name__}", "login": time.time() - t0}
    finally:
        conn.close()
    t_login = time.time()

    async def upgrade() -> dict[str, Any]:
        reader, writer, status = await _ws_open(port, f"/formatted_events/{token}")
        t_up = time.time()
        if status != 101:
            writer.close()
            return {"error": f"upgrade {status}"}
        writer.write(_mask_frame(0x1, READY))
        buf, tables, size = bytearray(), 0, 0
        while tables < 2:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not chunk:
                return {"error": "closed before the snapshot"}
            buf += chunk
            frames, used = parse_frames(buf)
            del buf[:used]
            for b0, payload in frames:
                if b0 & 0x0F == 0x1:
                    tables += 1
                    size += len(payload)
                elif b0 & 0x0F == 0x8:
                    return {"error": f"closed {payload[:2].hex()} before the snapshot"}
        t_ready = time.time()
        writer.write(_mask_frame(0x8, struct.pack("!H", 1000)))
        writer.close()
        return {"upgrade": t_up - t_login, "snapshot": t_ready - t_up, "bytes": size}

    try:
        result = asyncio.run(asyncio.wait_for(upgrade(), 15))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        result = {"error": f"upgrade/snapshot {type(exc).__name__}"}
    result["connect"] = t_connect - t0
    result["login"] = t_login - t_connect
    result["total"] = time.time() - t0 if "error" not in result else None
    # logged out on the side: a slow /logout is not this sample's time
    threading.Thread(target=logout, args=(port, token), daemon=True).start()
    return result


def logout(port: int, token: str) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request("POST", "/logout", "{}", {"X-Auth-Token": token})
        conn.getresponse().read()
        conn.close()


def fresh_logins(plan: dict[str, Any], out: list[dict[str, Any]]) -> None:
    wait_until(plan["t_start"])
    next_at = plan["t_start"]
    while time.time() < plan["t_end"]:
        started = time.time()
        result = fresh_login(plan["port"])
        result["phase"] = phase_of(plan, started)
        out.append(result)
        next_at += plan["fresh_interval"]
        wait_until(max(next_at, time.time()))


def engine_process(master: DevMaster) -> Any:
    """The engine's process: the master's descendant listening on the ws port, or titled so."""
    if psutil is None:
        return None
    root = master.procs[0].pid
    proc = _listener(root, master.ws_port)
    if proc is not None:
        return proc
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(root).children(recursive=True):
            title = " ".join(child.cmdline())
            if "Engine" in title or " ws" in title:
                return child
    return None


# --------------------------------------------------------------------------
# Run and report
# --------------------------------------------------------------------------


ROLES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bus": bus_subscriber,
    "ws": ws_client,
    "probes": probe_firer,
    "big": big_firer,
    "http_attackers": http_attackers,
    "login_guesser": login_guesser,
}


def run(args: argparse.Namespace, master: DevMaster) -> dict[str, Any]:
    token = fresh_token(master.ws_port)
    plan = {
        "port": master.ws_port,
        "master_conf": os.path.join(master.conf_dir, "master"),
        "token": token,
        "baseline": args.baseline,
        "seconds": args.seconds,
        "drain": 2.0,
        "probe_interval": args.probe_interval,
        "fresh_interval": args.fresh_interval,
        "big_every": args.big_every,
        "big_bytes": args.big_bytes,
        "big_minions": args.big_minions,
        "big_presence": args.big_presence,
        "slowloris": args.slowloris,
        "slowloris_total": args.slowloris * 4,
        "flood": args.flood,
        "flood_total": args.flood * 20,
        "dribble": args.dribble,
        "guess_rate": args.guess_rate,
    }
    ctx = mp.get_context("spawn")
    out, go, t0 = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = {
        name: ctx.Process(target=_worker, args=(role, name, plan, out, go, t0), daemon=True)
        for name, role in ROLES.items()
    }
    for proc in procs.values():
        proc.start()
    results: dict[str, Any] = {}
    ready: set[str] = set()
    deadline = time.time() + 120
    while len(ready) < len(procs) and time.time() < deadline:
        with contextlib.suppress(queue.Empty):
            name, result = out.get(timeout=1)
            if name == "ready":
                ready.add(result)
            else:
                results[name] = result  # a role that failed to set up
                ready.add(name)
    t0.value = time.time() + args.warmup
    set_times(plan, t0.value)
    go.set()
    engine = engine_process(master)
    fresh: list[dict[str, Any]] = []
    prober = threading.Thread(target=fresh_logins, args=(plan, fresh), daemon=True)
    prober.start()
    rss: list[tuple[float, float]] = []
    while time.time() < plan["t_end"] + plan["drain"]:
        if engine is not None:
            with contextlib.suppress(psutil.Error):
                rss.append((time.time(), engine.memory_info().rss / 2**20))
        time.sleep(0.25)
    prober.join(30)
    deadline = time.time() + 60
    while len(results) < len(procs) and time.time() < deadline:
        with contextlib.suppress(queue.Empty):
            name, result = out.get(timeout=1)
            if name != "ready":
                results[name] = result
    for proc in procs.values():
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    status, via = engine_status(master)
    data = report_data(plan, results, fresh, rss, status)
    data["status_read_with"] = via
    return data


def fresh_token(port: int) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    body = json.dumps({"username": "bench", "password": USERS["bench"], "eauth": "file"})
    conn.request("POST", "/login", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return json.loads(resp.read())["return"][0]["token"]


def engine_status(master: DevMaster) -> tuple[dict[str, Any], str]:
    """``salt-run ws.status`` (or, if the runner fails, the engine's status socket directly)."""
    runner = os.path.join(os.path.dirname(sys.executable), "salt-run")
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        done = subprocess.run(
            [runner, "-c", master.conf_dir, "--out=json", "ws.status"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        status = json.loads(done.stdout)
        if isinstance(status, dict) and "running" in status:
            return status, "salt-run ws.status"
    try:
        from salt_ws import status as status_socket  # pylint: disable=import-outside-toplevel

        opts = master.master_opts_loaded()
        path = status_socket.socket_path(opts, master.ws_port)
        return status_socket.query(path, timeout=5.0), "the status socket (salt-run failed)"
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": repr(exc)}, "nothing"


def report_data(
    plan: dict[str, Any],
    results: dict[str, Any],
    fresh: list[dict[str, Any]],
    rss: list[tuple[float, float]],
    status: dict[str, Any],
) -> dict[str, Any]:
    fired = {int(k): v for k, v in results.get("probes", {}).get("fired", {}).items()}
    delivery: dict[str, Any] = {}
    for name in ("ws", "bus"):
        got = {int(k): v for k, v in results.get(name, {}).get("latency", {}).items()}
        for phase in ("baseline", "attack"):
            seqs = [s for s, t in fired.items() if phase_of(plan, t) == phase]
            values = [got[s] for s in seqs if s in got]
            delivery[f"{name}/{phase}"] = {
                **summary_ms(values),
                "fired": len(seqs),
                "missed": len(seqs) - len(values),
            }
    logins: dict[str, Any] = {}
    for phase in ("baseline", "attack"):
        rows = [r for r in fresh if r.get("phase") == phase]
        ok = [r for r in rows if r.get("total") is not None]
        logins[phase] = {
            "total": summary_ms([r["total"] for r in ok]),
            "connect": summary_ms([r["connect"] for r in ok]),
            "login": summary_ms([r["login"] for r in ok]),
            "upgrade": summary_ms([r["upgrade"] for r in ok]),
            "snapshot": summary_ms([r["snapshot"] for r in ok]),
            "snapshot_bytes_max": max((r["bytes"] for r in ok), default=None),
            "failed": collections.Counter(r["error"] for r in rows if "error" in r),
        }
    in_attack = [mb for t, mb in rss if plan["t_attack"] <= t]
    return {
        "delivery_ms": delivery,
        "fresh_login_ms": logins,
        "established_client": {k: v for k, v in results.get("ws", {}).items() if k != "latency"},
        "bare_bus_subscriber": {k: v for k, v in results.get("bus", {}).items() if k != "latency"},
        "attackers": {
            **results.get("http_attackers", {}),
            "login_guessing": results.get("login_guesser"),
            "big_events": big_summary(results.get("big", {})),
        },
        "engine_rss_mb": {
            "start": round(rss[0][1], 1) if rss else None,
            "max": round(max(mb for _, mb in rss), 1) if rss else None,
            "max_during_attack": round(max(in_attack), 1) if in_attack else None,
            "end": round(rss[-1][1], 1) if rss else None,
        },
        "status": status,
        "errors": {name: r["error"] for name, r in results.items() if "error" in r},
    }


def big_summary(result: dict[str, Any]) -> dict[str, Any]:
    fired = result.get("fired", [])
    kinds = collections.Counter(f["kind"] for f in fired)
    return {
        "fired": len(fired),
        "failed": sum(not f["ok"] for f in fired),
        "trimmed_by_salt": sum(f["trimmed"] for f in fired),
        "max_event_size": result.get("max_event_size"),
        "bytes_total": sum(f["bytes"] for f in fired),
        "by_kind": dict(kinds),
        "slowest_fire_ms": round(max((f["fire_s"] for f in fired), default=0) * 1000, 1),
    }


def verdicts(data: dict[str, Any], args: argparse.Namespace) -> list[tuple[bool, str]]:
    checks = []
    ws = data["delivery_ms"]["ws/attack"]
    bus = data["delivery_ms"]["bus/attack"]
    checks.append(
        (
            ws["max"] is not None and ws["max"] <= TARGET_MS,
            f"established client: every probe within {TARGET_MS:g} ms during the attack "
            f"(max {ws['max']} ms; bare bus max {bus['max']} ms)",
        )
    )
    checks.append((ws["missed"] == 0, f"established client missed no probe ({ws['missed']})"))
    client = data["established_client"]
    checks.append(
        (
            client.get("close") is None,
            f"established client still connected ({client.get('close') or 'yes'})",
        )
    )
    fresh = data["fresh_login_ms"]["attack"]
    checks.append(
        (
            fresh["total"]["max"] is not None
            and fresh["total"]["max"] <= TARGET_MS
            and not fresh["failed"],
            f"fresh login + upgrade + snapshot within {TARGET_MS:g} ms during the attack "
            f"(max {fresh['total']['max']} ms, failed {dict(fresh['failed']) or 0})",
        )
    )
    rss = data["engine_rss_mb"]["max"]
    checks.append(
        (
            rss is not None and rss <= args.max_rss_mb,
            f"engine RSS within {args.max_rss_mb} MiB (max {rss} MiB)",
        )
    )
    slow = data["attackers"].get("slowloris", {})
    held = max(slow.get("held_s", {}).get("max", 0), slow.get("oldest_at_end_s", 0))
    checks.append(
        (
            bool(slow) and held <= args.max_hold,
            f"every slowloris connection dropped within {args.max_hold:g} s (longest "
            f"{held:g} s; {slow.get('open_at_end')} younger ones open at the end, "
            f"max {slow.get('max_held')} at once)",
        )
    )
    guesses = data["attackers"].get("login_guessing") or {}
    checks.append(("200" not in guesses.get("statuses", {}), "no guessed login succeeded"))
    return checks


def print_report(data: dict[str, Any], machine: dict[str, Any], args: argparse.Namespace) -> bool:
    print("machine:", json.dumps(machine))
    print(
        f"\nattack: {args.seconds:g} s after a {args.baseline:g} s baseline; probes every "
        f"{args.probe_interval * 1000:g} ms, a fresh login every {args.fresh_interval:g} s"
    )
    print("\ndelivery latency of probes (ms)     n    p50    p99    max  missed")
    for key, s in data["delivery_ms"].items():
        who = "established /all_events" if key.startswith("ws") else "bare bus subscriber"
        print(
            f"  {who:24} {key.split('/')[1]:8} {s['n']:5} {_f(s['p50'])} {_f(s['p99'])} "
            f"{_f(s['max'])} {s['missed']:7}"
        )
    print(
        "\nfresh login + upgrade + snapshot (ms)  n    p50    p99    max"
        "  (connect/login/upgrade/snapshot p99)"
    )
    for phase, s in data["fresh_login_ms"].items():
        t = s["total"]
        print(
            f"  {phase:34} {t['n']:3} {_f(t['p50'])} {_f(t['p99'])} {_f(t['max'])}  "
            f"({_f(s['connect']['p99'])}/{_f(s['login']['p99'])}/{_f(s['upgrade']['p99'])}/{_f(s['snapshot']['p99'])})"
            f"  snapshot {s['snapshot_bytes_max']} B, failed {dict(s['failed']) or 0}"
        )
    print("\nestablished client:", json.dumps(data["established_client"]))
    print(f"bare bus subscriber: {json.dumps(data['bare_bus_subscriber'])} (big: > {BIG} B)")
    print("\nattackers:")
    for name, stats in data["attackers"].items():
        print(f"  {name}: {json.dumps(stats, default=dict)}")
    print("\nengine RSS (MiB):", json.dumps(data["engine_rss_mb"]))
    status = data["status"]
    print(f"\nws.status limit counters (read with {data.get('status_read_with')}):")
    for key, value in flatten(status):
        if LIMIT_WORDS.search(key) and isinstance(value, (int, float)):
            print(f"  {key}: {value}")
    print("ws.status (everything):", json.dumps(status, sort_keys=True))
    if data["errors"]:
        print("\nworker errors:", data["errors"])
    print()
    ok = True
    for passed, text in verdicts(data, args):
        ok &= passed
        print(("PASS " if passed else "FAIL ") + text)
    return ok


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, leaf) pairs, sorted."""
    if not isinstance(value, dict):
        return [(prefix, value)]
    pairs = []
    for key in sorted(value, key=str):
        pairs += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    return pairs


def _f(x: Any) -> str:
    return f"{x:6.1f}" if isinstance(x, (int, float)) else f"{'-':>6}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="attack duration")
    parser.add_argument("--baseline", type=float, default=5.0, help="quiet phase before it")
    parser.add_argument("--warmup", type=float, default=1.0, help="after every role is set up")
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument("--fresh-interval", type=float, default=0.5)
    parser.add_argument("--slowloris", type=int, default=300, help="concurrent connections")
    parser.add_argument("--dribble", type=float, default=2.0, help="seconds between bytes")
    parser.add_argument("--flood", type=int, default=200, help="concurrent token-less upgrades")
    parser.add_argument("--guess-rate", type=float, default=50.0, help="wrong logins per second")
    parser.add_argument("--big-every", type=float, default=0.5, help="seconds between big events")
    parser.add_argument(
        "--big-bytes", type=int, default=0, help="string size (0: just under max_event_size)"
    )
    parser.add_argument(
        "--max-event-size", type=int, default=0, help="the master's option (0: Salt's 1 MiB)"
    )
    parser.add_argument("--big-minions", type=int, default=100_000)
    parser.add_argument("--big-presence", type=int, default=20_000)
    parser.add_argument(
        "--max-hold", type=float, default=15.0, help="s a slowloris connection may live"
    )
    parser.add_argument("--max-rss-mb", type=int, default=1024, help="the stated RSS bound")
    parser.add_argument("--engine", default="{}", help="extra engine options (JSON)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the master's root dir")
    args = parser.parse_args(argv)
    if args.seconds > 600 or args.slowloris > 2000 or args.flood > 2000:
        parser.error("bounded run: --seconds <= 600, --slowloris and --flood <= 2000")

    machine = machine_state(REPO)
    root = tempfile.mkdtemp(prefix="sws-hostile-", dir="/tmp")
    users = os.path.join(root, "users.txt")
    with open(users, "w") as fh:
        fh.writelines(f"{user}:{password}\n" for user, password in USERS.items())
    master = DevMaster(
        root,
        engine=json.loads(args.engine),
        extra={
            "external_auth": {
                "file": {
                    "^filename": users,
                    "bench": [".*", "@runner", "@wheel", "@jobs"],
                    "victim": ["test.*"],
                },
            },
            "presence_events": True,
            "log_level_logfile": "info",
            **({"max_event_size": args.max_event_size} if args.max_event_size else {}),
        },
    )

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        master.start(minions=0, timeout=120)
        data = run(args, master)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        master.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ok = print_report(data, machine, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "args": vars(args), **data}, fh, indent=1, default=dict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
