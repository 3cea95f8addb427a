"""Unit tests of planning after a start with a backlog: the tasks the scheduler does not plan
before ``open()``/``start()`` returns are planned by a thread, each exactly as if it had
been planned at the start (its missed slot caught up once, its next slot from the start),
an action on a task still waiting settles it first, and a stored cron expression that
cannot be evaluated any more drops only that task."""

from __future__ import annotations

import dataclasses

from scheduler.errors import StoreFault, StoreUnavailable
from scheduler.models import Misfire, RunStatus, Trigger
from scheduler.service import SchedulerConfig
from tests.unit.test_service import P, T0, Clock, Harness

ALL_LATER = SchedulerConfig(plan_inline=0)  # every task goes to the backlog
TASKS = 40


def _stored(tmp_path, **fields) -> Harness:
    """A running server with TASKS tasks (created at T0) that then died."""
    h = Harness(tmp_path, clock=Clock(T0)).open()
    for i in range(TASKS):
        h.create(f"t{i:02d}", **fields)
    h.crash()
    return h


def _reopen(tmp_path, now: float, config: SchedulerConfig = ALL_LATER) -> Harness:
    return Harness(tmp_path, clock=Clock(now), config=config).open(start=False)


def test_the_backlog_plans_every_task_from_the_start(tmp_path):
    _stored(tmp_path)
    h = _reopen(tmp_path, T0 + 10 * P + 5)
    try:
        assert h.sched.wait_planned(timeout=10)
        for task in h.sched.tasks():
            assert task.next_run == T0 + 11 * P
            assert h.dispatcher.due(task.task_id) == T0 + 11 * P
        assert {row["checkpoint"] for row in h.store.load_tasks()} == {T0 + 10 * P + 5}
    finally:
        h.close()


def test_missed_slots_are_caught_up_once_by_the_backlog_and_not_again_after_a_crash(tmp_path):
    _stored(tmp_path, misfire=Misfire.RUN_ONCE)
    now = T0 + 10 * P + 5
    h = _reopen(tmp_path, now)
    assert h.sched.wait_planned(timeout=10)
    catch_ups = [r for r in h.runs(None) if r.trigger is Trigger.CATCH_UP]
    assert sorted(r.task_id for r in catch_ups) == [f"t{i:02d}" for i in range(TASKS)]
    assert {r.scheduled_for for r in catch_ups} == {T0 + P}
    h.crash()
    again = _reopen(tmp_path, now + 1)
    try:
        assert again.sched.wait_planned(timeout=10)
        assert len(again.runs(None)) == TASKS
    finally:
        again.close()


def test_an_action_on_a_waiting_task_settles_it_first(tmp_path):
    _stored(tmp_path, misfire=Misfire.RUN_ONCE)
    h = Harness(tmp_path, clock=Clock(T0 + 10 * P + 5), config=ALL_LATER)
    try:
        # Holding the scheduler's lock keeps the backlog's thread from starting its work.
        with h.sched._lock:
            h.sched.open()
            assert h.sched.task("t07").next_run is None
            task = h.sched.update("t07", {"command": "echo changed"})
            assert [(r.trigger, r.scheduled_for) for r in h.runs("t07")] == [
                (Trigger.CATCH_UP, T0 + P)]
            assert task.next_run == T0 + 11 * P
            assert h.sched.display_next_run(h.sched.task("t08")) == T0 + 11 * P
            h.sched.remove("t09")
        assert h.sched.wait_planned(timeout=10)
        assert len(h.runs(None)) == TASKS - 1
        assert "t09" not in {t.task_id for t in h.sched.tasks()}
    finally:
        h.close()


def test_a_stored_cron_expression_that_cannot_be_evaluated_drops_only_its_task(tmp_path):
    h = Harness(tmp_path, clock=Clock(T0)).open()
    good = h.create("good", interval="*/5 * * * *")
    h.create("bad", interval="*/5 * * * *")
    broken = dataclasses.replace(h.sched.task("bad"))
    broken.spec = dataclasses.replace(broken.spec, interval="0 0 31 2 *")  # no such day
    h.store.save_task(broken)
    h.crash()
    again = _reopen(tmp_path, T0 + 60, config=SchedulerConfig())
    try:
        assert again.sched.wait_planned(timeout=10)
        assert [t.task_id for t in again.sched.tasks()] == ["good"]
        assert again.sched.task("good").next_run == good.next_run
    finally:
        again.close()


def test_a_small_server_is_planned_before_open_returns(tmp_path):
    _stored(tmp_path)
    h = _reopen(tmp_path, T0 + 10 * P + 5, config=SchedulerConfig())
    try:
        assert all(t.next_run == T0 + 11 * P for t in h.sched.tasks())
    finally:
        h.close()


def test_after_stop_and_start_no_slot_of_before_fires_while_its_task_waits(tmp_path):
    h = Harness(tmp_path, clock=Clock(T0), config=ALL_LATER).open(start=False)
    try:
        with h.sched._lock:  # the backlog's thread waits until the checks are done
            h.sched.start()
            for i in range(3):
                h.create(f"t{i}")
            assert h.dispatcher.due("t0") == T0 + P
            h.sched.stop()
            h.clock.advance(10 * P + 5)
            h.sched.start()
            assert h.dispatcher.due_times == {} and h.sched.task("t0").next_run is None
            assert h.dispatcher.fire("t0", T0 + P) is None  # a fire already under way
        assert h.sched.wait_planned(timeout=10)
        assert h.dispatcher.due_times == {f"t{i}": T0 + 11 * P for i in range(3)}
        assert h.runs(None) == []
    finally:
        h.close()


def test_a_catch_up_the_store_cannot_record_is_recorded_later_and_the_task_goes_on(tmp_path):
    _stored(tmp_path, misfire=Misfire.RUN_ONCE)
    h = Harness(tmp_path, clock=Clock(T0 + 10 * P + 5), config=ALL_LATER)
    h.store.break_("insert_run", error=StoreUnavailable(
        "the database is locked", fault=StoreFault.BUSY, retry_after=1, detail="locked"))
    try:
        h.open(start=False)
        assert h.sched.wait_planned(timeout=10)
        assert all(t.next_run == T0 + 11 * P for t in h.sched.tasks())
        h.store.repair()
        h.store.health()  # notices the repair and writes what was deferred
        records = h.runs(None)
        assert len(records) == TASKS and {r.status for r in records} == {RunStatus.ERROR}
        assert {r.scheduled_for for r in records} == {T0 + P}
    finally:
        h.close()
