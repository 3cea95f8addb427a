"""The actions of ``POST /schedule``: one function each, typed request in, typed answer out.

A handler gets its action's request already validated (:mod:`api.requests`) and admitted
by the rate limit; errors propagate to :mod:`api.errors`. Its return annotation (a typed
dict of :mod:`api.responses`) is what ``/openapi.json`` documents for the action.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.source import PolicySource
from scheduler.models import Task, TaskSpec
from scheduler.service import Scheduler
from scheduler.waiting import RunWaits
from scheduler.zones import zone_name

from . import requests as rq
from . import responses as rs
from .views import fmt_time, run_view, task_view


@dataclass(frozen=True)
class Context:
    """What the actions work on: the scheduler and the policy source."""

    scheduler: Scheduler
    policy: PolicySource
    waits: RunWaits | None = None


Handler = Callable[[Context, Any], Any]


def _message(started: bool, done: str, already: str) -> rs.MessageResponse:
    if started:
        return rs.MessageResponse(status="success", message=done)
    return rs.MessageResponse(status="info", message=already)


def start(ctx: Context, request: rq.StartRequest) -> rs.MessageResponse:
    return _message(ctx.scheduler.start(), "Scheduler started", "Scheduler is already running")


def stop(ctx: Context, request: rq.StopRequest) -> rs.MessageResponse:
    return _message(ctx.scheduler.stop(), "Scheduler stopped", "Scheduler is not running")


def _view(ctx: Context, task: Task) -> tuple[rs.Task, float | None]:
    """The task as clients see it, and its next run (epoch seconds)."""
    next_run = ctx.scheduler.display_next_run(task)
    return task_view(task, next_run, ctx.scheduler.zone_of(task)), next_run


def _scheduled(ctx: Context, task: Task, verb: str) -> rs.ScheduledResponse:
    view, next_run = _view(ctx, task)
    return rs.ScheduledResponse(
        status="success", message=f"Task '{task.task_id}' {verb} to run {task.spec.interval}",
        task_id=task.task_id, next_run=fmt_time(next_run), schedule=task.schedule.canonical,
        task=view, next_run_at=view["details"]["next_run_at"])


def create(ctx: Context, request: rq.CreateRequest) -> rs.ScheduledResponse:
    task = ctx.scheduler.create(request.task_id, TaskSpec(**request.spec_fields()))
    return _scheduled(ctx, task, "scheduled")


def update(ctx: Context, request: rq.UpdateRequest) -> rs.ScheduledResponse:
    task = ctx.scheduler.update(request.task_id, request.spec_fields())
    return _scheduled(ctx, task, "updated")


def list_tasks(ctx: Context, request: rq.ListRequest) -> rs.ListResponse:
    tasks = [_view(ctx, t)[0] for t in ctx.scheduler.tasks()]
    return rs.ListResponse(status="success", tasks=tasks, count=len(tasks))


def remove(ctx: Context, request: rq.RemoveRequest) -> rs.RemoveResponse:
    ctx.scheduler.remove(request.task_id)
    return rs.RemoveResponse(status="success", message=f"Task '{request.task_id}' removed")


def get(ctx: Context, request: rq.GetRequest) -> rs.GetResponse:
    task = ctx.scheduler.task(request.task_id)
    return rs.GetResponse(
        status="success", task=_view(ctx, task)[0],
        runs=[run_view(r) for r in ctx.scheduler.runs(request.task_id, request.limit)])


def _set_paused(ctx: Context, task_id: str, paused: bool) -> rs.PausedResponse:
    task = ctx.scheduler.set_paused(task_id, paused)
    view, next_run = _view(ctx, task)
    return rs.PausedResponse(
        status="success", message=f"Task '{task_id}' {'paused' if paused else 'resumed'}",
        task_id=task_id, next_run=fmt_time(next_run), task=view,
        next_run_at=view["details"]["next_run_at"])


def pause(ctx: Context, request: rq.PauseRequest) -> rs.PausedResponse:
    return _set_paused(ctx, request.task_id, True)


def resume(ctx: Context, request: rq.ResumeRequest) -> rs.PausedResponse:
    return _set_paused(ctx, request.task_id, False)


def run(ctx: Context, request: rq.RunRequest) -> rs.RunResponse:
    run_id = ctx.scheduler.run_now(request.task_id)
    wait = request.wait_seconds
    if wait > 0 and ctx.waits is not None:
        record, admitted = ctx.waits.wait(run_id, wait)
    else:
        record, admitted = ctx.scheduler.run(run_id), True
    finished = record.status.is_final
    message = f"Task '{request.task_id}' is running now (run {run_id})"
    if finished:
        message = f"Run {run_id} of task '{request.task_id}' ended: {record.status.value}"
    elif not admitted:
        message += (f"; not waited for: {ctx.waits.capacity} clients are already waiting, "
                    "which is this server's limit. Read the result later with 'output' "
                    f"(run_id {run_id}) or 'runs' with after_run_id")
    elif wait > 0:
        message += (f"; still {record.status.value} after {wait:g} s. Read the result later "
                    f"with 'output' (run_id {run_id})")
    return rs.RunResponse(status="success", message=message, task_id=request.task_id,
                          run_id=run_id, run=run_view(record, full_output=True),
                          finished=finished)


def runs(ctx: Context, request: rq.RunsRequest) -> rs.RunsResponse:
    records = [run_view(r) for r in ctx.scheduler.runs(request.task_id, request.limit,
                                                         after_run_id=request.after_run_id)]
    return rs.RunsResponse(status="success", runs=records, count=len(records))


def output(ctx: Context, request: rq.OutputRequest) -> rs.OutputResponse:
    return rs.OutputResponse(status="success",
                             run=run_view(ctx.scheduler.run(request.run_id), full_output=True))


def validate(ctx: Context, request: rq.ValidateRequest) -> rs.ValidateResponse:
    preview = ctx.scheduler.preview(request.interval, timezone=request.timezone,
                                    jitter=request.jitter)
    return rs.ValidateResponse(status="success",
                               message=f"'{request.interval}' is a valid interval",
                               interval=preview.schedule.canonical,
                               next_runs=[fmt_time(t) for t in preview.next_runs],
                               next_runs_at=preview.next_runs_at,
                               description=preview.description, timezone=preview.timezone)


def status(ctx: Context, request: rq.StatusRequest) -> rs.StatusResponse:
    ctx.policy.current()
    st = ctx.scheduler.status()
    isolation = st.isolation or {}
    return rs.StatusResponse(
        status="success", running=st.running, tasks=st.tasks,
        workers=rs.Workers(alive=st.workers_alive, configured=st.workers_configured),
        runs=rs.ActiveRuns(active=st.runs_active, queued=st.runs_queued),
        isolation=isolation.get("layers", []), isolation_level=isolation.get("level"),
        cgroup_layout=isolation.get("cgroup_layout"),
        policy=rs.PolicyState(path=str(ctx.policy.path), loaded_at=fmt_time(ctx.policy.loaded_at),
                              error=ctx.policy.error),
        store=_store_view(st.store), timezone=zone_name(ctx.scheduler.tz))


def _store_view(health) -> rs.StoreState | None:
    if health is None:
        return None
    return rs.StoreState(ok=health.ok, error=health.error, since=fmt_time(health.since),
                         fault=health.fault.value if health.fault else None,
                         deferred=health.deferred)


ACTIONS: dict[str, Handler] = {
    "start": start, "stop": stop, "create": create, "list": list_tasks, "remove": remove,
    "get": get, "update": update, "pause": pause, "resume": resume, "run": run,
    "runs": runs, "output": output, "validate": validate, "status": status,
}


def response_type(action: str) -> type:
    """The typed dict that ``action`` answers with (its handler's return annotation)."""
    return typing.get_type_hints(ACTIONS[action])["return"]
