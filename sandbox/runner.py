"""One run inside a worker: prepared ahead of its start, released on time, watched to its end.

A :class:`Run` is driven by the worker's event loop (:mod:`sandbox.worker`), which runs
many at once. :func:`prepare` does everything that does not depend on the instant of the
start: the policy re-check and launch plan, the run's directory, its cgroups, and the
child forked, confined and parked just before ``exec`` (:mod:`sandbox.spawn`). At its start
time the loop calls :meth:`Run.release`, which writes one byte: nothing else lies between
the slot and ``exec``. A run that may not be released (its task removed or paused, the
server stopping) is :meth:`~Run.discard`\\ ed: its child exits having run nothing.

Once released, the loop tells the run of its descriptors (output pipes, the started pipe,
a pidfd that becomes readable when its first process exits) and of the instants it asked
for (:meth:`Run.next_time`): the timeout, the output cap, a cancel, and, where the kernel
does not enforce them, the sampled memory and process caps. A run is ``killed`` for memory
when its cgroup's OOM counter moved, whichever of its processes was killed and whatever the
exit code. When the first process ends or the run is stopped, everything left of the run
is killed (politely first when it is stopped for a reason other than a cap), its output is
drained, and :meth:`Run.result` says what happened.

Runs are told apart by their PID namespace: every process of a run lies below its
namespace's init. Without PID namespaces a worker has one run at a time (``capacity`` 1)
and treats all of its descendants as that run's, as before.
"""

from __future__ import annotations

import enum
import logging
import os
import selectors
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from policies import PathNotAllowed, Policy, PolicyViolation
from policies.errors import IsolationUnavailable

from . import procs, spawn
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


class Phase(enum.Enum):
    PREPARED = "prepared"   # parked before exec, waiting for its start time
    STARTING = "starting"   # released; the started pipe has not said how it went
    RUNNING = "running"
    STOPPING = "stopping"   # asked to end politely (SIGTERM); killed at the grace's end
    DRAINING = "draining"   # every process gone; reading what is left of the output
    DONE = "done"


class Stream(enum.Enum):
    """What a descriptor the loop watches is to the run."""

    STDOUT = "stdout"
    STDERR = "stderr"
    STARTED = "started"
    EXITED = "exited"


@dataclass
class _Stop:
    status: Outcome
    reason: str


def prepare(request: RunRequest, confiner: Confiner, *, now: float | None = None,
            rundirs: Path | None = None) -> "Run | RunResult":
    """Prepare ``request``'s process, to be released at ``request.scheduled_for`` (epoch
    seconds; None or past: at once), its run directory made in ``rundirs`` (None: the
    system's temporary directory). Returns the prepared run, or the result of a run that
    ends here: ``rejected`` by the policy, or ``error`` when its cgroups or its process
    could not be made."""
    now = time.time() if now is None else now
    # Read with ``now``: the release instant must not move by the time preparing takes.
    release_at = time.monotonic() + max(0.0, (request.scheduled_for or now) - now)
    rundir = Path(tempfile.mkdtemp(prefix=f"run-{request.run_id}-", dir=rundirs))
    confinement = None
    try:
        tmpdir = rundir / "tmp"
        tmpdir.mkdir(mode=0o1777)
        os.chmod(tmpdir, 0o1777)
        try:
            plan = checked_plan(request, confiner, rundir)
        except PolicyViolation as exc:
            shutil.rmtree(rundir, ignore_errors=True)
            return _ended(request, Outcome.REJECTED, f"{exc.code}: {exc.message}")
        if plan.report_path is not None:
            os.close(os.open(plan.report_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        if confiner.confines:
            try:
                confinement = confiner.prepare(request.run_id, plan,
                                               request.policy.allowed_directories,
                                               request.policy.network)
            except OSError as exc:
                shutil.rmtree(rundir, ignore_errors=True)
                return _ended(request, Outcome.ERROR, f"could not make the run's cgroups: {exc}")
        parked = spawn.park(plan, confinement)
    except OSError as exc:
        if confinement is not None:
            confinement.close()
        shutil.rmtree(rundir, ignore_errors=True)
        return _ended(request, Outcome.ERROR, f"could not start the job: {exc.strerror or exc}")
    return Run(request, plan, rundir, parked, confinement, release_at)


def checked_plan(request: RunRequest, confiner: Confiner, rundir: Path) -> LaunchPlan:
    """The run's launch plan under ``request.policy``; raises PolicyViolation if it may not
    run (the policy's rules, the isolation it requires, the server's own ground)."""
    plan = plan_run(request, rundir / "tmp", report_dir=rundir)
    _check_confinable(request, plan, confiner)
    return plan


def _ended(request: RunRequest, status: Outcome, reason: str) -> RunResult:
    return RunResult(run_id=request.run_id, status=status, reason=reason, finished_at=time.time())


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


class Run:
    """One run's process and its supervision (see the module docstring)."""

    def __init__(self, request: RunRequest, plan: LaunchPlan, rundir: Path, parked: spawn.Parked,
                 confinement: Confinement | None, release_at: float):
        self.request = request
        self.run_id = request.run_id
        self.plan = plan
        self.rundir = rundir
        self.parked = parked
        self.pid = parked.pid
        self.confinement = confinement
        self.cgroups = confinement.cgroups if confinement is not None else None
        self.release_at = release_at
        self.phase = Phase.PREPARED
        limit = plan.limits.max_output_kb * 1024
        self.out = OutputCapture(limit)
        self.err = OutputCapture(limit)
        self.output_limit = limit
        self.stop: _Stop | None = None
        self.start_error: str | None = None
        self.started_at: float | None = None
        self.exit_status: int | None = None
        self.exit_fd: int | None = None
        self.deadline = 0.0
        self.next_sample = 0.0
        self.grace_end = 0.0
        self.drain_end = 0.0
        self.open_streams: set[int] = set()
        self._started_text = b""
        self._job_code: int | None = None
        self._result: RunResult | None = None

    @property
    def separate(self) -> bool:
        """Whether the run's processes can be told from other runs' (a PID namespace)."""
        return self.confinement is not None and self.confinement.has_init

    @property
    def released(self) -> bool:
        return self.phase is not Phase.PREPARED

    # -- before the start ---------------------------------------------------------------

    def same_launch(self, plan: LaunchPlan, request: RunRequest) -> bool:
        """Whether ``plan`` under ``request``'s policy starts exactly the process already
        prepared (so a policy change does not need it prepared again)."""
        old, new = self.plan, plan
        return (old.argv == new.argv and old.cwd == new.cwd and old.env == new.env
                and old.limits == new.limits
                and self.request.policy.allowed_directories == request.policy.allowed_directories
                and self.request.policy.network == request.policy.network)

    def release(self, sel: selectors.BaseSelector) -> None:
        """Let the job ``exec`` now, and watch its descriptors."""
        self.parked.release()
        self.phase = Phase.STARTING
        for fd, stream in ((self.parked.started, Stream.STARTED), (self.parked.stdout, Stream.STDOUT),
                           (self.parked.stderr, Stream.STDERR)):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, (self, stream))
            self.open_streams.add(fd)
        self.exit_fd = _pidfd(self.pid)
        if self.exit_fd is not None:
            sel.register(self.exit_fd, selectors.EVENT_READ, (self, Stream.EXITED))

    def discard(self) -> None:
        """Drop the prepared process: it exits without having run anything of the job."""
        self.parked.close_go()
        if self.exit_status is None:
            # The child may not have made its own process group yet: signal it by pid too.
            procs.signal_group(self.pid, signal.SIGKILL)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap_blocking()
        self.phase = Phase.DONE
        self.close(None)

    def abandon(self, sel: selectors.BaseSelector | None) -> None:
        """End the run at once, whatever its phase: everything of it killed and reaped, its
        resources given back. Its result is not asked for."""
        if self.phase is Phase.PREPARED:
            self.discard()
            return
        if self.phase is Phase.DONE:
            return
        self._kill_all(time.monotonic())
        self.phase = Phase.DONE
        self.close(sel)

    # -- driven by the loop -------------------------------------------------------------

    def next_time(self) -> float | None:
        """The next monotonic instant the run needs a look (None: only its descriptors)."""
        if self.phase is Phase.PREPARED:
            return self.release_at
        if self.phase is Phase.RUNNING:
            return min(self.deadline, self.next_sample)
        if self.phase is Phase.STOPPING:
            return self.grace_end
        if self.phase is Phase.DRAINING:
            return self.drain_end
        return None

    def on_ready(self, stream: Stream, sel: selectors.BaseSelector, now: float) -> str | None:
        """A watched descriptor is readable. Returns ``"started"`` when the job has just
        ``exec``\\ d (the loop reports it)."""
        if stream is Stream.EXITED:
            sel.unregister(self.exit_fd)
            return None
        if stream is Stream.STARTED:
            return self._read_started(sel, now)
        fd = self.parked.stdout if stream is Stream.STDOUT else self.parked.stderr
        self._read_output(fd, sel)
        if self.out.total + self.err.total > self.output_limit:
            self._stop(Outcome.KILLED, f"output: wrote more than {self.plan.limits.max_output_kb} KB")
        return None

    def _started(self, now: float) -> str | None:
        """The started pipe reached its end: the job ``exec``\\ d, or says why it did not."""
        stamp, error = spawn.read_started(self._started_text)
        if error:
            self.start_error = error
            self._stop(Outcome.ERROR, error)
            return None
        if self.started_at is None:
            self.started_at = stamp if stamp is not None else time.time()
        if self.phase is not Phase.STARTING:
            return None
        self.phase = Phase.RUNNING
        self.deadline = now + self.plan.limits.timeout_seconds
        self.next_sample = now + SAMPLE_INTERVAL
        return "started"

    def cancel(self, reason: str) -> None:
        """End a released run as ``interrupted`` (the server stops or went away)."""
        self._stop(Outcome.INTERRUPTED, reason)

    def exited(self, status: int) -> None:
        """The loop reaped the run's first process with wait status ``status``."""
        self.exit_status = status

    def tick(self, sel: selectors.BaseSelector, now: float) -> str | None:
        """Advance the run as far as it can go at ``now`` without blocking. Returns
        ``"started"`` when it only now learnt that the job ``exec``\\ d (it ended so soon
        that its end was seen first)."""
        event = None
        if (self.phase is Phase.STARTING and self.exit_status is not None
                and self.parked.started in self.open_streams):
            event = self._read_started(sel, now)
        if self.phase is Phase.RUNNING and self.exit_status is None and self.stop is None:
            if now >= self.deadline:
                self._stop(Outcome.TIMED_OUT,
                           f"timeout: ran longer than {self.plan.limits.timeout_seconds:g} s")
            elif now >= self.next_sample:
                self.next_sample = now + SAMPLE_INTERVAL
                self._sample()
        if self.phase in (Phase.STARTING, Phase.RUNNING) and (
                self.exit_status is not None or self.stop is not None):
            polite = (self.exit_status is None and self.stop is not None
                      and self.stop.status not in (Outcome.KILLED, Outcome.ERROR))
            if polite:
                procs.signal_group(self.pid, signal.SIGTERM)
                self.phase = Phase.STOPPING
                self.grace_end = now + TERM_GRACE
            else:
                self._kill_all(now)
        if self.phase is Phase.STOPPING and (self.exit_status is not None or now >= self.grace_end):
            self._kill_all(now)
        if self.phase is Phase.DRAINING:
            self._drain(sel, now)
        return event

    # -- ending -------------------------------------------------------------------------

    def _stop(self, status: Outcome, reason: str) -> None:
        if self.stop is None:
            self.stop = _Stop(status, reason)

    def _kill_all(self, now: float) -> None:
        """Kill every process left of the run and reap its first one; then drain."""
        procs.signal_group(self.pid, signal.SIGKILL)
        if self.confinement is not None:
            self.confinement.end()
        if self.exit_status is None:
            self._reap_blocking()
        if not self.separate and procs.has_children():
            procs.kill_descendants()
        self.phase = Phase.DRAINING
        self.drain_end = now + DRAIN_TIMEOUT

    def _reap_blocking(self) -> None:
        """Wait for the first process, which was sent SIGKILL (quick, bounded by the kernel)."""
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = None
        if self.exit_status is None:
            self.exit_status = status

    def _drain(self, sel: selectors.BaseSelector, now: float) -> None:
        if self.parked.started in self.open_streams:
            self._read_started(sel, now)
        for fd in list(self.open_streams - {self.parked.started}):
            while self._read_output(fd, sel):
                pass
        streams = self.open_streams - {self.parked.started}
        if not streams or now >= self.drain_end:
            self._finish(sel)

    def _finish(self, sel: selectors.BaseSelector) -> None:
        """Settle the result while the run's cgroups still say what happened; then close."""
        if self.confinement is not None and self.exit_status is not None:
            self._job_code = self.confinement.job_returncode(
                os.waitstatus_to_exitcode(self.exit_status))
        self._result = self._outcome()
        self.phase = Phase.DONE
        self.close(sel)

    def _read_started(self, sel: selectors.BaseSelector, now: float) -> str | None:
        """Read what the started pipe holds; at its end, learn whether the job ran (see
        :meth:`_started`)."""
        fd = self.parked.started
        try:
            while data := os.read(fd, READ_CHUNK):
                self._started_text += data
        except BlockingIOError:
            return None
        self._unwatch(fd, sel)
        return self._started(now)

    def _read_output(self, fd: int, sel: selectors.BaseSelector) -> bool:
        """Read one chunk of ``fd`` (stdout or stderr) into its capture; False when there is
        nothing to read now or the pipe reached its end (it is then no longer watched)."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        if not data:
            self._unwatch(fd, sel)
            return False
        (self.out if fd == self.parked.stdout else self.err).feed(data)
        return True

    def _unwatch(self, fd: int, sel: selectors.BaseSelector) -> None:
        sel.unregister(fd)
        self.open_streams.discard(fd)

    def close(self, sel: selectors.BaseSelector | None) -> None:
        """Give back everything the run holds: descriptors, cgroups, its directory."""
        if sel is not None:
            for fd in list(self.open_streams) + ([self.exit_fd] if self.exit_fd is not None else []):
                try:
                    sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
        self.open_streams.clear()
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        self.parked.close()
        if self.confinement is not None:
            self.confinement.close()
        shutil.rmtree(self.rundir, ignore_errors=True)

    # -- sampling -----------------------------------------------------------------------

    def _tree(self) -> list[psutil.Process]:
        """The run's live processes but its namespace init."""
        return procs.descendants(self.pid) if self.separate else procs.descendants()

    def _sample(self) -> None:
        limits = self.plan.limits
        cgroups = self.cgroups
        if cgroups is not None and cgroups.pids_refused():
            self._stop(Outcome.KILLED, processes_reason(limits.max_processes))
            return
        watch_escape = cgroups is not None and self.confinement.cgroups_reachable
        kernel_caps = cgroups is not None and cgroups.memory is not None and cgroups.pids is not None
        if kernel_caps and not watch_escape:
            return  # the kernel enforces both caps exactly; sampling could only misjudge
        tree = self._tree()
        if watch_escape and _left(cgroups, tree):
            self._stop(Outcome.KILLED, "cgroup: a process of the run left its cgroups")
            return
        if kernel_caps:
            return
        if len(tree) > limits.max_processes:
            self._stop(Outcome.KILLED, f"processes: more than {limits.max_processes} processes (sampled)")
            return
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        if rss > limits.memory_mb * 1024 * 1024:
            self._stop(Outcome.KILLED, f"memory: used more than {limits.memory_mb} MB, "
                                       f"{rss // 1048576} MB (sampled)")

    # -- the result ---------------------------------------------------------------------

    def result(self) -> RunResult:
        """What happened, once the run is :attr:`Phase.DONE`."""
        assert self._result is not None, "the run has not ended"
        return self._result

    def _outcome(self) -> RunResult:
        limits = self.plan.limits
        if self.start_error is not None:
            return RunResult(run_id=self.run_id, status=Outcome.ERROR, reason=self.start_error,
                             finished_at=time.time(), stdout=self.out.text(), stderr=self.err.text())
        code = self._job_code
        if code is None and self.exit_status is not None:
            code = os.waitstatus_to_exitcode(self.exit_status)
        oom_kills = self.cgroups.oom_kills() if self.cgroups is not None else 0
        refused = self.cgroups.pids_refused() if self.cgroups is not None else 0
        stop = self.stop
        if stop is not None and stop.status is Outcome.INTERRUPTED:
            status, reason = stop.status, stop.reason
        elif oom_kills:
            status, reason = Outcome.KILLED, memory_reason(limits.memory_mb, oom_kills)
        elif refused and stop is None:
            # The refused fork may have made the job fail or exit at once, before a sample.
            status, reason = Outcome.KILLED, processes_reason(limits.max_processes)
        elif stop is not None:
            status, reason = stop.status, stop.reason
        elif code == 0:
            status, reason = Outcome.SUCCEEDED, None
        elif code == -signal.SIGXCPU:
            status = Outcome.KILLED
            reason = f"cpu: used more than {limits.cpu_seconds} s of CPU time"
        elif code == -signal.SIGXFSZ:
            status = Outcome.KILLED
            reason = f"file size: wrote a file larger than {limits.file_size_mb} MB"
        else:
            status, reason = Outcome.FAILED, procs.describe_exit(code if code is not None else -9)
        tests = read_junit_counts(self.plan.report_path) if self.plan.report_path else None
        return RunResult(
            run_id=self.run_id, status=status, reason=reason, exit_code=code,
            started_at=self.started_at, finished_at=time.time(),
            stdout=self.out.text(), stderr=self.err.text(),
            truncated=self.out.truncated or self.err.truncated, tests=tests, pid=self.pid)


def recheck(run: Run, policy: Policy, confiner: Confiner) -> "RunResult | RunRequest | None":
    """Check a prepared run again under a changed ``policy``: None if it may start as
    prepared, a ``rejected`` result if it may no longer run, or the request to prepare
    again (the policy allows it, but with a different launch: other limits, paths, ...)."""
    request = replace(run.request, policy=policy)
    try:
        plan = checked_plan(request, confiner, run.rundir)
    except PolicyViolation as exc:
        return _ended(request, Outcome.REJECTED, f"{exc.code}: {exc.message}")
    if run.same_launch(plan, request):
        run.request = request
        return None
    return request


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux ≥ 5.3), so the loop
    wakes at once instead of at its next sample."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
