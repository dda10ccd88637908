"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up. Pure; the caller
passes the time, so tests need no clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """One tenant's event-rate allowance; one token per record."""

    rate: float  # tokens added per second (> 0)
    burst: float  # the most tokens the bucket holds (>= 1)
    tokens: float
    stamp: float  # time of the last refill, seconds (any monotonic origin)

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket with all its burst available."""
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1: {rate}, {burst}")
        return cls(rate, burst, burst, now)

    def short(self, n: int, now: float) -> float:
        """What ``take`` would answer, without taking: 0.0 when ``n`` tokens are there."""
        self._refill(now)
        need = min(float(n), self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens: 0.0 when taken, else the seconds to wait before asking again.

        A request larger than the whole bucket passes once the bucket is full and leaves it in
        debt, so a batch bigger than ``burst`` is slowed, never refused forever; over any
        interval of ``t`` seconds at most ``burst + rate * t`` tokens plus one such batch pass.
        """
        wait = self.short(n, now)
        if wait == 0.0:
            self.tokens -= n
        return wait
