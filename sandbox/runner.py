"""Run one job as a child process and watch it until it ends.

Called inside a worker process, which is single-threaded (so ``preexec_fn`` is safe) and a
child subreaper (so every process the job starts stays its descendant). The job gets its
own session and process group, a fresh environment, rlimits, and a parent-death signal.
While it runs, the watch loop reads its output, enforces the wall-clock timeout and the
output cap, and listens to the control connection: a cancel request or the server going away
stops the job. Memory and process caps are the kernel's where the run has cgroups (a run is
``killed`` for memory when the cgroup's OOM counter moved, whichever of its processes was
killed and whatever the exit code); without them the watch loop samples the whole process
tree every ``SAMPLE_INTERVAL`` and says so in the reason ("sampled"). When the main process
ends, whatever it left behind is killed: nothing survives a run.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

from policies import PathNotAllowed, PolicyViolation
from policies.errors import IsolationUnavailable

from . import procs
from .capture import OutputCapture
from .confine import Confinement, Confiner
from .launch import LaunchPlan, plan_run
from .report import read_junit_counts
from .types import Outcome, RunRequest, RunResult, inside

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.1
TERM_GRACE = 1.0
DRAIN_TIMEOUT = 0.5
READ_CHUNK = 65536


_EXITED = object()


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux ≥ 5.3), so the watch
    loop wakes at once instead of at its next sample."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass
class _Stop:
    status: Outcome
    reason: str


def execute(request: RunRequest, control: Connection | None = None,
            confiner: Confiner | None = None) -> RunResult:
    """Run ``request`` to completion and return its result; never raises for job failures.

    The run's private directory holds its temporary directory (``TMPDIR``, a size-capped
    tmpfs inside the run's mount namespace) and, beside it, pytest's report.
    """
    rundir = Path(tempfile.mkdtemp(prefix=f"run-{request.run_id}-"))
    try:
        tmpdir = rundir / "tmp"
        tmpdir.mkdir(mode=0o1777)
        os.chmod(tmpdir, 0o1777)
        try:
            plan = plan_run(request, tmpdir, report_dir=rundir)
            if confiner is not None:
                _check_confinable(request, plan, confiner)
        except PolicyViolation as exc:
            return RunResult(run_id=request.run_id, status=Outcome.REJECTED,
                             reason=f"{exc.code}: {exc.message}", finished_at=time.time())
        if plan.report_path is not None:
            os.close(os.open(plan.report_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        confinement = None
        if confiner is not None and confiner.uses_preexec:
            try:
                confinement = confiner.prepare(request.run_id, plan,
                                               request.policy.allowed_directories,
                                               request.policy.network)
            except OSError as exc:
                return RunResult(run_id=request.run_id, status=Outcome.ERROR,
                                 reason=f"could not make the run's cgroups: {exc}",
                                 finished_at=time.time())
        try:
            return _Job(request.run_id, plan, control, confinement).run()
        finally:
            if confinement is not None:
                confinement.close()
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def _check_confinable(request: RunRequest, plan: LaunchPlan, confiner: Confiner) -> None:
    """Refuse a run the machine cannot contain as the policy requires, or one aimed at the
    server's own data."""
    required = request.policy.isolation_minimum
    have = confiner.isolation.level
    if have < required:
        raise IsolationUnavailable(
            f"the policy requires isolation '{required.value}' but this machine provides "
            f"'{have.value}' ({', '.join(confiner.isolation.layers)})", field="isolation")
    for hidden in confiner.protected.hidden:
        if inside(plan.cwd, hidden):
            raise PathNotAllowed("the working directory lies in the server's data directory, "
                                 "which runs may not use", field="working_dir")
    if not confiner.isolation.namespaces:
        for allowed in request.policy.allowed_directories:
            if confiner.protected.unprotectable(allowed):
                raise IsolationUnavailable(
                    f"the allowed directory {allowed} holds part of the server's installation "
                    "or its data directory, which this machine cannot keep from runs (no mount "
                    "namespaces); allow a workspace outside them, such as workspace/",
                    field="isolation")


def _apply_rlimits(pid: int, plan: LaunchPlan) -> None:
    """Set the job's CPU limit right after it started.

    Done from outside (prlimit) rather than in a ``preexec_fn``: without one, ``Popen`` can
    use vfork, which starts a job in 0.1 ms instead of 1.8 ms. The job runs unlimited for the
    few microseconds in between, far below any CPU limit's resolution.
    """
    cpu = int(plan.limits.cpu_seconds)
    file_size = plan.limits.file_size_mb * 1048576
    try:
        resource.prlimit(pid, resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (file_size, file_size))
    except ProcessLookupError:
        pass


def _left(cgroups, tree: list[psutil.Process]) -> bool:
    """Whether a live process of ``tree`` is missing from one of the run's groups (it moved
    itself out, which only a run that can reach the cgroup file system can do). The groups'
    member lists are read once for the whole tree."""
    outside = set(cgroups.outside([p.pid for p in tree]))
    for p in tree:
        if p.pid not in outside:
            continue
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def memory_reason(memory_mb: int, kills: int) -> str:
    """The reason of a run the kernel's memory cap hit (``kills`` processes OOM-killed)."""
    return (f"memory: killed by the kernel's memory cap of {memory_mb} MB "
            f"({kills} process{'es' if kills != 1 else ''} killed)")


def processes_reason(max_processes: int) -> str:
    return f"processes: the kernel refused a fork beyond {max_processes} processes"


class _Job:
    def __init__(self, run_id: int, plan: LaunchPlan, control: Connection | None,
                 confinement: Confinement | None = None):
        self.run_id = run_id
        self.plan = plan
        self.control = control
        self.confinement = confinement
        self.cgroups = confinement.cgroups if confinement is not None else None
        limit = plan.limits.max_output_kb * 1024
        self.out = OutputCapture(limit)
        self.err = OutputCapture(limit)
        self.output_limit = limit
        self.stop: _Stop | None = None

    def run(self) -> RunResult:
        plan = self.plan
        options = dict(env=plan.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
                       restore_signals=True)
        try:
            if self.confinement is not None:
                proc = self.confinement.spawn(subprocess.Popen, args=plan.argv, **options)
            else:
                proc = subprocess.Popen(plan.argv, cwd=plan.cwd, **options)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if self.confinement is not None:
                reason = self.confinement.failure() or reason
            return RunResult(run_id=self.run_id, status=Outcome.ERROR,
                             reason=f"could not start the job: {reason}",
                             finished_at=time.time())
        started_at = time.time()
        if self.confinement is None:
            _apply_rlimits(proc.pid, plan)
        if self.control is not None:
            self.control.send(("started", self.run_id, started_at, proc.pid))
        try:
            self._watch(proc, started_at)
        finally:
            self._finish(proc)
        return self._result(proc, started_at)

    def _watch(self, proc: subprocess.Popen, started_at: float) -> None:
        deadline = time.monotonic() + self.plan.limits.timeout_seconds
        sel = selectors.DefaultSelector()
        for stream, capture in ((proc.stdout, self.out), (proc.stderr, self.err)):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, capture)
        if self.control is not None:
            sel.register(self.control, selectors.EVENT_READ, None)
        exit_fd = _pidfd(proc.pid)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ, _EXITED)
        next_sample = time.monotonic() + SAMPLE_INTERVAL
        try:
            while self.stop is None and proc.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    self.stop = _Stop(Outcome.TIMED_OUT,
                                      f"timeout: ran longer than {self.plan.limits.timeout_seconds:g} s")
                    break
                if now >= next_sample:
                    self._sample(proc)
                    next_sample = now + SAMPLE_INTERVAL
                    continue
                wait = min(deadline, next_sample) - now
                for key, _ in sel.select(max(wait, 0)):
                    if key.data is None:
                        self._on_control()
                    elif key.data is _EXITED:
                        sel.unregister(exit_fd)
                    else:
                        self._read(key, sel)
        finally:
            sel.close()
            if exit_fd is not None:
                os.close(exit_fd)

    def _read(self, key: selectors.SelectorKey, sel: selectors.BaseSelector) -> None:
        try:
            data = os.read(key.fd, READ_CHUNK)
        except BlockingIOError:
            return
        if not data:
            sel.unregister(key.fileobj)
            return
        key.data.feed(data)
        if self.out.total + self.err.total > self.output_limit and self.stop is None:
            self.stop = _Stop(Outcome.KILLED,
                              f"output: wrote more than {self.plan.limits.max_output_kb} KB")

    def _on_control(self) -> None:
        try:
            message = self.control.recv()
        except (EOFError, OSError):
            self.stop = _Stop(Outcome.INTERRUPTED, "the server went away while the run was running")
            return
        if message and message[0] == "cancel":
            self.stop = _Stop(Outcome.INTERRUPTED, message[1] if len(message) > 1 else "cancelled")

    def _sample(self, proc: subprocess.Popen) -> None:
        limits = self.plan.limits
        cgroups = self.cgroups
        if cgroups is not None and cgroups.pids_refused():
            self.stop = _Stop(Outcome.KILLED, processes_reason(limits.max_processes))
            return
        watch_escape = cgroups is not None and self.confinement.cgroups_reachable
        kernel_caps = cgroups is not None and cgroups.memory is not None and cgroups.pids is not None
        if kernel_caps and not watch_escape:
            return  # the kernel enforces both caps exactly; sampling could only misjudge
        tree = procs.descendants()
        if watch_escape and _left(cgroups, tree):
            self.stop = _Stop(Outcome.KILLED, "cgroup: a process of the run left its cgroups")
            return
        if kernel_caps:
            return
        if self.confinement is not None and self.confinement.has_init:
            # The namespace init is ours, not the job's: a copy-on-write image of this worker.
            tree = [p for p in tree if p.pid != proc.pid]
        if len(tree) > limits.max_processes:
            self.stop = _Stop(Outcome.KILLED,
                              f"processes: more than {limits.max_processes} processes (sampled)")
            return
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        if rss > limits.memory_mb * 1024 * 1024:
            self.stop = _Stop(Outcome.KILLED, f"memory: used more than {limits.memory_mb} MB, "
                                                f"{rss // 1048576} MB (sampled)")

    def _finish(self, proc: subprocess.Popen) -> None:
        """Stop the job's whole tree (politely first if it is still running), then drain."""
        if proc.poll() is None and self.stop is not None and self.stop.status is not Outcome.KILLED:
            procs.signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(TERM_GRACE)
            except subprocess.TimeoutExpired:
                pass
        procs.signal_group(proc.pid, signal.SIGKILL)
        if self.confinement is not None:
            self.confinement.end()
        proc.wait()
        if procs.has_children():
            procs.kill_descendants()
        self._drain(proc)

    def _drain(self, proc: subprocess.Popen) -> None:
        end = time.monotonic() + DRAIN_TIMEOUT
        for stream, capture in ((proc.stdout, self.out), (proc.stderr, self.err)):
            while time.monotonic() < end:
                try:
                    data = os.read(stream.fileno(), READ_CHUNK)
                except BlockingIOError:
                    break
                if not data:
                    break
                capture.feed(data)
            stream.close()

    def _result(self, proc: subprocess.Popen, started_at: float) -> RunResult:
        code = proc.returncode
        if self.confinement is not None:
            code = self.confinement.job_returncode(code)
        limits = self.plan.limits
        oom_kills = self.cgroups.oom_kills() if self.cgroups is not None else 0
        refused = self.cgroups.pids_refused() if self.cgroups is not None else 0
        if self.stop is not None and self.stop.status is Outcome.INTERRUPTED:
            status, reason = self.stop.status, self.stop.reason
        elif oom_kills:
            status, reason = Outcome.KILLED, memory_reason(limits.memory_mb, oom_kills)
        elif refused and self.stop is None:
            # A fork refused and the job gone before the next sample saw it.
            status, reason = Outcome.KILLED, processes_reason(limits.max_processes)
        elif self.stop is not None:
            status, reason = self.stop.status, self.stop.reason
        elif code == 0:
            status, reason = Outcome.SUCCEEDED, None
        elif code == -signal.SIGXCPU:
            status = Outcome.KILLED
            reason = f"cpu: used more than {limits.cpu_seconds} s of CPU time"
        elif code == -signal.SIGXFSZ:
            status = Outcome.KILLED
            reason = f"file size: wrote a file larger than {limits.file_size_mb} MB"
        else:
            status, reason = Outcome.FAILED, procs.describe_exit(code)
        tests = read_junit_counts(self.plan.report_path) if self.plan.report_path else None
        return RunResult(
            run_id=self.run_id, status=status, reason=reason, exit_code=code,
            started_at=started_at, finished_at=time.time(),
            stdout=self.out.text(), stderr=self.err.text(),
            truncated=self.out.truncated or self.err.truncated, tests=tests, pid=proc.pid)
