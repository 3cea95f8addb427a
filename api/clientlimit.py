"""The policy's ``rate_limits.requests_per_minute``: a sliding window per client address.

A client is its remote address (with a token too: the token says who may call, the address
which caller it is). Behind a reverse proxy every client shares the proxy's address, so the
limit then applies to all of them together.

The limit is read from the policy in force on every request, so a live policy edit
changes it at once. The table of clients is bounded: idle clients (nothing in their window)
are dropped first; if a flood of distinct addresses still fills it, the least recently
seen client is forgotten (its window starts afresh), which is the price of bounded memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from scheduler.ratelimit import SlidingWindow

from .errors import retry_after_header

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 4096


class ClientLimiter:
    """``limit()`` requests per ``WINDOW_SECONDS`` for each client address."""

    def __init__(self, limit: Callable[[], int], *, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        self._limit = limit
        self._max_clients = max_clients
        self._clock = clock
        # client -> (its window, when it last sent a request); oldest first.
        self._clients: OrderedDict[str, tuple[SlidingWindow, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, client: str) -> int:
        """Count one request of ``client``; 0 if allowed, else whole seconds to wait."""
        limit = self._limit()
        now = self._clock()
        with self._lock:
            entry = self._clients.pop(client, None)
            if entry is None:
                self._make_room(now)
                window = SlidingWindow(limit, WINDOW_SECONDS)
            else:
                window = entry[0]
            self._clients[client] = (window, now)
        window.resize(limit)
        wait = window.acquire(now)
        return retry_after_header(wait) if wait else 0

    def _make_room(self, now: float) -> None:
        if len(self._clients) < self._max_clients:
            return
        # A client silent for a whole window has nothing left in it: forget those first.
        for client in [c for c, (_, seen) in self._clients.items() if seen <= now - WINDOW_SECONDS]:
            del self._clients[client]
        while len(self._clients) >= self._max_clients:
            self._clients.popitem(last=False)

    def current_limit(self) -> int:
        return self._limit()

    def __len__(self) -> int:
        return len(self._clients)
