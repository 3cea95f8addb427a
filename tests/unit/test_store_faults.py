"""Unit tests for the store's fault handling: translating ``sqlite3`` errors, the fault
state that ``health`` reports, deferred writes, and recovery, against real SQLite files.

The lock is held by a second connection (``BEGIN EXCLUSIVE``); the full disk and the
read-only file system are a tiny tmpfs mounted under ``tmp_path`` (root only; skipped
otherwise, failed under ``CI=true``), always unmounted by its fixture.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from sandbox.types import Outcome, RunResult
from scheduler.models import RunStatus
from scheduler import store as store_module
from scheduler.errors import StoreError, StoreFault, StoreUnavailable
from scheduler.models import Trigger
from scheduler.store import RETRY_AFTER, Store, translate
from tests.helpers import Tmpfs, require_root

from .test_store import make_task

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def sqlite_error(code: int, name: str, cls=sqlite3.OperationalError) -> sqlite3.Error:
    exc = cls(f"error {name}")
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "scheduler.db", clock=clock, busy_timeout_ms=100)
    yield s
    s.close()


@pytest.fixture
def locker(tmp_path):
    """A second connection to the store's file; ``hold()`` takes the write lock."""
    db = sqlite3.connect(tmp_path / "scheduler.db", isolation_level=None)

    class Locker:
        def hold(self):
            db.execute("BEGIN EXCLUSIVE")

        def release(self):
            db.execute("ROLLBACK")

    yield Locker()
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.close()


@pytest.fixture
def tmpfs(tmp_path):
    require_root("mount a tmpfs")
    fs = Tmpfs(tmp_path / "fs", size_kb=512)
    yield fs
    fs.unmount()


def queue(store: Store, slot: float = T0) -> int:
    return store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, slot, slot=True)


def done(run_id: int, finished_at: float | None = T0 + 2) -> RunResult:
    return RunResult(run_id=run_id, status=Outcome.SUCCEEDED, exit_code=0, started_at=T0 + 1,
                     finished_at=finished_at, stdout="out")


# --- translation -------------------------------------------------------------------------

@pytest.mark.parametrize("code, name, fault, words", [
    (5, "SQLITE_BUSY", StoreFault.BUSY, "locked"),
    (6, "SQLITE_LOCKED", StoreFault.BUSY, "locked"),
    (517, "SQLITE_BUSY_SNAPSHOT", StoreFault.BUSY, "locked"),
    (13, "SQLITE_FULL", StoreFault.DISK_FULL, "full"),
    (8, "SQLITE_READONLY", StoreFault.READ_ONLY, "read-only"),
    (1032, "SQLITE_READONLY_DBMOVED", StoreFault.READ_ONLY, "read-only"),
    (10, "SQLITE_IOERR", StoreFault.IO_ERROR, "I/O error"),
    (778, "SQLITE_IOERR_WRITE", StoreFault.IO_ERROR, "I/O error"),
    (14, "SQLITE_CANTOPEN", StoreFault.IO_ERROR, "cannot be opened"),
])
def test_faults_that_can_clear_become_store_unavailable(code, name, fault, words):
    error = translate(sqlite_error(code, name))
    assert isinstance(error, StoreUnavailable)
    assert error.code == "store_unavailable"
    assert error.fault is fault
    assert error.retry_after == RETRY_AFTER[fault] >= 1
    assert words in error.detail and name in error.detail
    assert error.detail in error.message and "Nothing was changed" in error.message


@pytest.mark.parametrize("exc", [
    sqlite_error(11, "SQLITE_CORRUPT", sqlite3.DatabaseError),
    sqlite_error(26, "SQLITE_NOTADB", sqlite3.DatabaseError),
    sqlite_error(2067, "SQLITE_CONSTRAINT_UNIQUE", sqlite3.IntegrityError),
    sqlite3.ProgrammingError("Cannot operate on a closed database."),
])
def test_other_errors_stay_store_errors(exc):
    error = translate(exc)
    assert type(error) is StoreError
    assert error.code == "store_error"


def test_a_fresh_store_is_healthy(store):
    assert store.health() == store_module.StoreHealth(ok=True)


# --- locked by another connection --------------------------------------------------------

def test_locked_database_refuses_writes_keeps_reads_and_recovers(store, locker, clock):
    kept = queue(store)
    locker.hold()
    clock.now = T0 + 5
    with pytest.raises(StoreUnavailable) as caught:
        queue(store, T0 + 60)
    assert caught.value.fault is StoreFault.BUSY and caught.value.retry_after == 1
    assert [r.run_id for r in store.recent_runs()] == [kept]  # reads go on
    health = store.health()
    assert (health.ok, health.fault, health.since) == (False, StoreFault.BUSY, T0 + 5)
    assert "locked" in health.error

    locker.release()
    clock.now = T0 + 9
    assert store.health() == store_module.StoreHealth(ok=True)  # the probe write succeeded
    assert queue(store, T0 + 60) is not None


@pytest.mark.slow
def test_while_locked_writes_do_not_wait_for_the_lock_again(tmp_path, locker):
    store = Store(tmp_path / "scheduler.db", busy_timeout_ms=1500)
    try:
        locker.hold()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.set_running(True)
        assert time.monotonic() - began >= 1.4  # the first write waits the busy timeout
        began = time.monotonic()
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                store.set_running(True)
        assert time.monotonic() - began < 1.0  # then fails fast while the fault lasts
        locker.release()
        store.set_running(True)
        assert store.is_running()
        locker.hold()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.set_running(False)
        assert time.monotonic() - began >= 1.4  # recovered: waits normally again
    finally:
        store.close()


def test_a_failed_transaction_is_rolled_back(store, locker):
    store.save_task(make_task("a"))
    locker.hold()
    with pytest.raises(StoreUnavailable):
        store.delete_task("a")
    locker.release()
    assert [r["task_id"] for r in store.load_tasks()] == ["a"]
    store.delete_task("a")  # the connection is usable: no transaction was left open
    assert store.load_tasks() == []


# --- deferred writes ---------------------------------------------------------------------

def test_results_and_starts_are_deferred_and_written_on_recovery(store, locker, clock):
    first, second = queue(store, T0), queue(store, T0 + 60)
    locker.hold()
    assert store.mark_running(first, T0 + 1, 1000.0) is False
    assert store.finish_run(done(first), 1000.0) is False
    assert store.mark_running(second, T0 + 61, 1000.0) is False
    clock.now = T0 + 99
    assert store.finish_run(done(second, finished_at=None), None) is False
    assert store.health().deferred == 2  # a result replaces the start of its run
    assert store.get_run(first).status is RunStatus.QUEUED

    locker.release()
    assert store.health().ok and store.health().deferred == 0
    one, two = store.get_run(first), store.get_run(second)
    assert (one.status, one.finished_at, one.lateness_ms, one.stdout) == \
        (RunStatus.SUCCEEDED, T0 + 2, 1000.0, "out")
    assert (two.status, two.finished_at, two.lateness_ms) == (RunStatus.SUCCEEDED, T0 + 99, 1000.0)


def test_a_later_write_flushes_what_was_deferred(store, locker):
    run_id = queue(store)
    locker.hold()
    store.finish_run(done(run_id), None)
    locker.release()
    store.set_running(True)  # any successful write
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED


def test_deferred_progress_never_moves_a_task_back(store, locker):
    task = make_task("a")
    store.save_task(task)
    locker.hold()
    assert store.save_progress("a", 3, T0 + 180) is False
    locker.release()
    task.runs_fired, task.checkpoint = 5, T0 + 300
    store.save_task(task)  # the whole row, newer than the deferred progress
    store.set_running(True)
    [row] = store.load_tasks()
    assert (row["runs_fired"], row["checkpoint"]) == (5, T0 + 300)

    locker.hold()
    store.save_progress("a", 6, T0 + 360)
    locker.release()
    store.set_all_checkpoints(T0 + 400)  # newer checkpoint, then the deferred progress
    [row] = store.load_tasks()
    assert (row["runs_fired"], row["checkpoint"]) == (6, T0 + 400)


def test_deferred_writes_are_bounded(store, locker, monkeypatch, caplog):
    monkeypatch.setattr(store_module, "MAX_DEFERRED", 3)
    ids = [queue(store, T0 + 60 * i) for i in range(5)]
    locker.hold()
    for run_id in ids:
        store.finish_run(done(run_id), None)
    assert store.health().deferred == 3
    assert "dropped the oldest" in caplog.text
    locker.release()
    store.health()
    assert [store.get_run(i).status for i in ids] == \
        [RunStatus.QUEUED] * 2 + [RunStatus.SUCCEEDED] * 3


def test_close_writes_what_it_can(tmp_path, locker):
    path = tmp_path / "scheduler.db"
    store = Store(path, busy_timeout_ms=100)
    run_id = queue(store)
    locker.hold()
    store.finish_run(done(run_id), None)
    locker.release()
    store.close()
    again = Store(path)
    try:
        assert again.get_run(run_id).status is RunStatus.SUCCEEDED
    finally:
        again.close()


def test_a_missed_slot_is_recorded_once_and_never_over_a_recorded_one(store, locker, clock):
    ran = queue(store, T0)
    locker.hold()
    clock.now = T0 + 61
    assert store.record_missed("t1", T0 + 60, "not started: locked") is False
    assert store.record_missed("t1", T0 + 60, "not started: locked") is False
    assert store.record_missed("t1", T0, "not started: locked") is False
    locker.release()
    assert store.health().ok
    runs = {r.scheduled_for: r for r in store.recent_runs()}
    assert runs[T0].run_id == ran and runs[T0].status is RunStatus.QUEUED
    missed = runs[T0 + 60]
    assert (missed.status, missed.trigger, missed.reason, missed.finished_at) == \
        (RunStatus.ERROR, Trigger.SCHEDULE, "not started: locked", T0 + 61)
    assert len(runs) == 2
    assert store.record_missed("t1", T0 + 120, "not started: x") is True  # written at once


def test_pruning_is_skipped_while_the_store_fails(store, locker):
    for i in range(3):
        run_id = queue(store, T0 + 60 * i)
        store.finish_run(done(run_id), None)
    locker.hold()
    assert store.prune_task("t1", 1) == 0
    assert store.prune_output(0) == 0
    locker.release()
    assert store.prune_task("t1", 1) == 2


# --- the injected clock ------------------------------------------------------------------

def test_times_the_store_sets_come_from_its_clock(store, clock):
    clock.now = T0 + 42
    skipped = store.insert_run("t1", Trigger.SCHEDULE, RunStatus.SKIPPED, T0, slot=True, reason="x")
    assert store.get_run(skipped).finished_at == T0 + 42
    run_id = queue(store, T0 + 60)
    clock.now = T0 + 77
    store.finish_run(RunResult(run_id=run_id, status=Outcome.KILLED), None)
    assert store.get_run(run_id).finished_at == T0 + 77
    pending = queue(store, T0 + 120)
    clock.now = T0 + 88
    store.interrupt_unfinished("stopped")
    assert store.get_run(pending).finished_at == T0 + 88


# --- a full disk and a read-only file system (a real tmpfs) ------------------------------

@pytest.mark.slow
def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmpfs, clock):
    store = Store(tmpfs.path / "scheduler.db", clock=clock)
    try:
        kept = queue(store)
        filler = tmpfs.fill()
        with pytest.raises(StoreUnavailable) as caught:
            for i in range(1, 200):  # pages the file had free are used up first
                store.insert_run("t1", Trigger.SCHEDULE, RunStatus.QUEUED, T0 + i, slot=True,
                                 reason="x" * 4000)
        assert caught.value.fault is StoreFault.DISK_FULL
        assert "full" in store.health().error
        assert store.get_run(kept).status is RunStatus.QUEUED
        assert store.finish_run(done(kept), None) is False

        filler.unlink()
        health = store.health()
        assert health.ok and health.deferred == 0
        assert store.get_run(kept).status is RunStatus.SUCCEEDED
    finally:
        store.close()


@pytest.mark.slow
def test_a_read_only_file_system_cannot_be_opened_and_is_not_remounted_under_a_store(tmpfs):
    path = tmpfs.path / "scheduler.db"
    store = Store(path)
    try:
        # The kernel refuses a read-only remount while a file on it is open for writing,
        # as the store's database is: the store goes on undisturbed.
        assert tmpfs.remount("ro").returncode != 0
        assert queue(store) is not None
    finally:
        store.close()
    assert tmpfs.remount("ro").returncode == 0
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(path)  # the WAL's shared-memory file cannot be created: no half-working store


# --- the scheduler over a failing store ---------------------------------------------------

@pytest.fixture
def sched(tmp_path):
    from .test_service import Harness  # the scheduler harness: real store, fake executor
    harness = Harness(tmp_path, store_options={"busy_timeout_ms": 100})  # a short lock wait
    harness.open()
    yield harness
    harness.close()


@pytest.fixture
def sched_locker(sched):
    db = sqlite3.connect(sched.db, isolation_level=None)
    yield db
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.close()


def test_a_slot_the_store_cannot_record_does_not_run_and_the_task_goes_on(sched, sched_locker):
    sched.create()
    sched_locker.execute("BEGIN EXCLUSIVE")
    lost, following = sched.fire()
    assert following == lost + 60  # re-planned, not dropped
    assert sched.executor.submitted == []
    status = sched.sched.status().store
    assert not status.ok and status.fault is StoreFault.BUSY
    assert status.deferred == 1  # the lost slot, recorded once the store works
    sched_locker.execute("ROLLBACK")
    slot, _ = sched.fire()
    assert slot == following and len(sched.executor.submitted) == 1
    runs = sorted(sched.runs(), key=lambda r: r.scheduled_for)  # the missed one written later
    assert [(r.scheduled_for, r.status) for r in runs] == \
        [(lost, RunStatus.ERROR), (following, RunStatus.QUEUED)]
    assert "the store could not record the run" in runs[0].reason
    assert "locked" in runs[0].reason
    assert sched.sched.status().store.ok


def test_a_result_during_a_fault_frees_the_task_and_is_recorded_later(sched, sched_locker):
    sched.create()
    sched.fire()
    [run_id] = sched.executor.ids
    sched_locker.execute("BEGIN EXCLUSIVE")
    sched.executor.report_start(run_id, sched.clock.now)
    sched.executor.finish(run_id, started_at=sched.clock.now, finished_at=sched.clock.now + 1)
    assert sched.sched.status().store.deferred == 1
    sched_locker.execute("ROLLBACK")
    sched.fire()  # overlap "skip": it would be skipped if the task were still active
    assert len(sched.executor.submitted) == 2
    assert [r.status for r in sched.runs()] == [RunStatus.SUCCEEDED, RunStatus.QUEUED]


def test_a_pause_the_store_cannot_record_changes_nothing(sched, sched_locker):
    sched.create()
    sched_locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable):
        sched.sched.set_paused("t1", True)
    assert not sched.sched.task("t1").paused
    sched_locker.execute("ROLLBACK")
    assert sched.sched.set_paused("t1", True).paused
    assert sched.store.load_tasks()[0]["paused"]
