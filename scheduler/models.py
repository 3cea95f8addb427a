"""Typed data of the scheduler: task specifications, tasks, runs and their enums."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies import TaskType
from sandbox.types import Outcome, TestCounts

from .grammar import Schedule

if TYPE_CHECKING:
    from .store import StoreHealth

__all__ = ["Lineage", "Misfire", "Notify", "NotifyOn", "Overlap", "Run", "RunStatus", "Task", "TaskSpec", "TaskType", "Trigger",
           "TestCounts", "SchedulerStatus", "task_state"]


class RunStatus(str, enum.Enum):
    """A run's whole lifecycle: ``queued`` → ``running`` → a final status.

    The final statuses are the sandbox's :class:`sandbox.types.Outcome` values (same
    strings) plus ``skipped``, which the scheduler records for a slot it did not run. The
    values are what clients see in run records.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def is_failure(self) -> bool:
        """A final status that counts as a failure: any but succeeded and skipped."""
        return self.is_final and self not in (RunStatus.SUCCEEDED, RunStatus.SKIPPED)

    @property
    def is_retried(self) -> bool:
        """A final status after which a task with ``retries`` left is tried again."""
        return self in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ERROR,
                        RunStatus.INTERRUPTED)

    @classmethod
    def of(cls, outcome: Outcome) -> "RunStatus":
        """The run status a sandbox outcome ends a run in."""
        return cls(outcome.value)


class Overlap(str, enum.Enum):
    """What happens when a scheduled run falls due while the task's previous run is active."""

    SKIP = "skip"      # record a `skipped` run (the default, like Kubernetes' Forbid)
    QUEUE = "queue"    # run it after the active one; at most one waits, later ones are skipped
    ALLOW = "allow"    # run concurrently


class Misfire(str, enum.Enum):
    """What happens to slots that fell due while the server was down."""

    SKIP = "skip"          # resume at the next future slot (the default)
    RUN_ONCE = "run_once"  # one `catch_up` run at start-up, then the next future slot


class Trigger(str, enum.Enum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch_up"
    RETRY = "retry"    # a failed run tried again (``retries``)
    CHAIN = "chain"    # started by the end of another task's run (``on_success``/``on_failure``)


class NotifyOn(str, enum.Enum):
    """Which run endings a task's ``notify`` reports."""

    FAILURE = "failure"  # any final status but succeeded and skipped
    SUCCESS = "success"
    CHANGE = "change"    # the outcome differs from the task's previous finished run


@dataclass(frozen=True)
class Notify:
    """Where to POST a signed notice of a run's end, and for which endings."""

    url: str
    on: tuple[NotifyOn, ...] = (NotifyOn.FAILURE,)

    def to_dict(self) -> dict:
        return {"url": self.url, "on": [event.value for event in self.on]}

    @classmethod
    def from_dict(cls, data: dict) -> "Notify":
        return cls(url=data["url"], on=tuple(NotifyOn(e) for e in data.get("on", ["failure"])))


@dataclass(frozen=True)
class Lineage:
    """Where a run comes from beyond its trigger: its try number, the first try's run id
    (for a retry) and the run whose end started it (for a chained run)."""

    attempt: int = 1
    retry_of: int | None = None
    parent_run_id: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    """Everything a client sets on a task (create/update fields), already type-checked."""

    task_type: TaskType
    interval: str
    command: str | None = None
    file_path: str | None = None
    custom_script: str | None = None
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    overlap: Overlap = Overlap.SKIP
    misfire: Misfire = Misfire.SKIP
    until: float | None = None
    max_runs: int | None = None
    start_at: float | None = None
    timezone: str | None = None  # IANA name; None: the server's default zone
    jitter: float | None = None  # seconds; None: start each slot on time
    retries: int = 0
    retry_delay: float = 10.0
    notify: Notify | None = None
    on_success: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()

    @property
    def chains_to(self) -> tuple[str, ...]:
        """Every task a run of this task may start (on success or on failure)."""
        return tuple(dict.fromkeys(self.on_success + self.on_failure))


@dataclass
class Task:
    """A stored task and its scheduling state.

    ``anchor`` fixes the task's slots (creation or last interval change). ``checkpoint`` is
    the time up to which slots have been dealt with (fired, skipped, or deliberately passed
    over by start/resume); slots after it and before now were missed.
    """

    task_id: str
    spec: TaskSpec
    schedule: Schedule
    created_at: float
    updated_at: float
    anchor: float
    checkpoint: float
    paused: bool = False
    runs_fired: int = 0
    next_run: float | None = None

    @property
    def exhausted(self) -> bool:
        """True once ``max_runs`` scheduled runs have been fired."""
        return self.spec.max_runs is not None and self.runs_fired >= self.spec.max_runs

    def following(self, after: float) -> float | None:
        """The task's first slot strictly after ``after``, or None if it fires no more
        (paused, ``max_runs`` reached, past ``until``, or a one-shot that has fired)."""
        if self.paused or self.exhausted:
            return None
        return self.admit(self.schedule.next_slot(self.anchor, after))

    def admit(self, slot: float | None) -> float | None:
        """``slot`` if the task still fires it (see ``following``), else None."""
        if slot is None or self.paused or self.exhausted:
            return None
        if self.spec.until is not None and slot > self.spec.until:
            return None
        return slot


def task_state(task: Task, next_run: float | None) -> str:
    """``paused``, ``scheduled`` (it has a next run) or ``finished`` (it fires no more)."""
    if task.paused:
        return "paused"
    return "scheduled" if next_run is not None else "finished"


@dataclass
class Run:
    """One execution of a task, as recorded in the store."""

    run_id: int
    task_id: str
    trigger: Trigger
    status: RunStatus
    scheduled_for: float
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lateness_ms: float | None = None
    jitter_ms: float | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    tests: TestCounts | None = None
    attempt: int = 1
    retry_of: int | None = None
    parent_run_id: int | None = None
    notification: dict | None = None  # {status: delivered|failed, attempts, http_status}

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000, 3)


@dataclass(frozen=True)
class SchedulerStatus:
    running: bool
    tasks: int
    workers_alive: int
    workers_configured: int
    runs_active: int
    runs_queued: int
    isolation: dict | None = None
    store: StoreHealth | None = None
