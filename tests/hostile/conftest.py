"""Fixtures for the hostile-task suite: a server laid out like the default (policy and data
directory inside the allowed directory), tight limits, no network, and a /health prober.

Besides the fully confined server, ``without(*layers)`` gives a server started with those
isolation layers switched off (``TASK_SCHEDULER_DISABLE_LAYERS``), so a test can show that
an attack's outcome changes when the layer that stops it is missing. Those servers are
started on first use and shared by the whole suite.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import psutil
import pytest
import requests

from sandbox.isolation import DISABLE_VARIABLE

from ..helpers import ROOT, Server, wait_until

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
  minimum: {minimum}
"""

CANARY = "canary-" + uuid.uuid4().hex


class HostileServer(Server):
    """The default layout: ``policies/allowed.yaml`` and ``data/`` inside the workspace
(``data/`` beside it where mount namespaces are switched off, unless ``data_inside``).

    ``disabled`` isolation layers are switched off in the server's environment; such a
    server's policy asks for no more than ``process``, or it would reject every run. The
    server's environment holds ``CANARY``, which no run may see.
    """

    def __init__(self, base, *, disabled: tuple[str, ...] = (), data_inside: bool | None = None,
                 **kwargs):
        super().__init__(base, **kwargs)
        self.disabled = disabled
        self.canary = CANARY
        (self.workspace / "policies").mkdir(exist_ok=True)
        self.policy_path = self.workspace / "policies" / "allowed.yaml"
        self.policy_path.write_text(HOSTILE_POLICY.format(
            workspace=self.workspace, minimum="process" if disabled else "full"))
        # Without mount namespaces nothing could hide a data directory inside the workspace,
        # so the server refuses such runs: those servers keep their data beside it.
        if data_inside is None:
            data_inside = "namespaces" not in disabled
        self.data_dir = (self.workspace if data_inside else base) / "data"
        self.args[self.args.index("--policy") + 1] = str(self.policy_path)
        self.args[self.args.index("--data-dir") + 1] = str(self.data_dir)

    def start(self) -> "HostileServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
        env["HOSTILE_SECRET_CANARY"] = CANARY
        if self.disabled:
            env[DISABLE_VARIABLE] = ",".join(self.disabled)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        wait_until(self._healthy, timeout=30, message=f"server on port {self.port}")
        wait_until(lambda: self.post("status")["isolation"], message="isolation report")
        return self

    def status(self) -> dict:
        return self.post("status")

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


class Attacker:
    """Runs one hostile task on ``server``: creates it, runs it now, removes it, and returns
    its final record. Also checks that /health stayed prompt and that no process of the
    run survives it."""

    def __init__(self, server: HostileServer):
        self.server = server
        self.cleanup_seconds = 0.0
        self.slowest_health = 0.0

    def __call__(self, task_id: str, *, wait: float = 60, **fields) -> dict:
        server = self.server
        server.post("create", task_id=task_id, interval="every 1 hour", **fields)
        try:
            with HealthProbe(server.url) as probe:
                record = server.run_now(task_id, timeout=wait)
                ended = time.monotonic()
                self._check_nothing_survives(task_id)
                self.cleanup_seconds = time.monotonic() - ended
        finally:
            server.post("remove", task_id=task_id)
        assert probe.failures == 0 and probe.slowest < 1.0, (probe.failures, probe.slowest)
        self.slowest_health = probe.slowest
        return record

    def _check_nothing_survives(self, task_id: str) -> None:
        server = self.server
        try:
            wait_until(lambda: not server.job_processes(), timeout=1.0,
                       message=f"no process of {task_id} to survive the run")
        except AssertionError:
            survivors = []
            for pid in server.job_processes():
                try:
                    survivors.append((pid, psutil.Process(pid).cmdline()))
                except psutil.Error:
                    pass
            raise AssertionError(f"processes survived {task_id}: {survivors}") from None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    server = HostileServer(tmp_path_factory.mktemp("hostile"), workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def attack(hostile) -> Attacker:
    return Attacker(hostile)


@pytest.fixture(scope="package")
def layer_servers(tmp_path_factory):
    """Servers with some isolation layers switched off, keyed by the set of those layers;
    each is started the first time a test asks for it and stopped when the suite ends."""
    servers: dict[frozenset[str], HostileServer] = {}

    def get(layers: frozenset[str]) -> HostileServer:
        if layers not in servers:
            name = "without-" + "-".join(sorted(layers))
            servers[layers] = HostileServer(tmp_path_factory.mktemp(name), workers=2,
                                            disabled=tuple(sorted(layers))).start()
        return servers[layers]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture
def without(layer_servers):
    """``without("seccomp")``: an :class:`Attacker` on a server with those layers off."""
    def get(*layers: str) -> Attacker:
        return Attacker(layer_servers(frozenset(layers)))
    return get
