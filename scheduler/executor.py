"""The executor interface between the scheduler and whatever runs the jobs.

The local :class:`sandbox.pool.WorkerPool` implements it; a distributed executor, or a fake
one in tests, can take its place without the scheduler changing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sandbox.types import RunRequest, RunResult


class Executor(Protocol):
    size: int

    def start(self, on_started: Callable[[int, float, int], None],
              on_result: Callable[[RunResult], None]) -> None:
        """Begin accepting runs; report each start and each result through the callbacks."""

    def submit(self, request: RunRequest) -> None:
        """Queue a run without blocking."""

    def alive(self) -> int:
        """How many workers can run jobs now."""

    def busy(self) -> int: ...

    def isolation(self) -> dict | None:
        """``{"level": ..., "layers": [...]}``: how runs are contained (None: not known yet)."""

    def queued(self) -> int: ...

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking runs; let running ones end within ``grace`` seconds, then cancel them."""

    def join(self, timeout: float = 10.0) -> None: ...
