"""Rate limits for the chat server: a token bucket per key (browser session, client address).

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each message takes
one. An empty bucket answers with the seconds until the next token, which the server sends to
the browser as a typed ``rate_limited`` error. Buckets are kept for the most recently seen keys
only (least recently used dropped first), so memory stays bounded however many clients come.

A client address is keyed by :func:`client_key`, which counts an IPv6 host's whole /64 as one
client, for these limits and for the per-address session and connection caps alike.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from avatarkit.errors import InputValidationError

__all__ = ["Throttle", "TokenBucket", "client_key"]


def client_key(address: str) -> str:
    """The client a per-address limit counts ``address`` as.

    An IPv4 address is itself. An IPv6 address stands for its /64 (``2001:db8:1:2::/64``): one
    host is given a whole /64 and may pick any address in it, so counting each address alone
    would let it step around every per-address limit. An IPv4-mapped IPv6 address (a dual-stack
    socket's view of an IPv4 client, ``::ffff:203.0.113.7``) is that IPv4 address. Anything
    that is not an IP address (a test client's name) is used as given.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate`` tokens per second.

    Args:
        rate: Tokens gained per second (> 0).
        burst: Most tokens held at once (>= 1); a fresh bucket is full.
        clock: Seconds from a monotonic clock (injectable for tests).

    Raises:
        InputValidationError: a rate or burst out of range.
    """

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0:
            raise InputValidationError(f"rate must be > 0, got {rate}", field="rate")
        if not burst >= 1:
            raise InputValidationError(f"burst must be >= 1, got {burst}", field="burst")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst:g})"

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` could be taken (0.0: now); takes none."""
        self._refill()
        if self._tokens >= tokens:
            return 0.0
        return (tokens - self._tokens) / self.rate

    def take(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` if there are enough; return 0.0, or the seconds to wait (none taken)."""
        wait = self.wait(tokens)
        if wait == 0.0:
            self._tokens -= tokens
        return wait


class Throttle:
    """One :class:`TokenBucket` per key, for at most ``max_keys`` keys (least recent dropped).

    Args:
        per_minute: Messages allowed per minute per key, on average.
        burst: Messages a key may send at once before the average applies.
        max_keys: Buckets kept; a dropped key starts again with a full bucket.
        clock: Seconds from a monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        TokenBucket(per_minute / 60.0, burst)  # validate once, up front
        self.per_minute = per_minute
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __repr__(self) -> str:
        return f"Throttle({self.per_minute:g}/min, burst={self.burst})"

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may send a message (0.0: now); spends nothing.

        Check every throttle a message is subject to with this first, then :meth:`take` from
        each only if all allow it: a message one of them refuses then costs nothing in the others.
        """
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait()

    def take(self, key: str) -> float:
        """Spend one message for ``key``; 0.0 when allowed, else the seconds until it would be."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.per_minute / 60.0, self.burst, clock=self._clock)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()
