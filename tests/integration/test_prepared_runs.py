"""Prepared runs in a real worker pool: released at their start time, discarded with nothing
left behind, re-checked when the policy changes, re-prepared when their worker dies, and
never more of them in flight than the policy's bound.

These drive :class:`sandbox.pool.WorkerPool` directly (real worker processes, real confined
children); the server-level behaviour (remove, pause, stop) is in test_prepared_http.py.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from policies import Policy, TaskType
from policies.loader import load_policy
from sandbox import cgroups
from sandbox.pool import WorkerPool
from sandbox.types import Outcome, RunRequest, RunResult
from tests.helpers import wait_until

POLICY = """\
version: 1
allowed_directories: [{root}]
environment:
  set: {{GREETING: "hello"}}
rate_limits:
  runs_per_minute: 100000
"""


class Recorder:
    """What the pool reported, per run, and the most runs it ever had in flight."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool
        self.started: dict[int, float] = {}
        self.results: dict[int, RunResult] = {}
        self.discarded: list[int] = []
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()

    def on_started(self, run_id: int, started_at: float, pid: int) -> None:
        with self.lock:
            self.started[run_id] = started_at
            self.running += 1
            self.most_running = max(self.most_running, self.running)

    def on_result(self, result: RunResult) -> None:
        with self.lock:
            if result.run_id in self.started:
                self.running -= 1
            self.results[result.run_id] = result

    def on_discarded(self, run_id: int) -> None:
        with self.lock:
            self.discarded.append(run_id)

    def result(self, run_id: int, timeout: float = 15.0) -> RunResult:
        return wait_until(lambda: self.results.get(run_id), timeout=timeout,
                          message=f"the result of run {run_id}")


@pytest.fixture
def policy(tmp_path) -> Policy:
    path = tmp_path / "allowed.yaml"
    path.write_text(POLICY.format(root=tmp_path))
    return dataclasses.replace(load_policy(path, base_dir=tmp_path), revision=1)


@pytest.fixture
def make_pool():
    pools: list[tuple[WorkerPool, Recorder]] = []

    def make(size: int = 1) -> tuple[WorkerPool, Recorder]:
        pool = WorkerPool(size, hang_grace=5.0)
        recorder = Recorder(pool)
        pool.open(recorder.on_started, recorder.on_result, recorder.on_discarded)
        pools.append((pool, recorder))
        return pool, recorder

    yield make
    for pool, _ in pools:
        family = {p.pid for seat in pool._seats for p in _tree(_process(seat.process.pid))}
        pool.close(2)
        wait_until(lambda: not [pid for pid in family if _alive(pid)], timeout=5,
                   message="every process of the pool to be gone")


def request(policy: Policy, run_id: int, command: str, *, at: float | None = None,
            timeout: int | None = None) -> RunRequest:
    return RunRequest(run_id=run_id, task_id=f"task-{run_id}", task_type=TaskType.COMMAND,
                      policy=policy, command=command, file_path=None, custom_script=None,
                      working_dir=None, env={}, timeout=timeout, scheduled_for=at)


def _worker(pool: WorkerPool) -> psutil.Process:
    """The one worker of ``pool``, once it has said hello: it has then reaped the child it
    probes namespaces with, so every child it has from then on is a run's."""
    assert pool.size == 1
    wait_until(lambda: pool.alive() == 1 and pool.isolation() is not None,
               message="the worker to start")
    return psutil.Process(pool._seats[0].process.pid)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _tree(proc: psutil.Process | None) -> list[psutil.Process]:
    if proc is None:
        return []
    try:
        return [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _prepared(worker: psutil.Process, count: int = 1) -> list[int]:
    """The pids of the children ``worker`` holds, once there are ``count`` of them."""
    return wait_until(lambda: [p.pid for p in worker.children()][:count]
                      if len(worker.children()) >= count else None,
                      message=f"{count} prepared process(es)")


def _park_toucher(pool: WorkerPool, policy: Policy, run_id: int):
    """A run that would create a marker file, prepared for half a minute from now: the
    marker, the worker holding it and its prepared child's pid."""
    marker = Path(policy.allowed_directories[0]) / "ran"
    pool.submit(request(policy, run_id, f"touch {marker}", at=time.time() + 30))
    worker = _worker(pool)
    (child,) = _prepared(worker)
    return marker, worker, child


def _run_dirs(run_id: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"task-worker-*/run-{run_id}-*"))


def _run_groups(worker_pid: int, run_id: int) -> list[Path]:
    support = cgroups.detect()
    name = cgroups.run_group_name(worker_pid, run_id)
    return [base / name for base in support.bases if (base / name).exists()]


def test_a_prepared_run_starts_at_its_time_not_before(make_pool, policy):
    pool, seen = make_pool()
    slot = time.time() + 1.5
    pool.submit(request(policy, 1, "date +%s.%N", at=slot))
    worker = _worker(pool)
    _prepared(worker)
    assert 1 not in seen.started, "the job must not start before its time"
    result = seen.result(1)
    assert result.status is Outcome.SUCCEEDED, result
    job_clock = float(result.stdout.strip())
    assert job_clock >= slot and result.started_at >= slot
    assert result.started_at - slot < 1.0, "released long after its time"


def test_a_run_without_a_start_time_starts_at_once(make_pool, policy):
    pool, seen = make_pool()
    asked = time.time()
    pool.submit(request(policy, 1, "echo now"))
    result = seen.result(1)
    assert result.status is Outcome.SUCCEEDED and result.stdout == "now\n"
    assert result.started_at >= asked


def test_a_discarded_run_leaves_nothing_behind(make_pool, policy):
    pool, seen = make_pool()
    marker, worker, child = _park_toucher(pool, policy, 7)
    assert _run_dirs(7) and (_run_groups(worker.pid, 7) or not cgroups.detect().bases)
    pool.discard(7)
    wait_until(lambda: seen.discarded == [7], message="the discard to be reported")
    wait_until(lambda: not _alive(child), timeout=5, message="the prepared process to end")
    assert not worker.children()
    assert not _run_dirs(7) and not _run_groups(worker.pid, 7)
    assert 7 not in seen.started and 7 not in seen.results and not marker.exists()


def test_discarding_a_released_run_changes_nothing(make_pool, policy):
    pool, seen = make_pool()
    pool.submit(request(policy, 3, "sleep 0.3; echo done"))
    wait_until(lambda: 3 in seen.started, message="the run to start")
    pool.discard(3)
    assert seen.result(3).status is Outcome.SUCCEEDED
    assert seen.discarded == []


def test_a_policy_that_now_forbids_the_run_rejects_it_unstarted(make_pool, policy):
    pool, seen = make_pool()
    marker, _, child = _park_toucher(pool, policy, 4)
    stricter = dataclasses.replace(policy, task_types=frozenset({TaskType.SCRIPT}), revision=2)
    pool.revise(stricter)
    result = seen.result(4)
    assert result.status is Outcome.REJECTED and "command" in result.reason
    assert result.started_at is None and 4 not in seen.started
    wait_until(lambda: not _alive(child), timeout=5, message="the prepared process to end")
    assert not marker.exists() and not _run_dirs(4)


def test_a_policy_that_changes_the_launch_prepares_the_run_again(make_pool, policy):
    pool, seen = make_pool()
    pool.submit(request(policy, 5, 'echo "$GREETING"', at=time.time() + 1.5))
    worker = _worker(pool)
    (first,) = _prepared(worker)
    changed = dataclasses.replace(
        policy, environment=dataclasses.replace(policy.environment, set={"GREETING": "bye"}),
        revision=2)
    pool.revise(changed)
    result = seen.result(5)
    assert result.status is Outcome.SUCCEEDED and result.stdout == "bye\n"
    assert not _alive(first)


def test_an_older_policy_does_not_undo_a_newer_one(make_pool, policy):
    pool, seen = make_pool()
    newer = dataclasses.replace(
        policy, environment=dataclasses.replace(policy.environment, set={"GREETING": "new"}),
        revision=3)
    pool.revise(newer)
    pool.submit(request(policy, 6, 'echo "$GREETING"'))
    assert seen.result(6).stdout == "new\n"


def test_a_dead_worker_s_prepared_runs_are_prepared_again_and_its_running_run_errs(
        make_pool, policy):
    pool, seen = make_pool()
    pool.submit(request(policy, 10, "sleep 30"))
    wait_until(lambda: 10 in seen.started, message="the long run to start")
    slot = time.time() + 4
    for run_id in (11, 12):
        pool.submit(request(policy, run_id, "date +%s.%N", at=slot))
    worker = _worker(pool)
    _prepared(worker, 3)
    old = {p.pid for p in _tree(worker)} - {worker.pid}
    held = [path for run_id in (10, 11, 12) for path in _run_dirs(run_id)]
    assert len(held) == 3
    os.kill(worker.pid, signal.SIGKILL)
    lost = seen.result(10)
    assert lost.status is Outcome.ERROR and "died" in lost.reason
    wait_until(lambda: not [pid for pid in old if _alive(pid)], timeout=5,
               message="the dead worker's processes to be killed")
    for run_id in (11, 12):
        result = seen.result(run_id)
        assert result.status is Outcome.SUCCEEDED, result
        assert float(result.stdout.strip()) >= slot
    assert not _run_groups(worker.pid, 10) and not _run_groups(worker.pid, 11)
    assert not any(path.exists() for path in held)  # a dead worker removes nothing itself


def test_a_burst_larger_than_the_bound_never_exceeds_it(make_pool, policy):
    bound = 3
    limited = dataclasses.replace(
        policy, rate_limits=dataclasses.replace(policy.rate_limits, max_concurrent_runs=bound))
    pool, seen = make_pool(2)
    ids = list(range(100, 112))
    for run_id in ids:
        pool.submit(request(limited, run_id, "sleep 0.2"))
    held: list[int] = []
    wait_until(lambda: held.append(pool.in_flight()) or len(seen.results) == len(ids),
               timeout=30, interval=0.005, message="every run of the burst to end")
    assert all(seen.results[i].status is Outcome.SUCCEEDED for i in ids)
    assert 1 < seen.most_running <= bound and max(held) <= bound


def test_closing_discards_prepared_runs(make_pool, policy):
    pool, seen = make_pool()
    pool.submit(request(policy, 20, "true", at=time.time() + 60))
    worker = _worker(pool)
    (child,) = _prepared(worker)
    pool.close(1)
    assert seen.discarded == [20] and 20 not in seen.results
    assert not _alive(child) and not _run_dirs(20)
