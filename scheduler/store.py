"""The SQLite store: tasks, the scheduler's running state, and run history.

One connection in WAL mode, serialised by a lock (SQLite serialises writers anyway, and
every statement here is short). ``synchronous=NORMAL`` keeps every committed transaction
across a crash of the server process (``kill -9``); only a power loss can drop the last
few. ``(task_id, slot_ms)`` is unique: one slot of a task can never be recorded twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from policies import TaskType

from .errors import StoreError
from .models import Misfire, Overlap, Run, RunStatus, TaskSpec, TestCounts, Trigger

SCHEMA_VERSION = 2
FINAL = tuple(s.value for s in RunStatus if s.is_final)

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
    jitter_ms REAL);
CREATE UNIQUE INDEX IF NOT EXISTS runs_slot ON runs (task_id, slot_ms);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task_id, run_id);
CREATE INDEX IF NOT EXISTS runs_active ON runs (status) WHERE status IN ('queued', 'running');
"""

# Upgrades of an older database, by the version they start from: additive columns only.
_MIGRATIONS = {
    1: ("ALTER TABLE tasks ADD COLUMN timezone TEXT",
        "ALTER TABLE tasks ADD COLUMN jitter REAL",
        "ALTER TABLE runs ADD COLUMN jitter_ms REAL"),
}
# Spec fields kept in columns of their own rather than in the spec's JSON.
_SPEC_COLUMNS = ("timezone", "jitter")

_RUN_COLUMNS = ("run_id, task_id, trigger, status, reason, exit_code, scheduled_for, started_at, "
                "finished_at, lateness_ms, stdout, stderr, truncated, tests, jitter_ms")


def slot_key(scheduled_for: float) -> int:
    """The slot's identity: its due time in whole milliseconds."""
    return round(scheduled_for * 1000)


def spec_to_json(spec: TaskSpec) -> str:
    data = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k not in _SPEC_COLUMNS}
    data["task_type"] = spec.task_type.value
    data["overlap"] = spec.overlap.value
    data["misfire"] = spec.misfire.value
    return json.dumps(data, sort_keys=True)


def spec_from_json(text: str, **columns: Any) -> TaskSpec:
    """The spec stored as ``text``; ``columns`` are the fields stored beside it (timezone,
    jitter)."""
    data = {**json.loads(text), **columns}
    data["task_type"] = TaskType(data["task_type"])
    data["overlap"] = Overlap(data["overlap"])
    data["misfire"] = Misfire(data["misfire"])
    return TaskSpec(**data)


class Store:
    """SQLite persistence (see the module docstring). Thread-safe."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            found = self._get_meta("schema_version")
            if found is None:
                self._set_meta("schema_version", str(SCHEMA_VERSION))
            elif found.isdigit() and int(found) in _MIGRATIONS:
                self._migrate(int(found))
            elif found != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path} has schema version {found}; this server "
                                 f"understands version {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def _migrate(self, version: int) -> None:
        """Bring a database of schema ``version`` to SCHEMA_VERSION, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            self._set_meta("schema_version", str(version))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, int | None]:
        """Run one statement; return (rows changed, last inserted row id)."""
        try:
            with self._lock:
                cur = self._db.execute(sql, tuple(params))
                return cur.rowcount, cur.lastrowid
        except sqlite3.Error as exc:
            raise StoreError(f"store error: {exc}") from exc

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store error: {exc}") from exc

    def _get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- scheduler state ----------------------------------------------------------------

    def is_running(self) -> bool:
        with self._lock:
            return self._get_meta("running") == "1"

    def set_running(self, running: bool) -> None:
        with self._lock:
            self._set_meta("running", "1" if running else "0")

    # -- tasks --------------------------------------------------------------------------

    def load_tasks(self) -> list[dict[str, Any]]:
        """Every task row; ``spec`` is the spec's JSON, ``columns`` the spec fields stored
        beside it (for :func:`spec_from_json`)."""
        rows = self._query("SELECT task_id, spec, created_at, updated_at, anchor, checkpoint, "
                           "paused, runs_fired, timezone, jitter FROM tasks "
                           "ORDER BY created_at, task_id")
        return [dict(task_id=r[0], spec=r[1], created_at=r[2], updated_at=r[3], anchor=r[4],
                     checkpoint=r[5], paused=bool(r[6]), runs_fired=r[7],
                     columns=dict(timezone=r[8], jitter=r[9])) for r in rows]

    def save_task(self, task) -> None:
        """Insert or replace the whole task row."""
        self._exec("INSERT OR REPLACE INTO tasks (task_id, spec, created_at, updated_at, anchor, "
                   "checkpoint, paused, runs_fired, timezone, jitter) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (task.task_id, spec_to_json(task.spec), task.created_at, task.updated_at,
                    task.anchor, task.checkpoint, int(task.paused), task.runs_fired,
                    task.spec.timezone, task.spec.jitter))

    def save_progress(self, task_id: str, runs_fired: int, checkpoint: float) -> None:
        self._exec("UPDATE tasks SET runs_fired = ?, checkpoint = ? WHERE task_id = ?",
                   (runs_fired, checkpoint, task_id))

    def set_all_checkpoints(self, checkpoint: float) -> None:
        self._exec("UPDATE tasks SET checkpoint = ?", (checkpoint,))

    def delete_task(self, task_id: str) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
                self._db.execute("DELETE FROM runs WHERE task_id = ?", (task_id,))
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store error: {exc}") from exc

    # -- runs ---------------------------------------------------------------------------

    def insert_run(self, task_id: str, trigger: Trigger, status: RunStatus, scheduled_for: float,
                   *, slot: bool, reason: str | None = None,
                   jitter_ms: float | None = None) -> int | None:
        """Record a new run; None if ``slot`` is set and that slot was recorded before."""
        now = time.time()
        finished = now if status.is_final else None
        changed, row_id = self._exec(
            "INSERT OR IGNORE INTO runs (task_id, trigger, status, reason, scheduled_for, slot_ms, "
            "finished_at, jitter_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, trigger.value, status.value, reason, scheduled_for,
             slot_key(scheduled_for) if slot else None, finished, jitter_ms))
        return row_id if changed else None

    def mark_running(self, run_id: int, started_at: float, lateness_ms: float | None) -> None:
        self._exec("UPDATE runs SET status = 'running', started_at = ?, lateness_ms = ? "
                   "WHERE run_id = ? AND status = 'queued'", (started_at, lateness_ms, run_id))

    def finish_run(self, result, lateness_ms: float | None) -> None:
        """Record a :class:`sandbox.types.RunResult`."""
        tests = json.dumps(result.tests.to_dict()) if result.tests else None
        out_bytes = _size(result.stdout) + _size(result.stderr)
        self._exec(
            "UPDATE runs SET status = ?, reason = ?, exit_code = ?, "
            "started_at = COALESCE(?, started_at), finished_at = ?, "
            "lateness_ms = COALESCE(?, lateness_ms), stdout = ?, stderr = ?, truncated = ?, "
            "tests = ?, out_bytes = ? WHERE run_id = ?",
            (result.status.value, result.reason, result.exit_code, result.started_at,
             result.finished_at or time.time(), lateness_ms, result.stdout, result.stderr,
             int(result.truncated), tests, out_bytes, result.run_id))

    def interrupt_unfinished(self, reason: str) -> int:
        changed, _ = self._exec("UPDATE runs SET status = 'interrupted', reason = ?, "
                                "finished_at = ? WHERE status IN ('queued', 'running')",
                                (reason, time.time()))
        return changed

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

    def prune_task(self, task_id: str, keep: int) -> int:
        """Drop a task's finished runs beyond the newest ``keep``."""
        final = ",".join("?" * len(FINAL))
        changed, _ = self._exec(
            f"DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs WHERE task_id = ? "
            f"AND status IN ({final}) ORDER BY run_id DESC LIMIT -1 OFFSET ?)",
            (task_id, *FINAL, keep))
        return changed

    def prune_output(self, max_bytes: int) -> int:
        """Drop the oldest finished runs until the kept output is at most ``max_bytes``."""
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
        self._exec(f"DELETE FROM runs WHERE run_id IN ({','.join('?' * len(victims))})"
                   f" AND status IN ({','.join('?' * len(FINAL))})", (*victims, *FINAL))
        return len(victims)


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _run(row: tuple) -> Run:
    tests = TestCounts(**json.loads(row[13])) if row[13] else None
    return Run(run_id=row[0], task_id=row[1], trigger=Trigger(row[2]), status=RunStatus(row[3]),
               reason=row[4], exit_code=row[5], scheduled_for=row[6], started_at=row[7],
               finished_at=row[8], lateness_ms=row[9], stdout=row[10], stderr=row[11],
               truncated=bool(row[12]), tests=tests, jitter_ms=row[14])
