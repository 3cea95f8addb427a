"""The MCP tools: one per action of ``POST /schedule``, their schemas, descriptions and results.

Both transports (Streamable HTTP in the server, stdio in ``python -m api.mcp``) serve the
same tools from here; only the way an action reaches ``/schedule`` differs. A tool's input
schema is the action's request model (:func:`api.requests.request_schema` without
``action``), so a field added to a model appears in its tool with the same types, enums and
bounds. A result is the HTTP response object, as ``structuredContent`` and as JSON text; a
refusal is a tool error whose structured content is the HTTP error envelope (``code``,
``message``, ``field``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from policies import Policy, TaskType
from scheduler.grammar import ACCEPTED_FORMS

from ..requests import request_schema

# Which parameter each task type takes, as an agent reads it.
_TYPE_USES = {
    TaskType.COMMAND: "'command': a shell command line, e.g. \"echo hello\"",
    TaskType.TEST: "'file_path' (optional): a test file or directory for pytest, default the "
                   "run's working directory",
    TaskType.SCRIPT: "'file_path': a Python script to run, e.g. \"jobs/report.py\"",
    TaskType.CUSTOM: "'custom_script': Python source to run, e.g. \"print('hi')\"",
}
# The grammar's own list, so that every form it learns is taught here too.
SCHEDULE_FORMS = (f"Schedule ('interval'). {ACCEPTED_FORMS} Check one with validate_schedule "
                  "first: it shows the next run times and creates nothing.")


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, the action it calls and what it is for."""

    name: str
    action: str
    summary: str
    read_only: bool


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("create_task", "create", "Schedule a new task: a shell command, a pytest run, a "
             "Python script or inline Python code, on a recurring schedule.", False),
    ToolSpec("update_task", "update", "Change a task: only the fields given change; its run "
             "history is kept. Same fields as create_task.", False),
    ToolSpec("get_task", "get", "One task's details and its most recent runs.", True),
    ToolSpec("list_tasks", "list", "Every task with its type, schedule and next run.", True),
    ToolSpec("remove_task", "remove", "Delete a task (its runs in progress finish).", False),
    ToolSpec("pause_task", "pause", "Stop a task from firing; it keeps its place.", False),
    ToolSpec("resume_task", "resume", "Let a paused task fire again.", False),
    ToolSpec("run_task", "run", "Run a task now, also while the scheduler is stopped. With "
             "wait_seconds the answer comes when the run has ended (or the wait is over) and "
             "holds the run's record: status, exit_code, stdout, stderr.", False),
    ToolSpec("list_runs", "runs", "Run records, newest first; with after_run_id only runs "
             "with a larger id, oldest first (poll it as an inbox of results).", True),
    ToolSpec("get_run_output", "output", "One run's record with all the stdout and stderr "
             "that was kept.", True),
    ToolSpec("scheduler_status", "status", "Whether the scheduler runs, how many tasks, the "
             "workers, the isolation in force and the policy's state.", True),
    ToolSpec("validate_schedule", "validate", "Check a schedule: its canonical form and the "
             "next 5 run times. Creates nothing.", True),
    ToolSpec("start_scheduler", "start", "Start firing scheduled tasks.", False),
    ToolSpec("stop_scheduler", "stop", "Stop firing scheduled tasks; runs in progress finish.",
             False),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


@dataclass(frozen=True)
class PolicyView:
    """What the descriptions say of the operator's policy."""

    allowed_directories: tuple[str, ...]
    task_types: tuple[str, ...]
    limits: dict[str, int]
    min_interval_seconds: int
    max_tasks: int
    environment: tuple[str, ...]

    @classmethod
    def of(cls, policy: Policy) -> "PolicyView":
        limits = policy.limits
        return cls(
            allowed_directories=tuple(str(d) for d in policy.allowed_directories),
            task_types=tuple(t.value for t in TaskType if t in policy.task_types),
            limits={"timeout_seconds": limits.timeout_seconds, "memory_mb": limits.memory_mb,
                    "cpu_seconds": limits.cpu_seconds, "max_processes": limits.max_processes,
                    "max_output_kb": limits.max_output_kb},
            min_interval_seconds=policy.rate_limits.min_interval_seconds,
            max_tasks=policy.rate_limits.max_tasks,
            environment=tuple(policy.environment.passthrough))

    def text(self) -> str:
        limits = ", ".join(f"{k} {v}" for k, v in self.limits.items())
        return (f"Policy in force: allowed directories {', '.join(self.allowed_directories)} "
                "(working_dir and file_path must be inside one; relative paths start from the "
                f"first); task types {', '.join(self.task_types)}; limit ceilings {limits} "
                "(a task's timeout above timeout_seconds is refused); schedules no more often "
                f"than every {self.min_interval_seconds} s; at most {self.max_tasks} tasks; "
                f"env variables passed through: {', '.join(self.environment) or 'none'}.")


def _types_text(view: PolicyView | None) -> str:
    allowed = set(view.task_types) if view else {t.value for t in TaskType}
    return "Task types and what each runs: " + "; ".join(
        f"{t.value} takes {_TYPE_USES[t]}" for t in TaskType if t.value in allowed) + "."


def description(tool: ToolSpec, view: PolicyView | None, unavailable: str = "") -> str:
    """What an agent reads about ``tool``; ``view`` None: the policy could not be read
    (``unavailable`` says why)."""
    parts = [tool.summary]
    if tool.action in ("create", "update"):
        parts += [SCHEDULE_FORMS, _types_text(view),
                  'Example: {"task_id": "disk-report", "type": "command", "interval": '
                  '"every 10 minutes", "command": "df -h"}.']
    if tool.action in ("create", "update", "run"):
        parts.append(view.text() if view else "The policy in force could not be read. "
                     + unavailable)
    if tool.action == "validate":
        parts.append(SCHEDULE_FORMS)
    parts.append("Refusals are tool errors with 'code' (stable, e.g. invalid_interval, "
                 "path_not_allowed, task_not_found), 'message' and 'field'.")
    return " ".join(parts)


@functools.cache
def _schema(action: str) -> dict[str, Any]:
    return request_schema(action, with_action=False)


def input_schema(name: str) -> dict[str, Any] | None:
    """The input schema of tool ``name`` (None: no such tool). Built once per process: the
    models do not change while it runs. Callers must not modify it."""
    tool = BY_NAME.get(name)
    return None if tool is None else _schema(tool.action)


def tool_list(view: PolicyView | None, *, unavailable: str = "") -> list[types.Tool]:
    """The 14 tools, their descriptions as of ``view``."""
    return [types.Tool(name=tool.name, description=description(tool, view, unavailable),
                       input_schema=_schema(tool.action),
                       annotations=types.ToolAnnotations(read_only_hint=tool.read_only,
                                                         destructive_hint=not tool.read_only,
                                                         open_world_hint=False))
            for tool in TOOLS]


def request_body(tool: ToolSpec, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """The ``/schedule`` body of a call (the arguments are the action's fields)."""
    return {**(arguments or {}), "action": tool.action}


def result(body: dict[str, Any], *, error: bool) -> types.CallToolResult:
    """A tool result: ``body`` (the HTTP response object) as structured content and JSON."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(body))],
                                structured_content=body, is_error=error)


def refusal(code: str, message: str, field: str | None = None) -> types.CallToolResult:
    """A tool error shaped like the HTTP error envelope."""
    return result({"status": "error", "message": message, "code": code, "field": field},
                  error=True)


def unknown_tool(name: str) -> types.CallToolResult:
    return refusal("unknown_tool", f"There is no tool {name!r}; the tools are "
                   f"{', '.join(BY_NAME)}.", "name")
