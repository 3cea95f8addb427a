"""The launcher: turns due slots and manual requests into runs, and records their results.

It owns the runs between the store and the executor: which runs are in flight, which are
active per task, which one waits behind an active run (``overlap: queue``), and the
policy's ``runs_per_minute`` limiter. The scheduler (:mod:`scheduler.service`) owns the
tasks and decides *when* one fires; the launcher decides *whether* a due slot runs, waits
or is skipped.

A run becomes a row in the store *before* it is handed to the executor, keyed by
``(task_id, slot)`` for scheduled runs, so no slot can run twice: a fire repeated after a
store failure finds its slot recorded and launches nothing. A result is recorded in the
store and then, whatever the store did, the run leaves the active set (and the run waiting
behind it is handed out), so a store failure can lose a record but never block a task.
Listeners (``add_listener``) then hear of every run that ended, skipped slots included:
this is how the metrics count outcomes without the launcher knowing about them.

Slots fired early (the dispatcher's lead, so that the executor can prepare the run and
release it at its start): a governed slot whose task still has an active run under
``overlap: skip`` or ``queue`` is not decided ahead of time, since that run may well end
before the slot; ``fire`` answers :data:`scheduler.dispatcher.DEFER` and decides when the
slot is fired again at its start.

Discarding: runs handed to the executor and not started yet (prepared, or waiting for a
worker) can be taken back, for a task that is removed or paused (``discard_task``) or when
dispatching stops (``discard_scheduled``); so can the run waiting behind an active one.
The executor confirms each one it dropped (``on_discarded``; one it had released already
goes on as usual). A dropped run never happened: its row, still ``queued``, is deleted, it
leaves the active set (the run waiting behind it is handed out) and the run listeners do
not hear of it; discard listeners (``add_discard_listener``) do, so that the scheduler can
uncount the slot. The ``runs_per_minute`` token it took stays spent: the limit counts runs
launched, and keeping it is simpler than handing tokens back out of order.

Lifecycle: ``open()`` opens the executor with this launcher's callbacks, ``close(grace)``
closes it. Locking: the launcher has its own lock; a caller may hold the scheduler's lock
when it calls in, never the other way round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from policies import Policy
from sandbox.errors import PoolClosed
from sandbox.types import Outcome, RunRequest, RunResult

from .dispatcher import DEFER, Defer
from .errors import RateLimited, StoreError
from .executor import Executor
from .models import Lineage, Overlap, RunStatus, Task, TaskSpec, Trigger
from .ratelimit import SlidingWindow
from .store import Store

log = logging.getLogger(__name__)

PRUNE_OUTPUT_EVERY = 100
# Triggers whose runs are keyed by their slot (one run per slot, ever).
SLOTTED = (Trigger.SCHEDULE, Trigger.CATCH_UP)
# Triggers that the task's overlap policy and the runs_per_minute limit govern as they
# arrive (a manual run is always started, within the limit).
GOVERNED = (Trigger.SCHEDULE, Trigger.RETRY, Trigger.CHAIN)
# Triggers whose runs are taken back from a task that is removed or paused (someone asked
# for a manual run: it goes on).
DISCARDABLE = (Trigger.SCHEDULE, Trigger.CATCH_UP, Trigger.RETRY, Trigger.CHAIN)


@dataclass(frozen=True)
class FinishedRun:
    """What a listener hears when a run reaches its final status (times in epoch seconds;
    ``started_at`` and ``lateness`` are None when no process was started)."""

    run_id: int
    task_id: str
    trigger: Trigger
    status: RunStatus
    scheduled_for: float
    started_at: float | None = None
    finished_at: float | None = None
    lineage: Lineage = Lineage()

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def lateness(self) -> float | None:
        """Due time to the job's process having started (a manual run is due when asked)."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at - self.scheduled_for)


RunListener = Callable[[FinishedRun], None]


@dataclass(frozen=True)
class DiscardedRun:
    """What a discard listener hears when a run was dropped before it started."""

    run_id: int
    task_id: str
    trigger: Trigger
    scheduled_for: float


DiscardListener = Callable[[DiscardedRun], None]


@dataclass(frozen=True)
class _InFlight:
    task_id: str
    scheduled_for: float
    trigger: Trigger
    start_at: float  # scheduled_for plus the slot's jitter: what lateness is measured from
    lineage: Lineage = Lineage()


def run_request(spec: TaskSpec, policy: Policy, *, run_id: int, task_id: str,
                scheduled_for: float | None = None) -> RunRequest:
    """What a worker needs to run ``spec`` under ``policy``."""
    return RunRequest(run_id=run_id, task_id=task_id, task_type=spec.task_type, policy=policy,
                      command=spec.command, file_path=spec.file_path,
                      custom_script=spec.custom_script, working_dir=spec.working_dir,
                      env=dict(spec.env), timeout=spec.timeout, scheduled_for=scheduled_for)


class Launcher:
    """Runs in flight between the store and the executor (see the module docstring)."""

    def __init__(self, store: Store, executor: Executor, policy: Callable[[], Policy], *,
                 clock: Callable[[], float] = time.time, history_per_task: int = 100,
                 history_max_bytes: int = 256 * 1024 * 1024):
        self._store = store
        self._executor = executor
        self._policy = policy
        self._clock = clock
        self._history_per_task = history_per_task
        self._history_max_bytes = history_max_bytes
        self._lock = threading.RLock()
        self._limiter = SlidingWindow(policy().rate_limits.runs_per_minute)
        self._inflight: dict[int, _InFlight] = {}
        self._active: dict[str, set[int]] = {}
        self._waiting: dict[str, RunRequest] = {}
        self._started: set[int] = set()
        self._finished = 0
        self._listeners: list[RunListener] = []
        self._discard_listeners: list[DiscardListener] = []

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Open the executor; from now on it reports starts and results here."""
        self._executor.open(self.on_started, self.on_result, self.on_discarded)

    def close(self, grace: float) -> None:
        """Close the executor: running jobs get ``grace`` seconds, then are cancelled."""
        self._executor.close(grace)

    def add_listener(self, listener: RunListener) -> None:
        """Call ``listener`` (from the executor's or the dispatcher's thread) for every run
        that ends from now on; it must be quick and must not call back into the launcher."""
        self._listeners.append(listener)

    def add_discard_listener(self, listener: DiscardListener) -> None:
        """Call ``listener`` (from the thread that asked for the discard, or the executor's)
        for every run dropped before it started; same rules as ``add_listener``."""
        self._discard_listeners.append(listener)

    def revise(self, policy: Policy) -> None:
        """A new policy is in force: the executor checks the runs it prepared against it."""
        self._executor.revise(policy)

    # -- launching ----------------------------------------------------------------------

    def fire(self, task: Task, slot: float, jitter: float = 0.0, *,
             trigger: Trigger = Trigger.SCHEDULE, lineage: Lineage = Lineage(),
             early: bool = False) -> int | Defer | None:
        """Run the task's due ``slot`` (started ``jitter`` seconds after it), park it behind
        the active run, or record it skipped (overlap, rate limit). Returns the run id of a
        run launched or parked, None for a slot skipped or recorded before. Safe to call
        again after it raised. ``trigger`` is one of :data:`GOVERNED`: a retry or a chained
        run is due at ``slot`` and goes through the same checks as a scheduled one.
        ``early``: fired before its start; DEFER (nothing done) if its task has an active
        run that its overlap policy would skip or queue behind, to be decided at the start."""
        with self._lock:
            if early and self._undecided(task, trigger):
                return DEFER
            reason = self._skip_reason(task, trigger)
            if reason is None:
                return self.launch(task, trigger, slot, jitter=jitter, lineage=lineage)
            run_id = self._store.insert_run(task.task_id, trigger, RunStatus.SKIPPED, slot,
                                            slot=trigger in SLOTTED, reason=reason,
                                            jitter_ms=_ms(jitter), lineage=lineage)
        if run_id is not None:
            self._tell(FinishedRun(run_id, task.task_id, trigger, RunStatus.SKIPPED, slot,
                                   lineage=lineage))
        return None

    def run_now(self, task: Task) -> int:
        """Launch a manual run of ``task`` now, within the rate limit (else RateLimited)."""
        with self._lock:
            now = self._clock()
            wait = self._rate_check(now)
            if wait:
                raise RateLimited(f"more than {self._limiter.limit} runs per minute "
                                  "(rate_limits.runs_per_minute); try again later",
                                  retry_after=wait)
            run_id = self.launch(task, Trigger.MANUAL, now)
            assert run_id is not None, "a manual run has no slot to collide on"
            return run_id

    def launch(self, task: Task, trigger: Trigger, scheduled_for: float, *,
               jitter: float | None = None, lineage: Lineage = Lineage()) -> int | None:
        """Record a queued run and hand it to the executor (or park it behind the active
        run); None if its slot was recorded before (by an earlier fire or server process),
        or, for a retry, if its pending retry is gone. ``jitter`` (scheduled runs) is how
        long after ``scheduled_for`` the run starts."""
        with self._lock:
            run_id = self._store.insert_run(task.task_id, trigger, RunStatus.QUEUED, scheduled_for,
                                            slot=trigger in SLOTTED, jitter_ms=_ms(jitter),
                                            lineage=lineage)
            if run_id is None:
                return None
            start_at = scheduled_for + (jitter or 0.0)
            request = run_request(task.spec, self._policy(), run_id=run_id, task_id=task.task_id,
                                  scheduled_for=start_at)
            self._inflight[run_id] = _InFlight(task.task_id, scheduled_for, trigger, start_at,
                                               lineage)
            active = self._active.setdefault(task.task_id, set())
            if active and trigger in GOVERNED and task.spec.overlap is Overlap.QUEUE:
                self._waiting[task.task_id] = request
                return run_id
            active.add(run_id)
        self._submit(request)
        return run_id

    def discard_task(self, task_id: str) -> int:
        """Take back every run of the task not started yet, manual runs aside (the task is
        removed or paused); how many were asked for. Those the executor holds end later,
        through ``on_discarded``; the one waiting here, at once."""
        return self._discard(lambda info: info.task_id == task_id and info.trigger in DISCARDABLE)

    def discard_scheduled(self) -> int:
        """Take back every run of a slot (scheduled or caught up) not started yet, of every
        task (dispatching stops); how many were asked for. Retries and chained runs are
        left: they do not wait for dispatching."""
        return self._discard(lambda info: info.trigger in SLOTTED)

    def _discard(self, chosen: Callable[[_InFlight], bool]) -> int:
        with self._lock:
            waiting = {request.run_id for request in self._waiting.values()}
            parked = [run_id for run_id in waiting if chosen(self._inflight[run_id])]
            for run_id in parked:
                del self._waiting[self._inflight[run_id].task_id]
            held = [run_id for run_id, info in self._inflight.items()
                    if run_id not in waiting and run_id not in self._started and chosen(info)]
        # Outside the lock: the executor's thread takes it to report what it dropped.
        for run_id in held:
            self._executor.discard(run_id)
        for run_id in parked:
            self._dropped(run_id)
        return len(held) + len(parked)

    def _undecided(self, task: Task, trigger: Trigger) -> bool:
        """Whether the slot's fate hangs on the task's active run: only its start can tell."""
        return (trigger in GOVERNED and bool(self._active.get(task.task_id))
                and task.spec.overlap in (Overlap.SKIP, Overlap.QUEUE))

    def _skip_reason(self, task: Task, trigger: Trigger = Trigger.SCHEDULE) -> str | None:
        if trigger is Trigger.CHAIN and task.paused:
            return "paused: a paused task takes no chained runs"
        active = self._active.get(task.task_id)
        if active and task.spec.overlap is Overlap.SKIP:
            return f"overlap: the previous run ({min(active)}) was still active"
        if active and task.spec.overlap is Overlap.QUEUE and task.task_id in self._waiting:
            return "overlap: a run was already waiting for the previous one to finish"
        if self._rate_check(self._clock()):
            return (f"rate limit: more than {self._limiter.limit} runs per minute "
                    "(rate_limits.runs_per_minute)")
        return None

    def _rate_check(self, now: float) -> float:
        self._limiter.resize(self._policy().rate_limits.runs_per_minute)
        return self._limiter.acquire(now)

    def _submit(self, request: RunRequest) -> None:
        try:
            self._executor.submit(request)
        except PoolClosed:
            self.on_result(RunResult(run_id=request.run_id, status=Outcome.INTERRUPTED,
                                     reason="the server was shutting down", finished_at=self._clock()))

    # -- executor callbacks (called from the executor's thread) -------------------------

    def on_started(self, run_id: int, started_at: float, pid: int) -> None:
        with self._lock:
            lateness = self._lateness_ms(run_id, started_at)
            if run_id in self._inflight:
                self._started.add(run_id)
        self._store.mark_running(run_id, started_at, lateness)

    def on_result(self, result: RunResult) -> None:
        """Record a run's result; the run leaves the active set even if the store fails."""
        with self._lock:
            lateness = self._lateness_ms(result.run_id, result.started_at)
            info = self._inflight.pop(result.run_id, None)
            self._started.discard(result.run_id)
        try:
            self._store.finish_run(result, lateness)
        finally:
            if info is not None:
                self._settle(info.task_id, result.run_id)
        if info is None:
            return
        self._prune(info.task_id)
        status = RunStatus.of(result.status)
        self._tell(FinishedRun(result.run_id, info.task_id, info.trigger, status,
                               info.scheduled_for, result.started_at, result.finished_at,
                               info.lineage))
        if status in (RunStatus.ERROR, RunStatus.REJECTED):
            log.warning("run %d of task %r: %s: %s", result.run_id, info.task_id,
                        status.value, result.reason,
                        extra={"run_id": result.run_id, "task_id": info.task_id})

    def on_discarded(self, run_id: int) -> None:
        """The executor dropped a run before it started, as asked by ``discard``: it leaves
        the active set (the run waiting behind it is handed out) and its record goes."""
        with self._lock:
            if run_id in self._started:
                log.error("run %d was reported both started and discarded; it is kept",
                          run_id, extra={"run_id": run_id})
                return
            info = self._inflight.get(run_id)
        if info is None:
            return
        try:
            self._dropped(run_id)
        finally:
            self._settle(info.task_id, run_id)

    def _dropped(self, run_id: int) -> None:
        """A run that will never start is forgotten: in flight, in the store, by listeners."""
        with self._lock:
            info = self._inflight.pop(run_id, None)
        if info is None:
            return
        try:
            self._store.delete_run(run_id)
        except StoreError as exc:  # the row stays queued, and is marked interrupted at the next start
            log.error("run %d of task %r was dropped before it started, but the store kept "
                      "its record: %s", run_id, info.task_id, exc.message,
                      extra={"run_id": run_id, "task_id": info.task_id})
        discarded = DiscardedRun(run_id, info.task_id, info.trigger, info.scheduled_for)
        for listener in self._discard_listeners:
            try:
                listener(discarded)
            except Exception:  # as in _tell
                log.exception("discard listener %r failed for run %s", listener, run_id)

    def _tell(self, finished: FinishedRun) -> None:
        for listener in self._listeners:
            try:
                listener(finished)
            except Exception:  # an observer's bug must not cost the run its bookkeeping
                log.exception("run listener %r failed for run %s", listener, finished.run_id)

    def _settle(self, task_id: str, run_id: int) -> None:
        """Take a finished run out of the active set; hand out the run waiting behind it."""
        follow_up = None
        with self._lock:
            active = self._active.get(task_id, set())
            active.discard(run_id)
            if not active:
                follow_up = self._waiting.pop(task_id, None)
                if follow_up is not None:
                    active.add(follow_up.run_id)
                else:
                    self._active.pop(task_id, None)
        if follow_up is not None:
            self._submit(follow_up)

    def _prune(self, task_id: str) -> None:
        with self._lock:
            self._finished += 1
            prune_output = self._finished % PRUNE_OUTPUT_EVERY == 0
        self._store.prune_task(task_id, self._history_per_task)
        if prune_output:
            self._store.prune_output(self._history_max_bytes)

    def _lateness_ms(self, run_id: int, started_at: float | None) -> float | None:
        info = self._inflight.get(run_id)
        if info is None or started_at is None:
            return None
        return round((started_at - info.start_at) * 1000, 3)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
