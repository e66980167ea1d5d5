"""Brute-force guard for console sign-in: failed attempts per (name, address) in a sliding window.

Keyed by name *and* address so that someone guessing a user's password from one address
cannot lock that user out from everywhere else. Per process: with ``--workers N`` a
guesser gets at most N times the allowance.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

MAX_FAILURES = 5
WINDOW_S = 900.0
_MAX_KEYS = 10_000  # oldest keys are forgotten first, so memory stays bounded under a flood


class LoginThrottle:
    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S) -> None:
        self._max = max_failures
        self._window = window_s
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def retry_after(self, name: str, address: str) -> float | None:
        """Seconds until this name may try again from this address; None when it may now."""
        failures = self._failures.get((name.casefold(), address))
        if failures is None:
            return None
        now = time.monotonic()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if len(failures) < self._max:
            return None
        return failures[0] + self._window - now

    def failed(self, name: str, address: str) -> None:
        key = (name.casefold(), address)
        failures = self._failures.pop(key, None) or deque(maxlen=self._max)
        failures.append(time.monotonic())
        self._failures[key] = failures
        while len(self._failures) > _MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, name: str, address: str) -> None:
        self._failures.pop((name.casefold(), address), None)
