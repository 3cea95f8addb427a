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

from policies import TASK_PARAMETERS, Policy
from sandbox.launch import check_request

from .dispatcher import Dispatcher
from .errors import (
    InvalidInterval, InvalidRequest, QuotaExceeded, RunNotFound, StoreUnavailable, TaskExists,
    TaskNotFound,
)
from .executor import Executor
from .grammar import IntervalSchedule, Schedule, parse_interval
from .jitter import check_jitter, jitter_offset
from .launcher import Launcher, RunListener, run_request
from .models import Misfire, Run, SchedulerStatus, Task, TaskSpec, Trigger
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

    ``dispatcher`` defaults to a :class:`Dispatcher` on ``clock``; a test may pass its own
    (it is opened with this scheduler's fire callback). ``tz`` is the default zone of
    tasks without a ``timezone`` (None: the machine's zone). The scheduler's lock is taken
    before the launcher's, never after it.
    """

    def __init__(self, store: Store, executor: Executor, policy: Callable[[], Policy], *,
                 dispatcher: Dispatcher | None = None, config: SchedulerConfig = SchedulerConfig(),
                 clock: Callable[[], float] = time.time, tz: tzinfo | None = None):
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
        self._dispatcher = dispatcher or Dispatcher(clock=clock)
        self._launcher = Launcher(store, executor, policy, clock=clock,
                                  history_per_task=config.history_per_task,
                                  history_max_bytes=config.history_max_bytes)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Load the store, settle what the last process left, open the launcher (and with it
        the executor) and the dispatcher."""
        interrupted = self.store.interrupt_unfinished("the server stopped while the run was active")
        if interrupted:
            log.warning("marked %d runs from the previous server process as interrupted", interrupted)
        now = self.clock()
        was_running = self.store.is_running()
        running = was_running or self.config.autostart
        for row in self.store.load_tasks():
            spec = spec_from_json(row.pop("spec"), **row.pop("columns"))
            try:
                schedule = parse_interval(spec.interval, tz=self._zone(spec.timezone))
            except InvalidRequest as exc:
                log.error("task %r has an interval or time zone this server cannot use (%s); "
                          "not scheduled", row["task_id"], exc.message,
                          extra={"task_id": row["task_id"]})
                continue
            self._tasks[row["task_id"]] = Task(spec=spec, schedule=schedule, **row)
        self._launcher.open()
        if was_running:
            self._catch_up(now)
        elif running:
            self._resume_all(now)
        self._running = running
        self.store.set_running(running)
        self._dispatcher.open(self._fire)
        self._dispatcher.set_active(running)
        log.info("loaded %d tasks; scheduler %s", len(self._tasks), "running" if running else "stopped")

    def close(self, grace: float | None = None) -> None:
        """Stop dispatching, let running jobs end within ``grace`` seconds, then stop them."""
        self._dispatcher.close()
        self._launcher.close(self.config.shutdown_grace if grace is None else grace)
        self.store.close()

    def _catch_up(self, now: float) -> None:
        """Handle slots missed while the server was down (``misfire``), then plan ahead."""
        catch_ups = []
        ahead: dict[str, float | None] = {}
        with self._lock:
            for task in self._tasks.values():
                if task.paused or task.exhausted:
                    continue
                missed = task.schedule.next_slot(task.anchor, task.checkpoint)
                if missed is None or missed > now:
                    # Nothing was missed, so this is also the first slot after now.
                    ahead[task.task_id] = missed
                    continue
                if task.spec.until is not None and missed > task.spec.until:
                    continue
                if task.spec.misfire is Misfire.RUN_ONCE:
                    catch_ups.append((task, missed))
                else:
                    log.info("task %r missed runs while the server was down; skipping them "
                             "(misfire: skip)", task.task_id, extra={"task_id": task.task_id})
        for task, missed in catch_ups:
            with self._lock:
                self._count(task, missed, self._launcher.launch(task, Trigger.CATCH_UP, missed))
        self._resume_all(now, ahead)

    def _resume_all(self, now: float, ahead: dict[str, float | None] | None = None) -> None:
        """Deal with every slot up to ``now`` as passed over, and plan the next ones
        (``ahead``: tasks whose first slot after ``now`` is already known)."""
        with self._lock:
            for task in self._tasks.values():
                task.checkpoint = now
            self.store.set_all_checkpoints(now)
        self._plan_all(now, ahead or {})

    def _plan_all(self, now: float, ahead: dict[str, float | None]) -> None:
        with self._lock:
            due, jitters = {}, {}
            for task in self._tasks.values():
                if task.task_id in ahead:
                    task.next_run = task.admit(ahead[task.task_id])
                else:
                    task.next_run = task.following(now)
                if task.next_run is not None:
                    due[task.task_id] = task.next_run
                    if task.spec.jitter:
                        jitters[task.task_id] = task.spec.jitter
        self._dispatcher.schedule_many(due, jitters)

    # -- the original API's actions -----------------------------------------------------

    def start(self) -> bool:
        """Start dispatching; False if it was already running. Tasks resume at their next
        future slot (slots that passed while stopped are not caught up)."""
        with self._lock:
            if self._running:
                return False
            self.store.set_running(True)
            self._running = True
            self._resume_all(self.clock())
            self._dispatcher.set_active(True)
            return True

    def stop(self) -> bool:
        """Stop dispatching; False if it was not running. Runs in progress finish."""
        with self._lock:
            if not self._running:
                return False
            self.store.set_running(False)
            self._running = False
            self._dispatcher.set_active(False)
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
            if changes.get("task_type", task.spec.task_type) is not task.spec.task_type:
                unused = ({task.spec.task_type.parameter} - {changes["task_type"].parameter}
                          - set(changes))
                changes = {**changes, **{name: None for name in unused}}
            spec = self._normalize(replace(task.spec, **changes))
            reanchor = "interval" in changes or "start_at" in changes
            replanned = reanchor or "timezone" in changes
            anchor = _anchor(spec, None, now) if reanchor else task.anchor
            schedule = self._check(spec, now, anchor=anchor if replanned else None)
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
        """Delete a task and its history; a run in progress finishes unrecorded."""
        with self._lock:
            self._get(task_id)
            self.store.delete_task(task_id)
            del self._tasks[task_id]
            self._launcher.forget(task_id)
            self._dispatcher.schedule(task_id, None)

    def set_paused(self, task_id: str, paused: bool) -> Task:
        """Pause or resume a task. A resumed task fires at its next future slot."""
        now = self.clock()
        with self._lock:
            task = self._get(task_id)
            if task.paused != paused:
                # Stored first: a store failure leaves the task as it was.
                task = replace(task, paused=paused, checkpoint=now, updated_at=now)
                self.store.save_task(task)
                self._tasks[task_id] = task
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

    # -- firing -------------------------------------------------------------------------

    def _fire(self, task_id: str, slot: float) -> float | None:
        """Dispatcher callback for one due slot; returns the task's next due time.

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
                self._count(task, slot, self._launcher.fire(task, slot, jitter))
            except StoreUnavailable as exc:
                log.error("task %r: the run due at %s was not started: %s", task_id, slot,
                          exc.detail, extra={"task_id": task_id})
                self.store.record_missed(task_id, slot, "not started: the store could not "
                                         f"record the run ({exc.detail})")
            # From now, not from the slot: a fire late by more than a period (a suspended
            # machine, a clock jump) resumes at the next future slot instead of a burst.
            task.next_run = task.following(max(slot, self.clock()))
            return task.next_run

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
            return task.next_run
        return task.following(max(self.clock(), task.checkpoint))

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
