"""The executor interface between the scheduler and whatever runs the jobs.

The local :class:`sandbox.pool.WorkerPool` implements it; a distributed executor, or a fake
one in tests, can take its place without the scheduler changing.

Lifecycle: ``open(on_started, on_result, on_discarded)`` → ``submit()``... → ``close(grace)``.
``open`` and ``close`` are the words every long-lived component of the server uses for
acquiring and releasing its threads and processes; ``start``/``stop`` are reserved for the
scheduler's actions that switch dispatching on and off.

Prepared runs: a run is *released* (its confined process starts the job) at its
``scheduled_for``; the executor may *prepare* it earlier (fork it and set up its
confinement), which is why the dispatcher fires slots ahead of them. Until it is released,
the scheduler may take it back (``discard``), and a new policy (``revise``) applies to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from policies import Policy
from sandbox.types import RunRequest, RunResult


class Executor(Protocol):
    size: int

    def open(self, on_started: Callable[[int, float, int], None],
             on_result: Callable[[RunResult], None],
             on_discarded: Callable[[int], None]) -> None:
        """Begin accepting runs; report each start (run id, time, pid), each result, and
        each run dropped before it started because the scheduler asked ``discard`` (run id)
        through the callbacks, from the executor's thread."""

    def submit(self, request: RunRequest) -> None:
        """Queue a run without blocking; raise :class:`sandbox.errors.PoolClosed` once closing.
        The run is released at ``request.scheduled_for`` (None or past: at once) and may be
        prepared before."""

    def discard(self, run_id: int) -> None:
        """Take back a submitted run, without blocking: one not released yet is dropped and
        reported through ``on_discarded`` later; one already released goes on, and its result
        comes as usual."""

    def revise(self, policy: Policy) -> None:
        """``policy`` is in force from now on: runs prepared but not released are checked
        against it again (a run it forbids ends ``rejected``)."""

    def alive(self) -> int:
        """How many workers can run jobs now."""

    def busy(self) -> int:
        """How many runs have started and not ended."""

    def isolation(self) -> dict | None:
        """``{"level": ..., "layers": [...]}``: how runs are contained (None: not known yet)."""

    def queued(self) -> int:
        """How many runs wait for their start (queued, or prepared ahead of it)."""

    def close(self, grace: float = 10.0) -> None:
        """Stop taking runs; let running ones end within ``grace`` seconds, cancel the rest,
        and return once the executor has stopped (reporting each unfinished run's result)."""
