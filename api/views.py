"""How tasks and runs look in responses (the original shapes clients rely on, plus the
extension keys).

The shapes are declared in :mod:`api.responses`; these functions fill them in.
"""

from __future__ import annotations

import functools
import time
from datetime import tzinfo

from scheduler.models import Run, Task, task_state
from scheduler.zones import iso_time, zone_name

from . import responses as rs

TAIL_CHARS = 4096


def fmt_time(t: float | None) -> str | None:
    """The API's time form, ``YYYY-MM-DD HH:MM:SS``, in the server's local time."""
    if t is None:
        return None
    return _fmt_second(int(t // 1))


@functools.lru_cache(maxsize=65536)
def _fmt_second(second: int) -> str:
    # A list of 10k tasks formats 30k times, most of them the same few seconds (tasks
    # created together, slots on the same grid): local-time conversion is the costly part.
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def fmt_iso(t: float | None, zone: tzinfo) -> str | None:
    """A time in ISO 8601 with its UTC offset, in ``zone`` (a task's zone), to the second."""
    return None if t is None else iso_time(t, zone)


def task_details(task: Task, next_run: float | None, zone: tzinfo) -> rs.TaskDetails:
    """A task's details; ``zone`` is the one its clock schedule follows."""
    spec = task.spec
    return rs.TaskDetails(
        type=spec.task_type.value,
        interval=spec.interval,
        command=spec.command,
        file_path=spec.file_path,
        custom_script=spec.custom_script,
        next_run=fmt_time(next_run),
        created_at=fmt_time(task.created_at),
        schedule=task.schedule.canonical,
        updated_at=fmt_time(task.updated_at),
        working_dir=spec.working_dir,
        env=dict(spec.env),
        timeout=spec.timeout,
        overlap=spec.overlap.value,
        misfire=spec.misfire.value,
        until=fmt_time(spec.until),
        start_at=fmt_time(spec.start_at),
        max_runs=spec.max_runs,
        paused=task.paused,
        state=task_state(task, next_run),
        runs_fired=task.runs_fired,
        timezone=zone_name(zone),
        next_run_at=fmt_iso(next_run, zone),
        jitter=spec.jitter,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        notify=rs.NotifySettings(**spec.notify.to_dict()) if spec.notify else None,
        on_success=list(spec.on_success),
        on_failure=list(spec.on_failure),
    )


def task_view(task: Task, next_run: float | None, zone: tzinfo) -> rs.Task:
    return rs.Task(id=task.task_id, details=task_details(task, next_run, zone))


def _tail(text: str) -> str:
    return text if len(text) <= TAIL_CHARS else text[-TAIL_CHARS:]


def run_view(run: Run, *, full_output: bool = False) -> rs.Run:
    """A run record; ``runs`` shows the last ``TAIL_CHARS`` of each stream (and says so in
    ``output_is_tail``), ``output`` all that was kept."""
    shown = (run.stdout, run.stderr) if full_output else (_tail(run.stdout), _tail(run.stderr))
    return rs.Run(
        run_id=run.run_id,
        task_id=run.task_id,
        trigger=run.trigger.value,
        status=run.status.value,
        reason=run.reason,
        exit_code=run.exit_code,
        scheduled_for=fmt_time(run.scheduled_for),
        started_at=fmt_time(run.started_at),
        finished_at=fmt_time(run.finished_at),
        duration_ms=run.duration_ms,
        lateness_ms=run.lateness_ms,
        truncated=run.truncated,
        tests=rs.TestCounts(**run.tests.to_dict()) if run.tests else None,
        stdout=shown[0],
        stderr=shown[1],
        output_is_tail=not full_output and (len(run.stdout) > TAIL_CHARS
                                            or len(run.stderr) > TAIL_CHARS),
        jitter_ms=run.jitter_ms,
        attempt=run.attempt,
        retry_of=run.retry_of,
        parent_run_id=run.parent_run_id,
        notification=rs.Notification(**run.notification) if run.notification else None,
    )
