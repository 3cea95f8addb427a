"""The SQLite store: tasks, the scheduler's running state, and run history.

One connection in WAL mode, serialised by a lock (SQLite serialises writers anyway, and
every statement here is short). ``synchronous=NORMAL`` keeps every committed transaction
across a crash of the server process (``kill -9``); only a power loss can drop the last
few. ``(task_id, slot_ms)`` is unique: one slot of a task can never be recorded twice.

Faults. Every ``sqlite3`` error is translated in one place (:func:`translate`). A fault
that can clear by itself (the database locked by another connection, the disk full, the
file system read-only, an I/O error) becomes :class:`StoreUnavailable`: nothing was
changed, try again later. Anything else (a corrupt file, a closed store) is
:class:`StoreError`. The store remembers the fault and since when (:meth:`Store.health`)
until a write succeeds again. While it lasts:

* writes do not wait for a lock (normally they wait up to ``busy_timeout_ms``): every
  caller would otherwise queue behind the lock for the whole timeout, one after another;
* after a read-only or I/O fault the connection is reopened before the next write, so that
  a file system made writable again is picked up;
* writes that record what has already happened (a run started or finished, a task's
  progress, a slot that could not be run) are kept in memory and written once the store
  works again, at most ``MAX_DEFERRED`` of each kind; writes that decide something (a run
  for a slot, a task created, changed or removed, the running state) fail, so that the
  caller does not act on what was not recorded;
* reads go on where SQLite can read (a locked or a full database can be read);
* pruning the history is skipped.

Nothing probes in the background: recovery is noticed at the next write, or when
:meth:`Store.health` is asked (which then tries one small write).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from policies import TaskType

from .errors import StoreError, StoreFault, StoreUnavailable
from .models import (
    Lineage, Misfire, Notify, Overlap, Run, RunStatus, TaskSpec, TestCounts, Trigger,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 3
FINAL = tuple(s.value for s in RunStatus if s.is_final)
BUSY_TIMEOUT_MS = 2000
MAX_DEFERRED = 10_000
# Seconds a client is told to wait: a lock is usually released soon, the others need the
# operator (or a pruning run, or a remount).
RETRY_AFTER = {StoreFault.BUSY: 1, StoreFault.DISK_FULL: 10, StoreFault.READ_ONLY: 10,
               StoreFault.IO_ERROR: 10}
_LOCKED = "the database is locked by another connection"
_FAULTS: dict[int, tuple[StoreFault, str]] = {
    sqlite3.SQLITE_BUSY: (StoreFault.BUSY, _LOCKED),
    sqlite3.SQLITE_LOCKED: (StoreFault.BUSY, _LOCKED),
    sqlite3.SQLITE_FULL: (StoreFault.DISK_FULL, "the disk holding the database is full"),
    sqlite3.SQLITE_READONLY: (StoreFault.READ_ONLY, "the database is read-only "
                              "(its file system or the file itself)"),
    sqlite3.SQLITE_IOERR: (StoreFault.IO_ERROR, "the disk holding the database reported an "
                           "I/O error"),
    sqlite3.SQLITE_CANTOPEN: (StoreFault.IO_ERROR, "a file of the database cannot be opened"),
}

# Retries waiting for their time, one per failed first try (``retry_of``): stored so that a
# restart does not lose them.
_PENDING_RETRIES = """
CREATE TABLE IF NOT EXISTS pending_retries (
    retry_of INTEGER PRIMARY KEY, task_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    due REAL NOT NULL);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, anchor REAL NOT NULL, checkpoint REAL NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0, runs_fired INTEGER NOT NULL DEFAULT 0,
    timezone TEXT, jitter REAL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, trigger TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER, scheduled_for REAL NOT NULL,
    slot_ms INTEGER, started_at REAL, finished_at REAL, lateness_ms REAL,
    stdout TEXT NOT NULL DEFAULT '', stderr TEXT NOT NULL DEFAULT '',
    truncated INTEGER NOT NULL DEFAULT 0, tests TEXT, out_bytes INTEGER NOT NULL DEFAULT 0,
    jitter_ms REAL, attempt INTEGER NOT NULL DEFAULT 1, retry_of INTEGER,
    parent_run_id INTEGER, notification TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS runs_slot ON runs (task_id, slot_ms);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task_id, run_id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (status) WHERE status IN ('queued', 'running');
""" + _PENDING_RETRIES


# Upgrades of an older database, by the version they start from: additive columns only.
_MIGRATIONS = {
    1: ("ALTER TABLE tasks ADD COLUMN timezone TEXT",
        "ALTER TABLE tasks ADD COLUMN jitter REAL",
        "ALTER TABLE runs ADD COLUMN jitter_ms REAL"),
    2: ("ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE runs ADD COLUMN retry_of INTEGER",
        "ALTER TABLE runs ADD COLUMN parent_run_id INTEGER",
        "ALTER TABLE runs ADD COLUMN notification TEXT",
        _PENDING_RETRIES),
}
# Spec fields kept in columns of their own rather than in the spec's JSON.
_SPEC_COLUMNS = ("timezone", "jitter")

_RUN_COLUMNS = ("run_id, task_id, trigger, status, reason, exit_code, scheduled_for, started_at, "
                "finished_at, lateness_ms, stdout, stderr, truncated, tests, jitter_ms, attempt, retry_of, "
                "parent_run_id, notification")


def translate(exc: sqlite3.Error) -> StoreError:
    """The scheduler's error for a ``sqlite3`` error: :class:`StoreUnavailable` for a fault
    that can clear by itself, :class:`StoreError` otherwise. The one place that reads
    SQLite's result codes (the extended code's low byte is the primary code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    found = _FAULTS.get(code & 0xFF) if isinstance(code, int) else None
    if found is None:
        return StoreError(f"store error: {exc}")
    fault, what = found
    retry = RETRY_AFTER[fault]
    detail = f"{what} ({getattr(exc, 'sqlite_errorname', code)})"
    return StoreUnavailable(f"The task store cannot be used right now: {detail}. Nothing was "
                            f"changed; retry in {retry} s.", fault=fault, retry_after=retry,
                            detail=detail)


@dataclass(frozen=True)
class StoreHealth:
    """The store's state as :meth:`Store.health` reports it; ``since`` is when the current
    fault began, ``deferred`` how many writes wait for the store to work again."""

    ok: bool
    error: str | None = None
    fault: StoreFault | None = None
    since: float | None = None
    deferred: int = 0


def slot_key(scheduled_for: float) -> int:
    """The slot's identity: its due time in whole milliseconds."""
    return round(scheduled_for * 1000)


def spec_to_json(spec: TaskSpec) -> str:
    data = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k not in _SPEC_COLUMNS}
    data["task_type"] = spec.task_type.value
    data["overlap"] = spec.overlap.value
    data["misfire"] = spec.misfire.value
    data["notify"] = spec.notify.to_dict() if spec.notify else None
    return json.dumps(data, sort_keys=True)


def spec_from_json(text: str, **columns: Any) -> TaskSpec:
    """The spec stored as ``text``; ``columns`` are the fields stored beside it (timezone,
    jitter)."""
    data = {**json.loads(text), **columns}
    data["task_type"] = TaskType(data["task_type"])
    data["overlap"] = Overlap(data["overlap"])
    data["misfire"] = Misfire(data["misfire"])
    if data.get("notify") is not None:
        data["notify"] = Notify.from_dict(data["notify"])
    for name in ("on_success", "on_failure"):
        data[name] = tuple(data.get(name) or ())
    return TaskSpec(**data)


class Store:
    """SQLite persistence (see the module docstring). Thread-safe."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.clock = clock
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._fault: StoreUnavailable | None = None
        self._since: float | None = None
        self._reopen = False
        self._closed = False
        # Deferred writes (see the module docstring), each keyed so that a newer one of
        # the same kind replaces an older one.
        self._started: dict[int, tuple[float, float | None]] = {}
        self._finished: dict[int, tuple[Any, float | None, float, float | None]] = {}
        self._progress: dict[str, tuple[int, float]] = {}
        self._missed: dict[tuple[str, int], tuple] = {}
        self._notified: dict[int, str] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._db.executescript(_SCHEMA)
            found = _get_meta(self._db, "schema_version")
            if found is None:
                _set_meta(self._db, "schema_version", str(SCHEMA_VERSION))
            elif found.isdigit() and int(found) in _MIGRATIONS:
                self._migrate(int(found))
            elif found != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path} has schema version {found}; this server "
                                 f"understands version {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def _connect(self, *, create: bool = True) -> sqlite3.Connection:
        # A reopened connection must find the database, never start an empty one.
        target = str(self.path) if create else self.path.absolute().as_uri() + "?mode=rw"
        db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, uri=not create)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _migrate(self, version: int) -> None:
        """Bring a database of schema ``version`` to SCHEMA_VERSION, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            _set_meta(self._db, "schema_version", str(version))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection, after one last try at the deferred writes."""
        with self._lock:
            if self._closed:
                return
            if self._deferred_count():
                self._flush()
                if self._deferred_count():
                    log.error("store %s: %d deferred writes are lost at close (%s)", self.path,
                              self._deferred_count(), self._fault.detail if self._fault else "")
            self._closed = True
            self._db.close()

    # -- running statements and faults --------------------------------------------------

    def _attempt(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``work`` on the connection (the caller holds the lock), translating errors."""
        try:
            if write and self._reopen and not self._closed:
                self._reconnect()
            result = work(self._db)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        if write and self._fault is not None:
            self._recovered()
        return result

    def _use(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        with self._lock:
            return self._attempt(work, write=write)

    def _record(self, work: Callable[[sqlite3.Connection], Any], defer: Callable[[], None]) -> bool:
        """A write that records what already happened: on a fault, ``defer`` keeps it for
        later (see the module docstring). True when it was written now."""
        with self._lock:
            try:
                self._attempt(work, write=True)
            except StoreUnavailable:
                defer()
                return False
            return True

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failed statement may have rolled the transaction back already
        error = translate(exc)
        if isinstance(error, StoreUnavailable):
            if self._fault is None or self._fault.fault is not error.fault:
                log.error("store %s cannot be used: %s", self.path, error.detail)
            if self._fault is None:
                self._since = self.clock()
                self._set_busy_timeout(0)
            self._fault = error
            if error.fault in (StoreFault.READ_ONLY, StoreFault.IO_ERROR):
                self._reopen = True
        return error

    def _recovered(self) -> None:
        log.warning("store %s works again after %.1f s (it failed with: %s)", self.path,
                    self.clock() - (self._since or self.clock()), self._fault.detail)
        self._fault = None
        self._since = None
        self._set_busy_timeout(self.busy_timeout_ms)
        self._flush()

    def _reconnect(self) -> None:
        fresh = self._connect(create=False)
        self._db.close()
        self._db = fresh
        self._reopen = False
        if self._fault is not None:
            self._set_busy_timeout(0)

    def _set_busy_timeout(self, ms: int) -> None:
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(ms)}")
        except sqlite3.Error:
            pass  # a closed or broken connection: the next statement reports it

    def _deferred_count(self) -> int:
        return (len(self._started) + len(self._finished) + len(self._progress)
                + len(self._missed) + len(self._notified))

    def _defer(self, kept: dict, key: Any, value: Any) -> None:
        if key not in kept and len(kept) >= MAX_DEFERRED:
            dropped = next(iter(kept))
            del kept[dropped]
            log.error("store %s: more than %d deferred writes; dropped the oldest (%r)",
                      self.path, MAX_DEFERRED, dropped)
        kept[key] = value

    def _flush(self) -> None:
        """Write what was deferred (the caller holds the lock); stop at the first failure."""
        count = self._deferred_count()
        try:
            for run_id, (started_at, lateness_ms) in list(self._started.items()):
                self._db.execute(_MARK_RUNNING, (started_at, lateness_ms, run_id))
                del self._started[run_id]
            for run_id, finish in list(self._finished.items()):
                self._db.execute(_FINISH_RUN, _finish_params(*finish))
                del self._finished[run_id]
            for task_id, (runs_fired, checkpoint) in list(self._progress.items()):
                # Older than anything written since: never move a task back.
                self._db.execute("UPDATE tasks SET runs_fired = MAX(runs_fired, ?), "
                                 "checkpoint = MAX(checkpoint, ?) WHERE task_id = ?",
                                 (runs_fired, checkpoint, task_id))
                del self._progress[task_id]
            for key, params in list(self._missed.items()):
                self._db.execute(_INSERT_RUN, params)
                del self._missed[key]
            for run_id, text in list(self._notified.items()):
                self._db.execute(_SET_NOTIFICATION, (text, run_id))
                del self._notified[run_id]
        except sqlite3.Error as exc:
            self._failed(exc)
        if count:
            log.info("store %s: wrote %d of %d deferred writes", self.path,
                     count - self._deferred_count(), count)

    def health(self) -> StoreHealth:
        """Whether the store works; while a fault lasts, first try one small write to see
        whether it has cleared (which also writes what was deferred)."""
        with self._lock:
            if self._fault is not None and not self._closed:
                try:
                    self._attempt(lambda db: _set_meta(db, "checked_at", repr(self.clock())),
                                  write=True)
                except StoreError:
                    pass  # still failing: reported below
            fault = self._fault
            return StoreHealth(ok=fault is None, error=fault.detail if fault else None,
                               fault=fault.fault if fault else None, since=self._since,
                               deferred=self._deferred_count())

    # -- scheduler state ----------------------------------------------------------------

    def is_running(self) -> bool:
        return self._use(lambda db: _get_meta(db, "running") == "1", write=False)

    def set_running(self, running: bool) -> None:
        self._use(lambda db: _set_meta(db, "running", "1" if running else "0"), write=True)

    # -- tasks --------------------------------------------------------------------------

    def load_tasks(self) -> list[dict[str, Any]]:
        """Every task row; ``spec`` is the spec's JSON, ``columns`` the spec fields stored
        beside it (for :func:`spec_from_json`)."""
        rows = self._use(lambda db: db.execute(
            "SELECT task_id, spec, created_at, updated_at, anchor, checkpoint, paused, "
            "runs_fired, timezone, jitter FROM tasks ORDER BY created_at, task_id").fetchall(),
            write=False)
        return [dict(task_id=r[0], spec=r[1], created_at=r[2], updated_at=r[3], anchor=r[4],
                     checkpoint=r[5], paused=bool(r[6]), runs_fired=r[7],
                     columns=dict(timezone=r[8], jitter=r[9])) for r in rows]

    def save_task(self, task) -> None:
        """Insert or replace the whole task row."""
        params = (task.task_id, spec_to_json(task.spec), task.created_at, task.updated_at,
                  task.anchor, task.checkpoint, int(task.paused), task.runs_fired,
                  task.spec.timezone, task.spec.jitter)

        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO tasks (task_id, spec, created_at, updated_at, "
                       "anchor, checkpoint, paused, runs_fired, timezone, jitter) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", params)
            self._progress.pop(task.task_id, None)  # the whole row is newer

        self._use(work, write=True)

    def save_progress(self, task_id: str, runs_fired: int, checkpoint: float) -> bool:
        """Record a task's progress; deferred on a fault (False then)."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE tasks SET runs_fired = ?, checkpoint = ? WHERE task_id = ?",
                       (runs_fired, checkpoint, task_id))
            self._progress.pop(task_id, None)

        return self._record(work, lambda: self._defer(self._progress, task_id,
                                                      (runs_fired, checkpoint)))

    def set_all_checkpoints(self, checkpoint: float) -> None:
        self._use(lambda db: db.execute("UPDATE tasks SET checkpoint = MAX(checkpoint, ?)",
                                           (checkpoint,)),
                  write=True)

    def delete_task(self, task_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM runs WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM pending_retries WHERE task_id = ?", (task_id,))
            db.execute("COMMIT")
            self._progress.pop(task_id, None)

        self._use(work, write=True)

    # -- runs ---------------------------------------------------------------------------

    def insert_run(self, task_id: str, trigger: Trigger, status: RunStatus, scheduled_for: float,
                   *, slot: bool, reason: str | None = None, jitter_ms: float | None = None,
                   lineage: Lineage = Lineage()) -> int | None:
        """Record a new run; None if ``slot`` is set and that slot was recorded before.

        A retry (``trigger`` retry) takes its pending retry (``lineage.retry_of``) in the same
        transaction: None if that is gone (cancelled, or run by an earlier call), so one
        pending retry starts at most one run."""
        finished = self.clock() if status.is_final else None
        params = (task_id, trigger.value, status.value, reason, scheduled_for,
                  slot_key(scheduled_for) if slot else None, finished, jitter_ms,
                  lineage.attempt, lineage.retry_of, lineage.parent_run_id)

        def work(db: sqlite3.Connection) -> int | None:
            if trigger is not Trigger.RETRY:
                cur = db.execute(_INSERT_RUN_LINEAGE, params)
                return cur.lastrowid if cur.rowcount else None
            db.execute("BEGIN")
            taken = db.execute("DELETE FROM pending_retries WHERE retry_of = ? AND attempt = ?",
                               (lineage.retry_of, lineage.attempt)).rowcount
            run_id = db.execute(_INSERT_RUN_LINEAGE, params).lastrowid if taken else None
            db.execute("COMMIT")
            return run_id

        return self._use(work, write=True)

    def delete_run(self, run_id: int) -> bool:
        """Delete a run that never started (the executor dropped it before its slot); a run
        no longer ``queued`` is left alone. True if a row was deleted. Its slot is free
        again: the task may run it after all (a stop followed by a start before it)."""
        return self._delete("DELETE FROM runs WHERE run_id = ? AND status = 'queued'",
                            (run_id,)) > 0

    # -- pending retries ----------------------------------------------------------------

    def add_retry(self, task_id: str, retry_of: int, attempt: int, due: float) -> None:
        """Store the retry ``attempt`` of the first try ``retry_of``, due at ``due``."""
        self._use(lambda db: db.execute(
            "INSERT OR REPLACE INTO pending_retries (retry_of, task_id, attempt, due) "
            "VALUES (?, ?, ?, ?)", (retry_of, task_id, attempt, due)), write=True)

    def pending_retries(self) -> list[tuple[int, str, int, float]]:
        """Every stored retry as ``(retry_of, task_id, attempt, due)``, earliest first."""
        return self._query("SELECT retry_of, task_id, attempt, due FROM pending_retries "
                           "ORDER BY due, retry_of")

    def cancel_retries(self, task_id: str) -> int:
        """Drop the task's pending retries; how many there were."""
        return self._delete("DELETE FROM pending_retries WHERE task_id = ?", (task_id,))

    def set_notification(self, run_id: int, outcome: dict) -> bool:
        """Record how a run's notification went; deferred on a fault (False then)."""
        text = json.dumps(outcome, sort_keys=True)

        def work(db: sqlite3.Connection) -> None:
            db.execute(_SET_NOTIFICATION, (text, run_id))
            self._notified.pop(run_id, None)

        return self._record(work, lambda: self._defer(self._notified, run_id, text))

    def previous_outcome(self, task_id: str, run_id: int) -> RunStatus | None:
        """The status of the task's latest finished run before ``run_id`` (skipped runs
        aside), or None if there is none."""
        final = [s.value for s in RunStatus if s.is_final and s is not RunStatus.SKIPPED]
        rows = self._query(
            f"SELECT status FROM runs WHERE task_id = ? AND run_id < ? AND status IN "
            f"({','.join('?' * len(final))}) ORDER BY run_id DESC LIMIT 1",
            (task_id, run_id, *final))
        return RunStatus(rows[0][0]) if rows else None

    def record_missed(self, task_id: str, scheduled_for: float, reason: str) -> bool:
        """Record a scheduled slot that did not run because the store failed, as an
        ``error`` run with ``reason``; deferred on a fault (False then), which is the usual
        case. A slot recorded before in any way is left as it is."""
        key = (task_id, slot_key(scheduled_for))
        params = (task_id, Trigger.SCHEDULE.value, RunStatus.ERROR.value, reason, scheduled_for,
                  key[1], self.clock(), None)

        def work(db: sqlite3.Connection) -> None:
            db.execute(_INSERT_RUN, params)
            self._missed.pop(key, None)

        return self._record(work, lambda: self._defer(self._missed, key, params))

    def mark_running(self, run_id: int, started_at: float, lateness_ms: float | None) -> bool:
        """Record that a queued run started; deferred on a fault (False then)."""
        return self._record(
            lambda db: db.execute(_MARK_RUNNING, (started_at, lateness_ms, run_id)),
            lambda: self._defer(self._started, run_id, (started_at, lateness_ms)))

    def finish_run(self, result, lateness_ms: float | None) -> bool:
        """Record a :class:`sandbox.types.RunResult`; deferred on a fault (False then)."""
        finished_at = result.finished_at or self.clock()

        def work(db: sqlite3.Connection) -> None:
            started_at, lateness = self._started.get(result.run_id, (None, None))
            params = _finish_params(result, _first(lateness_ms, lateness), finished_at,
                                    _first(result.started_at, started_at))
            db.execute(_FINISH_RUN, params)
            self._started.pop(result.run_id, None)
            self._finished.pop(result.run_id, None)

        def defer() -> None:
            started_at, lateness = self._started.pop(result.run_id, (None, None))
            self._defer(self._finished, result.run_id,
                        (result, _first(lateness_ms, lateness), finished_at,
                         _first(result.started_at, started_at)))

        return self._record(work, defer)

    def unfinished_runs(self) -> list[tuple[int, str, int, int | None]]:
        """Runs still queued or running, as ``(run_id, task_id, attempt, retry_of)``: at
        start-up, the runs the last server process left (see ``interrupt_unfinished``)."""
        return self._query("SELECT run_id, task_id, attempt, retry_of FROM runs "
                           "WHERE status IN ('queued', 'running') ORDER BY run_id")

    def interrupt_unfinished(self, reason: str) -> int:
        now = self.clock()
        cur = self._use(lambda db: db.execute(
            "UPDATE runs SET status = 'interrupted', reason = ?, finished_at = ? "
            "WHERE status IN ('queued', 'running')", (reason, now)), write=True)
        return cur.rowcount

    def get_run(self, run_id: int) -> Run | None:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def recent_runs(self, task_id: str | None = None, limit: int = 20) -> list[Run]:
        if task_id is None:
            rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY run_id DESC LIMIT ?",
                               (limit,))
        else:
            rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE task_id = ? "
                               "ORDER BY run_id DESC LIMIT ?", (task_id, limit))
        return [_run(r) for r in rows]

    def runs_after(self, after_run_id: int, task_id: str | None = None,
                   limit: int = 20) -> list[Run]:
        """Up to ``limit`` runs with an id above ``after_run_id``, oldest first."""
        where, params = "run_id > ?", [after_run_id]
        if task_id is not None:
            where, params = where + " AND task_id = ?", params + [task_id]
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} "
                           "ORDER BY run_id ASC LIMIT ?", (*params, limit))
        return [_run(r) for r in rows]

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._use(lambda db: db.execute(sql, tuple(params)).fetchall(), write=False)

    def _delete(self, sql: str, params: Iterable[Any]) -> int:
        return self._use(lambda db: db.execute(sql, tuple(params)).rowcount, write=True)

    def last_finished(self, status: RunStatus) -> dict[str, float]:
        """Each task's latest ``finished_at`` among its kept runs in ``status``."""
        rows = self._query("SELECT task_id, MAX(finished_at) FROM runs WHERE status = ? "
                           "AND finished_at IS NOT NULL GROUP BY task_id", (status.value,))
        return {task_id: finished for task_id, finished in rows}

    def prune_task(self, task_id: str, keep: int) -> int:
        """Drop a task's finished runs beyond the newest ``keep`` (none while the store fails)."""
        final = ",".join("?" * len(FINAL))
        try:
            return self._delete(
                f"DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs WHERE task_id = ? "
                f"AND status IN ({final}) ORDER BY run_id DESC LIMIT -1 OFFSET ?)",
                (task_id, *FINAL, keep))
        except StoreUnavailable:
            return 0

    def prune_output(self, max_bytes: int) -> int:
        """Drop the oldest finished runs until the kept output is at most ``max_bytes``
        (none while the store fails)."""
        try:
            total = self._query("SELECT COALESCE(SUM(out_bytes), 0) FROM runs")[0][0]
            if total <= max_bytes:
                return 0
            excess, dropped = total - max_bytes, 0
            rows = self._query("SELECT run_id, out_bytes FROM runs WHERE out_bytes > 0 "
                               "ORDER BY run_id LIMIT 10000")
            victims = []
            for run_id, size in rows:
                if dropped >= excess:
                    break
                victims.append(run_id)
                dropped += size
            self._delete(f"DELETE FROM runs WHERE run_id IN ({','.join('?' * len(victims))})"
                         f" AND status IN ({','.join('?' * len(FINAL))})", (*victims, *FINAL))
            return len(victims)
        except StoreUnavailable:
            return 0


_INSERT_RUN = ("INSERT OR IGNORE INTO runs (task_id, trigger, status, reason, scheduled_for, "
               "slot_ms, finished_at, jitter_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_RUN_LINEAGE = ("INSERT OR IGNORE INTO runs (task_id, trigger, status, reason, "
                       "scheduled_for, slot_ms, finished_at, jitter_ms, attempt, retry_of, "
                       "parent_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SET_NOTIFICATION = "UPDATE runs SET notification = ? WHERE run_id = ?"
_MARK_RUNNING = ("UPDATE runs SET status = 'running', started_at = ?, lateness_ms = ? "
                 "WHERE run_id = ? AND status = 'queued'")
_FINISH_RUN = ("UPDATE runs SET status = ?, reason = ?, exit_code = ?, "
               "started_at = COALESCE(?, started_at), finished_at = ?, "
               "lateness_ms = COALESCE(?, lateness_ms), stdout = ?, stderr = ?, truncated = ?, "
               "tests = ?, out_bytes = ? WHERE run_id = ?")


def _first(value, fallback):
    return fallback if value is None else value


def _finish_params(result, lateness_ms: float | None, finished_at: float,
                   started_at: float | None) -> tuple:
    tests = json.dumps(result.tests.to_dict()) if result.tests else None
    out_bytes = _size(result.stdout) + _size(result.stderr)
    return (result.status.value, result.reason, result.exit_code, started_at,
            finished_at, lateness_ms, result.stdout, result.stderr, int(result.truncated),
            tests, out_bytes, result.run_id)


def _get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _run(row: tuple) -> Run:
    tests = TestCounts(**json.loads(row[13])) if row[13] else None
    return Run(run_id=row[0], task_id=row[1], trigger=Trigger(row[2]), status=RunStatus(row[3]),
               reason=row[4], exit_code=row[5], scheduled_for=row[6], started_at=row[7],
               finished_at=row[8], lateness_ms=row[9], stdout=row[10], stderr=row[11],
               truncated=bool(row[12]), tests=tests, jitter_ms=row[14], attempt=row[15] or 1,
               retry_of=row[16], parent_run_id=row[17],
               notification=json.loads(row[18]) if row[18] else None)
