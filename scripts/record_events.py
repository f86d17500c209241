"""Record real master bus events for the formatted-view tests (tests/files/).

Starts a loopback master with two minions, runs a fixed scenario (pings, a
failing job, a job with a retcode, a runner, a scheduled job, a minion that
never answers, a key deletion, a minion stopped) while a client reads
``/all_events``, and writes the events as ``[[tag, data], ...]`` JSON.

    .venv/bin/python scripts/record_events.py tests/files/events-salt-3008.4.json
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from devenv import BIN, dev_master


def main(out: str) -> int:
    events: list[list] = []
    with dev_master(minions=2, extra={"loop_interval": 2}) as master:
        token = master.login()
        ws = websocket.create_connection(f"ws://127.0.0.1:{master.ws_port}/all_events/{token}")
        ws.send("websocket client ready")

        def read() -> None:
            try:
                while True:
                    event = json.loads(ws.recv())
                    events.append([event["tag"], event["data"]])
            except Exception:
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(6)  # both minions start and show in presence

        def salt(*args: str) -> None:
            master.salt(*args, "--out=json", "-t", "10")

        def run(*args: str) -> None:
            subprocess.run(
                [os.path.join(BIN, "salt-run"), "-c", master.conf_dir, *args],
                capture_output=True,
                timeout=60,
                check=False,
            )

        salt("*", "test.ping")
        salt("*", "test.retcode", "code=3")
        salt("minion-1", "test.exception", "boom")
        salt("-L", "minion-1,minion-2", "test.arg", "a", "b=c")
        run("test.arg", "x")
        salt("minion-2", "schedule.add", "ws_probe", "function=test.ping", "seconds=2")
        time.sleep(5)
        salt("minion-2", "schedule.delete", "ws_probe")
        # a job for a minion that is targeted but never answers: stop minion-2 first
        minion2 = master.procs[2]
        minion2.send_signal(signal.SIGTERM)
        minion2.wait(30)
        salt("-L", "minion-1,minion-2", "test.ping")
        time.sleep(5)  # presence notices minion-2 is gone
        subprocess.run(
            [os.path.join(BIN, "salt-key"), "-c", master.conf_dir, "-d", "minion-2", "-y"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        time.sleep(3)
        ws.close()
    with open(out, "w") as fh:
        json.dump(events, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"recorded {len(events)} events to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
