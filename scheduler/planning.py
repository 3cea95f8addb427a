"""The backlog of tasks whose next slot is still to be worked out after a start.

Planning a task can cost tens of microseconds: a cron expression is parsed and walked on
the wall clock of its zone. At 100,000 tasks with distinct expressions that is seconds, so
when the scheduler opens (or ``start`` resumes every task) it settles the first tasks
itself and leaves the rest here, where a thread settles them in chunks, each chunk under
the scheduler's lock, so that fires and requests interleave with it.

What clients rely on, and the backlog keeps:

* Every task is planned from the instant of the start, not from when its turn comes: a
  slot that fell due meanwhile fires as soon as its task is planned (late by at most the
  time the backlog took to get there, never lost, never twice).
* An action on a task still in the backlog (update, pause, resume, showing its next run)
  settles it first, so it sees the task as if the whole backlog had been worked off.
* ``done`` is called (under the lock) each time the backlog becomes empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHUNK = 256  # tasks settled per hold of the scheduler's lock (a few milliseconds)

# settle(task_id, since): plan the task; ``since`` is where to look for slots missed while
# the server was down (None: slots up to the start are passed over).
Settle = Callable[[str, "float | None"], None]


class Backlog:
    """Tasks waiting to be planned, and the thread that plans them (see the module
    docstring). Every method but ``wait`` and ``close`` expects the caller to hold
    ``lock``, the scheduler's."""

    def __init__(self, settle: Settle, done: Callable[[], None], lock: threading.RLock, *,
                 chunk: int = CHUNK):
        self._settle = settle
        self._done = done
        self._lock = lock
        self._chunk = chunk
        self._pending: dict[str, float | None] = {}
        self._thread: threading.Thread | None = None
        self._empty = threading.Condition(lock)
        self._closing = False

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._pending

    def plan(self, jobs: dict[str, float | None], *, inline: int) -> None:
        """Plan these tasks: the first ``inline`` now, the rest in the thread. A task that
        was already waiting keeps the ``since`` it had (its missed slots are still to be
        looked at)."""
        for task_id, since in jobs.items():
            earlier = self._pending.get(task_id)
            self._pending[task_id] = earlier if earlier is not None else since
        self._work(inline)
        if self._pending and self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._loop, name="planner", daemon=True)
            self._thread.start()

    def settle_now(self, task_id: str) -> None:
        """Plan the task now if it is still waiting."""
        if task_id in self._pending:
            self._settle_one(task_id, self._pending.pop(task_id))
            self._check_empty()

    def discard(self, task_id: str) -> None:
        """Forget the task (it is gone)."""
        if self._pending.pop(task_id, _ABSENT) is not _ABSENT:
            self._check_empty()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the backlog is empty; False if ``timeout`` ran out first."""
        with self._empty:
            return self._empty.wait_for(lambda: not self._pending or self._closing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (the tasks left are not planned)."""
        with self._lock:
            self._closing = True
            thread = self._thread
            self._empty.notify_all()
        if thread is not None:
            thread.join(timeout)

    # -- the work ---------------------------------------------------------------------

    def _work(self, count: int) -> None:
        for _ in range(min(count, len(self._pending))):
            task_id, since = self._pending.popitem()
            self._settle_one(task_id, since)
        self._check_empty()

    def _settle_one(self, task_id: str, since: float | None) -> None:
        try:
            self._settle(task_id, since)
        except Exception:  # one task's fault never stops the planning of the others
            log.exception("could not plan task %r", task_id, extra={"task_id": task_id})

    def _check_empty(self) -> None:
        if not self._pending:
            self._done()
            self._empty.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closing or not self._pending:
                    self._thread = None
                    return
                try:
                    self._work(self._chunk)
                except Exception:  # ``done`` failed (the store): the next start writes again
                    log.exception("could not record that every task was planned")


_ABSENT = object()
