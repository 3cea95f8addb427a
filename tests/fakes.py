"""Test doubles shared by the unit and in-process tiers."""

from __future__ import annotations

from policies import Policy
from sandbox.types import Outcome, RunRequest, RunResult


class FakeExecutor:
    """Implements scheduler.executor.Executor; records requests, discards and policy
    revisions, runs nothing (a test reports starts, results and drops)."""

    size = 2

    def __init__(self):
        self.submitted: list[RunRequest] = []
        self.discards: list[int] = []
        self.revisions: list[Policy] = []
        self.on_started = None
        self.on_result = None
        self.on_discarded = None
        self.closed_with: float | None = None

    # the protocol
    def open(self, on_started, on_result, on_discarded) -> None:
        self.on_started, self.on_result, self.on_discarded = on_started, on_result, on_discarded

    def submit(self, request: RunRequest) -> None:
        self.submitted.append(request)

    def discard(self, run_id: int) -> None:
        self.discards.append(run_id)

    def revise(self, policy: Policy) -> None:
        self.revisions.append(policy)

    def alive(self) -> int:
        return 0 if self.closed_with is not None else self.size

    def busy(self) -> int:
        return 1

    def queued(self) -> int:
        return 0

    def isolation(self) -> dict | None:
        return {"level": "process", "layers": ["process-group"]}

    def close(self, grace: float = 10.0) -> None:
        self.closed_with = grace

    # driving it from a test
    @property
    def ids(self) -> list[int]:
        return [r.run_id for r in self.submitted]

    def report_start(self, run_id: int, started_at: float) -> None:
        self.on_started(run_id, started_at, 4242)

    def drop(self, run_id: int) -> None:
        """Report ``run_id`` dropped before it started, as the executor does after ``discard``."""
        self.on_discarded(run_id)

    def finish(self, run_id: int, status: Outcome = Outcome.SUCCEEDED, *,
               started_at: float | None = None, finished_at: float | None = None,
               **fields) -> None:
        self.on_result(RunResult(run_id=run_id, status=status, started_at=started_at,
                                 finished_at=finished_at, **fields))
