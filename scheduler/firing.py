"""Firing runs and recording their results: the hot path of the scheduler service.

A due slot becomes a run row in the store *before* it is handed to the executor, keyed by
``(task_id, slot)``, so no slot can run twice. What happens when a slot falls due while
the task's previous run is still active is the task's ``overlap`` option; a scheduled fire
over the policy's ``runs_per_minute`` is recorded as ``skipped``, a manual one is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sandbox.errors import PoolClosed
from sandbox.types import RunRequest, RunResult, RunStatus

from .errors import RateLimited
from .models import Overlap, Task, Trigger
from .ratelimit import SlidingWindow

log = logging.getLogger(__name__)

PRUNE_OUTPUT_EVERY = 100


@dataclass(frozen=True)
class _InFlight:
    task_id: str
    scheduled_for: float
    trigger: Trigger


class FiringMixin:
    """Run-firing half of :class:`scheduler.service.Scheduler` (shares its lock and state)."""

    def _init_firing(self, limiter: SlidingWindow) -> None:
        self._limiter = limiter
        self._inflight: dict[int, _InFlight] = {}
        self._active: dict[str, set[int]] = {}
        self._waiting: dict[str, RunRequest] = {}
        self._finished = 0

    def _following(self, task: Task, after: float) -> float | None:
        """The task's first slot strictly after ``after``, or None if it fires no more."""
        if task.paused or task.exhausted:
            return None
        slot = task.schedule.next_slot(task.anchor, after)
        if task.spec.until is not None and slot > task.spec.until:
            return None
        return slot

    def _forget(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)

    def _rate_check(self, now: float) -> float:
        self._limiter.resize(self.policy().rate_limits.runs_per_minute)
        return self._limiter.acquire(now)

    # -- scheduled fires ----------------------------------------------------------------

    def _fire(self, task_id: str, slot: float) -> float | None:
        """Dispatcher callback for one due slot; returns the task's next due time."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.paused or not self._running or task.next_run != slot:
                return None
            active = self._active.get(task_id)
            skip = None
            if active and task.spec.overlap is Overlap.SKIP:
                skip = f"overlap: the previous run ({min(active)}) was still active"
            elif active and task.spec.overlap is Overlap.QUEUE and task_id in self._waiting:
                skip = "overlap: a run was already waiting for the previous one to finish"
            elif self._rate_check(self.clock()):
                limit = self._limiter.limit
                skip = f"rate limit: more than {limit} runs per minute (rate_limits.runs_per_minute)"
            if skip is not None:
                self.store.insert_run(task_id, Trigger.SCHEDULE, RunStatus.SKIPPED, slot,
                                      slot=True, reason=skip)
                task.checkpoint = slot
                self.store.save_progress(task_id, task.runs_fired, slot)
            else:
                self._launch(task, Trigger.SCHEDULE, slot, counted=True)
            # From now, not from the slot: a fire late by more than a period (a suspended
            # machine, a clock jump) resumes at the next future slot instead of a burst.
            task.next_run = self._following(task, max(slot, self.clock()))
            return task.next_run

    def _launch(self, task: Task, trigger: Trigger, scheduled_for: float, *, counted: bool) -> int | None:
        """Record a queued run and hand it to the executor (or park it behind the active run)."""
        with self._lock:
            run_id = self.store.insert_run(task.task_id, trigger, RunStatus.QUEUED, scheduled_for,
                                           slot=trigger is not Trigger.MANUAL)
            if counted:
                task.runs_fired += run_id is not None
                task.checkpoint = max(task.checkpoint, scheduled_for)
                self.store.save_progress(task.task_id, task.runs_fired, task.checkpoint)
            if run_id is None:
                return None
            request = self._request(task.spec, run_id, task.task_id, scheduled_for)
            self._inflight[run_id] = _InFlight(task.task_id, scheduled_for, trigger)
            active = self._active.setdefault(task.task_id, set())
            if active and trigger is Trigger.SCHEDULE and task.spec.overlap is Overlap.QUEUE:
                self._waiting[task.task_id] = request
                return run_id
            active.add(run_id)
        self._submit(request)
        return run_id

    def _submit(self, request: RunRequest) -> None:
        try:
            self.executor.submit(request)
        except PoolClosed:
            self._on_result(RunResult(run_id=request.run_id, status=RunStatus.INTERRUPTED,
                                      reason="the server was shutting down", finished_at=self.clock()))

    # -- manual runs --------------------------------------------------------------------

    def run_now(self, task_id: str) -> int:
        """Run a task now, also while the scheduler is stopped (within the rate limit)."""
        with self._lock:
            task = self._get(task_id)
            now = self.clock()
            wait = self._rate_check(now)
            if wait:
                raise RateLimited(f"more than {self._limiter.limit} runs per minute "
                                  "(rate_limits.runs_per_minute); try again later",
                                  retry_after=wait)
            return self._launch(task, Trigger.MANUAL, now, counted=False)

    # -- executor callbacks (called from the executor's thread) -------------------------

    def _lateness_ms(self, run_id: int, started_at: float | None) -> float | None:
        info = self._inflight.get(run_id)
        if info is None or started_at is None:
            return None
        return round((started_at - info.scheduled_for) * 1000, 3)

    def _on_started(self, run_id: int, started_at: float, pid: int) -> None:
        with self._lock:
            lateness = self._lateness_ms(run_id, started_at)
        self.store.mark_running(run_id, started_at, lateness)

    def _on_result(self, result: RunResult) -> None:
        with self._lock:
            lateness = self._lateness_ms(result.run_id, result.started_at)
            info = self._inflight.pop(result.run_id, None)
        self.store.finish_run(result, lateness)
        if info is None:
            return
        follow_up = None
        with self._lock:
            active = self._active.get(info.task_id, set())
            active.discard(result.run_id)
            if not active:
                follow_up = self._waiting.pop(info.task_id, None)
                if follow_up is not None:
                    active.add(follow_up.run_id)
                else:
                    self._active.pop(info.task_id, None)
            self._finished += 1
            prune_output = self._finished % PRUNE_OUTPUT_EVERY == 0
        if follow_up is not None:
            self._submit(follow_up)
        self.store.prune_task(info.task_id, self.config.history_per_task)
        if prune_output:
            self.store.prune_output(self.config.history_max_bytes)
        if result.status in (RunStatus.ERROR, RunStatus.REJECTED):
            log.warning("run %d of task %r: %s: %s", result.run_id, info.task_id,
                        result.status.value, result.reason)
