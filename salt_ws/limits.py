"""Rate limits that need memory: failed logins per source address (pure; time is a parameter)."""

from __future__ import annotations

import collections

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Slows down password guessing: ``max_failures`` per ``window`` seconds per address.

    Past the limit, :meth:`retry_after` says how long the address must wait
    (the handler answers 429 with ``Retry-After``); a success clears the
    address. Memory is bounded: at most ``max_addresses`` are tracked, the
    least recently failed forgotten first.
    """

    def __init__(self, max_failures: int, window: float, max_addresses: int = 10000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def _recent(self, address: str, now: float) -> collections.deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str, now: float) -> float:
        """Seconds ``address`` must wait before trying again (0: go ahead)."""
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return 0.0
        # blocked until enough failures leave the window to get under the limit
        return max(0.0, times[-self.max_failures] + self.window - now)

    def failed(self, address: str, now: float) -> None:
        """Record a failed login from ``address``.

        Callers record an attempt *before* checking the credentials (and call
        :meth:`succeeded` after a success), so parallel guesses count too.
        """
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = collections.deque()
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """Forget ``address``'s failures."""
        self._failures.pop(address, None)
