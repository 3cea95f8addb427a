"""The worker pool: N long-lived worker processes under one supervisor thread.

``submit`` never blocks: requests wait in a FIFO until a worker is idle. The supervisor
thread owns the workers. It waits on their pipes and process sentinels (no polling), hands
out requests, reports starts and results through callbacks, replaces a worker that died
(recording its run as ``error`` with the reason) and kills one that stopped answering
(its run exceeded its timeout by ``hang_grace`` seconds). The server process is a child
subreaper, so processes orphaned by a dead worker land here and are killed too.

Each worker sits in a *seat*: the seat holds the worker process, its pipe and the run it is
running; a worker that dies is replaced in the same seat.

Lifecycle (the same words as every long-lived component of the server): ``open()`` starts
the workers, ``submit()``... hands them runs, ``close(grace)`` stops taking runs, lets
running ones end within ``grace`` seconds, cancels the rest and waits for the supervisor.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait

import psutil

from . import cgroups, procs
from .errors import PoolClosed
from .types import Outcome, ProtectedPaths, RunRequest, RunResult
from .worker import worker_main

log = logging.getLogger(__name__)

StartedCallback = Callable[[int, float, int], None]
ResultCallback = Callable[[RunResult], None]


@dataclass
class _Seat:
    """One worker process and the run it is running (``current``), which must end by
    ``deadline`` (on the monotonic clock)."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    current: RunRequest | None = None
    deadline: float | None = None
    hung: bool = False


class WorkerPool:
    """A supervised pool of ``size`` worker processes (see the module docstring).

    ``clock`` gives the wall-clock times recorded for the runs the pool ends itself (a
    lost worker, a closing pool); timeouts are measured on the monotonic clock.
    """

    def __init__(self, size: int, *, protected: ProtectedPaths = ProtectedPaths(),
                 hang_grace: float = 10.0, log_level: int = logging.WARNING,
                 log_formatter: logging.Formatter | None = None,
                 clock: Callable[[], float] = time.time):
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self._protected = protected
        self._on_started: StartedCallback = lambda run_id, started_at, pid: None
        self._on_result: ResultCallback = lambda result: None
        self._hang_grace = hang_grace
        self._log_level = log_level
        self._log_formatter = log_formatter
        self._clock = clock
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._queue: deque[RunRequest] = deque()
        self._seats: list[_Seat] = []
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._cancel_reason: str | None = None
        self._isolation: dict | None = None
        self._cgroups = cgroups.CgroupSupport()
        self._thread = threading.Thread(target=self._supervise, name="pool-supervisor", daemon=True)

    # -- public API ---------------------------------------------------------------------

    def open(self, on_started: StartedCallback, on_result: ResultCallback) -> None:
        """Start the workers; ``on_started``/``on_result`` are called from the supervisor thread."""
        self._on_started = on_started
        self._on_result = on_result
        procs.become_subreaper()
        self._cgroups = cgroups.detect()
        stale = cgroups.sweep_stale(self._cgroups)
        if stale:
            log.warning("removed %d cgroups left by workers of an earlier server", stale)
        self._thread.start()

    def submit(self, request: RunRequest) -> None:
        """Queue ``request``; a worker picks it up as soon as one is idle."""
        with self._lock:
            if self._closing:
                raise PoolClosed("the worker pool is shutting down")
            self._queue.append(request)
        self._wake()

    def alive(self) -> int:
        """How many workers are running now."""
        with self._lock:
            return sum(1 for s in self._seats if s.process.is_alive())

    def busy(self) -> int:
        with self._lock:
            return sum(1 for s in self._seats if s.current is not None)

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def isolation(self) -> dict | None:
        """What the workers detected: ``{"level": ..., "layers": [...]}`` (None until one
        worker has started)."""
        return self._isolation

    def close(self, grace: float = 10.0, *, timeout: float = 15.0) -> None:
        """Stop taking work; give running jobs ``grace`` seconds, then cancel them, and wait
        up to ``timeout`` seconds more for the supervisor and the workers to end."""
        with self._lock:
            self._closing = True
            dropped = list(self._queue)
            self._queue.clear()
        for request in dropped:
            self._report(RunResult(run_id=request.run_id, status=Outcome.INTERRUPTED,
                                   reason="the server stopped before the run started",
                                   finished_at=self._clock()))
        self._wake()
        end = time.monotonic() + grace
        while self.busy() and time.monotonic() < end:
            time.sleep(0.05)
        if self.busy():
            with self._lock:
                self._cancel_reason = f"the server stopped; the run did not end within {grace:g} s"
            self._wake()
        self._join(timeout)

    def _join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("pool supervisor did not stop within %.1f s", timeout)
        for seat in self._seats:
            if seat.process.is_alive():
                seat.process.kill()
                seat.process.join(1)

    # -- supervisor thread --------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _spawn(self) -> _Seat:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=worker_main,
                                    args=(child, self._protected, self._log_level,
                                          self._log_formatter),
                                    name="task-worker", daemon=False)
        process.start()
        child.close()
        log.info("worker started: pid %d", process.pid)
        return _Seat(process=process, conn=parent)

    def _supervise(self) -> None:
        os.set_blocking(self._wake_w, False)
        with self._lock:
            self._seats = [self._spawn() for _ in range(self.size)]
        while True:
            with self._lock:
                seats = list(self._seats)
                closing = self._closing
                cancel = self._cancel_reason
            if closing and not any(s.current for s in seats):
                break
            if cancel:
                self._cancel_all(seats, cancel)
            waitables = [self._wake_r] + [s.conn for s in seats] + [s.process.sentinel for s in seats]
            deadlines = [s.deadline for s in seats if s.deadline is not None]
            timeout = max(min(deadlines) - time.monotonic(), 0) if deadlines else None
            ready = wait(waitables, timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for seat in seats:
                connected = self._receive(seat) if seat.conn in ready else True
                if not connected or seat.process.sentinel in ready:
                    self._replace(seat, closing)
            self._check_hung()
            self._assign()
        self._shutdown_workers()

    def _receive(self, seat: _Seat) -> bool:
        """Handle every message waiting on ``seat``; False once the worker's pipe is closed."""
        try:
            while seat.conn.poll():
                message = seat.conn.recv()
                if message[0] == "hello":
                    self._isolation = message[1]
                elif message[0] == "started":
                    _, run_id, started_at, pid = message
                    self._call(self._on_started, run_id, started_at, pid)
                elif message[0] == "done":
                    result: RunResult = message[1]
                    with self._lock:
                        seat.current = None
                        seat.deadline = None
                    self._report(result)
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, seat: _Seat, closing: bool) -> None:
        # The pipe closes a moment before the process can be reaped; give it that moment.
        seat.process.join(1)
        code = seat.process.exitcode
        reason = procs.describe_exit(code) if code is not None else "stopped answering"
        if seat.hung:
            reason = (f"it did not report the run's end within {self._hang_grace:g} s of its "
                      "timeout and was killed")
        if code is None:
            seat.process.kill()
            seat.process.join(1)
        log.warning("worker pid %d died: %s", seat.process.pid, reason)
        lost = seat.current
        self._kill_orphans()
        cgroups.sweep(self._cgroups, seat.process.pid)
        seat.conn.close()
        with self._lock:
            index = self._seats.index(seat)
            if closing:
                self._seats.pop(index)
            else:
                self._seats[index] = self._spawn()
        if lost is not None:
            self._report(RunResult(run_id=lost.run_id, status=Outcome.ERROR,
                                   reason=f"the worker running it (pid {seat.process.pid}) died: {reason}",
                                   finished_at=self._clock()))

    def _kill_orphans(self) -> None:
        """Kill processes a dead worker's jobs left behind, now re-parented to us."""
        with self._lock:
            known = {s.process.pid for s in self._seats if s.process.is_alive()}
        tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
        if tracker:
            known.add(tracker)
        try:
            children = psutil.Process().children()
        except psutil.Error:
            return
        for child in children:
            if child.pid in known:
                continue
            try:
                tree = [child] + child.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(tree, timeout=1)

    def _check_hung(self) -> None:
        now = time.monotonic()
        for seat in list(self._seats):
            if seat.deadline is not None and now >= seat.deadline and seat.process.is_alive():
                run_id = seat.current.run_id if seat.current else None
                log.error("worker pid %d did not finish run %s in time; killing it",
                          seat.process.pid, run_id or "?", extra={"run_id": run_id})
                seat.hung = True
                seat.process.kill()

    def _assign(self) -> None:
        with self._lock:
            if self._closing:
                return
            idle = [s for s in self._seats if s.current is None and s.process.is_alive()]
            jobs = []
            while idle and self._queue:
                seat = idle.pop()
                request = self._queue.popleft()
                timeout = request.timeout or request.policy.limits.timeout_seconds
                seat.current = request
                seat.deadline = time.monotonic() + timeout + self._hang_grace
                jobs.append((seat, request))
        for seat, request in jobs:
            try:
                seat.conn.send(("run", request))
            except OSError as exc:
                log.warning("could not hand run %d to worker pid %d: %s",
                            request.run_id, seat.process.pid, exc,
                            extra={"run_id": request.run_id})

    def _cancel_all(self, seats: list[_Seat], reason: str) -> None:
        with self._lock:
            self._cancel_reason = None
        for seat in seats:
            if seat.current is not None:
                try:
                    seat.conn.send(("cancel", reason))
                except OSError:
                    pass
                seat.deadline = time.monotonic() + 5.0

    def _shutdown_workers(self) -> None:
        for seat in self._seats:
            try:
                seat.conn.send(("stop",))
            except OSError:
                pass
        for seat in self._seats:
            seat.process.join(2)
            if seat.process.is_alive():
                seat.process.kill()
                seat.process.join(1)
            cgroups.sweep(self._cgroups, seat.process.pid)
        self._kill_orphans()

    def _report(self, result: RunResult) -> None:
        self._call(self._on_result, result)

    @staticmethod
    def _call(callback: Callable, *args) -> None:
        try:
            callback(*args)
        except Exception:  # a scheduler bug must not stop the supervisor: log it whole
            log.exception("run callback failed")
