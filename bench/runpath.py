"""5. The run path: what one confined run costs, step by step, from its due time to its
recorded result, with every isolation layer on and with each one switched off.

A harness process (``python -m bench.runpath harness ...``) assembles the server's own
scheduling stack without HTTP: the product's :class:`~scheduler.store.Store`,
:class:`~policies.source.PolicySource`, :class:`~scheduler.service.Scheduler` (with its
real :class:`~scheduler.dispatcher.Dispatcher` and :class:`~scheduler.launcher.Launcher`)
and :class:`~sandbox.pool.WorkerPool` with one worker. Nothing in the product is changed
to measure it: the harness wraps the product's own functions, in its own processes only,
with probes that take a ``CLOCK_MONOTONIC`` timestamp on the way in and out:

* in the harness (the server's side): the dispatcher's fire callback, every store write,
  the pool's ``submit``, and the launcher's ``on_started``/``on_result`` callbacks;
* in the worker (the pool spawns the harness's worker entry, which installs the probes and
  then calls the product's ``worker_main``): the request arriving on the pipe,
  ``runner.execute``, ``plan_run`` and the policy re-check, the cgroup creation
  (``RunCgroup``), ``Confinement.spawn`` and ``Popen``, the first byte of output, the
  finish, the cgroup removal and the result leaving on the pipe;
* in the job's child between fork and exec (the probes are inherited through the fork,
  and write their timestamps to a pipe that the child's ``close_fds`` closes before exec):
  the cgroup join, ``unshare`` and the mounts, the PID namespace's init fork, the
  capability bounding set, Landlock, seccomp and the final capability drop.

The due time is wall clock (as the scheduler's slots are); the fire callback takes the
wall clock and the monotonic clock together, which places the due time on the monotonic
clock with microsecond precision. A probe costs about a microsecond. The worker also takes
its own and its reaped children's CPU time (``getrusage``) as a request arrives and as its
result leaves, and the harness its own over all runs: the CPU a run costs on each side.

Each configuration is a fresh harness process: ``full`` (whatever this machine offers),
then one layer switched off at a time by the worker's detected isolation, as the
``TASK_SCHEDULER_DISABLE_LAYERS`` variable names them (``cgroups``, ``namespaces``,
``landlock``, ``seccomp``, ``capabilities``), and ``none`` (all five off: the worker
starts the job with a plain ``Popen``, no ``preexec_fn``). The job is
``/bin/sh -c 'echo ok'``: the shell's built-in ``echo`` gives a first byte without a second
exec. Runs come one at a time (10 tasks ``every 1 second``, slots 100 ms apart), so every
figure is one run alone on a warm worker; runs that found the worker still busy with the
previous one are counted in the notes. A last configuration, ``full, bursts of 10``, puts
all ten slots on the same second: the runs queue behind the one worker (the hand-off then
includes the wait), and the steps show what a run costs when it follows another closely.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import pickle
import resource
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/runpath.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import common  # noqa: E402
from .common import PY, median, pct  # noqa: E402

LAYERS_ENV = "TASK_SCHEDULER_DISABLE_LAYERS"
MARKS_ENV = "BENCH_RUNPATH_MARKS"
LAYERS = ("cgroups", "namespaces", "landlock", "seccomp", "capabilities")
SPACING = 0.1  # seconds between two tasks' slots: each run is alone on the worker
# name → (layers switched off, seconds between two tasks' slots). The burst (all ten tasks
# due on the same second, queued behind the one worker) shows what a step costs when runs
# follow each other closely: some kernel costs are paid once per burst, not per run.
CONFIGS = {"full": ((), SPACING), **{f"no {name}": ((name,), SPACING) for name in LAYERS},
           "none": (LAYERS, SPACING), "full, bursts of 10": ((), 0.0)}
QUICK_CONFIGS = ("full", "none")
COMMAND = "echo ok"
TASKS = 10
LEAD = 1.0  # seconds between the scheduler starting and the first slot

POLICY = """\
version: 1
allowed_directories: [{workspace}]
limits:
  timeout_seconds: 30
  max_output_kb: 64
rate_limits:
  requests_per_minute: 1000000
  runs_per_minute: 100000
  max_tasks: 1000
"""


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def cpu_ns() -> tuple[int, int]:
    """CPU time (user + system, ns) of this process, and of its reaped descendants."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return (round((own.ru_utime + own.ru_stime) * 1e9),
            round((children.ru_utime + children.ru_stime) * 1e9))


# -- the steps ----------------------------------------------------------------------------
# (name, side, start mark, end mark, on the critical path due → exec). A step whose marks
# are missing in a configuration (a layer switched off) is not part of it.

STEPS = (
    ("dispatch: due time → fire callback", "server", "due", "fire", True),
    ("store: insert the run row", "server", "insert0", "insert1", True),
    ("launcher: overlap and rate checks, request", "server", None, None, True),
    ("hand-off: submit → supervisor thread sends", "server", "submit", "send", True),
    ("hand-off: pipe send → worker has the request", "worker", "send", "recv", True),
    ("run directory (mkdtemp)", "worker", "execute0", "plan0", True),
    ("plan and policy checks (plan_run)", "worker", "plan0", "plan1", True),
    ("isolation and protected-path checks", "worker", "check0", "check1", True),
    ("cgroup create (RunCgroup: mkdir, limits)", "worker", "cgroup0", "cgroup1", True),
    ("rest of Confiner.prepare (error pipe)", "worker", None, None, True),
    ("unshare the PID namespace (worker)", "worker", "unshare_pid0", "unshare_pid1", True),
    ("Popen set-up + fork", "worker", "popen0", "preexec0", True),
    ("child: join the cgroup (v2)", "child", "join_v20", "join_v21", True),
    ("child: join the memory cgroup (v1)", "child", "join_memory0", "join_memory1", True),
    ("child: join the pids cgroup (v1)", "child", "join_pids0", "join_pids1", True),
    ("child: join the unified cgroup (v2 tree, for cgroup.kill)", "child",
     "join_unified0", "join_unified1", True),
    ("child: OOM score", "child", "oom0", "oom1", True),
    ("child: unshare mount, IPC, network ns", "child", "unshare0", "unshare1", True),
    ("child: mounts (/proc, tmpfs, hide, read-only binds)", "child", "unshare1", "ns1", True),
    ("child: PID namespace init fork", "child", "init0", "init1", True),
    ("child: capability bounding set", "child", "bound0", "bound1", True),
    ("child: no_new_privs", "child", "nnp0", "nnp1", True),
    ("child: Landlock ruleset", "child", "landlock0", "landlock1", True),
    ("child: seccomp load", "child", "seccomp0", "seccomp1", True),
    ("child: capability drop", "child", "caps0", "caps1", True),
    ("child: rest (rlimits, chdir, Python between the steps)", "child", None, None, True),
    ("close fds + exec (→ Popen returns)", "worker", "preexec1", "popen1", True),
    ("fork + exec, no preexec (→ Popen returns)", "worker", "popen0", "popen1", True),
    ("store: progress update (after submit)", "server", "progress0", "progress1", False),
    ("rlimits from outside (prlimit, no preexec only)", "worker", "prlimit0", "prlimit1", False),
    ("started: pipe → supervisor has it", "server", "started", "started_pipe", False),
    ("store: started update", "server", "mark0", "mark1", False),
    ("exec → first byte of output read", "worker", "popen1", "first", False),
    ("exec → exit noticed (the job's own run)", "worker", "popen1", "finish0", False),
    ("finish: kill group, wait, drain", "worker", "finish0", "finish1", False),
    ("cgroup kill + removal", "worker", "close0", "close1", False),
    ("result: execute returns → sent", "worker", "execute1", "done", False),
    ("result: pipe → supervisor has it", "server", "done", "result_pipe", False),
    ("store: finish update", "server", "finish_run0", "finish_run1", False),
    ("store: prune the task's history", "server", "prune0", "prune1", False),
)

TOTALS = (
    ("due → exec (Popen returned): the critical path", "due", "popen1"),
    ("due → first byte of output read", "due", "first"),
    ("due → result recorded", "due", "recorded"),
    ("worker busy per run (request in → result out)", "recv", "done"),
)

CPU = (("CPU of the worker per run", "cpu_worker"),
       ("CPU of the run's processes (init, job)", "cpu_children"))


def _span(marks: dict, start: str, end: str) -> float | None:
    if start in marks and end in marks:
        return (marks[end] - marks[start]) / 1e6
    return None


def steps_of(marks: dict) -> dict[str, float]:
    """One run's marks → milliseconds per step (and per total)."""
    out: dict[str, float] = {}
    confined = "preexec0" in marks
    for name, _, start, end, _ in STEPS:
        if start is None:
            continue
        if name.startswith("fork + exec, no preexec") and confined:
            continue
        if name.startswith("Popen set-up") and not confined:
            continue
        value = _span(marks, start, end)
        if value is not None:
            out[name] = value
    fire = _span(marks, "fire", "submit")
    if fire is not None:
        out["launcher: overlap and rate checks, request"] = fire - out.get("store: insert the run row", 0)
    prepare = _span(marks, "prepare0", "prepare1")
    if prepare is not None:
        out["rest of Confiner.prepare (error pipe)"] = prepare - out.get(
            "cgroup create (RunCgroup: mkdir, limits)", 0)
    child = _span(marks, "preexec0", "preexec1")
    if child is not None:
        measured = sum(v for k, v in out.items() if k.startswith("child: "))
        out["child: rest (rlimits, chdir, Python between the steps)"] = child - measured
    for name, start, end in TOTALS:
        value = _span(marks, start, end)
        if value is not None:
            out[name] = value
    for name, key in CPU:
        if key in marks:
            out[name] = marks[key] / 1e6
    return out


# -- the harness (its own process per configuration) --------------------------------------

class _Probes:
    """The server side's marks, per run id. The dispatcher thread and the pool's
    supervisor thread each work on one run at a time (kept thread-locally)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs: dict[int, dict] = {}
        self.local = threading.local()
        self.done = threading.Condition()
        self.recorded = 0
        self.request = None

    def ctx(self) -> dict | None:
        return getattr(self.local, "ctx", None)

    def mark(self, label: str) -> None:
        ctx = self.ctx()
        if ctx is not None:
            ctx[label] = now_ns()

    def for_run(self, run_id: int) -> dict:
        with self.lock:
            return self.runs.setdefault(run_id, {})

    def timed(self, label: str, func):
        def wrapper(*args, **kwargs):
            self.mark(f"{label}0")
            try:
                return func(*args, **kwargs)
            finally:
                self.mark(f"{label}1")
        return wrapper


def _instrument_server(scheduler, store, pool, probes: _Probes) -> None:
    """Wrap the fire callback, the store writes, the pool's submit and seats' pipes, and the
    launcher's callbacks (instance attributes, set before ``scheduler.open()`` hands the
    callbacks out)."""
    fire, launcher = scheduler._fire, scheduler._launcher
    on_started, on_result = launcher.on_started, launcher.on_result
    insert_run = store.insert_run

    def timed_fire(task_id: str, slot: float):
        wall, mono = time.time(), now_ns()
        probes.local.ctx = {"due": mono - round((wall - slot) * 1e9), "fire": mono}
        try:
            return fire(task_id, slot)
        finally:
            probes.local.ctx = None

    def timed_insert(*args, **kwargs):
        probes.mark("insert0")
        run_id = insert_run(*args, **kwargs)
        probes.mark("insert1")
        if run_id is not None:  # from now on the marks belong to this run
            run = probes.for_run(run_id)
            run.update(probes.ctx())
            probes.local.ctx = run
        return run_id

    def timed_started(run_id: int, started_at: float, pid: int) -> None:
        probes.local.ctx = probes.for_run(run_id)
        try:
            on_started(run_id, started_at, pid)
        finally:
            probes.local.ctx = None

    def timed_result(result) -> None:
        run = probes.local.ctx = probes.for_run(result.run_id)
        try:
            on_result(result)
        finally:
            run["recorded"] = now_ns()
            run["status"] = result.status.value
            probes.local.ctx = None
            with probes.done:
                probes.recorded += 1
                probes.done.notify_all()

    scheduler._fire = timed_fire
    store.insert_run = timed_insert
    store.save_progress = probes.timed("progress", store.save_progress)
    store.mark_running = probes.timed("mark", store.mark_running)
    store.finish_run = probes.timed("finish_run", store.finish_run)
    store.prune_task = probes.timed("prune", store.prune_task)
    spawn = pool._spawn

    def spawn_probed():
        seat = spawn()
        seat.conn = _ServerConn(seat.conn, probes)
        return seat

    pool._spawn = spawn_probed
    submit = pool.submit

    def timed_submit(request) -> None:  # the hand-off starts when submit is entered
        probes.mark("submit")
        submit(request)
        probes.request = request

    pool.submit = timed_submit
    launcher.on_started = timed_started
    launcher.on_result = timed_result


class _ServerConn:
    """The pool's end of a worker's pipe, with marks when a request leaves and a report
    arrives (in the supervisor thread)."""

    def __init__(self, conn, probes: _Probes):
        self._conn, self._probes = conn, probes

    def send(self, message) -> None:
        run = self._probes.for_run(message[1].run_id) if message[0] == "run" else None
        if run is not None:
            run["send"] = now_ns()
        self._conn.send(message)

    def recv(self):
        message = self._conn.recv()
        if message[0] in ("started", "done"):
            run_id = message[1] if message[0] == "started" else message[1].run_id
            label = "started_pipe" if message[0] == "started" else "result_pipe"
            self._probes.for_run(run_id)[label] = now_ns()
        return message

    def poll(self, timeout: float = 0.0) -> bool:
        return self._conn.poll(timeout)

    def fileno(self) -> int:
        return self._conn.fileno()

    def close(self) -> None:
        self._conn.close()


def harness(base: Path, runs: int, out: Path, spacing: float = SPACING) -> None:
    """Run ``runs`` scheduled runs through the real stack (TASKS tasks every second, their
    slots ``spacing`` seconds apart); write every run's marks to ``out``."""
    import sandbox.pool
    from policies import TaskType
    from policies.source import PolicySource
    from sandbox.types import ProtectedPaths
    from scheduler.models import TaskSpec
    from scheduler.service import Scheduler, SchedulerConfig
    from scheduler.store import Store

    workspace, data, marks_dir = base / "workspace", base / "data", base / "marks"
    for path in (workspace, data, marks_dir):
        path.mkdir(parents=True, exist_ok=True)
    policy_path = base / "allowed.yaml"
    policy_path.write_text(POLICY.format(workspace=json.dumps(str(workspace))))  # a quoted YAML scalar
    os.environ[MARKS_ENV] = str(marks_dir)
    # The pool spawns this entry instead; by its importable name, not as __main__'s.
    sandbox.pool.worker_main = importlib.import_module("bench.runpath").instrumented_worker

    policy = PolicySource(policy_path, base_dir=base)
    store = Store(data / "scheduler.db")
    pool = sandbox.pool.WorkerPool(1, protected=ProtectedPaths.for_server(
        data_dir=data, policy_file=policy_path))
    scheduler = Scheduler(store, pool, policy.current, config=SchedulerConfig(shutdown_grace=5))
    probes = _Probes()
    _instrument_server(scheduler, store, pool, probes)
    scheduler.open()
    policy.start_watching()
    try:
        common.wait_until(lambda: pool.isolation() is not None, timeout=30,
                          message="the worker to start")
        first = time.time() + LEAD
        for i in range(TASKS):
            scheduler.create(f"run-{i}", TaskSpec(task_type=TaskType.COMMAND, interval="every 1 second",
                                                  command=COMMAND, start_at=first + i * spacing))
        cpu_before = cpu_ns()[0]
        scheduler.start()
        deadline = time.monotonic() + LEAD + runs / TASKS * 3 + 30
        with probes.done:
            while probes.recorded < runs and time.monotonic() < deadline:
                probes.done.wait(1.0)
        scheduler.stop()
        server_cpu = (cpu_ns()[0] - cpu_before) / max(probes.recorded, 1) / 1e6
        isolation = pool.isolation()
    finally:
        policy.stop_watching()
        scheduler.close(5)
    worker_marks: dict[int, dict] = {}
    for path in marks_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            worker_marks[record["run_id"]] = record["marks"]
    records = []
    for run_id in sorted(probes.runs):
        server = probes.runs[run_id]
        if "recorded" not in server or run_id not in worker_marks:
            continue
        records.append({"run_id": run_id, "status": server.pop("status"),
                        "marks": {**worker_marks[run_id], **server}})
    out.write_text(json.dumps({"isolation": isolation, "runs": records[:runs], "server_cpu": server_cpu,
                               "request": _pickle_cost(probes.request)}))


def _pickle_cost(request) -> dict | None:
    """Size of one pickled RunRequest (with its Policy) and the median µs to pickle and
    unpickle it, measured after the runs."""
    if request is None:
        return None
    dumps, loads = [], []
    for _ in range(200):
        t0 = now_ns()
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        t1 = now_ns()
        pickle.loads(data)
        dumps.append((t1 - t0) / 1e3)
        loads.append((now_ns() - t1) / 1e3)
    return {"bytes": len(data), "dumps_us": median(dumps), "loads_us": median(loads)}


# -- the worker's probes (in the spawned worker process) ----------------------------------

class _WorkerProbes:
    """Marks of the worker and of the job's child. The child writes ``label ns`` lines to
    a pipe (each line one atomic write), drained by the worker after each run."""

    def __init__(self):
        self.pid = os.getpid()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.marks: dict[str, int] = {}
        self.run_id: int | None = None
        self.cpu: tuple[int, int] | None = None

    def mark(self, label: str) -> None:
        t = now_ns()
        if os.getpid() != self.pid:
            os.write(self.write_fd, f"{label} {t}\n".encode())
        elif label != "first" or label not in self.marks:
            self.marks[label] = t

    def timed(self, label: str, func):
        def wrapper(*args, **kwargs):
            self.mark(f"{label}0")
            try:
                return func(*args, **kwargs)
            finally:
                self.mark(f"{label}1")
        return wrapper

    def drain(self) -> None:
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.read_fd, 65536):
                chunks.append(data)
        for line in b"".join(chunks).decode().splitlines():
            label, _, value = line.partition(" ")
            self.marks[label] = int(value)

    def flush(self, path: Path) -> None:
        self.drain()
        if self.run_id is not None:
            with open(path, "a") as fh:
                fh.write(json.dumps({"run_id": self.run_id, "marks": self.marks}) + "\n")
        self.marks, self.run_id = {}, None


class _Conn:
    """The worker's end of its pipe, with marks when a request arrives and a result leaves."""

    def __init__(self, conn, probes: _WorkerProbes, path: Path):
        self._conn, self._probes, self._path = conn, probes, path

    def recv(self):
        message = self._conn.recv()
        if message and message[0] == "run":
            t = now_ns()
            self._probes.drain()  # what the isolation probe's throwaway child left
            self._probes.marks = {"recv": t}
            self._probes.run_id = message[1].run_id
            self._probes.cpu = cpu_ns()
        return message

    def send(self, message) -> None:
        if message and message[0] in ("started", "done"):
            self._probes.mark(message[0])
        if message and message[0] == "done" and self._probes.cpu is not None:
            worker, children = cpu_ns()
            self._probes.marks["cpu_worker"] = worker - self._probes.cpu[0]
            self._probes.marks["cpu_children"] = children - self._probes.cpu[1]
        self._conn.send(message)
        if message and message[0] == "done":
            self._probes.flush(self._path)

    def fileno(self) -> int:
        return self._conn.fileno()

    def poll(self, timeout: float = 0.0) -> bool:
        return self._conn.poll(timeout)

    def close(self) -> None:
        self._conn.close()


def disable_layers(isolation, names):
    """``isolation`` with the named layers switched off."""
    from sandbox.cgroups import CgroupSupport

    changes = {}
    if "cgroups" in names:
        changes["cgroups"] = CgroupSupport()
    if "namespaces" in names:
        changes["namespaces"] = False
    if "landlock" in names:
        changes["landlock_abi"] = 0
    if "seccomp" in names:
        changes["seccomp"] = False
    if "capabilities" in names:
        changes["is_root"] = False
    return dataclasses.replace(isolation, **changes)


def _install_worker_probes(probes: _WorkerProbes) -> None:
    import subprocess
    import types

    from sandbox import capture, confine, kernel, runner, seccomp, worker

    names = {n.strip() for n in os.environ.get(LAYERS_ENV, "").split(",") if n.strip()}
    detect = worker.detect
    worker.detect = lambda: disable_layers(detect(), names)

    runner.execute = probes.timed("execute", runner.execute)
    runner.plan_run = probes.timed("plan", runner.plan_run)
    runner._check_confinable = probes.timed("check", runner._check_confinable)
    confine.RunCgroup = probes.timed("cgroup", confine.RunCgroup)
    confine.Confiner.prepare = probes.timed("prepare", confine.Confiner.prepare)
    popen = subprocess.Popen
    runner.subprocess = types.SimpleNamespace(**{**vars(subprocess),
                                                 "Popen": probes.timed("popen", popen)})

    unshare = kernel.unshare

    def timed_unshare(flags: int) -> None:
        label = "unshare_pid" if flags == kernel.CLONE_NEWPID else "unshare"
        probes.timed(label, unshare)(flags)

    kernel.unshare = timed_unshare
    kernel.drop_bounding_set = probes.timed("bound", kernel.drop_bounding_set)
    kernel.clear_capabilities = probes.timed("caps", kernel.clear_capabilities)
    seccomp.Filter.load = probes.timed("seccomp", seccomp.Filter.load)
    confine.Confinement._preexec = probes.timed("preexec", confine.Confinement._preexec)
    confine.Confinement._namespaces = probes.timed("ns", confine.Confinement._namespaces)
    confine.Confinement._landlock = probes.timed("landlock", confine.Confinement._landlock)
    confine.Confinement.close = probes.timed("close", confine.Confinement.close)
    become_init = confine.Confinement._become_init

    def timed_init(self) -> None:
        probes.mark("init0")
        become_init(self)  # returns in the job only; the init never leaves it
        probes.mark("init1")

    confine.Confinement._become_init = timed_init
    write_file = confine._write_file
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")

    def timed_write(path: str, value: str) -> None:
        if path.startswith("/sys/fs/cgroup/"):
            label = "join_v2" if v2 else f"join_{path.split('/')[4]}"
        else:
            label = "oom"
        probes.timed(label, write_file)(path, value)

    kernel.set_no_new_privs = probes.timed("nnp", kernel.set_no_new_privs)
    runner._apply_rlimits = probes.timed("prlimit", runner._apply_rlimits)

    confine._write_file = timed_write
    feed = capture.OutputCapture.feed

    def timed_feed(self, data: bytes) -> None:
        probes.mark("first")
        feed(self, data)

    capture.OutputCapture.feed = timed_feed
    runner._Job._finish = probes.timed("finish", runner._Job._finish)


def instrumented_worker(conn, protected, *args) -> None:
    """The pool's worker entry for the harness: probes installed, then the product's
    ``worker_main``, unchanged."""
    from sandbox import worker

    probes = _WorkerProbes()
    _install_worker_probes(probes)
    path = Path(os.environ[MARKS_ENV]) / f"worker-{os.getpid()}.jsonl"
    worker.worker_main(_Conn(conn, probes, path), protected, *args)


# -- the benchmark ------------------------------------------------------------------------

def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{_ms(median(values))} ({_ms(pct(values, 90))})"


def _ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def analyse(records: list[dict]) -> tuple[dict[str, list[float]], int, int]:
    """Per step, the milliseconds of every run; how many runs waited for a busy worker;
    how many did not succeed."""
    per_step: dict[str, list[float]] = {}
    queued, failed, previous_done = 0, 0, None
    for record in sorted(records, key=lambda r: r["run_id"]):
        marks = record["marks"]
        if previous_done is not None and marks.get("submit", 0) < previous_done:
            queued += 1
        previous_done = marks.get("done")
        failed += record["status"] != "succeeded"
        for name, value in steps_of(marks).items():
            per_step.setdefault(name, []).append(value)
    return per_step, queued, failed


def report(results: dict[str, dict], runs: int) -> str:
    names = list(results)
    analysed = {name: analyse(results[name]["runs"]) for name in names}
    head = ["step", "path", *names]
    lines = ["### 5. The run path (ms per run: median (p90))", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    full = analysed[names[0]][0]
    critical = median(full.get(TOTALS[0][0], [])) or None
    for name, side, _, _, on_path in STEPS:
        cells = [_cell(analysed[c][0].get(name, [])) for c in names]
        if all(cell == "—" for cell in cells):
            continue
        lines.append(f"| {name} | {side}{', critical' if on_path else ''} | " + " | ".join(cells) + " |")
    for name, _, _ in TOTALS:
        lines.append(f"| **{name}** | total | " + " | ".join(
            _cell(analysed[c][0].get(name, [])) for c in names) + " |")
    for name, _ in CPU:
        lines.append(f"| {name} | CPU | " + " | ".join(
            _cell(analysed[c][0].get(name, [])) for c in names) + " |")
    lines.append("| CPU of the server per run (dispatcher, store, pool; mean) | CPU | " + " | ".join(
        _ms(results[c]["server_cpu"]) if results[c].get("server_cpu") is not None else "—"
        for c in names) + " |")
    notes = [f"{runs} runs per configuration of `/bin/sh -c '{COMMAND}'` as a scheduled command "
             f"task ({TASKS} tasks every 1 s, slots {SPACING * 1000:.0f} ms apart but for the "
             "bursts), one worker; "
             "each configuration is a fresh process running the product's store, scheduler, "
             "dispatcher, launcher and pool (no HTTP).",
             "*critical*: between the due time and `exec`; the other steps happen while the job "
             "runs or after it ended. The rows of a step do not add up exactly to the totals: "
             "the gaps between probes (a few µs each) belong to no step."]
    if critical:
        shares = sorted(((median(v), n) for n, v in full.items()
                         if any(n == s[0] and s[4] for s in STEPS) and median(v)), reverse=True)[:5]
        notes.append(f"{names[0]}: the largest shares of due → exec ({_ms(critical)} ms): " + "; ".join(
            f"{n} {v / critical:.0%}" for v, n in shares) + ".")
    request = results[names[0]].get("request")
    if request:
        notes.append(f"The request crosses the pipe pickled: {request['bytes']:,} bytes (its Policy "
                     f"included), {request['dumps_us']:.0f} µs to pickle and "
                     f"{request['loads_us']:.0f} µs to unpickle (median of 200, measured apart).")
    for name in names:
        per_step, queued, failed = analysed[name]
        iso = results[name].get("isolation") or {}
        notes.append(f"{name}: level {iso.get('level', '?')} ({', '.join(iso.get('layers', []))}); "
                     f"{len(results[name]['runs'])} runs recorded, {failed} not succeeded, "
                     f"{queued} waited for the worker.")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def run(tmp: Path, quick: bool) -> str:
    runs = 20 if quick else 200
    configs = QUICK_CONFIGS if quick else tuple(CONFIGS)
    results = {}
    for name in configs:
        base = tmp / "".join(c if c.isalnum() else "-" for c in name)
        base.mkdir(parents=True, exist_ok=True)
        out = base / "runs.json"
        print(f"  runpath: {name}, {runs} runs", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
        layers, spacing = CONFIGS[name]
        env[LAYERS_ENV] = ",".join(layers)
        argv = [PY, "-m", "bench.runpath", "harness", str(base), str(runs), str(out), str(spacing)]
        with common.child(argv, env=env) as proc:
            code = proc.wait(timeout=LEAD + runs / TASKS * 3 + 120)
        if code != 0 or not out.exists():
            raise RuntimeError(f"runpath harness ({name}) failed with exit code {code}")
        results[name] = json.loads(out.read_text())
    text = report(results, runs)
    if quick:
        text += "- QUICK MODE: two configurations, few runs; the figures mean little.\n"
    return text


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runpath")
    parser.add_argument("mode", choices=["harness"])
    parser.add_argument("base", type=Path)
    parser.add_argument("runs", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("spacing", type=float, nargs="?", default=SPACING)
    args = parser.parse_args(argv)
    harness(args.base, args.runs, args.out, args.spacing)


if __name__ == "__main__":
    main(sys.argv[1:])
