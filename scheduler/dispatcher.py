"""The dispatcher: one thread that sleeps until the earliest due time and fires it.

It does not poll. A heap holds (time, task_id) pairs; the thread waits on a condition
variable until the earliest time, and every change (a task scheduled, rescheduled or
removed, dispatching switched on or off, shutdown) wakes it to look again. Superseded heap
entries are skipped lazily: the authoritative plan of each task is in ``_due`` (the slot to
fire) and ``_fire_at`` (when to fire it, if not at the slot itself: its jittered start, or
when to try a failed slot again).

A task scheduled with a ``jitter`` bound starts each slot at
:func:`scheduler.jitter.jitter_offset` after it; the callback still receives the slot.

Lead time: with ``lead`` seconds, each slot is fired ahead of its planned start (the slot,
or its jittered start), so that the executor can prepare the run and release it exactly at
that start (the run's ``scheduled_for``). The lead is at most half the gap from the
previous planned start of the same task (or from the moment the slot was planned), so a
task due every second is fired at most half a second early and a slot is never fired
before the previous slot of its task has started. The callback may answer :data:`DEFER`:
"not yet": the same slot is then fired again at its planned start, without lead (the
launcher does so when what happens to the slot depends on the run still active at its
start, see :mod:`scheduler.launcher`).

The ``fire`` callback does the work of one slot and returns the task's next due time (or
None). It must not block: it records the run and hands it to the executor. A callback that
raises (the store could not be written) leaves its slot planned again, to be retried after
a back-off that starts at ``RETRY_FIRST`` seconds and doubles up to ``RETRY_MAX`` per
consecutive failure of that task, so a broken store is neither hammered nor forgotten; the
callback must therefore be safe to call again with the same slot. The sleep is capped at
``MAX_SLEEP`` seconds only so that a jump of the wall clock (due times are wall clock,
since schedules are) is noticed; that cap costs one wake-up a minute when idle.

Lifecycle: ``open(fire)`` starts the thread, ``close()`` ends it. ``set_active`` switches
firing on and off in between (the scheduler's ``start``/``stop`` actions).
"""

from __future__ import annotations

import enum
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable

from .jitter import jitter_offset

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0
RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class Defer(enum.Enum):
    """The type of :data:`DEFER`."""

    DEFER = "defer"


#: What a fire callback returns for a slot fired early that it cannot decide yet: fire the
#: same slot again at its planned start, without lead.
DEFER = Defer.DEFER

FireCallback = Callable[[str, float], "float | None | Defer"]


class Dispatcher:
    """Fires each task's due slots in time order (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, lead: float = 0.0):
        self._fire: FireCallback = lambda task_id, due: None
        self._clock = clock
        self._lead = lead
        self._cond = threading.Condition()
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._fire_at: dict[str, float] = {}
        self._jitter: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        # The planned start of each task's last fired slot: what the lead of its next is
        # bounded by.
        self._last: dict[str, float] = {}
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

    def schedule(self, task_id: str, due: float | None, *, jitter: float | None = None) -> None:
        """Set (or with None, clear) the next due time of ``task_id``, whose slots start up
        to ``jitter`` seconds late; a pending retry of a failed slot of the task is superseded."""
        with self._cond:
            self._touched.add(task_id)
            self._fire_at.pop(task_id, None)
            if jitter:
                self._jitter[task_id] = jitter
            else:
                self._jitter.pop(task_id, None)
            if due is None:
                self._due.pop(task_id, None)
                self._failures.pop(task_id, None)
                self._last.pop(task_id, None)
                return
            self._plan(task_id, due, self._ahead(task_id, due))
            if len(self._heap) > 2 * len(self._due) + 64:
                self._compact()

    def schedule_many(self, items: dict[str, float], jitters: dict[str, float] | None = None) -> None:
        """Replace every due time (and jitter bound) at once (start-up); O(n) instead of n
        pushes."""
        with self._cond:
            self._touched.update(self._due, items)
            self._due = dict(items)
            self._jitter = {task_id: j for task_id, j in (jitters or {}).items() if j}
            self._last = {task_id: t for task_id, t in self._last.items() if task_id in items}
            self._fire_at = {task_id: at for task_id, due in items.items()
                             if (at := self._ahead(task_id, due)) != due}
            self._failures.clear()
            self._heap = [(self._when(task_id), task_id) for task_id in items]
            heapq.heapify(self._heap)
            self._cond.notify()

    def due(self, task_id: str) -> float | None:
        """The slot ``task_id`` fires next (also while a failed slot waits for its retry)."""
        with self._cond:
            return self._due.get(task_id)

    # -- the plan (callers hold the condition's lock) -----------------------------------

    def _when(self, task_id: str) -> float | None:
        """When the task's planned slot is to be fired: the slot, its jittered start (either
        less the lead), or its retry time."""
        return self._fire_at.get(task_id, self._due.get(task_id))

    def _start(self, task_id: str, due: float) -> float:
        """The slot's planned start: the slot itself, or its jittered start."""
        return due + jitter_offset(task_id, due, self._jitter.get(task_id))

    def _ahead(self, task_id: str, due: float) -> float:
        """When to fire ``due``: its start less the lead, which is at most half the gap
        from the task's last fired start (or from now, whichever is later)."""
        start = self._start(task_id, due)
        if not self._lead:
            return start
        since = max(self._last.get(task_id, -math.inf), self._clock())
        return start - max(0.0, min(self._lead, (start - since) / 2))

    def _plan(self, task_id: str, due: float, at: float) -> None:
        self._due[task_id] = due
        if at != due:
            self._fire_at[task_id] = at
        heapq.heappush(self._heap, (at, task_id))
        if self._heap[0] == (at, task_id):
            self._cond.notify()

    def _compact(self) -> None:
        self._heap = [(self._when(tid), tid) for tid in self._due]
        heapq.heapify(self._heap)

    def _pop_due(self, now: float) -> list[tuple[str, float, bool]]:
        """Remove and return every (task_id, slot, early) whose time has come; ``early``:
        fired ahead of its start, by the lead."""
        fired = []
        while self._heap and self._heap[0][0] <= now:
            at, task_id = heapq.heappop(self._heap)
            if self._when(task_id) == at:
                self._fire_at.pop(task_id, None)
                due = self._due.pop(task_id)
                start = self._start(task_id, due)
                self._last[task_id] = start
                fired.append((task_id, due, at < start))
        return fired

    def _replan(self, task_id: str, next_due: float | None) -> None:
        """After a callback: plan its return value, unless a change made while it ran
        (reschedule, cancel) superseded it."""
        if task_id in self._touched:
            return
        self._failures.pop(task_id, None)
        if next_due is not None:
            self._plan(task_id, next_due, self._ahead(task_id, next_due))

    def _defer(self, task_id: str, due: float) -> None:
        """After a callback answered DEFER for a slot fired early: plan the same slot at its
        start, unless a change made while it ran superseded it."""
        if task_id not in self._touched:
            self._plan(task_id, due, self._start(task_id, due))

    def _retry(self, task_id: str, due: float) -> tuple[int, float] | None:
        """After a failed callback: plan the same slot again after a back-off; return how
        many times in a row the task failed and the delay (None if superseded meanwhile)."""
        if task_id in self._touched:
            return None
        failures = self._failures.get(task_id, 0) + 1
        self._failures[task_id] = failures
        delay = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
        self._plan(task_id, due, max(self._clock(), self._start(task_id, due)) + delay)
        return failures, delay

    # -- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    while self._heap and self._when(self._heap[0][1]) != self._heap[0][0]:
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
            for task_id, due, early in batch:
                try:
                    next_due = self._fire(task_id, due)
                    if next_due is DEFER and not early:
                        # Deferring to the slot's start once it has come would fire it
                        # again at once, for ever: a bug of the callback, retried as one.
                        raise RuntimeError("the callback deferred a slot whose start has come")
                except Exception as exc:  # one task's failure never stops the others, nor loses its slot
                    with self._cond:
                        retry = self._retry(task_id, due)
                    _log_failure(task_id, due, retry, exc)
                    continue
                with self._cond:
                    if next_due is DEFER:
                        self._defer(task_id, due)
                    else:
                        self._replan(task_id, next_due)


def _log_failure(task_id: str, due: float, retry: tuple[int, float] | None,
                 exc: Exception) -> None:
    """The first failure in a row is logged whole; repeats (a store that is still down)
    in one line each."""
    if retry is None:
        log.exception("firing task %r at %s failed; the task was rescheduled meanwhile",
                      task_id, due, extra={"task_id": task_id})
        return
    failures, delay = retry
    if failures == 1:
        log.exception("firing task %r at %s failed; retrying in %g s", task_id, due, delay,
                      extra={"task_id": task_id})
    else:
        log.warning("firing task %r at %s failed again (%d times in a row: %s); retrying in %g s",
                    task_id, due, failures, exc, delay, extra={"task_id": task_id})
