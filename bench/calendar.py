"""Calendar schedules at scale: the cost of next-slot computation for cron, clock and
interval schedules, and the scheduler's start-up with 100,000 stored tasks.

    .venv/bin/python -m bench.calendar [--tasks N] [--quick]

1. **Next slot** — for each kind of schedule, N tasks with their own anchors ask for their
   next slot once (what planning at start-up does per task, and what each fire does for
   its task): microseconds per call, median of three rounds. Intervals are arithmetic;
   clock schedules resolve wall times in the task's zone; cron expressions go through
   cronsim (a wall-clock walk per call).
2. **Start-up** — N tasks written straight into a fresh store (as ``Scheduler.create``
   writes them), then ``Scheduler.open()`` timed: load the rows, read each interval in
   its zone, plan the first ``plan_inline`` tasks' next slots and hand them to the
   dispatcher; the rest are planned by the backlog's thread while the server already
   serves (``scheduler/planning.py``), and the second figure is when that is done.
   The executor is a stub (no worker processes), so the figures are the scheduler's own
   share of a restart. Three mixes: all intervals; cron with 1,000 distinct expressions
   over three zones (tasks share parsed schedules); and the worst case, every task its own
   cron expression. The target is under 5 s for ``open()`` in each.

Figures are wall-clock on a shared machine: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from policies import TaskType, default_policy
from scheduler.dispatcher import Dispatcher
from scheduler import grammar
from scheduler.grammar import parse_interval
from scheduler.models import Task, TaskSpec
from scheduler.service import Scheduler
from scheduler.store import Store

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
STARTUP_TARGET = 5.0
NOW = time.time()

KINDS: dict[str, Callable[[random.Random, int], str]] = {
    "interval (every 1 hour)": lambda rng, i: "every 1 hour",
    "daily at 02:30": lambda rng, i: "daily at 02:30",
    "cron, fixed time (30 2 * * mon-fri)": lambda rng, i: "30 2 * * mon-fri",
    "cron, sub-hourly (*/15 * * * *)": lambda rng, i: "*/15 * * * *",
    "cron, 1,000 distinct": lambda rng, i: _distinct_cron(i % 1000),
}


def _distinct_cron(i: int) -> str:
    """The i-th of 60 x 24 x 7 x 12 distinct five-field expressions."""
    minute, rest = i % 60, i // 60
    hour, rest = rest % 24, rest // 24
    weekday, rest = rest % 7, rest // 7
    return f"{minute} {hour} * {1 + rest % 12}-12 {weekday}"


class _NullExecutor:
    """Implements scheduler.executor.Executor and runs nothing."""

    size = 0

    def __init__(self) -> None:
        self.submitted = 0

    def open(self, on_started, on_result, on_discarded) -> None:
        pass

    def submit(self, request) -> None:
        self.submitted += 1

    def discard(self, run_id: int) -> None:
        pass

    def revise(self, policy) -> None:
        pass

    def alive(self) -> int:
        return 0

    def busy(self) -> int:
        return 0

    def queued(self) -> int:
        return 0

    def isolation(self) -> dict | None:
        return None

    def close(self, grace: float = 10.0) -> None:
        pass


def next_slot_cost(n: int) -> dict[str, float]:
    """Microseconds per next-slot call, for each kind of schedule; every call asks about
    an instant of its own (as fires do), so no answer is reused."""
    rng = random.Random(3)
    anchors = [NOW - rng.uniform(0, 86400) for _ in range(n)]
    zones = [ZoneInfo(ZONES[i % len(ZONES)]) for i in range(n)]
    result = {}
    for kind, text in KINDS.items():
        schedules = [parse_interval(text(rng, i), tz=zones[i]) for i in range(n)]
        rounds = []
        for r in range(3):
            began = time.perf_counter()
            for i, (schedule, anchor) in enumerate(zip(schedules, anchors)):
                schedule.next_slot(anchor, NOW + r * n + i)
            rounds.append((time.perf_counter() - began) / n * 1e6)
        result[kind] = statistics.median(rounds)
    return result


def _fill(db: Path, n: int, interval: Callable[[int], str]) -> None:
    rng = random.Random(5)
    now = time.time()
    store = Store(db)
    try:
        store._db.execute("BEGIN")
        for i in range(n):
            text, zone = interval(i), ZONES[i % len(ZONES)]
            spec = TaskSpec(task_type=TaskType.COMMAND, interval=text, command="true", timezone=zone)
            # Created 10 to 59 minutes less than an hour ago: an hourly interval's first slot
            # is still ahead when the benchmark starts the scheduler.
            anchor = round(now - 3600 + rng.uniform(600, 3540), 3)
            # As a server leaves them: checkpoints at its last start (none has fired since).
            store.save_task(Task(task_id=f"task-{i:06d}", spec=spec,
                                 schedule=parse_interval(text, tz=ZoneInfo(zone)),
                                 created_at=anchor, updated_at=anchor, anchor=anchor,
                                 checkpoint=round(now - 60, 3)))
        store._db.execute("COMMIT")
        store.set_running(True)
    finally:
        store.close()


def startup_seconds(base: Path, n: int, name: str,
                    interval: Callable[[int], str]) -> tuple[float, float]:
    """Seconds ``Scheduler.open()`` takes over a store of ``n`` tasks, and seconds until
    every task is planned (a fresh process's parse cache: cleared first)."""
    db = base / f"{name}.db"
    _fill(db, n, interval)
    grammar._parse_text.cache_clear()
    gc.collect()  # the previous mix's scheduler is garbage: a fresh process has none
    base_dir = base / "work"
    base_dir.mkdir(exist_ok=True)
    policy = default_policy(base_dir=base_dir)
    scheduler = Scheduler(Store(db), _NullExecutor(), lambda: policy, dispatcher=Dispatcher())
    began = time.perf_counter()
    scheduler.open()
    took = time.perf_counter() - began
    assert scheduler.wait_planned(timeout=600), "the backlog was not worked off"
    all_planned = time.perf_counter() - began
    planned = sum(1 for task in scheduler.tasks() if task.next_run is not None)
    scheduler.close(grace=0)
    assert planned == n, f"{planned} of {n} tasks planned"
    return took, all_planned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks (a smoke test)")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else args.tasks

    print(f"1. next slot, {n:,} tasks (microseconds per call, lower is better)")
    print(f"{'schedule':40} {'us/call':>9} {'all tasks, s':>13}")
    for kind, micros in next_slot_cost(n).items():
        print(f"{kind:40} {micros:9.1f} {micros * n / 1e6:13.2f}")

    mixes = {
        "intervals": lambda i: "every 1 hour",
        "cron, 1,000 distinct": lambda i: _distinct_cron(i % 1000),
        "cron, all distinct": _distinct_cron,
    }
    print(f"\n2. start-up, {n:,} stored tasks (seconds; target: open() < {STARTUP_TARGET:g} s)")
    print(f"{'mix':40} {'open()':>9} {'all planned':>12} {'':>13}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-calendar-") as tmp:
        for name, interval in mixes.items():
            took, all_planned = startup_seconds(Path(tmp), n, name.replace(" ", "_").replace(",", ""),
                                                interval)
            verdict = "ok" if took < STARTUP_TARGET else "OVER TARGET"
            failed |= took >= STARTUP_TARGET and not args.quick
            print(f"{name:40} {took:9.2f} {all_planned:12.2f} {verdict:>13}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
