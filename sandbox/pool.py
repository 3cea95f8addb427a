"""The worker pool: long-lived worker processes under one supervisor thread.

``submit`` never blocks: a request waits in a queue ordered by its start time until the
number of runs in flight (prepared or running, across all workers) is below the policy's
``rate_limits.max_concurrent_runs``; it is then handed to the worker with the fewest runs,
which prepares it at once and releases it at its start time (:mod:`sandbox.worker`). The
scheduler hands runs over a little ahead of their slots, so the slow part of a start is
paid before the slot.

The supervisor thread owns the workers and is the only one that talks to them. It waits on
their pipes and process sentinels (no polling), hands out requests, passes on discards and
policy changes, reports starts, results and discarded runs through callbacks, replaces a
worker that died and kills one that stopped answering (a run exceeded its timeout by
``hang_grace`` seconds). A dead worker's runs that had started, or were due to, are recorded
as ``error`` with the reason; those still waiting for their start time are prepared again by
another worker. The server process is a child subreaper, so processes orphaned by a dead
worker land here and are killed too.

Each worker sits in a *seat*: the seat holds the worker process, its pipe, the runs it
holds and the directory its runs' directories are made in (a temporary directory of the
seat's own); a worker that dies is replaced in the same seat, and since a dead worker
cleans up nothing, its runs' directories go with that directory.

Lifecycle (the same words as every long-lived component of the server): ``open()`` starts
the workers, ``submit()``... hands them runs, ``close(grace)`` stops taking runs, discards
the prepared ones, lets running ones end within ``grace`` seconds, cancels the rest and
waits for the supervisor.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from pathlib import Path

import psutil

from policies import Policy

from . import cgroups, procs
from .errors import PoolClosed
from .types import Outcome, ProtectedPaths, RunRequest, RunResult
from .worker import worker_main

log = logging.getLogger(__name__)

StartedCallback = Callable[[int, float, int], None]
ResultCallback = Callable[[RunResult], None]
DiscardedCallback = Callable[[int], None]
# A run whose worker dies this close to its start time (or later) is not prepared again.
RESTART_MARGIN = 0.05


@dataclass
class _Assigned:
    """A run a worker holds; it must have ended by ``deadline`` (monotonic clock)."""

    request: RunRequest
    deadline: float
    started: bool = False


@dataclass
class _Seat:
    """One worker process, what it can hold (``capacity``, known from its hello) and the
    runs it holds."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    rundirs: Path
    capacity: int = 1
    runs: dict[int, _Assigned] = field(default_factory=dict)
    hung: int | None = None  # the run whose overdue end got the worker killed


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
        self._on_discarded: DiscardedCallback = lambda run_id: None
        self._hang_grace = hang_grace
        self._log_level = log_level
        self._log_formatter = log_formatter
        self._clock = clock
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._queue: list[tuple[float, int, RunRequest]] = []
        self._order = itertools.count()
        self._discards: set[int] = set()  # asked for, until the run leaves its worker
        self._discards_sent: set[int] = set()
        self._policy: Policy | None = None
        self._policy_sent: Policy | None = None
        self._seats: list[_Seat] = []
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._cancel_reason: str | None = None
        self._isolation: dict | None = None
        self._cgroups = cgroups.CgroupSupport()
        self._thread = threading.Thread(target=self._supervise, name="pool-supervisor", daemon=True)

    # -- public API ---------------------------------------------------------------------

    def open(self, on_started: StartedCallback, on_result: ResultCallback,
             on_discarded: DiscardedCallback = lambda run_id: None) -> None:
        """Start the workers; the callbacks are called from the supervisor thread."""
        self._on_started = on_started
        self._on_result = on_result
        self._on_discarded = on_discarded
        procs.become_subreaper()
        self._cgroups = cgroups.detect()
        stale = cgroups.sweep_stale(self._cgroups)
        if stale:
            log.warning("removed %d cgroups left by workers of an earlier server", stale)
        self._thread.start()

    def submit(self, request: RunRequest) -> None:
        """Queue ``request``, to be started at ``request.scheduled_for`` (None: at once)."""
        with self._lock:
            if self._closing:
                raise PoolClosed("the worker pool is shutting down")
            self._note_policy(request.policy)
            self._enqueue(request)
        self._wake()

    def discard(self, run_id: int) -> None:
        """Drop ``run_id`` if it has not started yet (``on_discarded`` says so later); a
        run already released goes on and reports its result as usual."""
        with self._lock:
            self._discards.add(run_id)
        self._wake()

    def revise(self, policy: Policy) -> None:
        """``policy`` is now in force: runs prepared under an older one are checked again."""
        with self._lock:
            self._note_policy(policy)
        self._wake()

    def alive(self) -> int:
        """How many workers are running now."""
        with self._lock:
            return sum(1 for s in self._seats if s.process.is_alive())

    def busy(self) -> int:
        """How many runs have started and not ended."""
        with self._lock:
            return sum(a.started for s in self._seats for a in s.runs.values())

    def queued(self) -> int:
        """How many runs wait for their start: in the queue, or prepared by a worker."""
        with self._lock:
            return len(self._queue) + sum(not a.started for s in self._seats
                                          for a in s.runs.values())

    def in_flight(self) -> int:
        """How many runs the workers hold, prepared or running (what the policy's
        ``max_concurrent_runs`` bounds)."""
        with self._lock:
            return self._held()

    def _held(self) -> int:
        """How many runs the workers hold (callers hold the lock)."""
        return sum(len(s.runs) for s in self._seats)

    def isolation(self) -> dict | None:
        """What the workers detected: ``{"level": ..., "layers": [...]}`` (None until one
        worker has started)."""
        return self._isolation

    def close(self, grace: float = 10.0, *, timeout: float = 15.0) -> None:
        """Stop taking work; runs not started yet are dropped (those whose time has not
        come as discarded, the others as ``interrupted``); running ones get ``grace``
        seconds, then are cancelled; wait up to ``timeout`` seconds more for the
        supervisor and the workers to end."""
        now = self._clock()
        with self._lock:
            self._closing = True
            dropped = [request for _, _, request in self._queue]
            self._queue.clear()
            for seat in self._seats:
                self._discards.update(run_id for run_id, a in seat.runs.items() if not a.started)
        for request in dropped:
            if request.scheduled_for is not None and request.scheduled_for > now:
                self._call(self._on_discarded, request.run_id)
            else:
                self._report(RunResult(run_id=request.run_id, status=Outcome.INTERRUPTED,
                                       reason="the server stopped before the run started",
                                       finished_at=now))
        self._wake()
        end = time.monotonic() + grace
        while self.in_flight() and time.monotonic() < end:
            time.sleep(0.05)
        if self.in_flight():
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

    def _enqueue(self, request: RunRequest) -> None:
        """Queue ``request`` by its start time, in arrival order among equals (callers hold
        the lock)."""
        heapq.heappush(self._queue, (request.scheduled_for or 0.0, next(self._order), request))

    def _note_policy(self, policy: Policy) -> None:
        """Keep the newest policy seen (callers hold the lock)."""
        if self._policy is None or policy.revision > self._policy.revision:
            self._policy = policy

    # -- supervisor thread --------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _spawn(self) -> _Seat:
        parent, child = self._ctx.Pipe(duplex=True)
        rundirs = Path(tempfile.mkdtemp(prefix="task-worker-"))
        process = self._ctx.Process(target=worker_main,
                                    args=(child, self._protected, self._log_level,
                                          self._log_formatter, rundirs),
                                    name="task-worker", daemon=False)
        try:
            process.start()
        except BaseException:
            shutil.rmtree(rundirs, ignore_errors=True)
            raise
        child.close()
        log.info("worker started: pid %d", process.pid)
        return _Seat(process=process, conn=parent, rundirs=rundirs)

    def _supervise(self) -> None:
        os.set_blocking(self._wake_w, False)
        with self._lock:
            self._seats = [self._spawn() for _ in range(self.size)]
        while True:
            with self._lock:
                seats = list(self._seats)
                closing = self._closing
                cancel = self._cancel_reason
            if closing and not any(s.runs for s in seats):
                break
            if cancel:
                self._cancel_all(seats, cancel)
            waitables = [self._wake_r] + [s.conn for s in seats] + [s.process.sentinel for s in seats]
            deadlines = [a.deadline for s in seats for a in s.runs.values()]
            timeout = max(min(deadlines) - time.monotonic(), 0) if deadlines else None
            ready = wait(waitables, timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for seat in seats:
                connected = self._receive(seat) if seat.conn in ready else True
                if not connected or seat.process.sentinel in ready:
                    self._replace(seat, closing)
            self._check_hung()
            self._pass_on()
            self._assign()
        self._shutdown_workers()

    def _receive(self, seat: _Seat) -> bool:
        """Handle every message waiting on ``seat``; False once the worker's pipe is closed."""
        try:
            while seat.conn.poll():
                message = seat.conn.recv()
                kind = message[0]
                if kind == "hello":
                    self._isolation, seat.capacity = message[1], message[2]
                elif kind == "started":
                    _, run_id, started_at, pid = message
                    if run_id in seat.runs:
                        seat.runs[run_id].started = True
                    self._call(self._on_started, run_id, started_at, pid)
                elif kind == "done":
                    result: RunResult = message[1]
                    self._release_seat(seat, result.run_id)
                    self._report(result)
                elif kind == "discarded":
                    self._release_seat(seat, message[1])
                    self._call(self._on_discarded, message[1])
        except (EOFError, OSError):
            return False
        return True

    def _release_seat(self, seat: _Seat, run_id: int) -> None:
        with self._lock:
            seat.runs.pop(run_id, None)
            self._discards.discard(run_id)

    def _replace(self, seat: _Seat, closing: bool) -> None:
        # The pipe closes a moment before the process can be reaped; give it that moment.
        seat.process.join(1)
        code = seat.process.exitcode
        reason = procs.describe_exit(code) if code is not None else "stopped answering"
        if seat.hung is not None:
            reason = (f"it did not report the end of run {seat.hung} within "
                      f"{self._hang_grace:g} s of its timeout and was killed")
        if code is None:
            seat.process.kill()
            seat.process.join(1)
        log.warning("worker pid %d died: %s", seat.process.pid, reason)
        self._kill_orphans()
        cgroups.sweep(self._cgroups, seat.process.pid)
        shutil.rmtree(seat.rundirs, ignore_errors=True)
        seat.conn.close()
        now = self._clock()
        with self._lock:
            lost = list(seat.runs.values())
            seat.runs.clear()
            index = self._seats.index(seat)
            if closing:
                self._seats.pop(index)
            else:
                self._seats[index] = self._spawn()
            again = {a.request.run_id for a in lost if not closing and not a.started
                     and a.request.run_id not in self._discards
                     and (a.request.scheduled_for or 0.0) > now + RESTART_MARGIN}
            for assigned in lost:
                if assigned.request.run_id in again:
                    self._enqueue(assigned.request)
        for assigned in lost:
            run_id = assigned.request.run_id
            if run_id in again:
                log.warning("run %d was prepared by worker pid %d, which died; preparing it again",
                            run_id, seat.process.pid, extra={"run_id": run_id})
            elif not assigned.started and run_id in self._discards:
                self._release_seat(seat, run_id)
                self._call(self._on_discarded, run_id)
            else:
                self._report(RunResult(run_id=run_id, status=Outcome.ERROR,
                                       reason=f"the worker running it (pid {seat.process.pid}) "
                                              f"died: {reason}", finished_at=now))

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
            overdue = [run_id for run_id, a in seat.runs.items() if now >= a.deadline]
            if overdue and seat.process.is_alive() and seat.hung is None:
                log.error("worker pid %d did not finish run %d in time; killing it",
                          seat.process.pid, overdue[0], extra={"run_id": overdue[0]})
                seat.hung = overdue[0]
                seat.process.kill()

    def _pass_on(self) -> None:
        """Send the workers what other threads asked for: discards and a newer policy."""
        with self._lock:
            discards = set(self._discards)
            queued = [entry for entry in self._queue if entry[2].run_id in discards] if discards else []
            if queued:
                self._queue = [entry for entry in self._queue if entry[2].run_id not in discards]
                heapq.heapify(self._queue)
            policy = self._policy if self._policy is not self._policy_sent else None
            self._policy_sent = self._policy
            sends = [(seat, ("discard", run_id)) for seat in self._seats
                     for run_id, a in seat.runs.items()
                     if run_id in discards and run_id not in self._discards_sent and not a.started]
            held = {run_id for seat in self._seats for run_id in seat.runs}
            self._discards -= {entry[2].run_id for entry in queued}
            self._discards &= held
            self._discards_sent = (self._discards_sent | {m[1] for _, m in sends}) & held
        for _, _, request in queued:
            self._call(self._on_discarded, request.run_id)
        if policy is not None:
            sends += [(seat, ("policy", policy)) for seat in self._seats]
        for seat, message in sends:
            self._send(seat, message)

    def _assign(self) -> None:
        with self._lock:
            if self._closing or not self._queue:
                return
            # Every queued request noted its policy: there is one.
            bound = self._policy.rate_limits.concurrent_runs
            in_flight = self._held()
            jobs = []
            while self._queue and in_flight < bound:
                open_seats = [s for s in self._seats
                              if s.process.is_alive() and len(s.runs) < s.capacity]
                if not open_seats:
                    break
                seat = min(open_seats, key=lambda s: len(s.runs))
                _, _, request = heapq.heappop(self._queue)
                if request.policy.revision < self._policy.revision:
                    request = replace(request, policy=self._policy)
                timeout = request.timeout or request.policy.limits.timeout_seconds
                wait_for = max(0.0, (request.scheduled_for or 0.0) - self._clock())
                seat.runs[request.run_id] = _Assigned(
                    request, time.monotonic() + wait_for + timeout + self._hang_grace)
                in_flight += 1
                jobs.append((seat, request))
        for seat, request in jobs:
            self._send(seat, ("run", request))

    def _send(self, seat: _Seat, message: tuple) -> None:
        try:
            seat.conn.send(message)
        except OSError as exc:
            # The worker is dying: its sentinel wakes the loop, which settles its runs.
            log.warning("could not send %r to worker pid %d: %s", message[0],
                        seat.process.pid, exc)

    def _cancel_all(self, seats: list[_Seat], reason: str) -> None:
        with self._lock:
            self._cancel_reason = None
        for seat in seats:
            if seat.runs:
                self._send(seat, ("cancel", reason))
                for assigned in seat.runs.values():
                    assigned.deadline = min(assigned.deadline, time.monotonic() + 5.0)

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
        for seat in self._seats:
            shutil.rmtree(seat.rundirs, ignore_errors=True)

    def _report(self, result: RunResult) -> None:
        self._call(self._on_result, result)

    @staticmethod
    def _call(callback: Callable, *args) -> None:
        try:
            callback(*args)
        except Exception:  # a scheduler bug must not stop the supervisor: log it whole
            log.exception("run callback failed")
