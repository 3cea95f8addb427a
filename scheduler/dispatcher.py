"""The dispatcher: one thread that sleeps until the earliest due time and fires it.

It does not poll. A heap holds (due, task_id) pairs; the thread waits on a condition
variable until the earliest due time, and every change (a task scheduled, rescheduled or
removed, dispatching switched on or off, shutdown) wakes it to look again. Superseded heap
entries are skipped lazily: the authoritative due time of each task is in ``_due``.

The ``fire`` callback does the work of one slot and returns the task's next due time (or
None). It must not block: it records the run and hands it to the executor. The sleep is
capped at ``MAX_SLEEP`` seconds only so that a jump of the wall clock (due times are wall
clock, since schedules are) is noticed; that cap costs one wake-up a minute when idle.

Lifecycle: ``open(fire)`` starts the thread, ``close()`` ends it. ``set_active`` switches
firing on and off in between (the scheduler's ``start``/``stop`` actions).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0

FireCallback = Callable[[str, float], "float | None"]


class Dispatcher:
    """Fires each task's due slots in time order (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._fire: FireCallback = lambda task_id, due: None
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._touched: set[str] = set()
        self._active = False
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self, fire: FireCallback) -> None:
        """Start the thread; it calls ``fire(task_id, slot)`` for each due slot while active."""
        self._fire = fire
        self._thread.start()

    def close(self, timeout: float | None = 5.0) -> None:
        """End the thread (a callback in progress finishes first); wait up to ``timeout``."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- control ------------------------------------------------------------------------

    def set_active(self, active: bool) -> None:
        """Switch firing on or off; due times are kept either way."""
        with self._cond:
            self._active = active
            self._cond.notify()

    def schedule(self, task_id: str, due: float | None) -> None:
        """Set (or with None, clear) the next due time of ``task_id``."""
        with self._cond:
            self._touched.add(task_id)
            if due is None:
                self._due.pop(task_id, None)
                return
            self._due[task_id] = due
            heapq.heappush(self._heap, (due, task_id))
            if self._heap[0] == (due, task_id):
                self._cond.notify()
            if len(self._heap) > 2 * len(self._due) + 64:
                self._compact()

    def schedule_many(self, items: dict[str, float]) -> None:
        """Replace every due time at once (start-up); O(n) instead of n pushes."""
        with self._cond:
            self._touched.update(self._due, items)
            self._due = dict(items)
            self._heap = [(due, task_id) for task_id, due in items.items()]
            heapq.heapify(self._heap)
            self._cond.notify()

    def due(self, task_id: str) -> float | None:
        with self._cond:
            return self._due.get(task_id)

    def _compact(self) -> None:
        self._heap = [(due, tid) for tid, due in self._due.items()]
        heapq.heapify(self._heap)

    # -- the thread ---------------------------------------------------------------------

    def _pop_due(self, now: float) -> list[tuple[str, float]]:
        """Remove and return every (task_id, due) whose time has come."""
        fired = []
        while self._heap and self._heap[0][0] <= now:
            due, task_id = heapq.heappop(self._heap)
            if self._due.get(task_id) == due:
                del self._due[task_id]
                fired.append((task_id, due))
        return fired

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                        heapq.heappop(self._heap)
                    if self._active and self._heap:
                        delay = self._heap[0][0] - self._clock()
                        if delay <= 0:
                            break
                        self._cond.wait(min(delay, MAX_SLEEP))
                    else:
                        self._cond.wait(MAX_SLEEP)
                batch = self._pop_due(self._clock())
                self._touched.clear()
            for task_id, due in batch:
                try:
                    next_due = self._fire(task_id, due)
                except Exception:  # one task's failure never stops the others: log it whole
                    log.exception("firing task %r at %s failed", task_id, due)
                    continue
                if next_due is not None:
                    with self._cond:
                        # A change made while the callback ran (reschedule, cancel) wins.
                        if task_id not in self._touched:
                            self._due[task_id] = next_due
                            heapq.heappush(self._heap, (next_due, task_id))
