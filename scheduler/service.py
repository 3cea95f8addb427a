"""The scheduler service: the task registry, its lifecycle, and the actions clients call.

Tasks live in memory (the source for ``list``) and in the store (the source after a
restart). Every change is written to the store before it is acknowledged. The scheduler
owns the tasks and their place in time (next slot, checkpoint, runs fired) and decides
when each fires; the :class:`scheduler.dispatcher.Dispatcher` it is given wakes it for each
due slot, and its :class:`scheduler.launcher.Launcher` turns slots into runs (overlap, rate
limit, results).

Lifecycle: ``open()`` loads the store and opens the launcher (and so the executor) and the
dispatcher; ``close()`` closes them. In between, the ``start``/``stop`` actions switch
dispatching on and off: those two words mean only that here.

Prepared runs: the dispatcher fires each slot up to ``config.prepare_ahead`` seconds before
its start, so that the executor can prepare the run and release it at the start. A run so
handed out is taken back (see :mod:`scheduler.launcher`) when its task is removed or paused,
or when dispatching stops, if it has not started by then; its slot is then uncounted, as if
it had not been fired.

Lifecycle of runs (:mod:`scheduler.lifecycle`): when a run ends, a task with ``retries``
left stores a pending retry, which a second dispatcher fires (keyed by the first try's run
id) while the scheduler is running; tasks named in ``on_success``/``on_failure`` get a
chained run at once; a ``notify`` URL gets a notice through :class:`scheduler.notify.Notifier`.
A failure starts ``on_failure`` tasks and is notified only once no retry follows it.

Time zones: a task's clock schedule follows its ``timezone`` or, without one, the
scheduler's default zone (``tz``, else the machine's). A task's ``jitter`` delays the start of
each slot by a deterministic offset (:mod:`scheduler.jitter`); the slot itself, which
identifies the run, does not move.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import Any

from policies import TASK_PARAMETERS, LimitExceeded, Policy
from sandbox.launch import check_request

from .dispatcher import DEFER, Defer, Dispatcher
from .errors import (
    InvalidInterval, InvalidRequest, QuotaExceeded, RunNotFound, StoreError, StoreUnavailable,
    TaskExists, TaskInChain, TaskNotFound,
)
from .executor import Executor
from .grammar import IntervalSchedule, Schedule, parse_interval
from .jitter import check_jitter, jitter_offset
from .launcher import SLOTTED, DiscardedRun, FinishedRun, Launcher, RunListener, run_request
from .lifecycle import check_chains, notify_event, retry_delay
from .models import Lineage, Misfire, Run, RunStatus, SchedulerStatus, Task, TaskSpec, Trigger
from .notify import Notice, Notifier, NotifierConfig, default_render
from .planning import Backlog
from .store import Store, spec_from_json
from .zones import iso_time, local_zone, resolve_zone, zone_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Tunables of the service; the defaults suit a single operator's machine."""

    history_per_task: int = 100
    history_max_bytes: int = 256 * 1024 * 1024
    shutdown_grace: float = 10.0
    autostart: bool = False
    # Seconds before its start that a slot is fired, for the executor to prepare its run
    # (at most half the gap from the task's previous start); 0: at the start itself.
    prepare_ahead: float = 1.0
    # Tasks planned before open() or start() returns; the rest are planned by a thread.
    plan_inline: int = 2_000


@dataclass(frozen=True)
class SchedulePreview:
    """What ``validate`` shows: a schedule's canonical text, its next slots (epoch seconds,
    and ISO 8601 in ``timezone``) and what it means in plain English."""

    schedule: Schedule
    timezone: str
    next_runs: list[float] = field(default_factory=list)
    next_runs_at: list[str] = field(default_factory=list)
    description: str = ""


class Scheduler:
    """The task registry and its actions. Lifecycle: ``open()`` → actions → ``close()``.

    ``dispatcher`` defaults to a :class:`Dispatcher` on ``clock`` with the lead
    ``config.prepare_ahead``; a test may pass its own
    (it is opened with this scheduler's fire callback). ``tz`` is the default zone of
    tasks without a ``timezone`` (None: the machine's zone). The scheduler's lock is taken
    before the launcher's, never after it.
    """

    def __init__(self, store: Store, executor: Executor, policy: Callable[[], Policy], *,
                 dispatcher: Dispatcher | None = None, config: SchedulerConfig = SchedulerConfig(),
                 clock: Callable[[], float] = time.time, tz: tzinfo | None = None,
                 retry_dispatcher: Dispatcher | None = None, notifier: Notifier | None = None,
                 render_run: Callable[[Run], dict[str, Any]] = default_render):
        self.store = store
        self.executor = executor
        self.policy = policy
        self.config = config
        self.clock = clock
        self.tz = tz if tz is not None else local_zone()
        self._lock = threading.RLock()
        self._tasks: dict[str, Task] = {}
        self._reserved: set[str] = set()
        self._running = False
        self._closing = False
        self._dispatcher = dispatcher or Dispatcher(clock=clock, lead=config.prepare_ahead)
        self._launcher = Launcher(store, executor, policy, clock=clock,
                                  history_per_task=config.history_per_task,
                                  history_max_bytes=config.history_max_bytes)
        # Pending retries by the first try's run id (as text: the dispatcher's key).
        self._retries = retry_dispatcher or Dispatcher(clock=clock)
        self._pending: dict[str, tuple[str, int, int]] = {}
        self._notifier = notifier or Notifier(store, policy, render=render_run,
                                              config=NotifierConfig())
        self._launcher.add_listener(self._after_run)
        self._launcher.add_discard_listener(self._after_discard)
        self._backlog = Backlog(self._settle, self._all_planned, self._lock)
        self._planned_from = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Load the store, settle what the last process left, open the launcher (and with it
        the executor) and the dispatcher."""
        unfinished = self.store.unfinished_runs()
        interrupted = self.store.interrupt_unfinished("the server stopped while the run was active")
        if interrupted:
            log.warning("marked %d runs from the previous server process as interrupted", interrupted)
        now = self.clock()
        was_running = self.store.is_running()
        running = was_running or self.config.autostart
        zones: dict[str | None, tzinfo] = {}  # tasks share a few zones
        for row in self.store.load_tasks():
            spec = spec_from_json(row.pop("spec"), **row.pop("columns"))
            try:
                if spec.timezone not in zones:
                    zones[spec.timezone] = self._zone(spec.timezone)
                schedule = parse_interval(spec.interval, tz=zones[spec.timezone], stored=True)
            except InvalidRequest as exc:
                log.error("task %r has an interval or time zone this server cannot use (%s); "
                          "not scheduled", row["task_id"], exc.message,
                          extra={"task_id": row["task_id"]})
                continue
            self._tasks[row["task_id"]] = Task(spec=spec, schedule=schedule, **row)
        self._retry_interrupted(unfinished, now)
        self._launcher.open()
        self._running = running
        self.store.set_running(running)
        self._dispatcher.open(self._fire)
        if running:
            self._plan_all(now, catch_up=was_running)
        self._dispatcher.set_active(running)
        self._open_retries(running)
        log.info("loaded %d tasks; scheduler %s", len(self._tasks), "running" if running else "stopped")

    def close(self, grace: float | None = None) -> None:
        """Stop dispatching, let running jobs end within ``grace`` seconds, then stop them."""
        # The runs the executor drops while closing must not be planned again (_after_discard).
        self._closing = True
        self._backlog.close()
        self._dispatcher.close()
        self._retries.close()
        self._launcher.close(self.config.shutdown_grace if grace is None else grace)
        self._notifier.close()
        self.store.close()

    def _retry_interrupted(self, unfinished: list[tuple[int, str, int, int | None]],
                           now: float) -> None:
        """Store a retry for each run the last server process left unfinished (it was
        killed, so no result told of the interruption) whose task has retries left."""
        for run_id, task_id, attempt, retry_of in unfinished:
            task = self._tasks.get(task_id)
            if task is None or task.paused or attempt > self._retries_allowed(task.spec):
                continue
            self.store.add_retry(task_id, retry_of or run_id, attempt + 1,
                                 now + retry_delay(task.spec.retry_delay, attempt))

    def _open_retries(self, running: bool) -> None:
        """Plan the retries stored by the last server process, and start delivering
        notifications."""
        due = {}
        for retry_of, task_id, attempt, at in self.store.pending_retries():
            if task_id in self._tasks:
                self._pending[str(retry_of)] = (task_id, retry_of, attempt)
                due[str(retry_of)] = at
        self._retries.schedule_many(due)
        self._retries.open(self._fire_retry)
        self._retries.set_active(running)
        self._notifier.open()

    def wait_planned(self, timeout: float | None = None) -> bool:
        """Wait until every task has been planned since the last open or start (see
        :mod:`scheduler.planning`); False if ``timeout`` ran out first."""
        return self._backlog.wait(timeout)

    def _plan_all(self, now: float, *, catch_up: bool) -> None:
        """Plan every task's first slot after ``now``: the slots up to ``now`` are dealt
        with, by ``misfire`` if ``catch_up`` (the server was down), else passed over.
        The first ``config.plan_inline`` tasks are planned before this returns, the rest by
        the backlog's thread."""
        with self._lock:
            self._planned_from = now
            # Until its turn, a task has no slot: none planned before (a stop) may fire.
            self._dispatcher.schedule_many({})
            jobs: dict[str, float | None] = {}
            for task_id, task in self._tasks.items():
                task.next_run = None
                jobs[task_id] = task.checkpoint if catch_up else None
            self._backlog.plan(jobs, inline=self.config.plan_inline)

    def _retries_allowed(self, spec: TaskSpec) -> int:
        """The task's retries within the policy in force (it may have been lowered since
        the task was created)."""
        return min(spec.retries, self.policy().limits.max_retries)

    def _settle(self, task_id: str, since: float | None) -> None:
        """Plan one task (the backlog's callback, under the lock): first the slot it missed
        after ``since`` while the server was down, if any (``misfire``), then its first
        slot after the start."""
        task = self._tasks.get(task_id)
        if task is None:
            return
        now = self._planned_from
        try:
            missed = None
            if since is not None and not (task.paused or task.exhausted):
                missed = task.schedule.next_slot(task.anchor, since)
                # A stop while the backlog drains ends catch-ups too.
                if missed is not None and missed <= now and self._running:
                    self._missed(task, missed)
            task.checkpoint = max(task.checkpoint, now)
            # Nothing missed: the first slot after ``since`` is also the first after now.
            task.next_run = task.admit(missed) if missed is not None and missed > now \
                else task.following(now)
        except InvalidRequest as exc:
            log.error("task %r has an interval this server cannot use (%s); not scheduled",
                      task_id, exc.message, extra={"task_id": task_id})
            del self._tasks[task_id]
            task.next_run = None
        self._plan(task)

    def _missed(self, task: Task, missed: float) -> None:
        """The first slot a task missed while the server was down, by its ``misfire``."""
        if task.spec.until is not None and missed > task.spec.until:
            return
        if task.spec.misfire is Misfire.RUN_ONCE:
            try:
                self._count(task, missed, self._launcher.launch(task, Trigger.CATCH_UP, missed))
            except StoreUnavailable as exc:  # as in _fire: recorded later, the task goes on
                log.error("task %r: the catch-up run of %s was not started: %s", task.task_id,
                          missed, exc.detail, extra={"task_id": task.task_id})
                self.store.record_missed(task.task_id, missed, "not started: the store could "
                                         f"not record the run ({exc.detail})")
        else:
            log.info("task %r missed runs while the server was down; skipping them "
                     "(misfire: skip)", task.task_id, extra={"task_id": task.task_id})

    def _all_planned(self) -> None:
        """Every task is planned: the slots up to the start are dealt with, in the store too."""
        self.store.set_all_checkpoints(self._planned_from)

    # -- the original API's actions -----------------------------------------------------

    def start(self) -> bool:
        """Start dispatching; False if it was already running. Tasks resume at their next
        future slot (slots that passed while stopped are not caught up)."""
        with self._lock:
            if self._running:
                return False
            self.store.set_running(True)
            self._running = True
            self._plan_all(self.clock(), catch_up=False)
            self._dispatcher.set_active(True)
            self._retries.set_active(True)
            return True

    def stop(self) -> bool:
        """Stop dispatching; False if it was not running. Runs in progress finish; runs of
        slots handed out ahead of their start (or waiting for a worker) that have not
        started are taken back."""
        with self._lock:
            if not self._running:
                return False
            self.store.set_running(False)
            self._running = False
            self._dispatcher.set_active(False)
            self._retries.set_active(False)
            self._launcher.discard_scheduled()
            return True

    @property
    def running(self) -> bool:
        return self._running

    def create(self, task_id: str, spec: TaskSpec) -> Task:
        now = self.clock()
        spec = self._normalize(spec)
        schedule = self._check(spec, now, anchor=_anchor(spec, None, now))
        # The id is reserved under the lock, written to the store outside it (the commit
        # must not hold up the dispatcher), then published under the lock.
        with self._lock:
            if task_id in self._tasks or task_id in self._reserved:
                raise TaskExists(task_id)
            self._check_chains(task_id, spec)
            limit = self.policy().rate_limits.max_tasks
            if len(self._tasks) + len(self._reserved) >= limit:
                raise QuotaExceeded(f"The policy allows at most {limit} tasks (rate_limits.max_tasks); "
                                    "remove a task first.", field="task_id")
            self._reserved.add(task_id)
        try:
            task = Task(task_id=task_id, spec=spec, schedule=schedule, created_at=now,
                        updated_at=now, anchor=_anchor(spec, schedule, now),
                        checkpoint=round(now, 3))
            task.next_run = task.following(now)
            self.store.save_task(task)
        except BaseException:
            with self._lock:
                self._reserved.discard(task_id)
            raise
        with self._lock:
            self._reserved.discard(task_id)
            self._tasks[task_id] = task
            self._plan(task)
        return task

    def update(self, task_id: str, changes: dict[str, Any]) -> Task:
        """Change some fields of a task. A new ``interval`` or ``start_at`` re-anchors its
        slots; other changes keep the task's place in time (a new ``timezone`` moves clock
        schedules to that zone's wall clock)."""
        now = self.clock()
        with self._lock:
            task = self._get(task_id)
            self._backlog.settle_now(task_id)
            if changes.get("task_type", task.spec.task_type) is not task.spec.task_type:
                unused = ({task.spec.task_type.parameter} - {changes["task_type"].parameter}
                          - set(changes))
                changes = {**changes, **{name: None for name in unused}}
            spec = self._normalize(replace(task.spec, **changes))
            reanchor = "interval" in changes or "start_at" in changes
            replanned = reanchor or "timezone" in changes
            anchor = _anchor(spec, None, now) if reanchor else task.anchor
            schedule = self._check(spec, now, anchor=anchor if replanned else None)
            self._check_chains(task_id, spec)
            updated = replace(task, spec=spec, schedule=schedule, updated_at=now)
            if reanchor:
                updated.anchor = _anchor(spec, schedule, now)
                updated.checkpoint = round(now, 3)
            updated.next_run = updated.following(max(now, updated.checkpoint))
            self.store.save_task(updated)
            self._tasks[task_id] = updated
            self._plan(updated)
            return updated

    def remove(self, task_id: str) -> None:
        """Delete a task, its history and its pending retries; a run in progress finishes
        unrecorded, one not started yet (manual runs aside) does not start. A task that
        other tasks chain to is not removed (TaskInChain): remove it from their
        ``on_success``/``on_failure`` first."""
        with self._lock:
            self._get(task_id)
            referrers = sorted(t.task_id for t in self._tasks.values()
                               if task_id in t.spec.chains_to)
            if referrers:
                raise TaskInChain(f"task '{task_id}' cannot be removed: "
                                  f"{', '.join(repr(r) for r in referrers)} chain to it "
                                  "(on_success/on_failure); update them first", field="task_id")
            self.store.delete_task(task_id)
            del self._tasks[task_id]
            self._backlog.discard(task_id)
            self._launcher.discard_task(task_id)
            self._dispatcher.schedule(task_id, None)
            self._forget_retries(task_id)

    def set_paused(self, task_id: str, paused: bool) -> Task:
        """Pause or resume a task. A resumed task fires at its next future slot. Pausing
        takes back the task's runs not started yet (manual runs aside)."""
        now = self.clock()
        with self._lock:
            task = self._get(task_id)
            self._backlog.settle_now(task_id)
            if task.paused != paused:
                # Stored first: a store failure leaves the task as it was.
                task = replace(task, paused=paused, checkpoint=now, updated_at=now)
                self.store.save_task(task)
                self._tasks[task_id] = task
                if paused and self.store.cancel_retries(task_id):
                    log.info("task %r paused: its pending retries are cancelled", task_id,
                             extra={"task_id": task_id})
            if paused:
                self._forget_retries(task_id)
                self._launcher.discard_task(task_id)
            task.next_run = task.following(now)
            self._plan(task)
            return task

    def run_now(self, task_id: str) -> int:
        """Run a task now, also while the scheduler is stopped (within the rate limit).
        A manual run leaves the task's schedule and ``runs_fired`` alone."""
        with self._lock:
            return self._launcher.run_now(self._get(task_id))

    def add_run_listener(self, listener: RunListener) -> None:
        """Hear of every run that ends from now on (see :meth:`Launcher.add_listener`)."""
        self._launcher.add_listener(listener)

    def policy_changed(self, policy: Policy) -> None:
        """A new policy is in force (a :class:`policies.source.PolicySource` listener): runs
        prepared but not started are checked against it."""
        self._launcher.revise(policy)

    # -- firing -------------------------------------------------------------------------

    def _fire(self, task_id: str, slot: float) -> float | Defer | None:
        """Dispatcher callback for one due slot; returns the task's next due time, or DEFER
        for a slot fired ahead of its start that the launcher decides only at the start.

        A store that is unavailable (full, locked, read-only) cannot record the slot's run,
        and that record is what keeps a slot from running twice: the slot does not run, is
        recorded as an ``error`` run once the store works again, and the task goes on at its
        next slot. Any other failure leaves ``next_run`` at ``slot`` so that the
        dispatcher's retry of the same slot is accepted; the store's unique slot key makes
        that retry launch nothing twice."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.paused or not self._running or task.next_run != slot:
                return None
            jitter = jitter_offset(task_id, slot, task.spec.jitter)
            try:
                run_id = self._launcher.fire(task, slot, jitter,
                                             early=self.clock() < slot + jitter)
                if run_id is DEFER:
                    return DEFER
                self._count(task, slot, run_id)
            except StoreUnavailable as exc:
                log.error("task %r: the run due at %s was not started: %s", task_id, slot,
                          exc.detail, extra={"task_id": task_id})
                self.store.record_missed(task_id, slot, "not started: the store could not "
                                         f"record the run ({exc.detail})")
            # From now, not from the slot: a fire late by more than a period (a suspended
            # machine, a clock jump) resumes at the next future slot instead of a burst.
            task.next_run = task.following(max(slot, self.clock()))
            return task.next_run

    # -- after a run: retries, chains, notifications -----------------------------------

    def _after_run(self, finished: FinishedRun) -> None:
        """Launcher listener: a run ended (or a slot was skipped). Store and plan its retry,
        start the tasks it chains to, queue its notification."""
        with self._lock:
            task = self._tasks.get(finished.task_id)
            if task is None:
                return
            spec, status = task.spec, finished.status
            retrying = False
            if (status.is_retried and finished.lineage.attempt <= self._retries_allowed(spec)
                    and not task.paused):
                retrying = self._plan_retry(task, finished)
            if status.is_final and not retrying and status is not RunStatus.SKIPPED:
                targets = spec.on_success if status is RunStatus.SUCCEEDED else spec.on_failure
                for target in targets:
                    self._chain(target, finished)
            if spec.notify is not None and not retrying:
                previous = self.store.previous_outcome(task.task_id, finished.run_id)
                event = notify_event(spec.notify.on, status, previous)
                if event is not None:
                    self._notifier.submit(Notice(finished.run_id, task.task_id, event,
                                                 spec.notify.url))

    def _after_discard(self, discarded: DiscardedRun) -> None:
        """Launcher discard listener: a slot's run was dropped before it started, so the
        slot did not fire after all: a task with ``max_runs`` still has it to run, and a
        resume or start before the slot runs it, also one that came before this word."""
        if discarded.trigger not in SLOTTED:
            return
        with self._lock:
            task = self._tasks.get(discarded.task_id)
            if task is None or task.runs_fired == 0:
                return
            task.runs_fired -= 1
            now = self.clock()
            slot = discarded.scheduled_for
            # Slots are whole milliseconds: just before it, the slot is the next one.
            task.checkpoint = min(task.checkpoint, max(now, slot - 0.001))
            self.store.save_progress(task.task_id, task.runs_fired, task.checkpoint)
            if not self._running or self._closing or task.paused or slot <= now:
                return
            # A start or resume faster than the executor's word planned the task past the
            # slot (or fired it into the run's record, which stood until now): due again.
            self._backlog.settle_now(task.task_id)
            if task.admit(slot) is not None and (task.next_run is None or task.next_run > slot):
                task.next_run = slot
                self._plan(task)

    def _plan_retry(self, task: Task, finished: FinishedRun) -> bool:
        retry = finished.lineage.attempt  # the k-th retry follows the k-th try
        retry_of = finished.lineage.retry_of or finished.run_id
        due = (finished.finished_at or self.clock()) + retry_delay(task.spec.retry_delay, retry)
        try:
            self.store.add_retry(task.task_id, retry_of, retry + 1, due)
        except StoreError as exc:
            log.error("run %d of task %r is not retried: the store could not record the "
                      "retry (%s)", finished.run_id, task.task_id, exc.message,
                      extra={"run_id": finished.run_id, "task_id": task.task_id})
            return False
        key = str(retry_of)
        self._pending[key] = (task.task_id, retry_of, retry + 1)
        self._retries.schedule(key, due)
        return True

    def _fire_retry(self, key: str, due: float) -> None:
        """Retry dispatcher callback: run the pending retry ``key`` (within the task's
        overlap policy and the rate limit). A store failure raises, and the dispatcher
        tries the same retry again later."""
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                return None
            task_id, retry_of, attempt = pending
            task = self._tasks.get(task_id)
            if task is not None and not task.paused:
                self._launcher.fire(task, due, trigger=Trigger.RETRY,
                                    lineage=Lineage(attempt=attempt, retry_of=retry_of))
            if self._pending.get(key) == pending:
                del self._pending[key]
            return None

    def _forget_retries(self, task_id: str) -> None:
        """Drop the task's pending retries from the plan (the store's are gone already)."""
        for key, (owner, _, _) in list(self._pending.items()):
            if owner == task_id:
                del self._pending[key]
                self._retries.schedule(key, None)

    def _chain(self, target_id: str, parent: FinishedRun) -> None:
        target = self._tasks.get(target_id)
        if target is None:
            return
        try:
            self._launcher.fire(target, self.clock(), trigger=Trigger.CHAIN,
                                lineage=Lineage(parent_run_id=parent.run_id))
        except StoreError as exc:
            log.error("task %r was not started after run %d: %s", target_id, parent.run_id,
                      exc.message, extra={"task_id": target_id, "run_id": parent.run_id})

    def _check_chains(self, task_id: str, spec: TaskSpec) -> None:
        if spec.on_success or spec.on_failure:
            check_chains(task_id, spec, {tid: t.spec.chains_to for tid, t in self._tasks.items()
                                         if tid != task_id})

    def _plan(self, task: Task) -> None:
        """Hand the task's next slot (and its jitter bound) to the dispatcher."""
        self._dispatcher.schedule(task.task_id, task.next_run, jitter=task.spec.jitter)

    def _count(self, task: Task, slot: float, run_id: int | None) -> None:
        """Record that ``slot`` has been dealt with (and a run fired, if ``run_id``)."""
        task.runs_fired += run_id is not None
        task.checkpoint = max(task.checkpoint, slot)
        self.store.save_progress(task.task_id, task.runs_fired, task.checkpoint)

    # -- reading ------------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        with self._lock:
            return list(self._tasks.values())

    def task(self, task_id: str) -> Task:
        with self._lock:
            return self._get(task_id)

    def display_next_run(self, task: Task) -> float | None:
        """The next run as a client should see it: while stopped, the next future slot."""
        if self._running:
            if task.task_id in self._backlog:
                with self._lock:
                    self._backlog.settle_now(task.task_id)
            return task.next_run
        return task.following(max(self.clock(), task.checkpoint))

    def zone_of(self, task: Task) -> tzinfo:
        """The zone the task's clock schedule follows (its own, else the default)."""
        return self._zone(task.spec.timezone)

    def timezone_of(self, task: Task) -> str:
        """The IANA name of the zone the task's clock schedule follows."""
        return task.spec.timezone or zone_name(self.tz)

    def next_run_at(self, task: Task) -> str | None:
        """The next run (as ``display_next_run``) in ISO 8601 with the offset, in the
        task's zone; None if the task fires no more."""
        next_run = self.display_next_run(task)
        return None if next_run is None else iso_time(next_run, self._zone(task.spec.timezone))

    def runs(self, task_id: str | None = None, limit: int = 20, *,
             after_run_id: int | None = None) -> list[Run]:
        """The newest ``limit`` runs; with ``after_run_id``, the oldest ``limit`` of those with
        a larger id (a cursor over runs as they are recorded)."""
        if task_id is not None:
            self.task(task_id)
        if after_run_id is not None:
            return self.store.runs_after(after_run_id, task_id, limit)
        return self.store.recent_runs(task_id, limit)

    def run(self, run_id: int) -> Run:
        found = self.store.get_run(run_id)
        if found is None:
            raise RunNotFound(run_id)
        return found

    def status(self) -> SchedulerStatus:
        with self._lock:
            count = len(self._tasks)
        return SchedulerStatus(running=self._running, tasks=count,
                               workers_alive=self.executor.alive(),
                               workers_configured=self.executor.size,
                               runs_active=self.executor.busy(), runs_queued=self.executor.queued(),
                               isolation=self.executor.isolation(), store=self.store.health())

    def validate(self, interval: object, count: int = 5, *,
                 timezone: object = None) -> tuple[Schedule, list[float]]:
        """Parse ``interval`` and list its next ``count`` runs for a task created now
        (``preview`` tells more)."""
        preview = self.preview(interval, count, timezone=timezone)
        return preview.schedule, preview.next_runs

    def preview(self, interval: object, count: int = 5, *, timezone: object = None,
                jitter: object = None) -> SchedulePreview:
        """What a task created now with this ``interval``, ``timezone`` and ``jitter`` would
        do: its next ``count`` runs and the schedule in plain English. Creates nothing;
        refuses what ``create`` would refuse in these three fields."""
        now = self.clock()
        zone = self._zone(timezone)
        schedule = self._parse(interval, zone)
        anchor = round(now, 3)
        _check_future(schedule, anchor, now)
        check_jitter(jitter, schedule.period_seconds)
        slots = schedule.next_slots(anchor, now, count)
        return SchedulePreview(schedule=schedule, timezone=zone_name(zone), next_runs=slots,
                               next_runs_at=[iso_time(t, zone) for t in slots],
                               description=schedule.description)

    # -- helpers ------------------------------------------------------------------------

    def _get(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def _zone(self, timezone: object) -> tzinfo:
        """The zone named ``timezone`` (InvalidRequest ``invalid_timezone`` if unknown), or
        the default zone for None."""
        return self.tz if timezone is None else resolve_zone(timezone)

    def _parse(self, interval: object, zone: tzinfo) -> Schedule:
        schedule = parse_interval(interval, tz=zone)
        minimum = self.policy().rate_limits.min_interval_seconds
        if schedule.period_seconds < minimum:
            raise InvalidInterval(
                f"interval '{interval}' is shorter than the policy's minimum of {minimum} s "
                "(rate_limits.min_interval_seconds)", code="interval_too_short")
        return schedule

    def _normalize(self, spec: TaskSpec) -> TaskSpec:
        """The spec with its ``timezone`` spelled as the zone database does (InvalidRequest
        ``invalid_timezone`` if there is no such zone) and its ``jitter`` a float or None
        (the schedule's bound on it is checked with the schedule)."""
        timezone = None if spec.timezone is None else zone_name(resolve_zone(spec.timezone))
        jitter = check_jitter(spec.jitter, math.inf)
        if (timezone, jitter) == (spec.timezone, spec.jitter):
            return spec
        return replace(spec, timezone=timezone, jitter=jitter)

    def _check(self, spec: TaskSpec, now: float, *, anchor: float | None) -> Schedule:
        """Validate a whole spec against the grammar and the policy in force. With an
        ``anchor`` (the schedule is new or moved), it must still fire from now on."""
        schedule = self._parse(spec.interval, self._zone(spec.timezone))
        if anchor is not None:
            _check_future(schedule, anchor, now)
        check_jitter(spec.jitter, schedule.period_seconds)
        kind = spec.task_type
        if kind.parameter_required and not getattr(spec, kind.parameter):
            raise InvalidRequest(f"a '{kind.value}' task needs '{kind.parameter}'",
                                 field=kind.parameter, code="missing_field")
        for name in TASK_PARAMETERS:
            if getattr(spec, name) is not None and name != kind.parameter:
                raise InvalidRequest(f"a '{kind.value}' task does not use '{name}'; "
                                     f"it takes {kind.parameter}", field=name, code="unused_field")
        if spec.until is not None and spec.until <= now:
            raise InvalidRequest("'until' is in the past; give a future time", field="until")
        policy = self.policy()
        if spec.retries > policy.limits.max_retries:
            raise LimitExceeded(f"retries {spec.retries} is above the policy's ceiling of "
                                f"{policy.limits.max_retries} (limits.max_retries)",
                                field="retries")
        if spec.notify is not None:
            policy.notifications.check(spec.notify.url, field="notify")
        check_request(run_request(spec, self.policy(), run_id=0, task_id="check"))
        return schedule


def _check_future(schedule: Schedule, anchor: float, now: float) -> None:
    """A schedule anchored at ``anchor`` must fire after ``now`` (a one-shot time that has
    passed, a cron date that never comes)."""
    if schedule.next_slot(anchor, now) is not None:
        return
    if schedule.one_shot:
        raise InvalidInterval(f"the time of '{schedule.canonical}' has already passed; "
                              "give a time in the future")
    raise InvalidInterval(f"'{schedule.canonical}' never falls on a date from now on")


def _anchor(spec: TaskSpec, schedule: Schedule | None, now: float) -> float:
    """Where a task's slots are counted from: now, or so that ``start_at`` is the first
    interval slot (for clock schedules: the first clock time at or after ``start_at``).
    Without the ``schedule`` (not parsed yet), an interval's ``start_at`` is not known."""
    if spec.start_at is None:
        return round(now, 3)
    if schedule is None:
        return round(spec.start_at, 3) - 0.001
    if isinstance(schedule, IntervalSchedule):
        return round(spec.start_at - schedule.period_seconds, 3)
    return round(spec.start_at, 3) - 0.001
