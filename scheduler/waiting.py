"""Waiting for a run to end, for clients that want the result in the answer to ``run``.

A waiter holds the thread that serves its request, so waiters are bounded: at most
``capacity`` wait at once, and a client beyond that gets its answer at once (the run goes on;
its result is read later with ``output`` or the ``runs`` inbox). That keeps a crowd of
waiting clients from taking every thread of the HTTP server.

Ends are heard through the scheduler's run listeners; a waiter registers before it looks at
the store, so a run that ends in between is not missed.
"""

from __future__ import annotations

import threading

from .launcher import FinishedRun
from .models import Run
from .service import Scheduler


class RunWaits:
    """Bounded waits for runs of one scheduler (thread-safe)."""

    def __init__(self, scheduler: Scheduler, capacity: int):
        self.scheduler = scheduler
        self.capacity = capacity
        self._lock = threading.Lock()
        self._events: dict[int, list[threading.Event]] = {}
        self._waiting = 0
        scheduler.add_run_listener(self._ended)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    def wait(self, run_id: int, timeout: float) -> tuple[Run, bool]:
        """The run once it ended or ``timeout`` seconds passed, and whether this call was
        admitted as a waiter (False: the capacity was reached; the record is the current one)."""
        event = threading.Event()
        with self._lock:
            admitted = timeout > 0 and self._waiting < self.capacity
            if admitted:
                self._waiting += 1
                self._events.setdefault(run_id, []).append(event)
        try:
            run = self.scheduler.run(run_id)
            if admitted and not run.status.is_final and event.wait(timeout):
                run = self.scheduler.run(run_id)
            return run, admitted
        finally:
            if admitted:
                with self._lock:
                    self._waiting -= 1
                    events = self._events.get(run_id, [])
                    if event in events:
                        events.remove(event)
                    if not events:
                        self._events.pop(run_id, None)

    def _ended(self, finished: FinishedRun) -> None:
        with self._lock:
            events = self._events.pop(finished.run_id, [])
        for event in events:
            event.set()
