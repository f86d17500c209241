"""salt_ws.limits.LoginThrottle: failed logins per address, with time passed in."""

from __future__ import annotations

import pytest

from salt_ws.limits import LoginThrottle

A, B = "192.0.2.1", "192.0.2.2"


def throttle(max_failures: int = 3, window: float = 60.0, max_addresses: int = 100):
    return LoginThrottle(max_failures, window, max_addresses)


def fail(limiter: LoginThrottle, address: str, *times: float) -> None:
    for now in times:
        limiter.failed(address, now)


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


def test_a_success_clears_the_address():
    limiter = throttle(max_failures=3)
    fail(limiter, A, 100.0, 101.0, 102.0)
    assert limiter.retry_after(A, 103.0) > 0
    limiter.succeeded(A)
    assert limiter.retry_after(A, 103.0) == 0
    fail(limiter, A, 104.0, 105.0)
    assert limiter.retry_after(A, 106.0) == 0  # the count starts again from zero


def test_a_success_of_an_unknown_address_is_harmless():
    limiter = throttle()
    limiter.succeeded(A)
    assert limiter.retry_after(A, 0.0) == 0


def test_addresses_are_independent():
    limiter = throttle(max_failures=2)
    fail(limiter, A, 100.0, 101.0)
    fail(limiter, B, 100.0)
    assert limiter.retry_after(A, 102.0) > 0
    assert limiter.retry_after(B, 102.0) == 0
    limiter.succeeded(B)
    assert limiter.retry_after(A, 102.0) > 0
    limiter.succeeded(A)
    fail(limiter, B, 103.0, 104.0)
    assert limiter.retry_after(B, 105.0) > 0
    assert limiter.retry_after(A, 105.0) == 0


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
