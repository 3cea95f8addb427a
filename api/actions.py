"""The actions of ``POST /schedule``: one function each, body in, response dict out.

Each handler reads its fields through :class:`api.fields.Body`, calls ``body.complete``
(unknown options are refused, then the rate limit admits the request) and only then calls
the scheduler; errors propagate to :mod:`api.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.source import PolicySource
from scheduler.models import TaskSpec
from scheduler.service import Scheduler

from .fields import Body, spec_fields
from .views import fmt_time, run_view, task_view

MAX_RUNS_LIMIT = 1000
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Context:
    """What the actions work on: the scheduler and the policy source."""

    scheduler: Scheduler
    policy: PolicySource


Handler = Callable[[Context, Body], dict[str, Any]]


def _ok(**fields: Any) -> dict[str, Any]:
    return {"status": "success", **fields}


def _info(message: str) -> dict[str, Any]:
    return {"status": "info", "message": message}


def start(ctx: Context, body: Body) -> dict[str, Any]:
    body.complete("start")
    if ctx.scheduler.start():
        return _ok(message="Scheduler started")
    return _info("Scheduler is already running")


def stop(ctx: Context, body: Body) -> dict[str, Any]:
    body.complete("stop")
    if ctx.scheduler.stop():
        return _ok(message="Scheduler stopped")
    return _info("Scheduler is not running")


def _scheduled(ctx: Context, task, verb: str) -> dict[str, Any]:
    next_run = ctx.scheduler.display_next_run(task)
    return _ok(message=f"Task '{task.task_id}' {verb} to run {task.spec.interval}",
               task_id=task.task_id, next_run=fmt_time(next_run),
               schedule=task.schedule.canonical, task=task_view(task, next_run))


def create(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id()
    fields = spec_fields(body, creating=True)
    body.complete("create")
    return _scheduled(ctx, ctx.scheduler.create(task_id, TaskSpec(**fields)), "scheduled")


def update(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id()
    fields = spec_fields(body, creating=False)
    body.complete("update")
    return _scheduled(ctx, ctx.scheduler.update(task_id, fields), "updated")


def list_tasks(ctx: Context, body: Body) -> dict[str, Any]:
    body.complete("list")
    tasks = [task_view(t, ctx.scheduler.display_next_run(t)) for t in ctx.scheduler.tasks()]
    return _ok(tasks=tasks, count=len(tasks))


def remove(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id()
    body.complete("remove")
    ctx.scheduler.remove(task_id)
    return _ok(message=f"Task '{task_id}' removed")


def get(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id()
    limit = body.positive_int("limit", maximum=MAX_RUNS_LIMIT, default=20)
    body.complete("get")
    task = ctx.scheduler.task(task_id)
    return _ok(task=task_view(task, ctx.scheduler.display_next_run(task)),
               runs=[run_view(r) for r in ctx.scheduler.runs(task_id, limit)])


def _pause(paused: bool) -> Handler:
    def handler(ctx: Context, body: Body) -> dict[str, Any]:
        task_id = body.task_id()
        body.complete("pause" if paused else "resume")
        task = ctx.scheduler.set_paused(task_id, paused)
        next_run = ctx.scheduler.display_next_run(task)
        verb = "paused" if paused else "resumed"
        return _ok(message=f"Task '{task_id}' {verb}", task_id=task_id,
                   next_run=fmt_time(next_run), task=task_view(task, next_run))
    return handler


def run(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id()
    body.complete("run")
    run_id = ctx.scheduler.run_now(task_id)
    return _ok(message=f"Task '{task_id}' is running now (run {run_id})", task_id=task_id,
               run_id=run_id)


def runs(ctx: Context, body: Body) -> dict[str, Any]:
    task_id = body.task_id() if body.has("task_id") else None
    limit = body.positive_int("limit", maximum=MAX_RUNS_LIMIT, default=20)
    body.complete("runs")
    records = [run_view(r) for r in ctx.scheduler.runs(task_id, limit)]
    return _ok(runs=records, count=len(records))


def output(ctx: Context, body: Body) -> dict[str, Any]:
    if not body.has("run_id"):
        body.required("run_id")
    run_id = body.positive_int("run_id", maximum=MAX_ID)
    body.complete("output")
    return _ok(run=run_view(ctx.scheduler.run(run_id), full_output=True))


def validate(ctx: Context, body: Body) -> dict[str, Any]:
    interval = body.interval(required=True)
    body.complete("validate")
    schedule, slots = ctx.scheduler.validate(interval)
    return _ok(message=f"'{interval}' is a valid interval", interval=schedule.canonical,
               next_runs=[fmt_time(t) for t in slots])


def status(ctx: Context, body: Body) -> dict[str, Any]:
    body.complete("status")
    ctx.policy.current()
    st = ctx.scheduler.status()
    return _ok(running=st.running, tasks=st.tasks,
               workers={"alive": st.workers_alive, "configured": st.workers_configured},
               runs={"active": st.runs_active, "queued": st.runs_queued},
               isolation=(st.isolation or {}).get("layers", []),
               isolation_level=(st.isolation or {}).get("level"),
               cgroup_layout=(st.isolation or {}).get("cgroup_layout"),
               policy={"path": str(ctx.policy.path), "loaded_at": fmt_time(ctx.policy.loaded_at),
                       "error": ctx.policy.error},
               store=_store_view(st.store))


def _store_view(health) -> dict[str, Any] | None:
    if health is None:
        return None
    return {"ok": health.ok, "error": health.error, "since": fmt_time(health.since),
            "fault": health.fault.value if health.fault else None, "deferred": health.deferred}


ACTIONS: dict[str, Handler] = {
    "start": start, "stop": stop, "create": create, "list": list_tasks, "remove": remove,
    "get": get, "update": update, "pause": _pause(True), "resume": _pause(False), "run": run,
    "runs": runs, "output": output, "validate": validate, "status": status,
}
