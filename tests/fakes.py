"""Test doubles shared by the unit and in-process tiers."""

from __future__ import annotations

from sandbox.types import Outcome, RunRequest, RunResult


class FakeExecutor:
    """Implements scheduler.executor.Executor; records requests, runs nothing."""

    size = 2

    def __init__(self):
        self.submitted: list[RunRequest] = []
        self.on_started = None
        self.on_result = None
        self.closed_with: float | None = None

    # the protocol
    def open(self, on_started, on_result) -> None:
        self.on_started, self.on_result = on_started, on_result

    def submit(self, request: RunRequest) -> None:
        self.submitted.append(request)

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

    def finish(self, run_id: int, status: Outcome = Outcome.SUCCEEDED, *,
               started_at: float | None = None, finished_at: float | None = None,
               **fields) -> None:
        self.on_result(RunResult(run_id=run_id, status=status, started_at=started_at,
                                 finished_at=finished_at, **fields))
