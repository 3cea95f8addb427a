"""A sliding-window rate limiter (exact: it keeps the times of the last ``limit`` events)."""

from __future__ import annotations

import threading
from collections import deque


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds; callers pass the clock's ``now``."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, now: float) -> float:
        """Take one slot; return 0.0 on success, else seconds until one frees up (not taken)."""
        with self._lock:
            while self._events and self._events[0] <= now - self.window:
                self._events.popleft()
            if len(self._events) >= self.limit:
                return max(self._events[0] + self.window - now, 0.001)
            self._events.append(now)
            return 0.0

    def resize(self, limit: int) -> None:
        with self._lock:
            self.limit = limit

