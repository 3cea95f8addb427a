"""What every benchmark shares: the server under test, processes stopped by PID, statistics,
a store filled directly, and the tables.

A ratio is always ours ÷ the baseline's, both measured in the same run; each metric says
whether lower or higher is better.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import Server, free_port, wait_until  # noqa: E402  (the suite's launcher)

PY = sys.executable  # never a `python3` from PATH: a pyenv shim costs 80+ ms per start
SHELL_TRUE = ["/bin/sh", "-c", "true"]  # what the server runs for a command task "true"

# Limits high enough that the policy never throttles a benchmark.
POLICY = """\
version: 1
allowed_directories: [{workspace}]
limits:
  timeout_seconds: 60
  max_output_kb: 64
rate_limits:
  requests_per_minute: 1000000
  runs_per_minute: 100000
  max_tasks: 1000000
"""


# -- processes ----------------------------------------------------------------------------

def kill_tree(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL each process still alive (psutil checks it is still the same process)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()


def family(pid: int) -> list[psutil.Process]:
    """The process and its descendants (the process first)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@contextlib.contextmanager
def server(base: Path, *, workers: int = 2, args: Sequence[str] = (),
           policy: str = POLICY) -> Iterator[Server]:
    """Our server on a free loopback port with the benchmark policy (``policy``: a variant
    of :data:`POLICY`, with the same ``{workspace}`` placeholder); stopped (SIGTERM, then
    SIGKILL of its whole process tree by PID) whatever happens."""
    base.mkdir(parents=True, exist_ok=True)
    srv = Server(base, workers=workers, extra_args=tuple(args),
                 policy_text=policy.format(workspace=base / "workspace"))
    try:
        srv.start()
        yield srv
    finally:
        stop_server(srv)


def stop_server(srv: Server) -> None:
    if srv.proc is None:
        return
    procs = family(srv.proc.pid)
    try:
        srv.stop(timeout=30)
    except AssertionError as exc:
        print(f"warning: {str(exc)[:300]}", file=sys.stderr)
    finally:
        kill_tree(procs)
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.proc.wait(5)


@contextlib.contextmanager
def child(argv: Sequence[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A baseline process, killed with its descendants by PID on the way out."""
    proc = subprocess.Popen(list(argv), cwd=ROOT, **kwargs)
    try:
        yield proc
    finally:
        procs = family(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        kill_tree(procs)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def rss_mb(procs: Iterable[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def pss_mb(procs: Iterable[psutil.Process]) -> float:
    """Proportional set size of the processes together: each shared page counted once."""
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total / 2**20


def settle(pid: int, timeout: float = 60.0, busy: float = 0.05) -> None:
    """Wait (at most ``timeout`` s) until the process tree uses under ``busy`` of a core:
    a server still working through requests queued by the last load must not count
    against the next one."""
    procs, end = family(pid), time.monotonic() + timeout
    while time.monotonic() < end:
        c0 = cpu_seconds(procs)
        time.sleep(0.25)
        if (cpu_seconds(procs) - c0) / 0.25 < busy:
            return


def sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


# -- statistics ---------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- the store, filled directly -----------------------------------------------------------

def populate(db_path: Path, n: int, *, seed: int = 1, interval: str = "every 1 hour",
             running: bool = True, first_due: tuple[float, float] = (300.0, 3600.0)) -> float:
    """Store ``n`` command tasks with the product's own Store in one transaction, built the
    way Scheduler.create builds them; first slots spread uniformly over ``first_due``
    seconds from now. Returns the seconds it took."""
    from policies import TaskType
    from scheduler.grammar import parse_interval
    from scheduler.models import Task, TaskSpec
    from scheduler.store import Store

    began = time.perf_counter()
    rng = random.Random(seed)
    schedule = parse_interval(interval)
    period = schedule.period_seconds
    now = time.time()
    store = Store(db_path)
    try:
        store._db.execute("BEGIN")
        for i in range(n):
            spec = TaskSpec(task_type=TaskType.COMMAND, interval=interval, command="true")
            anchor = round(now + rng.uniform(*first_due) - period, 3)
            store.save_task(Task(task_id=f"task-{i:06d}", spec=spec, schedule=schedule,
                                 created_at=now, updated_at=now, anchor=anchor,
                                 checkpoint=round(now, 3)))
        store._db.execute("COMMIT")
        store.set_running(running)
    finally:
        store.close()
    return time.perf_counter() - began


def read_runs(db_path: Path, where: str = "1") -> list[sqlite3.Row]:
    """Run records straight from a (stopped) server's store, read-only."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(f"SELECT run_id, task_id, trigger, status, scheduled_for, started_at, "
                          f"finished_at, lateness_ms FROM runs WHERE {where}").fetchall()
    finally:
        db.close()


# -- output -------------------------------------------------------------------------------

def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    v = abs(value)
    return (f"{value:,.0f}" if v >= 100 else f"{value:.1f}" if v >= 10
            else f"{value:.2f}" if v >= 1 else f"{value:.3f}")


def ratio(ours, base) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(base, (int, float)):
        return "—"
    if base == 0:
        return "—" if ours == 0 else "∞"
    r = ours / base
    return f"×{r:.3g}" if r < 100 else f"×{r:,.0f}"


def table(title: str, baselines: Sequence[str], rows: Sequence[tuple], notes: Sequence[str] = ()) -> str:
    """A markdown table: metric | ours | baseline | ratio (a pair of columns per baseline).
    Each row is (metric, ours, base_1, ..., base_k); a None baseline prints as —."""
    head = ["metric", "ours"]
    for name in baselines:
        head += [name, "ratio"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for metric, ours, *bases in rows:
        cells = [metric, fmt(ours)]
        for base in bases:
            cells += [fmt(base), ratio(ours, base)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def revision() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")


def quick_note(runs: int) -> str:
    """The note of a table whose runs all ran at once, in quick mode."""
    return f"QUICK MODE: all {runs} runs at once on 2 cores; the figures mean nothing."
