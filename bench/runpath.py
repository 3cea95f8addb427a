"""5. The run path: what one confined run costs, step by step, in two parts: its
preparation (paid before its slot) and what lies between its slot and ``exec`` (what the job
waits for); then what follows until its result is recorded. With every isolation layer on,
with each one switched off, and with none.

A harness process (``python -m bench.runpath harness ...``) assembles the server's own
scheduling stack without HTTP: the product's :class:`~scheduler.store.Store`,
:class:`~policies.source.PolicySource`, :class:`~scheduler.service.Scheduler` (with its
real :class:`~scheduler.dispatcher.Dispatcher` and :class:`~scheduler.launcher.Launcher`)
and :class:`~sandbox.pool.WorkerPool` with one worker. The scheduler fires each slot ahead
of its start (``SchedulerConfig.prepare_ahead``, the server's default: 1 s, at most half the
gap from the task's previous start, so 0.5 s for a task due every second) and the run's
request carries its start time (``RunRequest.scheduled_for``): the worker prepares the run
at once (:func:`sandbox.runner.prepare`: plan and checks, run directory, cgroups, the child
forked, confined and parked before ``exec``, :mod:`sandbox.spawn`) and releases it at that
instant with one byte on the child's go pipe.

Nothing in the product is changed to measure it: the harness wraps the product's own
functions, in its own processes only, with probes that take a ``CLOCK_MONOTONIC``
timestamp on the way in and out:

* in the harness (the server's side): the dispatcher's fire callback, every store write,
  the pool's ``submit``, the pool's end of the worker's pipe (a request leaving, a report
  arriving) and the launcher's ``on_started``/``on_result`` callbacks;
* in the worker (the pool spawns the harness's worker entry, which installs the probes and
  then calls the product's ``worker_main``): the request arriving on the pipe,
  ``runner.prepare`` and in it ``checked_plan``, the isolation checks, ``Confiner.prepare``
  and its ``RunCgroup``, ``spawn.park`` and in it the PID namespace's ``unshare``, the fork
  and the ``setns`` back; then ``Run.release`` and its write of the GO byte, the first byte
  of output, the first process reaped, the kill, the finish (with the cgroups' removal) and
  the reports leaving on the pipe. ``spawn``'s ``os`` is the harness's stand-in for the
  real module with four functions wrapped (``fork``, ``read``, ``write``, ``execvpe``);
* in the job's child (the probes are inherited through the fork): each confinement step of
  ``Confinement.confine`` (the cgroup joins, the OOM score, ``unshare`` and the mounts, the
  PID namespace's init fork, the capability bounding set, no_new_privs, Landlock, seccomp,
  the capability drop), the child parked (about to read its go pipe), awake (the byte read)
  and about to ``execvpe``. The child keeps its marks in memory and writes them to the
  harness's probe pipe in two batches of one write each: just before it blocks on its go
  pipe, and just before ``exec`` (a few µs, counted in *exec → first byte*). ``spawn._child`` closes
  every descriptor but those it keeps; the harness wraps ``spawn._close_all_but`` to keep
  the probe pipe's write end too, which is close-on-exec, so the job never holds it.

The due time is wall clock (as the scheduler's slots are); the fire callback takes the
wall clock and the monotonic clock together, which places the due time on the monotonic
clock with microsecond precision. A probe costs about a microsecond. The server's own
account of the same run is its ``lateness_ms`` (the child's stamp, taken just before
``exec``, less the start time), read from the store after the runs.

The worker prepares several runs at once and its children set themselves up while it goes
on, so CPU cannot be told apart per run: the worker's CPU (``getrusage``, its own and its
reaped children's: the runs' namespace inits and jobs) from the first request in to the
last result out, and the harness's own over all runs, are divided by the number of runs.

Each configuration is a fresh harness process: ``full`` (whatever this machine offers),
then one layer switched off at a time by the worker's detected isolation, as the
``TASK_SCHEDULER_DISABLE_LAYERS`` variable names them (``cgroups``, ``namespaces``,
``landlock``, ``seccomp``, ``capabilities``), and ``none`` (all five off: the child only
sets its rlimits and working directory). The job is ``/bin/sh -c 'echo ok'``: the shell's
built-in ``echo`` gives a first byte without a second exec. Five tasks ``every 1 second``,
their slots 200 ms apart: with the lead of 0.5 s each run is prepared 100 ms after another's
slot, when that one has ended, so every slot is one run alone on the worker, which holds
a few prepared runs at once. Without PID namespaces a worker takes one run at a time, so a
run is prepared only once the previous one has ended (its hand-off includes that wait).
Two more configurations with every layer on: ``full, slots 100 ms apart`` (ten tasks), where
each run is prepared at another's slot by the same worker, whose loop reads nothing of the
released run meanwhile; and ``full, bursts of 10``, where the ten tasks' slots fall on the
same second: ten runs prepared in the lead before it and released at one instant.
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
import shutil
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # `python bench/runpath.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

# Nothing of bench.common (nor the test helpers it brings) is imported at the top: the pool's
# spawned worker imports this module again (as multiprocessing's main module, and for its
# entry), and a worker twice the size of a production one would fork and exec slower.

LAYERS_ENV = "TASK_SCHEDULER_DISABLE_LAYERS"
MARKS_ENV = "BENCH_RUNPATH_MARKS"
LAYERS = ("cgroups", "namespaces", "landlock", "seccomp", "capabilities")


@dataclasses.dataclass(frozen=True)
class Config:
    """One harness run: the layers switched off, and ``tasks`` tasks due every second with
    their slots ``spacing`` seconds apart."""

    layers: tuple[str, ...] = ()
    tasks: int = 5
    spacing: float = 0.2


# 5 tasks, slots 200 ms apart: with the lead of 0.5 s each run is prepared 100 ms after
# another's slot, when that one has ended, so each slot is one run alone on the worker.
# With 10 tasks 100 ms apart, each run is prepared at another's slot, in the same worker,
# which cannot read the released run's pipes meanwhile. The bursts (ten tasks due on the
# same second) show ten runs prepared together and released at one instant.
CONFIGS = {"full": Config(), **{f"no {name}": Config((name,)) for name in LAYERS},
           "none": Config(LAYERS), "full, slots 100 ms apart": Config(tasks=10, spacing=0.1),
           "full, bursts of 10": Config(tasks=10, spacing=0.0)}
QUICK_CONFIGS = ("full", "none")
COMMAND = "echo ok"
FIRST_SLOT = 2.0  # seconds from the scheduler starting to the first slot: more than the lead

# isolation.minimum process: the configurations with a layer off must run, not be refused.
POLICY = """\
version: 1
allowed_directories: [{workspace}]
isolation:
  minimum: process
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

PREP, SLOT, AFTER = "prep", "slot", "after"
PARTS = {PREP: "preparation, paid before the slot",
         SLOT: "the slot to exec: what the job waits for",
         AFTER: "after exec: the job's run and its record"}


@dataclasses.dataclass(frozen=True)
class Step:
    """One row: the span between two marks (None: worked out in :func:`steps_of`), on the
    side of the process that takes the end mark. A step whose marks are missing in a
    configuration (a layer switched off) is not part of it."""

    name: str
    part: str
    side: str
    start: str | None = None
    end: str | None = None


STEPS = (
    Step("store: insert the run row", PREP, "server", "insert0", "insert1"),
    Step("launcher: overlap and rate checks, request", PREP, "server"),
    Step("store: progress update (after submit)", PREP, "server", "progress0", "progress1"),
    Step("hand-off: submit → supervisor thread sends", PREP, "server", "submit", "send"),
    Step("hand-off: pipe → worker has the request", PREP, "worker", "send", "recv"),
    Step("run directory (mkdtemp)", PREP, "worker", "prepare0", "plan0"),
    Step("plan (plan_run: the policy's rules)", PREP, "worker", "plan0", "check0"),
    Step("isolation and protected-path checks", PREP, "worker", "check0", "check1"),
    Step("cgroup creation (RunCgroup: mkdir, limits)", PREP, "worker", "cgroup0", "cgroup1"),
    Step("rest of Confiner.prepare (error pipe)", PREP, "worker"),
    Step("park: pipes, /dev/null", PREP, "worker"),
    Step("park: unshare the PID namespace", PREP, "worker", "unshare_pid0", "unshare_pid1"),
    Step("park: fork (worker side)", PREP, "worker", "fork0", "fork1"),
    Step("park: back to the worker's PID namespace (setns)", PREP, "worker", "setns0", "setns1"),
    Step("park: rest (close the child's ends), Run", PREP, "worker"),
    Step("child: fork → running", PREP, "child", "fork0", "forked"),
    Step("child: descriptors, session, signals", PREP, "child"),
    Step("child: join the cgroup (v2)", PREP, "child", "join_v20", "join_v21"),
    Step("child: join the memory cgroup (v1)", PREP, "child", "join_memory0", "join_memory1"),
    Step("child: join the pids cgroup (v1)", PREP, "child", "join_pids0", "join_pids1"),
    Step("child: join the unified cgroup (v2 tree, for cgroup.kill)", PREP, "child",
         "join_unified0", "join_unified1"),
    Step("child: OOM score", PREP, "child", "oom0", "oom1"),
    Step("child: unshare mount, IPC, network ns", PREP, "child", "unshare0", "unshare1"),
    Step("child: mounts (/proc, tmpfs, hide, read-only binds)", PREP, "child", "unshare1", "ns1"),
    Step("child: PID namespace init fork", PREP, "child", "init0", "init1"),
    Step("child: capability bounding set", PREP, "child", "bound0", "bound1"),
    Step("child: no_new_privs", PREP, "child", "nnp0", "nnp1"),
    Step("child: Landlock ruleset", PREP, "child", "landlock0", "landlock1"),
    Step("child: seccomp load", PREP, "child", "seccomp0", "seccomp1"),
    Step("child: capability drop", PREP, "child", "caps0", "caps1"),
    Step("child: rest of the confinement (rlimits, chdir, Python between the steps)", PREP,
         "child"),
    Step("child: rlimits and chdir (no confinement)", PREP, "child", "rlimits0", "parked"),
    Step("child: confined → parked", PREP, "child", "confine1", "parked"),
    Step("due time → release (GO written)", SLOT, "worker", "due", "go0"),
    Step("GO → child awake", SLOT, "child", "go0", "wake"),
    Step("child: awake → exec (close go, write its stamp)", SLOT, "child", "wake", "exec"),
    Step("exec → first byte of output read", AFTER, "worker", "exec", "first"),
    Step("exec → started reported (started pipe's end seen)", AFTER, "worker", "exec", "started"),
    Step("started: pipe → supervisor has it", AFTER, "server", "started", "started_pipe"),
    Step("store: started update", AFTER, "server", "mark0", "mark1"),
    Step("exec → first process reaped (the job's own run)", AFTER, "worker", "exec", "exited"),
    Step("kill what is left (group, cgroup.kill), reap", AFTER, "worker", "kill0", "kill1"),
    Step("drain the output", AFTER, "worker", "kill1", "finish0"),
    Step("finish: result, cgroup removal, run directory", AFTER, "worker", "finish0", "finish1"),
    Step("result: finish → sent", AFTER, "worker", "finish1", "done"),
    Step("result: pipe → supervisor has it", AFTER, "server", "done", "result_pipe"),
    Step("store: finish update", AFTER, "server", "finish_run0", "finish_run1"),
    Step("store: prune the task's history", AFTER, "server", "prune0", "prune1"),
)

DUE_EXEC = "due → exec (the child, just before execve)"
# (name, part, start mark, end mark)
TOTALS = (
    ("lead: fire callback → due time", PREP, "fire", "due"),
    ("request in → child parked (the worker's and the child's preparation)", PREP, "recv", "parked"),
    ("fire → child parked (all of the preparation)", PREP, "fire", "parked"),
    ("child parked → due time (ready ahead of the slot)", PREP, "parked", "due"),
    (DUE_EXEC, SLOT, "due", "exec"),
    ("due → first byte of output read", AFTER, "due", "first"),
    ("due → started recorded", AFTER, "due", "mark1"),
    ("due → result recorded", AFTER, "due", "recorded"),
)
LATENESS = "server's lateness_ms: due → the child's stamp"
LATENESS_P99 = "server's lateness_ms: p99 (max)"
CPU = (("CPU of the worker per run (mean)", "cpu_worker"),
       ("CPU of the run's processes (init, job) per run (mean)", "cpu_children"),
       ("CPU of the server per run (dispatcher, store, pool; mean)", "cpu_server"))


def _span(marks: dict, start: str, end: str) -> float | None:
    if start in marks and end in marks:
        return (marks[end] - marks[start]) / 1e6
    return None


def _rest(out: dict, total: float | None, name: str, parts: list[str]) -> None:
    """``out[name]`` = ``total`` less the steps named in ``parts`` (what lies between them)."""
    if total is not None:
        out[name] = total - sum(out.get(p, 0.0) for p in parts)


def steps_of(marks: dict) -> dict[str, float]:
    """One run's marks → milliseconds per step (and per total)."""
    out: dict[str, float] = {}
    confined = "confine0" in marks
    for step in STEPS:
        if step.start is None:
            continue
        value = _span(marks, step.start, step.end)
        if value is not None:
            out[step.name] = value
    insert = "store: insert the run row"
    _rest(out, _span(marks, "fire", "submit"), "launcher: overlap and rate checks, request", [insert])
    _rest(out, _span(marks, "confiner0", "confiner1"), "rest of Confiner.prepare (error pipe)",
          ["cgroup creation (RunCgroup: mkdir, limits)"])
    _rest(out, _span(marks, "park0", "fork0"), "park: pipes, /dev/null",
          ["park: unshare the PID namespace"])
    _rest(out, _span(marks, "fork1", "prepare1"), "park: rest (close the child's ends), Run",
          ["park: back to the worker's PID namespace (setns)"])
    _rest(out, _span(marks, "forked", "confine0" if confined else "rlimits0"),
          "child: descriptors, session, signals", [])
    measured = [s.name for s in STEPS if s.side == "child" and s.start is not None
                and s.start not in ("fork0", "go0", "wake", "rlimits0", "confine1")]
    _rest(out, _span(marks, "confine0", "confine1"),
          "child: rest of the confinement (rlimits, chdir, Python between the steps)", measured)
    for name, _, start, end in TOTALS:
        value = _span(marks, start, end)
        if value is not None:
            out[name] = value
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
        if run_id is not None and probes.ctx() is not None:  # from now on the marks are this run's
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
        if message[0] == "run":
            self._probes.for_run(message[1].run_id)["send"] = now_ns()
        self._conn.send(message)

    def recv(self):
        message = self._conn.recv()
        t = now_ns()
        if message[0] == "started":
            self._probes.for_run(message[1])["started_pipe"] = t
        elif message[0] == "done":
            self._probes.for_run(message[1].run_id)["result_pipe"] = t
        return message

    def __getattr__(self, name):  # poll, fileno, close, closed: the connection's own
        return getattr(self._conn, name)


def harness(base: Path, runs: int, out: Path, tasks: int, spacing: float) -> None:
    """Run ``runs`` scheduled runs through the real stack (``tasks`` tasks every second,
    their slots ``spacing`` seconds apart); write every run's marks to ``out``."""
    import psutil

    import sandbox.pool
    from policies import TaskType
    from policies.source import PolicySource
    from sandbox.types import ProtectedPaths
    from scheduler.models import TaskSpec
    from scheduler.service import Scheduler, SchedulerConfig
    from scheduler.store import Store

    from . import common

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
    config = SchedulerConfig(shutdown_grace=5)  # the server's default prepare_ahead
    scheduler = Scheduler(store, pool, policy.current, config=config)
    probes = _Probes()
    _instrument_server(scheduler, store, pool, probes)
    scheduler.open()
    policy.add_listener(scheduler.policy_changed)  # as the server does
    policy.start_watching()
    try:
        common.wait_until(lambda: pool.isolation() is not None, timeout=30,
                          message="the worker to start")
        first = time.time() + FIRST_SLOT
        for i in range(tasks):
            scheduler.create(f"run-{i}", TaskSpec(task_type=TaskType.COMMAND, interval="every 1 second",
                                                  command=COMMAND, start_at=first + i * spacing))
        cpu_before = cpu_ns()[0]
        scheduler.start()
        deadline = time.monotonic() + FIRST_SLOT + runs / tasks * 3 + 30
        with probes.done:
            while probes.recorded < runs and time.monotonic() < deadline:
                probes.done.wait(1.0)
        server_cpu = (cpu_ns()[0] - cpu_before) / max(probes.recorded, 1)
        worker_rss = sum(psutil.Process(seat.process.pid).memory_info().rss for seat in pool._seats)
        scheduler.stop()
        isolation = pool.isolation()
    finally:
        policy.stop_watching()
        scheduler.close(5)
    lateness = {row["run_id"]: row["lateness_ms"] for row in common.read_runs(data / "scheduler.db")}
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
                        "lateness_ms": lateness.get(run_id),
                        "marks": {**worker_marks[run_id], **server}})
    out.write_text(json.dumps({"isolation": isolation, "runs": records[:runs], "server_cpu": server_cpu,
                               "prepare_ahead": config.prepare_ahead,
                               "worker_rss_mb": worker_rss / 2**20,
                               "request": _pickle_cost(probes.request)}))


def _pickle_cost(request) -> dict | None:
    """Size of one pickled RunRequest (with its Policy) and the median µs to pickle and
    unpickle it, measured after the runs."""
    from .common import median

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
    """Marks of the worker, per run, and of the runs' children.

    In the worker, a mark belongs to the run named, or to the run being worked on
    (:meth:`on`). In a child (everything forked by ``spawn``, and the job the run's
    namespace init forks), marks are kept in memory and :meth:`flush`\\ ed as one write of
    ``run_id label ns`` lines to the probe pipe, drained by the worker."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()  # close-on-exec: no job holds the write end
        os.set_blocking(self.read_fd, False)
        self.runs: dict[int, dict[str, int]] = {}
        self.current: int | None = None
        self.in_child = False
        self.child: list[tuple[str, int]] = []

    def mark(self, label: str, run_id: int | None = None) -> None:
        t = now_ns()
        if self.in_child:
            self.child.append((label, t))
            return
        run_id = self.current if run_id is None else run_id
        if run_id is None:
            return
        marks = self.runs.setdefault(run_id, {})
        if label == "first":
            marks.setdefault(label, t)
        else:
            marks[label] = t

    @contextlib.contextmanager
    def on(self, run_id: int):
        """Marks without a run name belong to ``run_id`` meanwhile."""
        previous, self.current = self.current, run_id
        try:
            yield
        finally:
            self.current = previous

    def timed(self, label: str, func):
        def wrapper(*args, **kwargs):
            self.mark(f"{label}0")
            try:
                return func(*args, **kwargs)
            finally:
                self.mark(f"{label}1")
        return wrapper

    def run_method(self, label: str | None, func):
        """Wrap a :class:`~sandbox.runner.Run` method: its run's marks meanwhile, timed
        as ``label`` unless None."""
        def wrapper(run, *args, **kwargs):
            with self.on(run.run_id):
                if label is None:
                    return func(run, *args, **kwargs)
                self.mark(f"{label}0")
                try:
                    return func(run, *args, **kwargs)
                finally:
                    self.mark(f"{label}1")
        return wrapper

    def forked(self) -> None:
        """In a child of ``spawn``'s fork: its marks are kept for its run from here."""
        self.in_child = True
        self.child = [("forked", now_ns())]

    def flush(self) -> None:
        """In a child: write its marks so far (one write: a line of a few hundred bytes
        cannot interleave with another child's)."""
        if self.child and self.current is not None:
            os.write(self.write_fd, "".join(f"{self.current} {label} {t}\n"
                                            for label, t in self.child).encode())
        self.child = []

    def drain(self) -> None:
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.read_fd, 65536):
                chunks.append(data)
        for line in b"".join(chunks).decode().splitlines():
            run_id, label, value = line.split(" ")
            self.runs.setdefault(int(run_id), {})[label] = int(value)

    def write(self, path: Path, run_id: int) -> None:
        """Append ``run_id``'s marks to ``path`` and forget them."""
        self.drain()
        marks = self.runs.pop(run_id, None)
        if marks is not None:
            with open(path, "a") as fh:
                fh.write(json.dumps({"run_id": run_id, "marks": marks}) + "\n")


class _Conn:
    """The worker's end of its pipe, with marks when a request arrives and a report leaves;
    the worker's cumulative CPU is noted with each."""

    def __init__(self, conn, probes: _WorkerProbes, path: Path):
        self._conn, self._probes, self._path = conn, probes, path

    def recv(self):
        message = self._conn.recv()
        if message and message[0] == "run":
            t, (worker, children) = now_ns(), cpu_ns()
            self._probes.drain()
            self._probes.runs[message[1].run_id] = {"recv": t, "cpu_in_worker": worker,
                                                    "cpu_in_children": children}
        return message

    def send(self, message) -> None:
        kind = message[0] if message else None
        if kind == "started":
            self._probes.mark("started", message[1])
        elif kind == "done":
            run_id = message[1].run_id
            self._probes.mark("done", run_id)
            worker, children = cpu_ns()
            self._probes.runs.setdefault(run_id, {}).update(cpu_out_worker=worker,
                                                            cpu_out_children=children)
        self._conn.send(message)
        if kind == "done":
            self._probes.write(self._path, message[1].run_id)
        elif kind == "discarded":
            self._probes.runs.pop(message[1], None)

    def __getattr__(self, name):  # fileno, poll, close, closed: the connection's own
        return getattr(self._conn, name)


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


def _spawn_os(probes: _WorkerProbes):
    """``os`` as :mod:`sandbox.spawn` sees it in the harness's worker: the fork marked on
    both sides; in the child, the go pipe's read (its marks flushed before it blocks), the
    stamp's write and ``execvpe`` (its marks flushed just before); in the worker, the GO
    byte's write."""
    from sandbox import spawn

    real_fork, real_read, real_write, real_exec = os.fork, os.read, os.write, os.execvpe

    def fork() -> int:
        probes.mark("fork0")
        pid = real_fork()
        if pid == 0:
            probes.forked()
        else:
            probes.mark("fork1")
        return pid

    def read(fd: int, n: int) -> bytes:
        if not probes.in_child:
            return real_read(fd, n)
        probes.mark("parked")
        probes.flush()
        data = real_read(fd, n)
        probes.mark("wake")
        return data

    def write(fd: int, data: bytes) -> int:
        if probes.in_child:
            if data.startswith(spawn.STAMP):
                probes.mark("stamp")
            return real_write(fd, data)
        if data != spawn.GO:
            return real_write(fd, data)
        probes.mark("go0")
        try:
            return real_write(fd, data)
        finally:
            probes.mark("go1")

    def execvpe(file, args, env):
        probes.mark("exec")
        probes.flush()
        return real_exec(file, args, env)

    return types.SimpleNamespace(**{**vars(os), "fork": fork, "read": read, "write": write,
                                    "execvpe": execvpe})


def _install_worker_probes(probes: _WorkerProbes) -> None:
    from sandbox import capture, confine, kernel, runner, seccomp, spawn, worker

    names = {n.strip() for n in os.environ.get(LAYERS_ENV, "").split(",") if n.strip()}
    detect = worker.detect
    worker.detect = lambda: disable_layers(detect(), names)

    prepare = runner.prepare

    def timed_prepare(request, *args, **kwargs):
        with probes.on(request.run_id):
            probes.mark("prepare0")
            try:
                return prepare(request, *args, **kwargs)
            finally:
                probes.mark("prepare1")

    runner.prepare = timed_prepare
    runner.checked_plan = probes.timed("plan", runner.checked_plan)
    runner._check_confinable = probes.timed("check", runner._check_confinable)
    confine.RunCgroup = probes.timed("cgroup", confine.RunCgroup)
    confine.Confiner.prepare = probes.timed("confiner", confine.Confiner.prepare)
    spawn.park = probes.timed("park", spawn.park)
    spawn.os = _spawn_os(probes)
    close_all_but = spawn._close_all_but
    spawn._close_all_but = lambda keep: close_all_but({*keep, probes.write_fd})
    # Only the unconfined child's call: the confined one goes through confine's own name.
    spawn.set_rlimits = probes.timed("rlimits", spawn.set_rlimits)

    unshare = kernel.unshare

    def timed_unshare(flags: int) -> None:
        label = "unshare_pid" if flags == kernel.CLONE_NEWPID else "unshare"
        probes.timed(label, unshare)(flags)

    kernel.unshare = timed_unshare
    kernel.setns = probes.timed("setns", kernel.setns)
    kernel.drop_bounding_set = probes.timed("bound", kernel.drop_bounding_set)
    kernel.clear_capabilities = probes.timed("caps", kernel.clear_capabilities)
    kernel.set_no_new_privs = probes.timed("nnp", kernel.set_no_new_privs)
    seccomp.Filter.load = probes.timed("seccomp", seccomp.Filter.load)
    confine.Confinement.confine = probes.timed("confine", confine.Confinement.confine)
    confine.Confinement._namespaces = probes.timed("ns", confine.Confinement._namespaces)
    confine.Confinement._landlock = probes.timed("landlock", confine.Confinement._landlock)
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

    confine._write_file = timed_write
    feed = capture.OutputCapture.feed

    def timed_feed(self, data: bytes) -> None:
        probes.mark("first")
        feed(self, data)

    capture.OutputCapture.feed = timed_feed
    run = runner.Run
    run.release = probes.run_method("release", run.release)
    run.on_ready = probes.run_method(None, run.on_ready)
    run.tick = probes.run_method(None, run.tick)
    run._kill_all = probes.run_method("kill", run._kill_all)
    run._finish = probes.run_method("finish", run._finish)
    exited = run.exited

    def timed_exited(self, status: int) -> None:
        probes.mark("exited", self.run_id)
        exited(self, status)

    run.exited = timed_exited


def instrumented_worker(conn, protected, *args) -> None:
    """The pool's worker entry for the harness: probes installed, then the product's
    ``worker_main``, unchanged."""
    from sandbox import worker

    probes = _WorkerProbes()
    _install_worker_probes(probes)
    path = Path(os.environ[MARKS_ENV]) / f"worker-{os.getpid()}.jsonl"
    worker.worker_main(_Conn(conn, probes, path), protected, *args)


# -- the benchmark ------------------------------------------------------------------------

def _cell(values: list[float], q: float = 90) -> str:
    from .common import median, pct

    if not values:
        return "—"
    return f"{_ms(median(values))} ({_ms(pct(values, q))})"


def _ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


@dataclasses.dataclass
class Analysis:
    """One configuration's runs, summed up."""

    per_step: dict[str, list[float]]
    lateness: list[float]
    cpu: dict[str, float]
    failed: int
    fired_late: int  # fired at or after their due time: not prepared ahead
    parked_late: int  # the child was parked only after the due time


def _cpu_per_run(records: list[dict]) -> dict[str, float]:
    """The worker's CPU (its own, its reaped children's) from the first request in to the
    last result out, per run: runs overlap in the worker, so only the mean is known."""
    marks = [r["marks"] for r in records if "cpu_in_worker" in r["marks"] and "cpu_out_worker" in r["marks"]]
    if not marks:
        return {}
    first = min(marks, key=lambda m: m["recv"])
    last = max(marks, key=lambda m: m["done"])
    return {key: (last[f"cpu_out_{side}"] - first[f"cpu_in_{side}"]) / len(marks) / 1e6
            for key, side in (("cpu_worker", "worker"), ("cpu_children", "children"))}


def analyse(records: list[dict], server_cpu: float | None) -> Analysis:
    per_step: dict[str, list[float]] = {}
    failed = fired_late = parked_late = 0
    for record in records:
        marks = record["marks"]
        if record["status"] != "succeeded":  # counted, but its steps are not a run's
            failed += 1
            continue
        fired_late += marks.get("fire", 0) >= marks.get("due", 0)
        parked_late += "parked" in marks and marks["parked"] > marks["due"]
        for name, value in steps_of(marks).items():
            per_step.setdefault(name, []).append(value)
    cpu = _cpu_per_run(records)
    if server_cpu is not None:
        cpu["cpu_server"] = server_cpu / 1e6
    lateness = [r["lateness_ms"] for r in records if r.get("lateness_ms") is not None]
    return Analysis(per_step, lateness, cpu, failed, fired_late, parked_late)


def report(results: dict[str, dict], runs: int) -> str:
    from .common import median, pct

    names = list(results)
    analysed = {name: analyse(results[name]["runs"], results[name].get("server_cpu")) for name in names}
    head = ["step", "side", *names]
    lines = ["### 5. The run path (ms per run: median (p90))", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    blank = " |" * len(names)

    def row(name: str, side: str, cells: list[str]) -> None:
        lines.append(f"| {name} | {side} | " + " | ".join(cells) + " |")

    for part, title in PARTS.items():
        lines.append(f"| ***{title}*** | |{blank}")
        for step in (s for s in STEPS if s.part == part):
            cells = [_cell(analysed[c].per_step.get(step.name, [])) for c in names]
            if any(cell != "—" for cell in cells):
                row(step.name, step.side, cells)
        for name, total_part, _, _ in TOTALS:
            if total_part == part:
                row(f"**{name}**", "total", [_cell(analysed[c].per_step.get(name, [])) for c in names])
        if part == SLOT:
            row(f"**{LATENESS}**", "server", [_cell(analysed[c].lateness) for c in names])
            row(f"**{LATENESS_P99}**", "server", [
                f"{_ms(pct(analysed[c].lateness, 99))} ({_ms(max(analysed[c].lateness))})"
                if analysed[c].lateness else "—" for c in names])
    for name, key in CPU:
        row(name, "CPU", [_ms(analysed[c].cpu[key]) if key in analysed[c].cpu else "—" for c in names])
    full = analysed[names[0]]
    ahead = results[names[0]].get("prepare_ahead")
    notes = [f"{runs} runs per configuration of `/bin/sh -c '{COMMAND}'` as a scheduled command "
             "task (tasks every 1 s: 5 tasks with slots 200 ms apart, or as the configuration "
             "says), one worker; each configuration is a fresh process running the product's "
             "store, scheduler, dispatcher, launcher and pool (no HTTP).",
             f"Slots fired ahead of their start by the scheduler's default lead "
             f"(`prepare_ahead` {ahead} s, at most half the gap from the task's previous "
             "start: 0.5 s here); the worker prepares a run as its request arrives and "
             "releases it at the start. *Preparation* is paid before the slot, *the slot to "
             "exec* is what the job waits for. The child's steps run beside the worker's, which "
             "goes on once it has forked; steps do not add up exactly to the totals: the gaps "
             "between probes (a few µs each) belong to no step.",
             "*due → exec* ends at the child's last instant before `execve`; the server's "
             "`lateness_ms` (read from the store) ends at the child's stamp (`time.time()` "
             "written to its started pipe just before), and is measured from the wall clock."]
    critical = median(full.per_step.get(DUE_EXEC, []))
    if critical:
        shares = sorted(((median(full.per_step[s.name]), s.name) for s in STEPS
                         if s.part == SLOT and full.per_step.get(s.name)), reverse=True)
        notes.append(f"{names[0]}: due → exec {_ms(critical)} ms: " + "; ".join(
            f"{n} {v:.3f} ms" for v, n in shares) + ".")
    request = results[names[0]].get("request")
    if request:
        notes.append(f"The request crosses the pipe pickled: {request['bytes']:,} bytes (its Policy "
                     f"included), {request['dumps_us']:.0f} µs to pickle and "
                     f"{request['loads_us']:.0f} µs to unpickle (median of 200, measured apart).")
    for name in names:
        a = analysed[name]
        iso = results[name].get("isolation") or {}
        notes.append(f"{name}: level {iso.get('level', '?')} ({', '.join(iso.get('layers', []))}); "
                     f"worker RSS {results[name].get('worker_rss_mb', 0):.0f} MB; "
                     f"{len(results[name]['runs'])} runs recorded, {a.failed} not succeeded, "
                     f"{a.fired_late} fired only at or after their due time, "
                     f"{a.parked_late} parked only after it.")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def run(tmp: Path, quick: bool) -> str:
    from . import common

    runs = 20 if quick else 200
    configs = QUICK_CONFIGS if quick else tuple(CONFIGS)
    results = {}
    for name in configs:
        base = tmp / "".join(c if c.isalnum() else "-" for c in name)
        base.mkdir(parents=True, exist_ok=True)
        out = base / "runs.json"
        print(f"  runpath: {name}, {runs} runs", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
        config = CONFIGS[name]
        env[LAYERS_ENV] = ",".join(config.layers)
        argv = [common.PY, "-m", "bench.runpath", "harness", str(base), str(runs), str(out),
                str(config.tasks), str(config.spacing)]
        with common.child(argv, env=env) as proc:
            code = proc.wait(timeout=FIRST_SLOT + runs / config.tasks * 3 + 120)
        if code != 0 or not out.exists():
            raise RuntimeError(f"runpath harness ({name}) failed with exit code {code}")
        results[name] = json.loads(out.read_text())
    text = report(results, runs)
    if quick:
        text += "- QUICK MODE: two configurations, few runs; the figures mean little.\n"
    return text


def main(argv: list[str]) -> None:
    if argv[:1] == ["harness"]:
        parser = argparse.ArgumentParser(prog="python -m bench.runpath harness")
        parser.add_argument("base", type=Path)
        parser.add_argument("runs", type=int)
        parser.add_argument("out", type=Path)
        parser.add_argument("tasks", type=int)
        parser.add_argument("spacing", type=float)
        args = parser.parse_args(argv[1:])
        harness(args.base, args.runs, args.out, args.tasks, args.spacing)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.runpath",
                                     description="benchmark 5 alone: print its table")
    parser.add_argument("--quick", action="store_true", help="two configurations, 20 runs each")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    from . import common

    tmp = Path(tempfile.mkdtemp(prefix="bench-runpath-"))
    try:
        print(f"Machine: {common.machine()}\n\nCode: {common.revision()}\n", flush=True)
        print(run(tmp, args.quick), flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
