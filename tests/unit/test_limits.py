"""salt_ws.limits: the login throttle (time passed in), connection slots, client addresses."""

from __future__ import annotations

import ipaddress

import pytest

from salt_ws.limits import IN_FLIGHT, LoginThrottle, Slots, address_key, client_address

A, B = "192.0.2.1", "192.0.2.2"


def throttle(max_failures: int = 3, window: float = 60.0, max_addresses: int = 100):
    return LoginThrottle(max_failures, window, max_addresses)


def fail(limiter: LoginThrottle, address: str, *times: float) -> None:
    for now in times:
        limiter.failed(address, now)


def fail_as(limiter: LoginThrottle, address: str, username: str, *times: float) -> None:
    for now in times:
        limiter.failed(address, now, username)


def test_an_unknown_address_may_go_ahead():
    assert throttle().retry_after(A, 0.0) == 0


@pytest.mark.parametrize("failures", [0, 1, 2])
def test_under_the_limit_there_is_no_wait(failures):
    limiter = throttle(max_failures=3)
    fail(limiter, A, *[100.0 + n for n in range(failures)])
    assert limiter.retry_after(A, 103.0) == 0


@pytest.mark.parametrize(
    ("times", "now", "wait"),
    [
        ((100.0, 110.0, 120.0), 120.0, 40.0),  # oldest 100 + window 60 - now 120
        ((100.0, 110.0, 120.0), 150.5, 9.5),
        ((100.0, 100.0, 100.0), 100.0, 60.0),
    ],
)
def test_at_the_limit_the_wait_lasts_until_the_oldest_failure_leaves_the_window(times, now, wait):
    limiter = throttle(max_failures=3, window=60.0)
    fail(limiter, A, *times)
    assert limiter.retry_after(A, now) == pytest.approx(wait)
    assert limiter.retry_after(A, now) > 0


def test_the_window_expiring_frees_the_address():
    limiter = throttle(max_failures=3, window=60.0)
    fail(limiter, A, 100.0, 110.0, 120.0)
    assert limiter.retry_after(A, 159.9) > 0
    assert limiter.retry_after(A, 160.0) == 0  # the failure at 100 is exactly one window old
    assert limiter.retry_after(A, 1000.0) == 0


def test_only_failures_inside_the_window_count():
    limiter = throttle(max_failures=3, window=60.0)
    fail(limiter, A, 0.0, 10.0, 50.0)  # the first one is gone by 65
    assert limiter.retry_after(A, 65.0) == 0
    fail(limiter, A, 65.0)
    assert limiter.retry_after(A, 65.0) == pytest.approx(10.0 + 60.0 - 65.0)


def test_a_success_withdraws_only_its_own_attempt():
    # Was: a success cleared the address, so the holder of any account could alternate
    # guesses with its own logins forever.
    limiter = throttle(max_failures=3)
    fail(limiter, A, 100.0, 101.0)  # two wrong guesses
    limiter.failed(A, 102.0)  # the attempt is recorded before the check ...
    limiter.succeeded(A, 102.0)  # ... and withdrawn when it succeeds
    assert limiter.retry_after(A, 103.0) == 0
    fail(limiter, A, 104.0)
    assert limiter.retry_after(A, 104.0) > 0  # the two earlier failures still count


def test_a_success_as_one_user_never_clears_another_users_failures():
    limiter = throttle(max_failures=2)
    fail_as(limiter, A, "alice", 100.0, 101.0)
    limiter.failed(A, 102.0, "mallory")
    limiter.succeeded(A, 102.0, "mallory")
    assert limiter.retry_after(A, 103.0) > 0
    assert limiter.retry_after(B, 103.0, "alice") > 0
    assert limiter.retry_after(B, 103.0, "mallory") == 0


def test_a_success_of_an_unknown_address_is_harmless():
    limiter = throttle()
    limiter.succeeded(A, 0.0, "alice")
    assert limiter.retry_after(A, 0.0) == 0


def test_addresses_are_independent():
    limiter = throttle(max_failures=2)
    fail(limiter, A, 100.0, 101.0)
    fail(limiter, B, 100.0)
    assert limiter.retry_after(A, 102.0) > 0
    assert limiter.retry_after(B, 102.0) == 0
    fail(limiter, B, 103.0)
    assert limiter.retry_after(B, 104.0) > 0
    assert limiter.retry_after(A, 162.0) == 0


def test_memory_is_bounded_and_the_least_recently_failed_address_goes_first():
    limiter = throttle(max_failures=1, max_addresses=3)
    for n, address in enumerate(["a", "b", "c"]):
        limiter.failed(address, 100.0 + n)
    limiter.failed("a", 103.0)  # "a" failed again: now "b" is the least recent
    limiter.failed("d", 104.0)
    assert [addr for addr in "abcd" if limiter.retry_after(addr, 105.0) > 0] == ["a", "c", "d"]
    limiter.failed("e", 105.0)
    assert [addr for addr in "abcde" if limiter.retry_after(addr, 106.0) > 0] == ["a", "d", "e"]


def test_expired_addresses_are_forgotten_when_looked_at():
    limiter = throttle(max_failures=1, window=10.0, max_addresses=2)
    limiter.failed("a", 0.0)
    limiter.failed("b", 100.0)
    assert limiter.retry_after("a", 100.0) == 0  # expired and dropped ...
    limiter.failed("c", 100.0)  # ... so "b" is still tracked next to "c"
    assert limiter.retry_after("b", 101.0) > 0
    assert limiter.retry_after("c", 101.0) > 0


# -- per username ------------------------------------------------------------------------------


def test_the_username_limit_may_be_looser_so_one_address_cannot_lock_an_account_out():
    limiter = LoginThrottle(max_failures=3, window=60.0, max_user_failures=6)
    fail_as(limiter, A, "alice", 100.0, 101.0, 102.0)
    assert limiter.retry_after(A, 103.0, "alice") > 0  # the address is stopped
    assert limiter.retry_after(B, 103.0, "alice") == 0  # alice elsewhere is not
    fail_as(limiter, B, "alice", 103.0, 104.0, 105.0)
    assert limiter.retry_after("192.0.2.3", 106.0, "alice") == pytest.approx(54.0)


def test_failures_for_one_username_from_many_addresses_block_that_username():
    limiter = throttle(max_failures=3)
    for n, address in enumerate(["192.0.2.10", "198.51.100.7", "203.0.113.9"]):
        limiter.failed(address, 100.0 + n, "alice")
    assert limiter.retry_after("192.0.2.99", 103.0, "alice") == pytest.approx(57.0)
    assert limiter.retry_after("192.0.2.99", 103.0, "bob") == 0
    assert limiter.retry_after("192.0.2.99", 103.0) == 0


def test_usernames_are_compared_case_insensitively():
    limiter = throttle(max_failures=2)
    fail_as(limiter, A, "Alice", 100.0)
    fail_as(limiter, B, "ALICE", 101.0)
    assert limiter.retry_after("192.0.2.3", 102.0, "alice") > 0


def test_the_longer_wait_wins():
    limiter = throttle(max_failures=2, window=60.0)
    fail_as(limiter, A, "alice", 100.0, 110.0)  # address and alice blocked until 160
    fail(limiter, A, 130.0)  # the address alone: until 170
    assert limiter.retry_after(A, 140.0, "alice") == pytest.approx(30.0)
    assert limiter.retry_after(B, 140.0, "alice") == pytest.approx(20.0)


def test_username_memory_is_bounded_in_entries_and_bytes():
    limiter = throttle(max_failures=1, max_addresses=3)
    for n in range(10):
        limiter.failed(A, 100.0 + n, "u" * 60000 + str(n))
    stats = limiter.stats()
    assert stats["usernames"] == 3
    assert stats["addresses"] == 1
    assert all(len(key) <= 32 for key in limiter._users)


def test_junk_usernames_cannot_flush_a_username_at_its_limit():
    # red team a6: 10,000 junk usernames evicted "root" from the LRU, resetting its count
    limiter = LoginThrottle(max_failures=5, window=60.0, max_addresses=100, max_user_failures=4)
    fail_as(limiter, A, "root", 100.0, 100.1, 100.2, 100.3)
    for n in range(1000):
        limiter.failed(f"2001:db8:{n:x}::1", 101.0 + n / 1000, f"junk{n}")
    assert limiter.retry_after(B, 103.0, "root") > 0
    assert limiter.stats()["usernames"] <= 100


def test_addresses_at_their_limit_outlive_under_limit_ones():
    limiter = throttle(max_failures=2, max_addresses=3)
    fail(limiter, "held", 100.0, 100.5)
    for n in range(10):
        limiter.failed(f"once{n}", 101.0 + n)
    assert limiter.retry_after("held", 112.0) > 0
    assert limiter.stats()["addresses"] == 3


def test_when_every_entry_is_at_its_limit_the_least_recent_goes():
    limiter = throttle(max_failures=1, max_addresses=2)
    for n, address in enumerate("abc"):
        limiter.failed(address, 100.0 + n)
    assert [a for a in "abc" if limiter.retry_after(a, 103.0) > 0] == ["b", "c"]


def test_a_success_below_the_limit_makes_an_entry_evictable_again():
    limiter = throttle(max_failures=2, max_addresses=2)
    fail(limiter, "a", 100.0, 101.0)
    limiter.succeeded("a", 101.0)
    limiter.failed("b", 102.0)
    limiter.failed("c", 103.0)
    assert limiter.stats()["addresses"] == 2
    assert limiter.retry_after("a", 104.0) == 0 and "a" not in list(limiter._addresses)


def test_a_key_keeps_a_bounded_number_of_times():
    limiter = throttle(max_failures=3)
    fail(limiter, A, *[100.0 + n / 100 for n in range(1000)])
    assert len(limiter._addresses[A]) == 3 + IN_FLIGHT


def test_stats_count_the_refusals_asked_for():
    limiter = throttle(max_failures=1)
    limiter.failed(A, 100.0)
    assert limiter.retry_after(A, 101.0) > 0
    assert limiter.retry_after(B, 101.0) == 0
    assert limiter.stats()["throttled"] == 1


# -- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::9", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("", ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_address_key_groups_ipv6_by_64(address, key):
    assert address_key(address) == key


TRUSTED = tuple(ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", ["203.0.113.5"], "192.0.2.1"),  # untrusted peer: header ignored
        ("127.0.0.1", [], "127.0.0.1"),  # trusted, no header
        ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.5"], "203.0.113.5"),  # a forged left part
        ("127.0.0.1", ["6.6.6.6, 203.0.113.5, 10.1.2.3"], "203.0.113.5"),  # trusted hop skipped
        ("127.0.0.1", ["6.6.6.6", "203.0.113.5, 10.1.2.3"], "203.0.113.5"),  # two headers
        ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # all trusted: the leftmost
        ("127.0.0.1", ["junk, 10.0.0.2"], "10.0.0.2"),  # garbage: the last good hop
        ("127.0.0.1", [" 2001:DB8::1 "], "2001:db8::1"),
        ("127.0.0.1", [""], "127.0.0.1"),
    ],
)
def test_client_address_walks_forwarded_for_from_the_right(peer, forwarded, client):
    assert client_address(peer, forwarded, TRUSTED) == client


def test_without_trusted_proxies_forwarded_for_is_ignored():
    assert client_address("127.0.0.1", ["203.0.113.5"], ()) == "127.0.0.1"


# -- slots ------------------------------------------------------------------------------------


def test_slots_cap_per_key_and_in_total():
    slots = Slots(total=3, per_key=2)
    assert slots.acquire("a") is None
    assert slots.acquire("a") is None
    assert slots.acquire("a") == "per_key"
    assert slots.acquire("b") is None
    assert slots.acquire("c") == "total"
    assert len(slots) == 3
    assert slots.count("a") == 2
    slots.release("a")
    assert slots.acquire("c") is None
    assert slots.stats() == {"open": 3, "refused_total": 1, "refused_per_key": 1}


def test_exempt_keys_are_bound_only_by_the_total():
    slots = Slots(total=3, per_key=1)
    assert [slots.acquire("proxy", exempt=True) for _ in range(4)] == [None, None, None, "total"]


def test_released_keys_are_forgotten():
    slots = Slots(total=3, per_key=1)
    slots.acquire("a")
    slots.release("a")
    slots.release("a")  # harmless
    assert slots.count("a") == 0
    assert slots._counts == {}
    assert len(slots) == 0
