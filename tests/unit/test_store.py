"""Unit tests for scheduler.store: the SQLite schema, tasks, run history and pruning.

Every test works on a fresh database under ``tmp_path``; nothing reads the clock except
where the store itself does (``finished_at`` of runs recorded final).
"""

from __future__ import annotations

import sqlite3

import pytest

from policies import TaskType
from sandbox.types import RunResult
from sandbox.types import TestCounts as Counts  # not "Test*": pytest would try to collect it
from scheduler.errors import StoreError
from scheduler.grammar import parse_interval
from scheduler.models import Misfire, Overlap, RunStatus, Task, TaskSpec, Trigger
from scheduler.store import SCHEMA_VERSION, Store, slot_key, spec_from_json, spec_to_json

T0 = 1_700_000_000.0
FINAL_STATUSES = [s for s in RunStatus if s.is_final]


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "scheduler.db"


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()


def make_task(task_id: str = "t1", *, created_at: float = T0, **spec_fields) -> Task:
    fields = dict(task_type=TaskType.COMMAND, interval="every 5 minutes", command="echo hi")
    fields.update(spec_fields)
    spec = TaskSpec(**fields)
    return Task(task_id=task_id, spec=spec, schedule=parse_interval(spec.interval),
                created_at=created_at, updated_at=created_at, anchor=created_at,
                checkpoint=created_at)


def queued(store: Store, task_id: str = "t1", scheduled_for: float = T0, *,
           trigger: Trigger = Trigger.SCHEDULE, slot: bool = True) -> int:
    run_id = store.insert_run(task_id, trigger, RunStatus.QUEUED, scheduled_for, slot=slot)
    assert run_id is not None
    return run_id


def finished(store: Store, task_id: str = "t1", scheduled_for: float = T0, *,
             status: RunStatus = RunStatus.SUCCEEDED, stdout: str = "", stderr: str = "") -> int:
    run_id = queued(store, task_id, scheduled_for)
    store.finish_run(RunResult(run_id=run_id, status=status, exit_code=0, started_at=scheduled_for,
                               finished_at=scheduled_for + 1, stdout=stdout, stderr=stderr), None)
    return run_id


def statuses(store: Store, task_id: str | None = None) -> dict[int, RunStatus]:
    return {r.run_id: r.status for r in store.recent_runs(task_id, limit=1000)}


# --- schema ------------------------------------------------------------------------------

def test_creates_schema_and_parent_directories(db_path):
    assert not db_path.parent.exists()
    Store(db_path).close()
    assert db_path.exists()
    with sqlite3.connect(db_path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"meta", "tasks", "runs"} <= tables
    assert "runs_slot" in indexes
    assert version == str(SCHEMA_VERSION)


def test_reopen_keeps_schema_and_data(db_path):
    first = Store(db_path)
    first.save_task(make_task())
    first.close()
    again = Store(db_path)  # CREATE ... IF NOT EXISTS must not fail or wipe anything
    try:
        assert [row["task_id"] for row in again.load_tasks()] == ["t1"]
    finally:
        again.close()


def test_refuses_a_different_schema_version(db_path):
    Store(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(db_path)


def test_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(tmp_path / "adir")


def test_use_after_close_is_a_store_error(store):
    store.close()
    with pytest.raises(StoreError):
        store.recent_runs()


def test_slot_key_is_whole_milliseconds():
    assert slot_key(T0) == int(T0) * 1000
    assert slot_key(T0 + 0.0004) == slot_key(T0)
    assert slot_key(T0 + 0.0006) == slot_key(T0) + 1


# --- running flag ------------------------------------------------------------------------

def test_running_flag_defaults_to_false_and_persists(db_path):
    store = Store(db_path)
    assert store.is_running() is False
    store.set_running(True)
    assert store.is_running() is True
    store.close()
    store = Store(db_path)
    assert store.is_running() is True
    store.set_running(False)
    assert store.is_running() is False
    store.close()
    store = Store(db_path)
    assert store.is_running() is False
    store.close()


# --- tasks -------------------------------------------------------------------------------

def test_spec_json_round_trip_with_every_field():
    spec = TaskSpec(task_type=TaskType.SCRIPT, interval="daily at 02:00", file_path="job.py",
                    working_dir="sub", env={"A": "1", "B": "two words"}, timeout=12.5,
                    overlap=Overlap.QUEUE, misfire=Misfire.RUN_ONCE, until=T0 + 3600.25,
                    max_runs=7)
    again = spec_from_json(spec_to_json(spec))
    assert again == spec
    assert again.task_type is TaskType.SCRIPT
    assert again.overlap is Overlap.QUEUE
    assert again.misfire is Misfire.RUN_ONCE


def test_save_and_load_task_round_trip(store):
    task = make_task("alpha", task_type=TaskType.CUSTOM, command=None, custom_script="print(1)",
                     env={"GREETING": "hello"}, timeout=3.0, overlap=Overlap.ALLOW,
                     misfire=Misfire.RUN_ONCE, until=T0 + 86400, max_runs=4)
    task.paused = True
    task.runs_fired = 2
    task.checkpoint = T0 + 600
    task.updated_at = T0 + 5
    store.save_task(task)
    [row] = store.load_tasks()
    assert spec_from_json(row.pop("spec")) == task.spec
    assert row == dict(task_id="alpha", created_at=T0, updated_at=T0 + 5, anchor=T0,
                       checkpoint=T0 + 600, paused=True, runs_fired=2,
                       columns=dict(timezone=None, jitter=None))


def test_save_task_replaces_the_row(store):
    task = make_task()
    store.save_task(task)
    task.spec = TaskSpec(task_type=TaskType.COMMAND, interval="every 2 hours", command="true")
    task.paused = True
    store.save_task(task)
    rows = store.load_tasks()
    assert len(rows) == 1
    assert spec_from_json(rows[0]["spec"]).interval == "every 2 hours"
    assert rows[0]["paused"] is True


def test_load_tasks_orders_by_creation_then_id(store):
    store.save_task(make_task("late", created_at=T0 + 10))
    store.save_task(make_task("b", created_at=T0))
    store.save_task(make_task("a", created_at=T0))
    assert [r["task_id"] for r in store.load_tasks()] == ["a", "b", "late"]


def test_save_progress_and_set_all_checkpoints(store):
    store.save_task(make_task("a"))
    store.save_task(make_task("b"))
    store.save_progress("a", 5, T0 + 300)
    rows = {r["task_id"]: r for r in store.load_tasks()}
    assert (rows["a"]["runs_fired"], rows["a"]["checkpoint"]) == (5, T0 + 300)
    assert (rows["b"]["runs_fired"], rows["b"]["checkpoint"]) == (0, T0)
    store.set_all_checkpoints(T0 + 999)
    assert {r["checkpoint"] for r in store.load_tasks()} == {T0 + 999}


# --- inserting runs ----------------------------------------------------------------------

def test_insert_run_records_a_queued_run(store):
    run_id = store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True)
    run = store.get_run(run_id)
    assert (run.task_id, run.trigger, run.status, run.scheduled_for) == \
        ("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60)
    assert run.finished_at is None and run.started_at is None
    assert store.get_run(run_id + 1000) is None


def test_a_slot_is_recorded_once(store):
    first = store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True)
    assert first is not None
    assert store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True) is None
    # a skipped record or a catch-up for the same slot collides too
    assert store.insert_run("t1", Trigger.SCHEDULE, RunStatus.SKIPPED, T0 + 60, slot=True,
                            reason="x") is None
    assert store.insert_run("t1", Trigger.CATCH_UP, RunStatus.QUEUED, T0 + 60, slot=True) is None
    assert list(statuses(store)) == [first]


def test_same_slot_of_different_tasks_and_different_slots_do_not_collide(store):
    ids = [store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True),
           store.insert_run("t2", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True),
           store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 120, slot=True)]
    assert None not in ids and len(set(ids)) == 3


def test_manual_runs_never_collide(store):
    slot_run = store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0, slot=True)
    manual = [store.insert_run("t1", Trigger.MANUAL, RunStatus.QUEUED, T0, slot=False)
              for _ in range(3)]
    assert slot_run is not None and None not in manual
    assert len({slot_run, *manual}) == 4


def test_final_status_at_insert_gets_finished_at(store):
    run_id = store.insert_run("t1", Trigger.SCHEDULE, RunStatus.SKIPPED, T0, slot=True,
                              reason="overlap: busy")
    run = store.get_run(run_id)
    assert run.status is RunStatus.SKIPPED and run.reason == "overlap: busy"
    assert run.finished_at is not None


# --- run lifecycle -----------------------------------------------------------------------

def test_mark_running_only_from_queued(store):
    run_id = queued(store)
    store.mark_running(run_id, T0 + 0.5, 500.0)
    run = store.get_run(run_id)
    assert (run.status, run.started_at, run.lateness_ms) == (RunStatus.RUNNING, T0 + 0.5, 500.0)

    store.mark_running(run_id, T0 + 9, 9000.0)  # already running: unchanged
    assert store.get_run(run_id).started_at == T0 + 0.5

    done = finished(store, scheduled_for=T0 + 60)
    before = store.get_run(done)
    store.mark_running(done, T0 + 99, 1.0)  # a late start report never reopens a final run
    assert store.get_run(done) == before


def test_delete_run_deletes_only_a_run_still_queued_and_frees_its_slot(store):
    dropped = queued(store, scheduled_for=T0 + 60)
    running = queued(store, scheduled_for=T0 + 120)
    store.mark_running(running, T0 + 120, 0.0)
    done = finished(store, scheduled_for=T0 + 180)
    assert store.delete_run(dropped) is True
    assert store.delete_run(dropped) is False  # gone already
    assert store.delete_run(running) is False and store.delete_run(done) is False
    assert statuses(store) == {running: RunStatus.RUNNING, done: RunStatus.SUCCEEDED}
    # Nothing ran in that slot: it may be recorded again.
    assert store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 60, slot=True)


def test_finish_run_records_the_whole_result(store):
    run_id = queued(store)
    store.mark_running(run_id, T0 + 0.25, 250.0)
    result = RunResult(run_id=run_id, status=RunStatus.FAILED, reason="1 test failed", exit_code=1,
                       started_at=T0 + 0.25, finished_at=T0 + 2.75, stdout="out\n", stderr="err\n",
                       truncated=True, tests=Counts(passed=3, failed=1, errors=0, skipped=2))
    store.finish_run(result, 250.0)
    run = store.get_run(run_id)
    assert run.status is RunStatus.FAILED
    assert run.reason == "1 test failed" and run.exit_code == 1
    assert (run.started_at, run.finished_at) == (T0 + 0.25, T0 + 2.75)
    assert run.duration_ms == 2500.0
    assert run.lateness_ms == 250.0
    assert (run.stdout, run.stderr, run.truncated) == ("out\n", "err\n", True)
    assert run.tests == Counts(passed=3, failed=1, errors=0, skipped=2)


def test_finish_run_keeps_earlier_start_and_lateness_when_not_given(store):
    run_id = queued(store)
    store.mark_running(run_id, T0 + 1, 1000.0)
    store.finish_run(RunResult(run_id=run_id, status=RunStatus.KILLED), None)
    run = store.get_run(run_id)
    assert run.status is RunStatus.KILLED
    assert (run.started_at, run.lateness_ms) == (T0 + 1, 1000.0)
    assert run.finished_at is not None  # defaulted to the store's clock
    assert run.tests is None and run.truncated is False


def test_interrupt_unfinished_marks_only_queued_and_running(store):
    q = queued(store, scheduled_for=T0)
    r = queued(store, scheduled_for=T0 + 60)
    store.mark_running(r, T0 + 60, 0.0)
    done = {status: finished(store, scheduled_for=T0 + 120 + 60 * i, status=status)
            for i, status in enumerate([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED,
                                        RunStatus.TIMED_OUT])}
    assert store.interrupt_unfinished("server stopped") == 2
    for run_id in (q, r):
        run = store.get_run(run_id)
        assert run.status is RunStatus.INTERRUPTED
        assert run.reason == "server stopped"
        assert run.finished_at is not None
    for status, run_id in done.items():
        assert store.get_run(run_id).status is status
    assert store.interrupt_unfinished("again") == 0


# --- reading history ---------------------------------------------------------------------

def test_recent_runs_newest_first_with_limit_and_per_task(store):
    ids = {"a": [], "b": []}
    for i in range(5):
        for task_id in ("a", "b"):
            ids[task_id].append(queued(store, task_id, T0 + 60 * i))
    every = [r.run_id for r in store.recent_runs(limit=100)]
    assert every == sorted(ids["a"] + ids["b"], reverse=True)
    assert [r.run_id for r in store.recent_runs(limit=3)] == every[:3]
    assert [r.run_id for r in store.recent_runs("a", limit=100)] == ids["a"][::-1]
    assert [r.run_id for r in store.recent_runs("b", limit=2)] == ids["b"][:-3:-1]
    assert {r.task_id for r in store.recent_runs("a")} == {"a"}
    assert store.recent_runs("nobody") == []


# --- pruning -----------------------------------------------------------------------------

def test_prune_task_keeps_the_newest_finished_runs(store):
    kept_other = [finished(store, "other", T0 + 60 * i) for i in range(4)]
    ids = [finished(store, "t1", T0 + 60 * i) for i in range(6)]
    assert store.prune_task("t1", 3) == 3
    assert sorted(statuses(store, "t1")) == ids[-3:]
    assert sorted(statuses(store, "other")) == kept_other  # other tasks are untouched
    assert store.prune_task("t1", 3) == 0


def test_prune_task_never_deletes_queued_or_running_runs(store):
    old_queued = queued(store, scheduled_for=T0)
    old_running = queued(store, scheduled_for=T0 + 60)
    store.mark_running(old_running, T0 + 60, 0.0)
    done = [finished(store, scheduled_for=T0 + 120 + 60 * i) for i in range(5)]
    store.prune_task("t1", 2)
    left = statuses(store, "t1")
    assert left[old_queued] is RunStatus.QUEUED
    assert left[old_running] is RunStatus.RUNNING
    assert sorted(set(left) & set(done)) == done[-2:]


def test_prune_task_keeps_n_finished_runs_while_newer_runs_are_active(store):
    done = [finished(store, scheduled_for=T0 + 60 * i) for i in range(5)]
    active = [queued(store, scheduled_for=T0 + 600 + 60 * i) for i in range(2)]
    store.prune_task("t1", 3)
    left = statuses(store, "t1")
    assert set(active) <= set(left)
    assert sorted(set(left) & set(done)) == done[-3:]


def test_prune_output_under_budget_drops_nothing(store):
    ids = [finished(store, stdout="x" * 50, scheduled_for=T0 + 60 * i) for i in range(3)]
    assert store.prune_output(150) == 0
    assert sorted(statuses(store)) == ids


def test_prune_output_drops_oldest_finished_runs_until_under_budget(store):
    ids = [finished(store, stdout="x" * 60, stderr="y" * 40, scheduled_for=T0 + 60 * i)
           for i in range(5)]  # 100 bytes each, 500 in all
    active = queued(store, scheduled_for=T0 + 1000)
    empty = finished(store, scheduled_for=T0 + 1060)  # no output: costs nothing
    assert store.prune_output(250) == 3
    left = statuses(store)
    assert sorted(left) == [*ids[3:], active, empty]
    kept = sum(len(r.stdout) + len(r.stderr) for r in store.recent_runs(limit=100))
    assert kept == 200 <= 250


def test_prune_output_leaves_active_runs(store):
    active = queued(store, scheduled_for=T0)
    for i in range(3):
        finished(store, stdout="z" * 100, scheduled_for=T0 + 60 * (i + 1))
    assert store.prune_output(0) == 3
    assert sorted(statuses(store)) == [active]  # every finished run with output went


def test_prune_output_budget_is_in_bytes(store):
    for i in range(3):
        finished(store, stdout="é" * 100, scheduled_for=T0 + 60 * i)  # 200 UTF-8 bytes each
    store.prune_output(300)
    kept = sum(len(r.stdout.encode()) + len(r.stderr.encode())
               for r in store.recent_runs(limit=100))
    assert kept <= 300


# --- deleting and persistence ------------------------------------------------------------

def test_delete_task_removes_the_task_and_its_runs(store):
    store.save_task(make_task("a"))
    store.save_task(make_task("b"))
    finished(store, "a", T0)
    queued(store, "a", T0 + 60)
    keep = finished(store, "b", T0)
    store.delete_task("a")
    assert [r["task_id"] for r in store.load_tasks()] == ["b"]
    assert store.recent_runs("a") == []
    assert list(statuses(store)) == [keep]
    # the slot is free again for a new task of the same id
    assert store.insert_run("a", Trigger.SCHEDULE, RunStatus.QUEUED, T0, slot=True) is not None


def test_everything_survives_close_and_reopen(db_path):
    store = Store(db_path)
    store.set_running(True)
    task = make_task("keep", max_runs=3, until=T0 + 7200, env={"X": "1"})
    store.save_task(task)
    store.save_progress("keep", 2, T0 + 120)
    done = finished(store, "keep", T0 + 60, stdout="hello")
    pending = queued(store, "keep", T0 + 120)
    store.close()

    store = Store(db_path)
    try:
        assert store.is_running()
        [row] = store.load_tasks()
        assert spec_from_json(row["spec"]) == task.spec
        assert (row["runs_fired"], row["checkpoint"]) == (2, T0 + 120)
        assert store.get_run(done).stdout == "hello"
        assert store.get_run(pending).status is RunStatus.QUEUED
        # the uniqueness of slots survives as well
        assert store.insert_run("keep", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + 120,
                                slot=True) is None
        # and run ids keep growing (AUTOINCREMENT)
        assert queued(store, "keep", T0 + 180) > pending
    finally:
        store.close()


@pytest.mark.parametrize("status", FINAL_STATUSES)
def test_every_final_status_round_trips(store, status):
    run_id = finished(store, status=status)
    assert store.get_run(run_id).status is status
