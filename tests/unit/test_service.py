"""Unit tests for scheduler.service and scheduler.launcher: the task registry, its actions,
and the runs they launch.

The scheduler runs against a real SQLite store under ``tmp_path`` (one that a test can make
fail on demand), a fake executor that only records what it is given (tests report starts
and results through the callbacks the scheduler handed to ``open``) and a clock that moves
only when a test moves it.

Timing never depends on the dispatcher thread: the harness gives the scheduler a recording
stub dispatcher (a real one would fire on its own whenever any action woke it while the
fake clock was past a due time), and tests fire a slot through the callback the scheduler
opened it with, with ``slot = task.next_run``, which is the dispatcher's contract. The tests
under "the real dispatcher" check the wiring with the real thread.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import PathNotAllowed, TaskType, default_policy
from sandbox.types import Outcome, RunRequest, RunResult
from scheduler import dispatcher as dispatcher_module
from scheduler.dispatcher import DEFER, Dispatcher
from scheduler.errors import (
    InvalidInterval, InvalidRequest, QuotaExceeded, RateLimited, RunNotFound, StoreError, TaskExists,
    TaskNotFound,
)
from scheduler.jitter import jitter_offset
from scheduler.models import Misfire, Overlap, RunStatus, TaskSpec, Trigger, task_state
from scheduler.service import Scheduler, SchedulerConfig
from scheduler.store import Store
from tests.fakes import FakeExecutor
from tests.helpers import wait_until

T0 = 1_700_000_000.0
P = 60.0
EVERY = "every 60 seconds"


# --- test doubles ------------------------------------------------------------------------

class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class StubDispatcher:
    """Stands in for scheduler.dispatcher.Dispatcher: records due times, fires only when a
    test calls ``fire``."""

    def __init__(self):
        self.due_times: dict[str, float] = {}
        self.jitters: dict[str, float] = {}
        self.active = False
        self.callback = None
        self.closed = False

    def open(self, fire) -> None:
        self.callback = fire

    def close(self, timeout: float | None = 5.0) -> None:
        self.closed = True

    def fire(self, task_id: str, slot: float) -> float | None:
        """Fire ``slot`` of ``task_id`` as the real dispatcher would."""
        return self.callback(task_id, slot)

    def set_active(self, active: bool) -> None:
        self.active = active

    def schedule(self, task_id: str, due: float | None, *, jitter: float | None = None) -> None:
        self.jitters.pop(task_id, None)
        if jitter:
            self.jitters[task_id] = jitter
        if due is None:
            self.due_times.pop(task_id, None)
        else:
            self.due_times[task_id] = due

    def schedule_many(self, items: dict[str, float], jitters: dict[str, float] | None = None) -> None:
        self.due_times = dict(items)
        self.jitters = dict(jitters or {})

    def due(self, task_id: str) -> float | None:
        return self.due_times.get(task_id)


class FlakyStore(Store):
    """The real store, except that the methods named in ``broken`` raise ``error``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.broken: set[str] = set()
        self.error: Exception = StoreError("store error: disk I/O error")
        self.failures = 0

    def break_(self, *methods: str, error: Exception | None = None) -> None:
        self.broken = set(methods)
        self.error = error or self.error

    def repair(self) -> None:
        self.broken = set()

    def _check(self, method: str) -> None:
        if method in self.broken:
            self.failures += 1
            raise self.error

    def insert_run(self, *args, **kwargs):
        self._check("insert_run")
        return super().insert_run(*args, **kwargs)

    def save_progress(self, *args, **kwargs):
        self._check("save_progress")
        return super().save_progress(*args, **kwargs)

    def finish_run(self, *args, **kwargs):
        self._check("finish_run")
        return super().finish_run(*args, **kwargs)

    def delete_run(self, *args, **kwargs):
        self._check("delete_run")
        return super().delete_run(*args, **kwargs)


class Harness:
    """One scheduler (real store, fake executor, fake clock) and helpers to drive it."""

    def __init__(self, base: Path, *, clock: Clock | None = None, db: Path | None = None,
                 config: SchedulerConfig = SchedulerConfig(), real_dispatcher: bool = False,
                 store_options: dict | None = None, scheduler_options: dict | None = None,
                 **rate_limits):
        self.base = base
        self.clock = clock or Clock()
        self.db = db or base / "data" / "scheduler.db"
        self.executor = FakeExecutor()
        self.policy_value = default_policy(base_dir=base)
        if rate_limits:
            self.set_rate_limits(**rate_limits)
        self.store = FlakyStore(self.db, **(store_options or {}))
        self.dispatcher = (Dispatcher(clock=self.clock, lead=config.prepare_ahead)
                           if real_dispatcher else StubDispatcher())
        self.sched = Scheduler(self.store, self.executor, lambda: self.policy_value,
                               dispatcher=self.dispatcher, config=config, clock=self.clock,
                               **(scheduler_options or {}))
        self.closed = False

    def set_rate_limits(self, **changes) -> None:
        policy = self.policy_value
        self.policy_value = dataclasses.replace(
            policy, rate_limits=dataclasses.replace(policy.rate_limits, **changes))

    def open(self, *, start: bool = True) -> "Harness":
        self.sched.open()
        if start:
            self.sched.start()
        return self

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sched.close(grace=0)

    def crash(self) -> None:
        """Die without any shutdown: only the database connection goes (as with kill -9)."""
        self.closed = True
        self.dispatcher.close()
        self.store.close()

    # actions
    def create(self, task_id: str = "t1", **fields):
        return self.sched.create(task_id, spec(**fields))

    def fire(self, task_id: str = "t1", *, late: float = 0.0) -> tuple[float, float | None]:
        """Fire the task's next slot as the dispatcher would, ``late`` seconds after it."""
        slot = self.sched.task(task_id).next_run
        assert slot is not None, f"{task_id} has no next run"
        self.clock.now = slot + late
        return slot, self.dispatcher.fire(task_id, slot)

    def fire_early(self, task_id: str = "t1", *, ahead: float = 0.5):
        """Fire the task's next slot ``ahead`` seconds before it, as the dispatcher's lead
        does; returns the callback's answer."""
        slot = self.sched.task(task_id).next_run
        assert slot is not None, f"{task_id} has no next run"
        self.clock.now = slot - ahead
        return self.dispatcher.fire(task_id, slot)

    def runs(self, task_id: str | None = "t1"):
        """The task's runs, oldest first."""
        return self.store.recent_runs(task_id, limit=10_000)[::-1]


def spec(**fields) -> TaskSpec:
    values = dict(task_type=TaskType.COMMAND, interval=EVERY, command="echo hi")
    values.update(fields)
    return TaskSpec(**values)


@pytest.fixture
def make(tmp_path):
    """Factory of harnesses sharing ``tmp_path`` (so a second one can reopen the same DB)."""
    made: list[Harness] = []

    def factory(**kwargs) -> Harness:
        harness = Harness(tmp_path, **kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


@pytest.fixture
def h(make) -> Harness:
    """An open, running scheduler at T0."""
    return make().open()


# --- create ------------------------------------------------------------------------------

def test_create_plans_the_first_slot_and_stores_the_task(h):
    task = h.create(env={"A": "1"}, max_runs=5)
    assert (task.anchor, task.checkpoint, task.created_at) == (T0, T0, T0)
    assert task.next_run == T0 + P
    assert h.dispatcher.due("t1") == T0 + P
    assert [t.task_id for t in h.sched.tasks()] == ["t1"]
    [row] = h.store.load_tasks()
    assert row["task_id"] == "t1" and row["anchor"] == T0
    assert h.executor.submitted == []


def test_create_an_existing_id_is_refused(h):
    h.create()
    with pytest.raises(TaskExists) as info:
        h.create(command="echo other")
    assert info.value.code == "task_exists" and info.value.field == "task_id"
    assert h.sched.task("t1").spec.command == "echo hi"


def test_create_beyond_max_tasks_is_refused(h):
    h.set_rate_limits(max_tasks=2)
    h.create("a")
    h.create("b")
    with pytest.raises(QuotaExceeded) as info:
        h.create("c")
    assert info.value.code == "quota_exceeded"
    assert [r["task_id"] for r in h.store.load_tasks()] == ["a", "b"]
    h.sched.remove("a")
    h.create("c")  # room again


def test_interval_shorter_than_the_policy_minimum_is_refused(h):
    h.set_rate_limits(min_interval_seconds=120)
    with pytest.raises(InvalidInterval) as info:
        h.create(interval="every 60 seconds")
    assert info.value.code == "interval_too_short" and info.value.field == "interval"
    assert h.create(interval="every 2 minutes").next_run == T0 + 120


def test_an_unparseable_interval_is_refused(h):
    with pytest.raises(InvalidInterval) as info:
        h.create(interval="now and then")
    assert info.value.code == "invalid_interval"
    assert h.sched.tasks() == [] and h.store.load_tasks() == []


@pytest.mark.parametrize("command", [None, ""])
def test_a_command_task_needs_a_command(h, command):
    with pytest.raises(InvalidRequest) as info:
        h.create(command=command)
    assert info.value.code == "missing_field" and info.value.field == "command"
    assert h.sched.tasks() == []


def test_a_command_task_refuses_a_custom_script(h):
    with pytest.raises(InvalidRequest) as info:
        h.create(custom_script="print(1)")
    assert info.value.code == "unused_field" and info.value.field == "custom_script"


@pytest.mark.parametrize("until", [T0 - 1, T0])
def test_until_must_be_in_the_future(h, until):
    with pytest.raises(InvalidRequest) as info:
        h.create(until=until)
    assert info.value.field == "until"
    assert h.sched.tasks() == []


def test_policy_violations_are_refused_at_create(h):
    with pytest.raises(PathNotAllowed):
        h.create(working_dir="/definitely/not/allowed")
    assert h.sched.tasks() == [] and h.store.load_tasks() == []


def test_validate_lists_the_slots_of_a_task_created_now(h):
    schedule, slots = h.sched.validate("every 5 minutes", 3)
    assert schedule.period_seconds == 300
    assert slots == [T0 + 300, T0 + 600, T0 + 900]


# --- deterministic slots -----------------------------------------------------------------

def test_slots_are_anchor_plus_k_periods_even_when_fired_late(h):
    h.create(overlap=Overlap.ALLOW)  # no run ever finishes here
    for k, late in enumerate([0.0, 0.5 * P, 0.999 * P, 0.0, 17.25], start=1):
        slot, following = h.fire(late=late)
        assert slot == T0 + k * P
        assert following == h.sched.task("t1").next_run == T0 + (k + 1) * P
    assert [r.scheduled_for for r in h.runs()] == [T0 + k * P for k in range(1, 6)]
    assert h.sched.task("t1").runs_fired == 5
    assert [r.scheduled_for for r in h.executor.submitted] == [T0 + k * P for k in range(1, 6)]


@settings(max_examples=20, deadline=None, database=None)
@given(lateness=st.lists(st.floats(min_value=0, max_value=0.999), min_size=1, max_size=6),
       interval=st.sampled_from([("every 7 seconds", 7), ("every 5 minutes", 300),
                                 ("every 3 hours", 10800), ("weekly", 604800)]))
def test_slots_never_drift(lateness, interval):
    text, period = interval
    with tempfile.TemporaryDirectory() as base:
        harness = Harness(Path(base)).open()
        try:
            harness.create(interval=text, overlap=Overlap.ALLOW)
            for k, fraction in enumerate(lateness, start=1):
                slot, following = harness.fire(late=fraction * period)
                assert slot == T0 + k * period
                assert following == T0 + (k + 1) * period
        finally:
            harness.close()


def test_a_very_late_fire_resumes_at_the_next_future_slot(h):
    h.create()
    slot, following = h.fire(late=3.5 * P)
    assert slot == T0 + P
    assert following == T0 + 5 * P  # the next slot after now, still on the anchor's grid


def test_firing_the_same_slot_twice_runs_it_once(h):
    h.create()
    slot, _ = h.fire()
    assert h.dispatcher.fire("t1", slot) is None
    assert h.dispatcher.fire("t1", slot - P) is None  # an older, stale due time
    assert len(h.executor.submitted) == 1
    assert len(h.runs()) == 1
    assert h.sched.task("t1").runs_fired == 1


def test_a_slot_already_recorded_in_the_store_is_not_run_again(h):
    h.create()
    # e.g. recorded by a previous server process that died before saving its checkpoint
    h.store.insert_run("t1", Trigger.SCHEDULE, RunStatus.INTERRUPTED, T0 + P, slot=True)
    slot, following = h.fire()
    assert h.executor.submitted == []
    assert [r.status for r in h.runs()] == [RunStatus.INTERRUPTED]
    assert h.sched.task("t1").runs_fired == 0
    assert following == T0 + 2 * P


def test_fire_ignores_unknown_tasks(h):
    assert h.dispatcher.fire("ghost", T0) is None


def test_the_request_carries_the_task_and_the_policy(h):
    h.create(env={"GREETING": "hi"}, timeout=5.0)
    h.fire()
    [request] = h.executor.submitted
    [run] = h.runs()
    assert request.run_id == run.run_id
    assert (request.task_id, request.task_type, request.command) == ("t1", TaskType.COMMAND, "echo hi")
    assert request.env == {"GREETING": "hi"} and request.timeout == 5.0
    assert request.scheduled_for == T0 + P
    assert request.policy == h.policy_value
    assert run.trigger is Trigger.SCHEDULE and run.status is RunStatus.QUEUED


# --- overlap -----------------------------------------------------------------------------

def test_overlap_skip_records_a_skipped_run(h):
    h.create(overlap=Overlap.SKIP)
    h.fire()
    [first] = h.executor.ids
    slot, following = h.fire()
    assert h.executor.ids == [first]
    skipped = h.runs()[-1]
    assert skipped.status is RunStatus.SKIPPED and skipped.scheduled_for == slot
    assert skipped.reason.startswith("overlap")
    assert following == slot + P  # the schedule goes on
    h.executor.finish(first)
    h.fire()
    assert len(h.executor.submitted) == 2  # free again once the active run ended


def test_overlap_queue_parks_one_run_until_the_active_one_ends(h):
    h.create(overlap=Overlap.QUEUE)
    h.fire()
    [first] = h.executor.ids
    h.fire()
    parked = h.runs()[-1]
    assert parked.status is RunStatus.QUEUED
    assert h.executor.ids == [first]  # parked, not submitted
    h.fire()  # one is already waiting: this one is skipped
    third = h.runs()[-1]
    assert third.status is RunStatus.SKIPPED and third.reason.startswith("overlap")
    assert h.executor.ids == [first]

    h.executor.finish(first, started_at=T0 + P, finished_at=T0 + P + 1)
    assert h.executor.ids == [first, parked.run_id]
    h.executor.finish(parked.run_id, started_at=T0 + 3 * P, finished_at=T0 + 3 * P + 1)
    h.fire()
    assert len(h.executor.submitted) == 3  # nothing active: submitted at once


def test_overlap_allow_runs_concurrently(h):
    h.create(overlap=Overlap.ALLOW)
    h.fire()
    h.fire()
    h.fire()
    assert len(h.executor.submitted) == 3
    assert all(r.status is RunStatus.QUEUED for r in h.runs())


def test_a_manual_run_in_progress_counts_as_active_for_overlap(h):
    h.create(overlap=Overlap.SKIP)
    h.sched.run_now("t1")
    h.fire()
    assert len(h.executor.submitted) == 1
    assert h.runs()[-1].status is RunStatus.SKIPPED


# --- rate limit and manual runs ----------------------------------------------------------

def test_scheduled_fires_over_the_rate_limit_are_skipped(h):
    h.set_rate_limits(runs_per_minute=2)
    h.create(interval="every 10 seconds", overlap=Overlap.ALLOW)
    h.fire()
    h.fire()
    slot, following = h.fire()
    assert len(h.executor.submitted) == 2
    limited = h.runs()[-1]
    assert limited.status is RunStatus.SKIPPED and limited.scheduled_for == slot
    assert limited.reason.startswith("rate limit")
    assert following == slot + 10
    assert h.sched.task("t1").runs_fired == 2


def test_run_now_over_the_rate_limit_is_refused(h):
    h.set_rate_limits(runs_per_minute=2)
    h.create()
    h.sched.run_now("t1")
    h.clock.advance(15)
    h.sched.run_now("t1")
    h.clock.advance(15)
    with pytest.raises(RateLimited) as info:
        h.sched.run_now("t1")
    assert info.value.code == "rate_limited"
    assert info.value.retry_after >= 1
    assert info.value.retry_after == 30  # the first run leaves the window at T0 + 60
    assert len(h.executor.submitted) == 2 and len(h.runs()) == 2
    h.clock.now = T0 + 60.001
    assert h.sched.run_now("t1")


def test_run_now_records_a_manual_run_and_leaves_the_schedule_alone(make):
    h = make().open(start=False)  # manual runs work while the scheduler is stopped
    h.create(overlap=Overlap.ALLOW)
    h.clock.advance(5)
    first = h.sched.run_now("t1")
    second = h.sched.run_now("t1")  # same instant: manual runs have no slot to collide on
    assert first != second and h.executor.ids == [first, second]
    run = h.sched.run(first)
    assert run.trigger is Trigger.MANUAL and run.scheduled_for == T0 + 5
    task = h.sched.task("t1")
    assert task.runs_fired == 0 and task.checkpoint == T0
    with pytest.raises(TaskNotFound):
        h.sched.run_now("ghost")


# --- max_runs and until ------------------------------------------------------------------

def test_max_runs_exhausts_the_task(h):
    h.create(max_runs=3, overlap=Overlap.ALLOW)
    for _ in range(2):
        assert h.fire()[1] is not None
    slot, following = h.fire()
    task = h.sched.task("t1")
    assert following is None and task.next_run is None
    assert task.exhausted and task.runs_fired == 3
    assert task_state(task, h.sched.display_next_run(task)) == "finished"
    assert h.dispatcher.fire("t1", slot + P) is None
    assert len(h.executor.submitted) == 3
    assert h.store.load_tasks()[0]["runs_fired"] == 3


def test_until_ends_the_schedule(h):
    h.create(until=T0 + 150, overlap=Overlap.ALLOW)
    assert h.fire() == (T0 + P, T0 + 2 * P)
    assert h.fire() == (T0 + 2 * P, None)  # T0 + 180 is past until
    task = h.sched.task("t1")
    assert task.next_run is None and not task.exhausted
    assert len(h.executor.submitted) == 2


def test_until_before_the_first_slot_means_no_runs(h):
    task = h.create(until=T0 + 30)
    assert task.next_run is None
    assert h.dispatcher.due("t1") is None


# --- pause and resume --------------------------------------------------------------------

def test_pause_and_resume(h):
    h.create()
    h.fire()
    h.clock.now = T0 + P + 10
    task = h.sched.set_paused("t1", True)
    assert task.paused and task.next_run is None
    assert h.dispatcher.due("t1") is None
    assert h.store.load_tasks()[0]["paused"] is True
    assert task_state(task, h.sched.display_next_run(task)) == "paused"

    h.clock.now = T0 + 2 * P
    assert h.dispatcher.fire("t1", T0 + 2 * P) is None  # a due time handed out before the pause
    assert len(h.executor.submitted) == 1

    h.clock.now = T0 + 4 * P + 30  # resume between two slots
    task = h.sched.set_paused("t1", False)
    assert not task.paused and task.anchor == T0
    assert task.next_run == T0 + 5 * P == h.dispatcher.due("t1")
    assert h.fire() == (T0 + 5 * P, T0 + 6 * P)
    assert [r.scheduled_for for r in h.runs()] == [T0 + P, T0 + 5 * P]


def test_resume_exactly_on_a_slot_takes_the_following_one(h):
    h.create()
    h.sched.set_paused("t1", True)
    h.clock.now = T0 + 3 * P
    assert h.sched.set_paused("t1", False).next_run == T0 + 4 * P


# --- update and remove -------------------------------------------------------------------

def test_update_with_a_new_interval_re_anchors_at_now(h):
    h.create()
    h.fire()
    h.clock.now = T0 + 100.25
    task = h.sched.update("t1", {"interval": "every 30 seconds"})
    assert task.anchor == task.checkpoint == T0 + 100.25
    assert task.next_run == T0 + 130.25 == h.dispatcher.due("t1")
    assert task.runs_fired == 1
    assert h.fire() == (T0 + 130.25, T0 + 160.25)
    assert h.store.load_tasks()[0]["anchor"] == T0 + 100.25


def test_update_of_other_fields_keeps_the_place_in_time(h):
    h.create()
    h.fire()
    h.clock.now = T0 + 100
    task = h.sched.update("t1", {"command": "echo changed", "overlap": Overlap.ALLOW})
    assert task.anchor == T0
    assert task.next_run == T0 + 2 * P == h.dispatcher.due("t1")
    h.fire()
    assert h.executor.submitted[-1].command == "echo changed"
    assert h.sched.task("t1").spec.overlap is Overlap.ALLOW


def test_update_of_the_task_type_drops_parameters_it_no_longer_uses(h):
    h.create()
    task = h.sched.update("t1", {"task_type": TaskType.CUSTOM, "custom_script": "print(1)"})
    assert task.spec.command is None and task.spec.custom_script == "print(1)"


def test_a_refused_update_changes_nothing(h):
    h.create()
    with pytest.raises(InvalidRequest):
        h.sched.update("t1", {"command": None})
    with pytest.raises(TaskNotFound):
        h.sched.update("ghost", {"command": "true"})
    task = h.sched.task("t1")
    assert task.spec.command == "echo hi" and task.next_run == T0 + P


def test_remove_deletes_the_task_and_its_runs(h):
    h.create("t1")
    h.create("other")
    h.fire("t1")
    h.executor.finish(h.executor.ids[0])
    h.fire("t1")  # still running when the task goes
    h.fire("other")
    h.sched.remove("t1")
    with pytest.raises(TaskNotFound):
        h.sched.task("t1")
    with pytest.raises(TaskNotFound):
        h.sched.runs("t1")
    with pytest.raises(TaskNotFound):
        h.sched.remove("t1")
    assert h.dispatcher.due("t1") is None
    assert [r["task_id"] for r in h.store.load_tasks()] == ["other"]
    assert h.runs("t1") == []
    assert {r.task_id for r in h.runs(None)} == {"other"}
    assert h.dispatcher.fire("t1", T0 + 3 * P) is None
    h.executor.finish(h.executor.ids[1])  # the active run ends unrecorded, quietly
    assert h.runs("t1") == []


# --- start and stop ----------------------------------------------------------------------

def test_stop_halts_firing_and_start_resumes_without_catching_up(h):
    h.create()
    h.fire()
    h.clock.now = T0 + P + 5
    assert h.sched.stop() is True and h.sched.stop() is False
    assert not h.sched.running and not h.dispatcher.active
    assert h.store.is_running() is False
    pending = h.sched.task("t1").next_run
    h.clock.now = T0 + 10 * P
    assert h.dispatcher.fire("t1", pending) is None
    assert len(h.executor.submitted) == 1
    task = h.sched.task("t1")
    assert h.sched.display_next_run(task) == T0 + 11 * P  # what a client sees while stopped

    h.clock.now = T0 + 10 * P + 1
    assert h.sched.start() is True and h.sched.start() is False
    assert h.sched.running and h.dispatcher.active and h.store.is_running()
    assert h.sched.task("t1").next_run == T0 + 11 * P == h.dispatcher.due("t1")
    assert len(h.executor.submitted) == 1  # nothing caught up
    assert h.fire() == (T0 + 11 * P, T0 + 12 * P)


def test_status_reports_the_registry_and_the_executor(h):
    h.create("a")
    h.create("b")
    status = h.sched.status()
    assert (status.running, status.tasks) == (True, 2)
    assert (status.workers_alive, status.workers_configured) == (2, 2)
    assert (status.runs_active, status.runs_queued) == (1, 0)


def test_unknown_run_is_run_not_found(h):
    with pytest.raises(RunNotFound):
        h.sched.run(12345)


# --- restarts ----------------------------------------------------------------------------

def test_open_after_a_crash_interrupts_unfinished_runs(make):
    first = make().open()
    first.create(overlap=Overlap.ALLOW)
    first.fire()
    done = first.executor.ids[0]
    first.executor.finish(done, started_at=T0 + P, finished_at=T0 + P + 1)
    first.fire()
    running = first.executor.ids[1]
    first.executor.report_start(running, T0 + 2 * P)
    first.fire()
    waiting = first.executor.ids[2]
    first.crash()

    second = make(clock=first.clock).open(start=False)
    statuses = {r.run_id: r for r in second.runs()}
    assert statuses[done].status is RunStatus.SUCCEEDED
    for run_id in (running, waiting):
        assert statuses[run_id].status is RunStatus.INTERRUPTED
        assert statuses[run_id].reason and statuses[run_id].finished_at is not None
    task = second.sched.task("t1")
    assert (task.anchor, task.runs_fired) == (T0, 3)
    assert second.sched.running
    assert second.executor.submitted == []  # misfire skip, and nothing was missed anyway
    assert task.next_run == T0 + 4 * P


def restart_after_downtime(make, *, periods: int = 10, stop_first: bool = False,
                           config: SchedulerConfig = SchedulerConfig(), **fields) -> Harness:
    """Create a task on a running scheduler, shut down, stay down ``periods`` intervals,
    then open a new scheduler on the same database."""
    first = make().open()
    first.create(**fields)
    if stop_first:
        first.sched.stop()
    first.close()
    first.clock.advance(periods * P)
    return make(clock=first.clock, config=config).open(start=False)


def test_misfire_run_once_catches_up_once(make):
    second = restart_after_downtime(make, misfire=Misfire.RUN_ONCE)
    now = second.clock.now
    assert len(second.executor.submitted) == 1
    [run] = second.runs()
    assert run.trigger is Trigger.CATCH_UP and run.status is RunStatus.QUEUED
    assert T0 < run.scheduled_for <= now
    assert (run.scheduled_for - T0) % P == 0  # one of the missed slots
    task = second.sched.task("t1")
    assert task.runs_fired == 1
    assert task.next_run == T0 + 11 * P > now
    assert second.dispatcher.due("t1") == task.next_run


def test_misfire_run_once_catches_up_a_slot_after_the_last_one_fired(make):
    first = make().open()
    first.create(misfire=Misfire.RUN_ONCE)
    for _ in range(2):
        first.fire()
        first.executor.finish(first.executor.ids[-1])
    first.close()
    first.clock.now = T0 + 12 * P + 30
    second = make(clock=first.clock).open(start=False)
    [request] = second.executor.submitted
    assert T0 + 2 * P < request.scheduled_for <= second.clock.now
    catch_up = second.sched.run(request.run_id)
    assert catch_up.trigger is Trigger.CATCH_UP
    second.executor.report_start(request.run_id, second.clock.now)
    assert second.sched.run(request.run_id).lateness_ms == \
        round((second.clock.now - request.scheduled_for) * 1000, 3)
    task = second.sched.task("t1")
    assert task.runs_fired == 3 and task.next_run == T0 + 13 * P


def test_misfire_skip_does_not_catch_up(make):
    second = restart_after_downtime(make, misfire=Misfire.SKIP)
    assert second.executor.submitted == [] and second.runs() == []
    assert second.sched.task("t1").next_run == T0 + 11 * P


def test_misfire_run_once_with_nothing_missed_does_not_catch_up(make):
    second = restart_after_downtime(make, periods=0, misfire=Misfire.RUN_ONCE)
    assert second.executor.submitted == []
    assert second.sched.task("t1").next_run == T0 + P


def test_misfire_run_once_respects_pause_and_until(make):
    first = make().open()
    first.create("paused", misfire=Misfire.RUN_ONCE)
    first.sched.set_paused("paused", True)
    first.create("ended", misfire=Misfire.RUN_ONCE, until=T0 + 30)
    first.close()
    first.clock.advance(10 * P)
    second = make(clock=first.clock).open(start=False)
    assert second.executor.submitted == []


def test_a_scheduler_stopped_at_shutdown_does_not_catch_up(make):
    second = restart_after_downtime(make, stop_first=True, misfire=Misfire.RUN_ONCE)
    assert not second.sched.running and not second.dispatcher.active
    assert second.executor.submitted == []
    assert second.sched.start() is True
    assert second.executor.submitted == []
    assert second.sched.task("t1").next_run == T0 + 11 * P


def test_autostart_of_a_stopped_scheduler_does_not_catch_up(make):
    second = restart_after_downtime(make, stop_first=True, misfire=Misfire.RUN_ONCE,
                                    config=SchedulerConfig(autostart=True))
    assert second.sched.running
    assert second.executor.submitted == []
    assert second.sched.task("t1").next_run == T0 + 11 * P


def test_state_survives_a_clean_restart(make):
    first = make().open()
    first.create("t1", max_runs=2, overlap=Overlap.ALLOW)
    first.fire("t1")
    first.fire("t1")
    first.create("p", interval="every 5 minutes")
    first.sched.set_paused("p", True)
    first.close()
    assert first.executor.closed_with == 0

    second = make(clock=first.clock).open(start=False)
    t1, p = second.sched.task("t1"), second.sched.task("p")
    assert t1.exhausted and t1.next_run is None
    assert p.paused and p.next_run is None and p.spec.interval == "every 5 minutes"
    assert second.sched.running


# --- executor callbacks ------------------------------------------------------------------

def test_started_and_result_record_lateness_and_status(h):
    h.create()
    h.fire(late=0.1)
    [run_id] = h.executor.ids
    h.executor.report_start(run_id, T0 + P + 0.25)
    run = h.sched.run(run_id)
    assert run.status is RunStatus.RUNNING
    assert run.started_at == T0 + P + 0.25 and run.lateness_ms == 250.0

    h.executor.finish(run_id, Outcome.FAILED, exit_code=3, started_at=T0 + P + 0.25,
                      finished_at=T0 + P + 2.0, stdout="out", stderr="boom")
    run = h.sched.run(run_id)
    assert run.status is RunStatus.FAILED and run.exit_code == 3
    assert run.lateness_ms == 250.0 and run.duration_ms == 1750.0
    assert (run.stdout, run.stderr) == ("out", "boom")


def test_a_result_without_a_start_keeps_lateness_empty(h, caplog):
    h.create()
    h.fire()
    [run_id] = h.executor.ids
    with caplog.at_level(logging.WARNING, logger="scheduler.launcher"):
        h.executor.finish(run_id, Outcome.REJECTED, reason="command not allowed")
    run = h.sched.run(run_id)
    assert run.status is RunStatus.REJECTED and run.reason == "command not allowed"
    assert run.lateness_ms is None and run.started_at is None
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_history_is_pruned_to_history_per_task(make):
    h = make(config=SchedulerConfig(history_per_task=3)).open()
    h.create("t1")
    h.create("other")
    h.fire("other")
    for _ in range(5):
        h.fire("t1")
        h.executor.finish(h.executor.ids[-1], started_at=h.clock.now, finished_at=h.clock.now)
    runs = h.runs("t1")
    assert len(runs) == 3
    assert [r.scheduled_for for r in runs] == [T0 + k * P for k in (3, 4, 5)]
    assert len(h.runs("other")) == 1


# --- the real dispatcher -----------------------------------------------------------------

def test_real_dispatcher_fires_due_slots(make):
    h = make(real_dispatcher=True).open()
    thread = h.dispatcher._thread
    h.create()
    h.clock.now = T0 + P
    h.dispatcher.set_active(True)  # the fake clock moved: let the thread look again
    wait_until(lambda: len(h.executor.submitted) == 1, timeout=5, message="the first run")
    wait_until(lambda: h.dispatcher.due("t1") == T0 + 2 * P, timeout=5,
               message="the next slot to be planned")
    assert h.runs()[0].scheduled_for == T0 + P
    h.close()
    assert not thread.is_alive()


# --- start_at --------------------------------------------------------------------------

def test_start_at_in_the_future_is_the_first_interval_slot(make):
    h = make().open()
    task = h.create(start_at=T0 + 1000.5)
    assert task.next_run == T0 + 1000.5
    slot, following = h.fire()
    assert (slot, following) == (T0 + 1000.5, T0 + 1000.5 + P)


def test_start_at_in_the_past_keeps_its_grid_and_catches_nothing_up(make):
    h = make().open()
    task = h.create(start_at=T0 - 10 * P + 7)
    assert task.next_run == T0 + 7
    assert task.checkpoint == T0


def test_tasks_with_one_start_at_share_their_slots(make):
    h = make().open()
    h.clock.advance(0.123)
    first = h.create("a", start_at=T0 + 5)
    h.clock.advance(0.456)
    second = h.create("b", start_at=T0 + 5, interval="every 30 seconds")
    assert first.next_run == second.next_run == T0 + 5


def test_start_at_for_a_clock_schedule_means_not_before(make):
    h = make().open()
    day = 86400
    task = h.create(interval="every 1 minute at :00", start_at=T0 + day)
    assert T0 + day <= task.next_run < T0 + day + 60


def test_updating_start_at_reanchors(make):
    h = make().open()
    h.create()
    task = h.sched.update("t1", {"start_at": T0 + 500})
    assert task.next_run == T0 + 500


# --- store failures ----------------------------------------------------------------------

STORE_ERRORS = [StoreError("store error: disk I/O error"),
                sqlite3.OperationalError("database is locked")]
ERROR_IDS = ["store_error", "sqlite_error"]


@pytest.mark.parametrize("error", STORE_ERRORS, ids=ERROR_IDS)
@pytest.mark.parametrize("method", ["insert_run", "save_progress"])
def test_a_fire_the_store_failed_runs_its_slot_once_when_retried(h, method, error):
    h.create()
    slot = h.sched.task("t1").next_run
    h.store.break_(method, error=error)
    h.clock.now = slot
    with pytest.raises(type(error)):
        h.dispatcher.fire("t1", slot)
    # A run recorded before the failure is handed out all the same; nothing else happened.
    assert len(h.executor.submitted) == (1 if method == "save_progress" else 0)
    assert h.sched.task("t1").next_run == slot  # still due: the dispatcher's retry is accepted

    h.store.repair()
    h.clock.now = slot + 1  # the dispatcher retries after a back-off
    assert h.dispatcher.fire("t1", slot) == slot + P
    assert h.dispatcher.fire("t1", slot) is None  # a stale retry changes nothing
    assert [r.scheduled_for for r in h.runs()] == [slot]
    assert [r.scheduled_for for r in h.executor.submitted] == [slot]
    [row] = h.store.load_tasks()
    assert h.sched.task("t1").runs_fired == row["runs_fired"] == 1
    assert row["checkpoint"] == slot
    h.executor.finish(h.executor.ids[0])
    assert h.fire() == (slot + P, slot + 2 * P)  # and the schedule goes on
    assert len(h.executor.submitted) == 2


@pytest.mark.parametrize("error", STORE_ERRORS, ids=ERROR_IDS)
def test_a_skipped_slot_the_store_failed_is_recorded_once_when_retried(h, error):
    h.create(overlap=Overlap.SKIP)
    h.fire()
    slot = h.sched.task("t1").next_run
    h.store.break_("insert_run", error=error)
    h.clock.now = slot
    with pytest.raises(type(error)):
        h.dispatcher.fire("t1", slot)
    h.store.repair()
    assert h.dispatcher.fire("t1", slot) == slot + P
    assert h.dispatcher.fire("t1", slot) is None
    assert [(r.status, r.scheduled_for) for r in h.runs()] == [
        (RunStatus.QUEUED, slot - P), (RunStatus.SKIPPED, slot)]
    assert len(h.executor.submitted) == 1


def test_the_real_dispatcher_fires_a_slot_again_once_the_store_recovers(make, caplog):
    h = make(real_dispatcher=True).open()
    h.create()
    h.store.break_("insert_run", error=sqlite3.OperationalError("database is locked"))
    with caplog.at_level(logging.ERROR, logger="scheduler.dispatcher"):
        h.clock.now = T0 + P
        h.dispatcher.set_active(True)  # the fake clock moved: let the thread look again
        wait_until(lambda: h.store.failures == 1, timeout=5, message="the failed fire")
        wait_until(lambda: h.dispatcher.due("t1") == T0 + P, timeout=5,
                   message="the failed slot to be planned again")
    assert any("'t1'" in r.getMessage() for r in caplog.records)
    time.sleep(0.1)  # negative check: the clock has not reached the back-off, so no retry yet
    assert h.store.failures == 1 and h.executor.submitted == []

    h.store.repair()
    h.clock.now = T0 + P + dispatcher_module.RETRY_FIRST
    h.dispatcher.set_active(True)
    wait_until(lambda: len(h.executor.submitted) == 1, timeout=5, message="the retried run")
    wait_until(lambda: h.dispatcher.due("t1") == T0 + 2 * P, timeout=5,
               message="the next slot to be planned")
    assert [r.scheduled_for for r in h.runs()] == [T0 + P]
    assert h.sched.task("t1").runs_fired == 1


@pytest.mark.parametrize("error", STORE_ERRORS, ids=ERROR_IDS)
def test_a_result_the_store_cannot_record_still_frees_the_task(h, error):
    h.create(overlap=Overlap.SKIP)
    h.fire()
    [first] = h.executor.ids
    h.store.break_("finish_run", error=error)
    with pytest.raises(type(error)):
        h.executor.finish(first)  # the pool logs a callback's exception and goes on
    h.store.repair()
    h.fire()
    # Not skipped as "the previous run was still active": the first run left the active set.
    assert len(h.executor.submitted) == 2
    assert [r.status for r in h.runs()] == [RunStatus.QUEUED, RunStatus.QUEUED]
    h.executor.finish(h.executor.ids[1])
    assert h.runs()[-1].status is RunStatus.SUCCEEDED


def test_a_result_the_store_cannot_record_still_hands_out_the_waiting_run(h):
    h.create(overlap=Overlap.QUEUE)
    h.fire()
    h.fire()
    [first] = h.executor.ids
    parked = h.runs()[-1].run_id
    h.store.break_("finish_run")
    with pytest.raises(StoreError):
        h.executor.finish(first)
    assert h.executor.ids == [first, parked]
    h.store.repair()
    h.executor.finish(parked)
    h.fire()
    assert len(h.executor.submitted) == 3  # nothing active any more: submitted at once


# --- run statuses ------------------------------------------------------------------------

def test_every_sandbox_outcome_ends_a_run_in_the_status_of_the_same_name():
    for outcome in Outcome:
        status = RunStatus.of(outcome)
        assert status.value == outcome.value and status.is_final
    assert {s for s in RunStatus if not s.is_final} == {RunStatus.QUEUED, RunStatus.RUNNING}
    assert {s.value for s in RunStatus} - {o.value for o in Outcome} == {"queued", "running",
                                                                         "skipped"}


# --- slots fired ahead of their start; discarding runs not started -------------------------

@pytest.mark.parametrize("overlap", [Overlap.SKIP, Overlap.QUEUE])
def test_an_early_slot_whose_task_has_an_active_run_is_decided_at_its_start(h, overlap):
    h.create(overlap=overlap)
    h.fire()
    [first] = h.executor.ids
    slot = h.sched.task("t1").next_run
    assert h.fire_early(ahead=0.5) is DEFER
    # Nothing decided nor counted: the active run may end before the slot.
    assert len(h.runs()) == 1 and h.sched.task("t1").next_run == slot
    assert h.sched.task("t1").runs_fired == 1
    h.clock.now = slot - 0.2
    h.executor.finish(first)
    h.clock.now = slot
    assert h.dispatcher.fire("t1", slot) == slot + P
    assert h.executor.ids[1:] == [h.runs()[-1].run_id]  # launched, not skipped
    assert h.sched.task("t1").runs_fired == 2


def test_an_early_slot_still_blocked_at_its_start_is_skipped_then(h):
    h.create(overlap=Overlap.SKIP)
    h.fire()
    slot = h.sched.task("t1").next_run
    assert h.fire_early() is DEFER
    assert h.fire() == (slot, slot + P)
    assert h.runs()[-1].status is RunStatus.SKIPPED and h.runs()[-1].scheduled_for == slot


@pytest.mark.parametrize("overlap", [Overlap.SKIP, Overlap.QUEUE, Overlap.ALLOW])
def test_an_early_slot_is_launched_ahead_to_start_at_its_slot(make, overlap):
    h = make().open()
    h.create(overlap=overlap, jitter=20)
    slot = h.sched.task("t1").next_run
    start = slot + jitter_offset("t1", slot, 20)
    assert h.fire_early(ahead=0.8) == slot + P
    [request] = h.executor.submitted
    assert request.scheduled_for == start  # the executor releases it at its start
    assert h.runs()[-1].status is RunStatus.QUEUED


def test_an_early_slot_under_overlap_allow_is_launched_beside_the_active_run(h):
    h.create(overlap=Overlap.ALLOW)
    h.fire()
    assert h.fire_early() is not DEFER
    assert len(h.executor.submitted) == 2


def test_remove_discards_the_runs_not_started_but_manual_ones(h):
    h.create(overlap=Overlap.ALLOW)
    h.create("other", overlap=Overlap.ALLOW)
    h.fire()
    started = h.executor.ids[-1]
    h.executor.report_start(started, h.clock.now)
    h.fire_early()
    prepared = h.executor.ids[-1]
    h.sched.run_now("t1")
    h.fire_early("other")
    h.sched.remove("t1")
    assert h.executor.discards == [prepared]


def test_pause_discards_and_a_dropped_run_leaves_no_trace(h):
    ended = []
    h.sched.add_run_listener(ended.append)
    h.create(max_runs=1)
    slot = h.sched.task("t1").next_run
    assert h.fire_early() is None  # its last run: the task fires no more
    [prepared] = h.executor.ids
    assert h.sched.task("t1").exhausted
    h.sched.set_paused("t1", True)
    assert h.executor.discards == [prepared]
    h.executor.drop(prepared)
    assert h.store.get_run(prepared) is None and ended == []
    task = h.sched.task("t1")
    assert task.runs_fired == 0 and h.store.load_tasks()[0]["runs_fired"] == 0
    # Resumed before the slot, the task runs it after all (it has not run once yet).
    h.sched.set_paused("t1", False)
    assert h.sched.task("t1").next_run == slot
    assert h.fire() == (slot, None)
    assert [r.status for r in h.runs()] == [RunStatus.QUEUED]
    assert h.executor.ids[-1] != prepared


def test_a_slot_dropped_at_stop_runs_after_a_start_before_it(h):
    h.create()
    slot = h.sched.task("t1").next_run
    h.fire_early(ahead=0.5)
    [prepared] = h.executor.ids
    assert h.sched.stop() is True
    h.executor.drop(prepared)
    task = h.sched.task("t1")
    assert task.runs_fired == 0 and task.checkpoint < slot
    assert h.sched.display_next_run(task) == slot  # what a client sees while stopped
    h.clock.now = slot - 0.3
    assert h.sched.start() is True
    assert h.sched.task("t1").next_run == slot
    assert h.fire() == (slot, slot + P)
    [run] = h.runs()
    assert run.scheduled_for == slot and run.run_id != prepared


@pytest.mark.parametrize("overlap", [Overlap.ALLOW, Overlap.SKIP])
def test_a_start_faster_than_the_drop_still_runs_the_slot(make, overlap):
    h = make().open()
    h.create(overlap=overlap)
    slot = h.sched.task("t1").next_run
    h.fire_early(ahead=0.5)
    [prepared] = h.executor.ids
    h.sched.stop()
    h.clock.now = slot - 0.4
    h.sched.start()
    # The dropped run's record still stands: the slot fires into it (allow), or waits for
    # the run still counted active (skip).
    assert h.fire_early(ahead=0.3) == (slot + P if overlap is Overlap.ALLOW else DEFER)
    assert h.executor.ids == [prepared]
    h.clock.now = slot - 0.2
    h.executor.drop(prepared)
    assert h.sched.task("t1").next_run == slot
    assert h.fire_early(ahead=0.2) == slot + P
    [run] = h.runs()
    assert run.scheduled_for == slot and run.run_id != prepared
    assert h.sched.task("t1").runs_fired == 1


def test_a_resume_faster_than_the_drop_still_runs_the_slot(h):
    h.create(max_runs=1)
    slot = h.sched.task("t1").next_run
    h.fire_early(ahead=0.5)
    [prepared] = h.executor.ids
    h.sched.set_paused("t1", True)
    h.sched.set_paused("t1", False)
    assert h.sched.task("t1").next_run is None  # its one run still counts until dropped
    h.executor.drop(prepared)
    assert h.sched.task("t1").next_run == slot
    assert h.fire_early(ahead=0.3) is None  # its last run
    assert [r.scheduled_for for r in h.runs()] == [slot]


def test_a_run_dropped_while_paused_stopped_or_closing_is_not_planned(h):
    h.create()
    h.create("t2")
    h.create("t3")
    for task_id in ("t1", "t2", "t3"):
        h.fire_early(task_id, ahead=0.5)
    first, second, third = h.executor.ids
    h.sched.set_paused("t1", True)
    h.executor.drop(first)
    assert "t1" not in h.dispatcher.due_times
    h.sched.close()
    for run_id in (second, third):
        due = dict(h.dispatcher.due_times)
        h.executor.drop(run_id)
        assert h.dispatcher.due_times == due


def test_a_run_dropped_after_its_slot_passed_is_not_due_again(h):
    h.create()
    slot = h.sched.task("t1").next_run
    h.fire_early(ahead=0.5)
    [prepared] = h.executor.ids
    h.sched.stop()
    h.clock.now = slot + 2  # e.g. it waited for a worker past its slot
    h.executor.drop(prepared)
    task = h.sched.task("t1")
    assert task.runs_fired == 0 and task.checkpoint == slot  # its time is gone: dealt with
    assert h.sched.display_next_run(task) == slot + P


def test_a_run_parked_behind_the_active_one_is_dropped_at_once(h):
    ended = []
    h.sched.add_run_listener(ended.append)
    h.create(overlap=Overlap.QUEUE)
    h.fire()
    [active] = h.executor.ids
    h.executor.report_start(active, h.clock.now)
    h.fire()
    parked = h.runs()[-1].run_id
    h.sched.set_paused("t1", True)
    assert h.executor.discards == []  # the executor never had it; the started one goes on
    assert h.store.get_run(parked) is None
    h.executor.finish(active)
    assert h.executor.ids == [active]  # nothing was waiting any more
    assert [f.run_id for f in ended] == [active]


def test_stop_discards_the_runs_of_slots_and_a_drop_hands_out_the_waiting_run(h):
    h.create(overlap=Overlap.QUEUE)
    h.create("up", on_success=("t1",))
    h.fire("up")
    [up_run] = h.executor.ids
    h.fire_early()
    prepared = h.executor.ids[-1]
    manual = h.sched.run_now("up")
    h.executor.finish(up_run)  # "up" succeeded: t1 gets a chained run, parked behind
    chained = h.runs()[-1]
    assert chained.trigger is Trigger.CHAIN and chained.status is RunStatus.QUEUED
    assert h.sched.stop() is True
    assert h.executor.discards == [prepared]  # neither the manual nor the chained run
    h.executor.drop(prepared)
    assert h.store.get_run(prepared) is None
    assert h.executor.ids[-1] == chained.run_id  # handed out in the dropped run's place
    assert manual in h.executor.ids


def test_a_run_released_before_the_discard_reached_the_executor_goes_on(h):
    h.create()
    h.fire_early()
    [run_id] = h.executor.ids
    h.sched.stop()
    assert h.executor.discards == [run_id]
    h.executor.report_start(run_id, h.clock.now + 0.5)
    h.executor.finish(run_id, started_at=h.clock.now + 0.5, finished_at=h.clock.now + 1)
    assert h.store.get_run(run_id).status is RunStatus.SUCCEEDED
    h.executor.drop(run_id)  # a late or confused report changes nothing
    assert h.store.get_run(run_id).status is RunStatus.SUCCEEDED


def test_a_run_reported_started_is_not_dropped(h, caplog):
    h.create()
    h.fire_early()
    [run_id] = h.executor.ids
    h.executor.report_start(run_id, h.clock.now)
    with caplog.at_level(logging.ERROR, logger="scheduler.launcher"):
        h.executor.drop(run_id)
    assert h.store.get_run(run_id).status is RunStatus.RUNNING
    assert "both started and discarded" in caplog.text


def test_a_drop_the_store_cannot_record_still_frees_the_task(h, caplog):
    h.create(overlap=Overlap.QUEUE)
    h.create("up", on_success=("t1",))
    h.fire("up")
    h.fire_early()
    prepared = h.executor.ids[-1]
    h.executor.finish(h.executor.ids[0])
    h.sched.stop()
    h.store.break_("delete_run")
    with caplog.at_level(logging.ERROR, logger="scheduler.launcher"):
        h.executor.drop(prepared)
    assert "kept its record" in caplog.text
    h.store.repair()
    assert h.store.get_run(prepared).status is RunStatus.QUEUED  # interrupted at the next start
    assert h.runs()[-1].trigger is Trigger.CHAIN
    assert h.executor.ids[-1] == h.runs()[-1].run_id  # handed out all the same


def test_a_new_policy_reaches_the_executor(h):
    policy = dataclasses.replace(h.policy_value, network=False)
    h.sched.policy_changed(policy)
    assert h.executor.revisions == [policy]


def test_the_real_dispatcher_fires_ahead_and_defers_a_blocked_slot(make):
    h = make(real_dispatcher=True, config=SchedulerConfig(prepare_ahead=1.0)).open()
    assert h.dispatcher._lead == 1.0
    h.create(overlap=Overlap.SKIP)
    h.clock.now = T0 + P - 1  # a second early: the run is prepared ahead of its slot
    h.dispatcher.set_active(True)
    wait_until(lambda: len(h.executor.submitted) == 1, timeout=5, message="the first run")
    assert h.executor.submitted[0].scheduled_for == T0 + P
    wait_until(lambda: h.dispatcher.due("t1") == T0 + 2 * P, timeout=5,
               message="the next slot to be planned")
    h.clock.now = T0 + 2 * P - 1  # the first run is still active: wait for the slot
    h.dispatcher.set_active(True)

    def fired_at_its_start() -> bool:
        with h.dispatcher._cond:  # None while the callback runs, a second less before it
            return h.dispatcher._when("t1") == T0 + 2 * P

    wait_until(fired_at_its_start, timeout=5, message="the slot deferred to its start")
    assert len(h.runs()) == 1
    h.executor.finish(h.executor.ids[0])
    h.clock.now = T0 + 2 * P
    h.dispatcher.set_active(True)
    wait_until(lambda: len(h.executor.submitted) == 2, timeout=5, message="the second run")
    assert [r.status for r in h.runs()] == [RunStatus.SUCCEEDED, RunStatus.QUEUED]
