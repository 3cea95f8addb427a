"""The worker process: prepares runs ahead of their start and supervises many at once.

A worker is started with the ``spawn`` context, so it begins single-threaded and with none
of the server's threads or locks. It makes itself a child subreaper so that every process
its jobs leave behind is re-parented to it and can be killed. When the server goes away
(the pipe reaches end of file), the worker discards what it prepared, kills what it runs
and exits: no job outlives the server, even one killed with SIGKILL.

One thread, one selector (:class:`WorkerLoop`): the server's pipe, and for every released
run its output pipes, its started pipe and a pidfd. A run request is prepared as it arrives
(:func:`sandbox.runner.prepare`: the child forked, confined and parked before ``exec``),
unless another run is to be released within :data:`PREPARE_GUARD` (preparing holds the loop
for a few milliseconds), and released at its start time; the loop's wait ends about a
millisecond before that instant and sleeps the rest precisely. Each run keeps its own
cgroups, caps, timeout and tree watch; the loop only decides *when* to look at it.

A worker runs several runs at once only where they can be told apart (PID namespaces:
every process of a run lies below its namespace's init); elsewhere its ``capacity`` is one.

Messages in:  ("run", RunRequest) · ("discard", run_id) · ("policy", Policy) ·
              ("cancel", reason) · ("stop",)
Messages out: ("hello", isolation, capacity) · ("started", run_id, started_at, pid) ·
              ("done", RunResult) · ("discarded", run_id)
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import selectors
import shutil
import signal
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from policies import Policy

from . import procs, runner
from .confine import Confiner
from .isolation import detect
from .runner import Phase, Run
from .types import Outcome, ProtectedPaths, RunRequest, RunResult

log = logging.getLogger(__name__)

# How many runs one worker supervises at once where runs can be told apart; the pool's
# in-flight bound (the policy's max_concurrent_runs) is what really limits them.
CAPACITY = 1024
# The selector's wait is rounded to whole milliseconds; the last stretch before a release
# is slept precisely instead.
PRECISE = 0.002
# A preparation holds the loop for a few milliseconds: none is begun this close before a
# release (unless the run to prepare is due first), so that the release is not held up.
PREPARE_GUARD = 0.02
_CONN = "conn"


def _ignore(signum, frame) -> None:
    """Deliberately nothing (see worker_main)."""


def worker_main(conn: Connection, protected: ProtectedPaths = ProtectedPaths(),
                log_level: int = logging.WARNING,
                log_formatter: logging.Formatter | None = None,
                rundirs: Path | None = None) -> None:
    """Entry point of a worker process; returns when told to stop or the server is gone.
    Its log lines go to stderr, shaped by ``log_formatter`` when the server gives one
    (so that they match the server's own lines). Its runs' directories are made in
    ``rundirs`` (the system's temporary directory if None), which it removes at its end;
    should the worker die, the pool removes it."""
    try:
        _work(conn, protected, log_level, log_formatter, rundirs)
    finally:
        if rundirs is not None:
            shutil.rmtree(rundirs, ignore_errors=True)


def _work(conn: Connection, protected: ProtectedPaths, log_level: int,
          log_formatter: logging.Formatter | None, rundirs: Path | None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter or logging.Formatter(
        "%(asctime)s worker %(process)d %(levelname)s %(message)s"))
    logging.basicConfig(level=log_level, handlers=[handler])
    # Ctrl-C, or a service manager's SIGTERM to the whole group, must not end a worker
    # in the middle of a run: the server decides what stops (and a worker whose server is
    # gone stops by itself). A handler rather than SIG_IGN: an ignored signal would stay
    # ignored in every job, a handled one is reset to its default on exec.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    procs.become_subreaper()
    # Inherited by every job: no core dumps (they could hold secrets and fill the disk).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    isolation = detect()
    confiner = Confiner(isolation, protected)
    capacity = CAPACITY if isolation.namespaces else 1
    # Every run's child is a fork of this process: objects the collector would walk (and
    # write to) are pages copied on the next write after each fork. What exists now lives
    # as long as the worker, so the collector leaves it alone.
    gc.freeze()
    try:
        conn.send(("hello", isolation.to_dict(), capacity))
    except OSError:
        return
    WorkerLoop(conn, confiner, rundirs).serve()


class WorkerLoop:
    """The worker's event loop over the server's pipe and its runs (see the module
    docstring)."""

    def __init__(self, conn: Connection, confiner: Confiner, rundirs: Path | None = None):
        self.conn = conn
        self.confiner = confiner
        self.rundirs = rundirs
        self.sel = selectors.DefaultSelector()
        self.sel.register(conn.fileno(), selectors.EVENT_READ, _CONN)
        self.runs: dict[int, Run] = {}
        self.waiting: dict[int, RunRequest] = {}  # received, to be prepared
        self.policy: Policy | None = None
        self.ending = False

    def serve(self) -> None:
        """Run until told to stop (or the server is gone) and every run has ended."""
        try:
            while not (self.ending and not self.runs):
                self._turn()
        finally:
            for run in list(self.runs.values()):
                self._forget(run)
            self.sel.close()

    def _turn(self) -> None:
        wait = self._wait()
        release = self._until_release()
        if release is not None and release < PRECISE:
            time.sleep(release)
            events = self.sel.select(0)
        else:
            if release is not None:
                wait = min(wait, release - PRECISE / 2)
            events = self.sel.select(wait)
        now = time.monotonic()
        for key, _ in events:
            if key.data == _CONN:
                self._receive()
                continue
            run, stream = key.data
            if run.run_id not in self.runs:
                continue
            self._guard(run, lambda: self._on_ready(run, stream, now))
        self._reap()
        self._advance()

    def _wait(self) -> float | None:
        """Seconds until the next instant a run asked for (None: nothing is timed)."""
        times = [t for t in (run.next_time() for run in self.runs.values()) if t is not None]
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    def _until_release(self) -> float | None:
        """Seconds until the next prepared run is to be released (None: none is waiting)."""
        times = [run.release_at for run in self.runs.values() if not run.released]
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    def _on_ready(self, run: Run, stream: runner.Stream, now: float) -> None:
        if run.on_ready(stream, self.sel, now) == "started":
            self._send(("started", run.run_id, run.started_at, run.pid))

    def _advance(self) -> None:
        """Release the runs whose time has come, then let every run move on."""
        now = time.monotonic()
        due = sorted((r for r in self.runs.values() if r.phase is Phase.PREPARED
                      and r.release_at <= now), key=lambda r: r.release_at)
        for run in due:
            self._guard(run, lambda r=run: r.release(self.sel))
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.released:
                self._guard(run, lambda r=run: self._tick(r, now))
            if run.phase is Phase.DONE and run.run_id in self.runs:
                del self.runs[run.run_id]
                self._send(("done", run.result()))
        self._prepare_waiting()

    def _prepare_waiting(self) -> None:
        """Prepare the runs received, in order, unless a release is imminent and they are
        not due before it (they are then prepared right after it)."""
        for run_id, request in list(self.waiting.items()):
            release = self._until_release()
            if release is not None and release < PREPARE_GUARD:
                start = (request.scheduled_for or 0.0) - time.time()
                if start > release:
                    return
            del self.waiting[run_id]
            self._prepare(request)

    def _tick(self, run: Run, now: float) -> None:
        if run.tick(self.sel, now) == "started":
            self._send(("started", run.run_id, run.started_at, run.pid))

    def _reap(self) -> None:
        """Collect every exited child; a run's first process is handed to its run, any
        other (an orphan re-parented to this subreaper) is just reaped."""
        by_pid = {run.pid: run for run in self.runs.values() if run.exit_status is None}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = by_pid.get(pid)
            if run is not None:
                run.exited(status)

    # -- messages from the server ---------------------------------------------------------

    def _receive(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                getattr(self, "_on_" + message[0])(*message[1:])
        except (EOFError, OSError):
            self._server_gone()

    def _on_run(self, request: RunRequest) -> None:
        if not self.ending:
            self.waiting[request.run_id] = request

    def _on_discard(self, run_id: int) -> None:
        if self.waiting.pop(run_id, None) is not None:
            self._send(("discarded", run_id))
            return
        run = self.runs.get(run_id)
        if run is not None and not run.released:
            self._drop(run)

    def _on_policy(self, policy: Policy) -> None:
        if self.policy is not None and self.policy.revision >= policy.revision:
            return
        self.policy = policy
        for run in [r for r in self.runs.values() if not r.released]:
            if run.request.policy.revision >= policy.revision:
                continue
            self._guard(run, lambda r=run: self._recheck(r, policy))

    def _on_cancel(self, reason: str) -> None:
        for run_id in list(self.waiting):
            self._on_discard(run_id)
        for run in list(self.runs.values()):
            if run.released:
                run.cancel(reason)
            else:
                self._drop(run)

    def _on_stop(self) -> None:
        self.ending = True
        self._on_cancel("the server stopped")

    def _server_gone(self) -> None:
        try:
            self.sel.unregister(self.conn.fileno())
        except (KeyError, ValueError, OSError):
            pass
        self.ending = True
        self.waiting.clear()
        for run in list(self.runs.values()):
            if run.released:
                run.cancel("the server went away")
            else:
                self._forget(run)

    # -- runs -----------------------------------------------------------------------------

    def _prepare(self, request: RunRequest) -> None:
        if self.policy is not None and self.policy.revision > request.policy.revision:
            request = replace(request, policy=self.policy)
        try:
            prepared = runner.prepare(request, self.confiner, rundirs=self.rundirs)
        except Exception as exc:  # one run's surprise must not cost the others their worker
            log.exception("preparing run %d failed", request.run_id, extra={"run_id": request.run_id})
            prepared = RunResult(run_id=request.run_id, status=Outcome.ERROR,
                                 reason=f"the worker could not prepare the run: {exc}",
                                 finished_at=time.time())
        if isinstance(prepared, RunResult):
            self._send(("done", prepared))
        else:
            self.runs[request.run_id] = prepared

    def _recheck(self, run: Run, policy: Policy) -> None:
        verdict = runner.recheck(run, policy, self.confiner)
        if verdict is None:
            return
        self._forget(run)
        if isinstance(verdict, RunResult):
            self._send(("done", verdict))
        else:
            self._prepare(verdict)

    def _drop(self, run: Run) -> None:
        """Discard a prepared run and say so: nothing of it ran."""
        self._forget(run)
        self._send(("discarded", run.run_id))

    def _forget(self, run: Run) -> None:
        """Take ``run`` out of the loop, its processes killed and its resources released."""
        self.runs.pop(run.run_id, None)
        run.abandon(self.sel)

    def _guard(self, run: Run, step) -> None:
        """Do ``step`` for ``run``; a bug in it ends that run as ``error``, not the worker."""
        try:
            step()
        except Exception as exc:
            log.exception("run %d: the worker failed to supervise it", run.run_id,
                          extra={"run_id": run.run_id})
            self._forget(run)
            self._send(("done", RunResult(run_id=run.run_id, status=Outcome.ERROR,
                                          reason=f"the worker failed to supervise the run: {exc}",
                                          started_at=run.started_at, finished_at=time.time())))

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            self._server_gone()

