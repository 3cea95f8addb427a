"""Fixtures for the hostile-task suite: a server laid out like the default (policy and data
directory inside the allowed directory), tight limits, no network, and a /health prober."""

from __future__ import annotations

import os
import threading
import time
import uuid

import psutil
import pytest
import requests

from ..helpers import Server, wait_until

HOSTILE_POLICY = """\
version: 1
allowed_directories: [{workspace}]
network: false
limits:
  timeout_seconds: 20
  memory_mb: 128
  cpu_seconds: 3
  max_processes: 32
  max_output_kb: 256
rate_limits:
  runs_per_minute: 100000
  requests_per_minute: 1000000
  max_tasks: 100000
isolation:
  minimum: full
"""


class HostileServer(Server):
    """The default layout: ``policies/allowed.yaml`` and ``data/`` inside the workspace."""

    def __init__(self, base, **kwargs):
        super().__init__(base, **kwargs)
        (self.workspace / "policies").mkdir(exist_ok=True)
        self.policy_path = self.workspace / "policies" / "allowed.yaml"
        self.policy_path.write_text(HOSTILE_POLICY.format(workspace=self.workspace))
        self.data_dir = self.workspace / "data"
        self.args[self.args.index("--policy") + 1] = str(self.policy_path)
        self.args[self.args.index("--data-dir") + 1] = str(self.data_dir)

    def job_processes(self) -> list[int]:
        """Everything below the server that is not a worker (nor multiprocessing's tracker)."""
        workers = {p.pid for p in psutil.Process(self.proc.pid).children()}
        found = []
        for proc in self.descendants():
            if proc.pid in workers:
                continue
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
            except psutil.NoSuchProcess:
                continue
        return found


class HealthProbe:
    """Asks /health every 20 ms in a thread; remembers the slowest answer."""

    def __init__(self, url: str):
        self.url = url + "/health"
        self.slowest = 0.0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(0.02):
            began = time.monotonic()
            try:
                ok = session.get(self.url, timeout=5).ok
            except requests.RequestException:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.failures += not ok

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


CANARY = "canary-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    os.environ["HOSTILE_SECRET_CANARY"] = CANARY
    try:
        server = HostileServer(tmp_path_factory.mktemp("hostile"), workers=2).start()
    finally:
        del os.environ["HOSTILE_SECRET_CANARY"]
    server.canary = CANARY
    wait_until(lambda: server.post("status")["isolation"], message="isolation report")
    yield server
    server.stop()


@pytest.fixture
def attack(hostile):
    """Run one hostile task: create it, run it now, return its final record. Also checks
    that /health stayed prompt and that no process of the run survives it."""
    created: list[str] = []

    def run(task_id: str, *, wait: float = 60, **fields) -> dict:
        hostile.post("create", task_id=task_id, interval="every 1 hour", **fields)
        created.append(task_id)
        with HealthProbe(hostile.url) as probe:
            record = hostile.run_now(task_id, timeout=wait)
            ended = time.monotonic()
            try:
                wait_until(lambda: not hostile.job_processes(), timeout=1.0,
                           message=f"no process of {task_id} to survive the run")
            except AssertionError:
                survivors = []
                for pid in hostile.job_processes():
                    try:
                        survivors.append((pid, psutil.Process(pid).cmdline()))
                    except psutil.Error:
                        pass
                raise AssertionError(f"processes survived {task_id}: {survivors}") from None
            run.cleanup_seconds = time.monotonic() - ended
        assert probe.failures == 0 and probe.slowest < 1.0, (probe.failures, probe.slowest)
        run.slowest_health = probe.slowest
        return record

    yield run
    for task_id in created:
        hostile.post("remove", task_id=task_id)
