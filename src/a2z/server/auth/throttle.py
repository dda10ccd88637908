"""Login throttling per account and per source address (sliding window, in memory).

Limits are per server process; with several API processes the effective limit is multiplied
by their number — still far under ASVS's 100 failures per hour per account with the defaults.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from a2z.server.errors import RateLimited


@dataclass
class LoginThrottle:
    """Refuses logins for a key once it has ``limit`` failures within ``window_s``."""

    per_account: int = 10
    per_source: int = 50
    window_s: float = 15 * 60
    _failures: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, account: str, source: str) -> None:
        """Raise RateLimited if either key is over its limit."""
        now = time.monotonic()
        with self._lock:
            for key, limit in (
                (f"a:{account}", self.per_account),
                (f"s:{source}", self.per_source),
            ):
                window = self._trim(key, now)
                if len(window) >= limit:
                    raise RateLimited(
                        "too many failed logins; try again later",
                        retry_after=int(window[0] + self.window_s - now) + 1,
                    )

    def failed(self, account: str, source: str) -> None:
        """Count a failure against both keys."""
        now = time.monotonic()
        with self._lock:
            self._failures[f"a:{account}"].append(now)
            self._failures[f"s:{source}"].append(now)

    def succeeded(self, account: str) -> None:
        """A correct password clears the account's failures (not the source's)."""
        with self._lock:
            self._failures.pop(f"a:{account}", None)

    def _trim(self, key: str, now: float) -> deque[float]:
        window = self._failures[key]
        while window and window[0] <= now - self.window_s:
            window.popleft()
        return window
