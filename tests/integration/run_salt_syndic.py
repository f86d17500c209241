"""Run salt-syndic with two Salt 3008.4 bugs mended (test-only; see test_syndic.py).

salt-syndic 3008.4 cannot forward anything after its first request to the
master of masters:

* ``salt.utils.asynchronous.SyncWrapper`` (new in 3008), after each
  synchronous call made from a thread that already runs an event loop — always
  the case in the syndic — cancels the tasks it takes for orphans. One of them
  is the zeromq request client's pending ``queue.get()``; its receive loop
  takes the cancellation for a shutdown and exits, so every later request on
  the syndic's request channel (forwarded events, returns) times out, with
  ``fire_master failed: master could not be contacted`` in the syndic log.
  Mended as Salt 3007 did it: one request channel per request.
* After one timed-out return forward, ``SyndicManager._return_pub_syndic``
  calls ``.done()`` on the plain value ``_return_pub_multi(sync=True)``
  returned and fails every 0.5 s from then on. Mended by wrapping the value
  in a finished future.

Both mends apply only when the installed Salt has the orphan-task clean-up;
this file changes nothing else and is used only by the syndic that the
integration tests start.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys


def mend() -> bool:
    """Patch the syndic if this Salt has the bugs; True if it did."""
    import salt.channel.client
    import salt.minion
    import salt.utils.asynchronous

    if not hasattr(salt.utils.asynchronous.SyncWrapper, "_task_is_orphan"):
        return False

    def _send_req_sync(self, load, timeout):
        with salt.channel.client.ReqChannel.factory(self.opts) as channel:
            return channel.send(load, timeout=timeout, tries=self.opts["return_retry_tries"])

    return_pub_multi = salt.minion.Minion._return_pub_multi

    def _return_pub_multi(self, rets, ret_cmd="_return", timeout=60, sync=False):
        result = return_pub_multi(self, rets, ret_cmd=ret_cmd, timeout=timeout, sync=sync)
        if not sync:
            return result
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(result)
        return future

    salt.minion.Syndic._send_req_sync = _send_req_sync
    salt.minion.Syndic._return_pub_multi = _return_pub_multi
    return True


if __name__ == "__main__":
    mend()
    from salt.scripts import salt_syndic

    code = 0
    try:
        salt_syndic()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
