"""The state of the machine a benchmark ran on, recorded with its numbers (shared by bench_*.py)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the bench extra
    psutil = None


def machine_state(repo: str, exclude_pids: set[int] | None = None) -> dict[str, Any]:
    """CPU, load, versions, the git revision of ``repo`` and other busy processes (1 s sample)."""
    state: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        state["uptime"] = subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    state["cpu"] = line.split(":", 1)[1].strip()
                    break
    with contextlib.suppress(Exception):
        import salt.version  # pylint: disable=import-outside-toplevel
        import tornado  # pylint: disable=import-outside-toplevel

        state["salt"] = salt.version.__version__
        state["tornado"] = tornado.version
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", repo]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "salt_ws", "_engines"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        state["git"] = head + (
            f" + {len(dirty.splitlines())} uncommitted salt_ws file(s)" if dirty.strip() else ""
        )
    if psutil is not None:
        state["mem_available_mb"] = round(psutil.virtual_memory().available / 2**20)
        exclude = set(exclude_pids or ())
        me = psutil.Process()
        exclude.add(me.pid)
        with contextlib.suppress(psutil.Error):
            exclude.update(p.pid for p in me.children(recursive=True))
        procs = []
        for p in psutil.process_iter(["pid", "name"]):
            if p.pid in exclude:
                continue
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
                procs.append(p)
        time.sleep(1.0)
        busy = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                pct = p.cpu_percent(None)
                if pct >= 5.0:
                    cmd = " ".join(p.cmdline())[:90] or p.name()
                    busy.append({"pid": p.pid, "cpu_pct": round(pct), "cmd": cmd})
        state["other_busy_processes"] = sorted(busy, key=lambda b: -b["cpu_pct"])[:6]
    return state
