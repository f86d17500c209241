"""Start a loopback salt-master + minion with the ws engine and stream its events.

Run through ``scripts/sandbox`` (which prepares the venv). Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from devenv import dev_master


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, timeout) and SIGHUP stop the daemons as Ctrl-C does


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minions", type=int, default=1, help="how many minions (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the root dir afterwards")
    args = parser.parse_args()
    with dev_master(minions=args.minions, keep=args.keep) as master:
        token = master.login()
        salt = os.path.join(os.path.dirname(sys.executable), "salt")
        salt_run = salt + "-run"
        print(
            f"""Dashboard: {master.url}/   (log in with any username and password, eauth 'auto')

salt_ws sandbox is up (root {master.root})
  engine:     {master.url}   (plain HTTP, eauth 'auto': any user/password)
  login:      curl -si {master.url}/login -H 'Accept: application/json' \\
                  -d username=saltdev -d password=saltdev -d eauth=auto
  events:     ws://127.0.0.1:{master.ws_port}/all_events/<token>   (send 'websocket client ready')
  try:        {salt} -c {master.conf_dir} '*' test.ping
  status:     {salt_run} -c {master.conf_dir} ws.status
  master log: {master.root}/master.log
Streaming /all_events below; Ctrl-C stops the sandbox.
""",
            flush=True,
        )
        ws = websocket.create_connection(f"ws://127.0.0.1:{master.ws_port}/all_events/{token}")
        ws.send("websocket client ready")
        try:
            while True:
                event = json.loads(ws.recv())
                print(f"{event['tag']}  {json.dumps(event['data'], sort_keys=True)}", flush=True)
        except KeyboardInterrupt:
            print("\nstopping the sandbox...", flush=True)
        except websocket.WebSocketConnectionClosedException:
            print("the engine closed the connection", flush=True)
        finally:
            ws.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
