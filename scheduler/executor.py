"""The executor interface between the scheduler and whatever runs the jobs.

The local :class:`sandbox.pool.WorkerPool` implements it; a distributed executor, or a fake
one in tests, can take its place without the scheduler changing.

Lifecycle: ``open(on_started, on_result)`` → ``submit()``... → ``close(grace)``. ``open`` and
``close`` are the words every long-lived component of the server uses for acquiring and
releasing its threads and processes; ``start``/``stop`` are reserved for the scheduler's
actions that switch dispatching on and off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sandbox.types import RunRequest, RunResult


class Executor(Protocol):
    size: int

    def open(self, on_started: Callable[[int, float, int], None],
             on_result: Callable[[RunResult], None]) -> None:
        """Begin accepting runs; report each start and each result through the callbacks."""

    def submit(self, request: RunRequest) -> None:
        """Queue a run without blocking; raise :class:`sandbox.errors.PoolClosed` once closing."""

    def alive(self) -> int:
        """How many workers can run jobs now."""

    def busy(self) -> int: ...

    def isolation(self) -> dict | None:
        """``{"level": ..., "layers": [...]}``: how runs are contained (None: not known yet)."""

    def queued(self) -> int: ...

    def close(self, grace: float = 10.0) -> None:
        """Stop taking runs; let running ones end within ``grace`` seconds, cancel the rest,
        and return once the executor has stopped (reporting each unfinished run's result)."""
