"""Regression tests for security bugs found by review: throttle races, late
first-message auth, ACL entries that cannot match, close reasons."""

from __future__ import annotations

import asyncio
import json

from salt_ws.acl import Permissions
from salt_ws.handlers import CLIENT_READY
from salt_ws.hub import Channel
from salt_ws.limits import LoginThrottle
from tests.functional.test_security_app import ALICE, GOOD_TOKEN, Auth, serving


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 15))


# Was: the throttle was checked before awaiting eauth and the failure recorded after it,
# so concurrent guesses all passed the check.
def test_concurrent_failed_logins_are_throttled_too():
    async def main():
        async with serving(auth=Auth(delay=0.2), login_max_failures=2) as site:
            wrong = {**ALICE, "password": "wrong"}
            codes = await asyncio.gather(*(site.post_json("/login", wrong) for _ in range(6)))
            codes = sorted(r.code for r in codes)
            assert len(site.auth.called("login")) <= 2, codes
            assert codes == [401, 401, 429, 429, 429, 429]

    run(main())


# Was: retry_after used the oldest failure; with more than max_failures recorded the
# address was still blocked when that wait was over.
def test_retry_after_is_long_enough_when_failures_exceed_the_limit():
    limiter = LoginThrottle(max_failures=3, window=60.0)
    for now in (100.0, 110.0, 120.0, 130.0):
        limiter.failed("a", now)
    wait = limiter.retry_after("a", 130.0)
    assert limiter.retry_after("a", 130.0 + wait) == 0  # actual: still 10 s to wait
    assert wait == 40.0  # actual: 30.0


# Was: _first_message_auth called _start() after an early ready even when the client had
# closed meanwhile, leaving a subscription for a dead socket in the hub.
def test_a_client_gone_during_first_message_auth_leaves_no_subscription():
    async def main():
        async with serving(auth=Auth(delay=0.2)) as site:
            conn = await site.open()
            await conn.write_message(json.dumps({"token": GOOD_TOKEN}))
            await conn.write_message(CLIENT_READY)
            conn.close()
            await site.sockets(0)
            await asyncio.sleep(0.4)  # the session lookup finishes
            assert site.hub.count(Channel.ALL_EVENTS) == 0

    run(main())


# Was: may_target counted an entry that is not a valid regex as "may target": such a user
# may run nothing, yet the formatted view showed them every minion with its grains.
def test_may_target_needs_a_function_that_can_match():
    for auth_list in (["["], ["*"], [{"*": ["(unclosed"]}]):
        perms = Permissions(auth_list)
        assert not perms.may("test.ping", "web-1")
        assert not perms.may_target("web-1"), auth_list


# Was: function entries whose argument restriction Salt can never satisfy (None, a list
# instead of {"args": [...]}, a dict with several functions) counted; Salt never allows them.
def test_unsatisfiable_argument_restrictions_grant_nothing():
    for auth_list in (
        [{"*": [{"cmd.run": None}]}],
        [{"*": [{"cmd.run": ["ls"]}]}],
        [{"*": [{"cmd.run": {"args": ["ls"]}, "test.ping": {}}]}],
    ):
        assert not Permissions(auth_list).may("cmd.run", "web-1"), auth_list


# Was (wording): the handshake timeout said "no a token message within 0.5s".
def test_handshake_timeout_reason_reads_well():
    async def main():
        async with serving() as site:
            conn = await site.open()
            _, reason = await site.closed(conn)
            assert not reason.startswith("no a "), reason

    run(main())
