"""Limits that need memory: failed logins, connection slots, and the client address they count.

Pure: no tornado, no Salt; time is a parameter. Per-address limits count an IPv4
address, or an IPv6 address's /64 (:func:`address_key`): one host usually holds a
whole /64, so counting its addresses one by one would give it 2**64 budgets.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "LoginThrottle",
    "Network",
    "Slots",
    "address_key",
    "client_address",
    "is_trusted",
    "networks",
]

# Attempts a key may hold beyond max_failures: those recorded while their check is
# still running (parallel logins that all passed retry_after).
IN_FLIGHT = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Times = collections.OrderedDict[Any, collections.deque[float]]


class _Table:
    """Failure times per key, least recently failed first, at most ``most`` keys.

    Keys at or over ``limit`` are kept apart from those under it, and are
    forgotten only once no key under its limit is left: a flood of fresh keys
    (junk usernames, new addresses) cannot flush a key that is being throttled.
    """

    __slots__ = ("full", "limit", "most", "under")

    def __init__(self, limit: int, most: int) -> None:
        self.limit = limit
        self.most = most
        self.under: _Times = collections.OrderedDict()
        self.full: _Times = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.under) + len(self.full)

    def __iter__(self) -> Any:
        yield from self.under
        yield from self.full

    def __getitem__(self, key: Any) -> collections.deque[float]:
        times = self.get(key)
        if times is None:
            raise KeyError(key)
        return times

    def get(self, key: Any) -> collections.deque[float] | None:
        times = self.under.get(key)
        return times if times is not None else self.full.get(key)

    def delete(self, key: Any) -> None:
        self.under.pop(key, None)
        self.full.pop(key, None)

    def place(self, key: Any, times: collections.deque[float]) -> None:
        """(Re)file ``key`` as the most recent of its side; forget the oldest beyond ``most``."""
        self.delete(key)
        (self.full if len(times) >= self.limit else self.under)[key] = times
        while len(self) > self.most:
            (self.under or self.full).popitem(last=False)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def address_key(address: str) -> str:
    """What per-address limits count: an IPv4 address, or an IPv6 address's /64.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Anything that is not
    an IP address (a Unix socket's empty peer) is its own key.
    """
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``trusted_proxies`` (validated by the config already)."""
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """True if ``address`` is an IP address inside one of the ``trusted`` networks."""
    ip = _ip(address)
    return ip is not None and bool(trusted) and _trusted(ip, trusted)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer``, or what trusted proxies say in ``X-Forwarded-For``.

    The header is read only when ``peer`` is a trusted proxy. Each proxy appends
    the address it got the request from, so the list is walked from the right,
    skipping trusted hops: the first untrusted address is the client (anything
    left of it was written by the client and proves nothing). An entry that is
    not an address ends the walk at the last good hop; when every hop is trusted
    the leftmost is the client.

    Args:
        peer: the TCP peer's address.
        forwarded_for: every ``X-Forwarded-For`` header value, in order.
        trusted: the ``trusted_proxies`` networks.
    """
    peer_ip = _ip(peer)
    if peer_ip is None or not trusted or not _trusted(peer_ip, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer_ip
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break
        client = ip
        if not _trusted(ip, trusted):
            break
    return str(client)


class LoginThrottle:
    """Slows down password guessing: ``max_failures`` per ``window`` seconds per address
    (:func:`address_key`) and, separately, ``max_user_failures`` per username.

    The per-username count bounds guessing spread over many addresses. Its limit
    is best above ``max_failures`` (the handlers use twice as many), so that no
    single address can lock an account out: it is stopped by its own limit first.

    Past either limit, :meth:`retry_after` says how long to wait (the handler
    answers 429 with ``Retry-After``). A caller records each attempt as a failure
    *before* checking the credentials, so parallel guesses count too, and on
    success withdraws that one attempt (:meth:`succeeded`). A success clears
    nothing else: clearing the address would let the holder of any account
    alternate guesses with its own logins, and clearing the username would give a
    guesser spread over many addresses fresh tries each time the real user logs
    in; a user's own typos leave the window by themselves.

    Memory is bounded: at most ``max_addresses`` addresses and as many usernames
    are tracked (the least recently failed forgotten first, but one at or over
    its limit only once none under it is left: junk usernames cannot flush a
    throttled account), each with at most
    its limit + :data:`IN_FLIGHT` times; usernames are kept as 16-byte digests,
    whatever their length, compared case-insensitively (LDAP and others ignore
    case).
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        max_addresses: int = 10000,
        max_user_failures: int | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.max_user_failures = max_user_failures or max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._addresses = _Table(self.max_failures, max_addresses)
        self._users = _Table(self.max_user_failures, max_addresses)
        self.throttled = 0  # retry_after answers that were not 0

    @staticmethod
    def _user(username: str) -> bytes:
        data = username.casefold().encode("utf-8", "replace")
        return hashlib.blake2b(data, digest_size=16).digest()

    def _keys(self, address: str, username: str | None) -> list[tuple[_Table, Any, int]]:
        """(table, key, limit) of each count an attempt from ``address`` as ``username`` is in."""
        keys: list[tuple[_Table, Any, int]] = [
            (self._addresses, address_key(address), self.max_failures)
        ]
        if username is not None:
            keys.append((self._users, self._user(username), self.max_user_failures))
        return keys

    def _recent(self, table: _Table, key: Any, now: float) -> collections.deque[float] | None:
        times = table.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            table.delete(key)
            return None
        return times  # (a key that decayed under its limit stays filed as full until it fails)

    def _wait(self, table: _Table, key: Any, limit: int, now: float) -> float:
        times = self._recent(table, key, now)
        if times is None or len(times) < limit:
            return 0.0
        # blocked until enough failures leave the window to get under the limit
        return max(0.0, times[-limit] + self.window - now)

    def retry_after(self, address: str, now: float, username: str | None = None) -> float:
        """Seconds to wait before trying again from ``address`` (as ``username``); 0: go ahead."""
        keys = self._keys(address, username)
        wait = max(self._wait(table, key, limit, now) for table, key, limit in keys)
        if wait > 0:
            self.throttled += 1
        return wait

    def failed(self, address: str, now: float, username: str | None = None) -> None:
        """Record a failed (or not yet checked) attempt from ``address`` as ``username``."""
        for table, key, limit in self._keys(address, username):
            times = self._recent(table, key, now)
            if times is None:
                times = collections.deque(maxlen=limit + IN_FLIGHT)
            times.append(now)
            table.place(key, times)

    def succeeded(self, address: str, now: float, username: str | None = None) -> None:
        """Withdraw the attempt recorded at ``now`` by :meth:`failed`; nothing else."""
        for table, key, _ in self._keys(address, username):
            times = table.get(key)
            if times is not None and now in times:
                times.remove(now)
                if not times:
                    table.delete(key)
                elif len(times) < table.limit and key in table.full:
                    table.full.pop(key)
                    table.under[key] = times  # under its limit again: evictable

    def stats(self) -> dict[str, int]:
        """Tracked addresses and usernames, and how often an attempt was refused."""
        return {
            "addresses": len(self._addresses),
            "usernames": len(self._users),
            "throttled": self.throttled,
        }


class Slots:
    """Counted holders per key: at most ``total`` in all and ``per_key`` per key.

    Keys with no holder are forgotten, so memory follows what is open.
    """

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._counts: dict[str, int] = {}
        self._open = 0
        self.refused_total = 0
        self.refused_per_key = 0

    def __len__(self) -> int:
        return self._open

    def count(self, key: str) -> int:
        """Holders of ``key``."""
        return self._counts.get(key, 0)

    def refusal(self, key: str, exempt: bool = False) -> str | None:
        """Why one more holder of ``key`` would be refused (``"total"``, ``"per_key"``), or None.

        ``exempt`` keys (trusted proxies) are bound by the total only.
        """
        if self._open >= self.total:
            return "total"
        if not exempt and self.count(key) >= self.per_key:
            return "per_key"
        return None

    def acquire(self, key: str, exempt: bool = False) -> str | None:
        """Take a slot for ``key``; returns None, or the refusal (counted) and takes nothing."""
        refusal = self.refusal(key, exempt)
        if refusal == "total":
            self.refused_total += 1
        elif refusal == "per_key":
            self.refused_per_key += 1
        else:
            self._counts[key] = self.count(key) + 1
            self._open += 1
        return refusal

    def release(self, key: str) -> None:
        """Give back a slot of ``key`` (harmless if it holds none)."""
        count = self._counts.get(key, 0)
        if count <= 0:
            return
        self._open -= 1
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1

    def stats(self) -> dict[str, int]:
        """Open slots and refusals by reason."""
        return {
            "open": self._open,
            "refused_total": self.refused_total,
            "refused_per_key": self.refused_per_key,
        }
