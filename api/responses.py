"""What each action answers, declared once as typed dicts.

The views build these (a ``TypedDict`` is a plain dict at run time: nothing is copied or
checked while serving), and :mod:`api.openapi` generates the response schemas from them.
Keys are a contract: a response may gain keys, never lose or rename one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from typing_extensions import TypedDict  # pydantic reads its annotations on Python 3.11

from pydantic import ConfigDict, Field, with_config

from policies import TaskType
from scheduler.models import Misfire, NotifyOn, Overlap, RunStatus, Trigger

Time = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
                            description="server local time, YYYY-MM-DD HH:MM:SS")]
IsoTime = Annotated[str, Field(description="ISO 8601 with the UTC offset, in the task's time "
                                          "zone (e.g. 2030-01-31T09:00:00+01:00)")]
Zone = Annotated[str, Field(description="an IANA time zone name")]
Count = Annotated[int, Field(ge=0)]
TaskState = Literal["scheduled", "paused", "finished"]


class NotifySettings(TypedDict):
    url: str
    on: list[NotifyOn]


class Notification(TypedDict):
    """How the run's notification went (null: none was due, or it is still on its way)."""

    status: Literal["delivered", "failed"]
    attempts: Count
    http_status: int | None


class TaskDetails(TypedDict):
    type: TaskType
    interval: str
    command: str | None
    file_path: str | None
    custom_script: str | None
    next_run: Time | None
    created_at: Time
    schedule: str
    updated_at: Time | None
    working_dir: str | None
    env: dict[str, str]
    timeout: float | None
    overlap: Overlap
    misfire: Misfire
    until: Time | None
    start_at: Time | None
    max_runs: int | None
    paused: bool
    state: TaskState
    runs_fired: int
    timezone: Zone
    next_run_at: IsoTime | None
    jitter: float | None
    retries: int
    retry_delay: float
    notify: NotifySettings | None
    on_success: list[str]
    on_failure: list[str]


class Task(TypedDict):
    id: str
    details: TaskDetails


class TestCounts(TypedDict):
    passed: int
    failed: int
    errors: int
    skipped: int


class Run(TypedDict):
    run_id: int
    task_id: str
    trigger: Trigger
    status: RunStatus
    reason: str | None
    exit_code: int | None
    scheduled_for: Time | None
    started_at: Time | None
    finished_at: Time | None
    duration_ms: float | None
    lateness_ms: float | None
    truncated: bool
    tests: TestCounts | None
    stdout: str
    stderr: str
    output_is_tail: Annotated[bool, Field(description=(
        "true when runs shows only the last 4096 characters of a stream (output shows all "
        "that was kept)"))]
    jitter_ms: Annotated[float | None, Field(description=(
        "how long after scheduled_for the run was started by the task's jitter (0 without "
        "jitter; null for runs that are not scheduled slots)"))]
    attempt: Annotated[int, Field(ge=1, description="1 for a first try, 2 for its first "
                                  "retry, ...")]
    retry_of: Annotated[int | None, Field(description="a retry's first try (its run_id)")]
    parent_run_id: Annotated[int | None, Field(description=(
        "a chained run's cause: the run of another task whose end started it"))]
    notification: Notification | None


@with_config(ConfigDict(extra="forbid"))
class Error(TypedDict):
    """Every error: a sentence to act on, a stable code, the field at fault."""

    status: Literal["error"]
    message: str
    code: Annotated[str, Field(pattern="^[a-z][a-z0-9_]*$")]
    field: str | None


Success = Literal["success"]


class MessageResponse(TypedDict):
    status: Literal["success", "info"]
    message: str


class ScheduledResponse(TypedDict):
    status: Success
    message: str
    task_id: str
    next_run: Time | None
    schedule: str
    task: Task
    next_run_at: IsoTime | None


class PausedResponse(TypedDict):
    status: Success
    message: str
    task_id: str
    next_run: Time | None
    task: Task
    next_run_at: IsoTime | None


class ListResponse(TypedDict):
    status: Success
    tasks: list[Task]
    count: Count


class RemoveResponse(TypedDict):
    status: Success
    message: str


class GetResponse(TypedDict):
    status: Success
    task: Task
    runs: list[Run]


class RunResponse(TypedDict):
    status: Success
    message: str
    task_id: str
    run_id: int
    run: Run
    finished: bool


class RunsResponse(TypedDict):
    status: Success
    runs: list[Run]
    count: Count


class OutputResponse(TypedDict):
    status: Success
    run: Run


class Workers(TypedDict):
    alive: int
    configured: int


class ActiveRuns(TypedDict):
    active: int
    queued: int


class PolicyState(TypedDict):
    path: str
    loaded_at: Time | None
    error: str | None


class StoreState(TypedDict):
    ok: bool
    error: str | None
    since: Time | None
    fault: Literal["busy", "disk_full", "read_only", "io_error"] | None
    deferred: Count


class StatusResponse(TypedDict):
    status: Success
    running: bool
    tasks: Count
    workers: Workers
    runs: ActiveRuns
    isolation: list[str]
    isolation_level: str | None
    cgroup_layout: Literal["v2", "hybrid", "v1", "none"] | None
    policy: PolicyState
    store: StoreState | None
    timezone: Annotated[str, Field(description="the default time zone of tasks without one")]


class ValidateResponse(TypedDict):
    status: Success
    message: str
    interval: str
    next_runs: list[Time]
    next_runs_at: list[IsoTime]
    description: Annotated[str, Field(description="the schedule in plain English")]
    timezone: Zone
