"""Turn a :class:`RunRequest` into a launch plan, re-checking it against the policy.

This is the run-time half of the policy check: the task was checked when it was created,
but the policy or the file system may have changed since, so every path is resolved and
every rule applied again here, just before the job starts. A violation becomes a
``rejected`` run, never a started process.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from policies import Limits, PolicyViolation, TaskType
from policies.errors import CommandNotAllowed, TaskTypeNotAllowed

from .pytestconfig import pytest_args
from .types import RunRequest

SHELL = "/bin/sh"
REPORT_NAME = "pytest-report.xml"


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one job: argv, working directory, environment, limits."""

    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    limits: Limits
    tmpdir: Path
    report_path: Path | None = None


def python_argv(*args: str) -> tuple[str, ...]:
    """Run Python jobs with this interpreter, never one found on PATH (a pyenv shim costs
    80+ ms) and without honouring PYTHON* variables or the user site directory."""
    return (sys.executable, "-E", "-s", *args)


def plan_run(request: RunRequest, tmpdir: Path, source_env: dict[str, str] | None = None,
             report_dir: Path | None = None) -> LaunchPlan:
    """Resolve and check ``request`` under its policy; raise PolicyViolation if it may not run.
    ``tmpdir`` becomes the job's ``TMPDIR``; pytest's report goes to ``report_dir`` (default
    ``tmpdir``)."""
    policy = request.policy
    policy.check_task_type(request.task_type)
    if request.timeout is not None:
        policy.check_limits(timeout=request.timeout)
    cwd = policy.resolve_working_dir(request.working_dir)
    task_env = policy.environment.check_task_env(request.env or {})
    env = policy.environment.build(os.environ if source_env is None else source_env, task_env)
    env["TMPDIR"] = str(tmpdir)
    limits = policy.limits
    if request.timeout is not None:
        limits = replace(limits, timeout_seconds=request.timeout)

    report_path = None
    kind = request.task_type
    if kind.parameter_required and not getattr(request, kind.parameter):
        raise PolicyViolation(f"a {kind.value} task needs {kind.parameter}", field=kind.parameter)
    if kind is TaskType.COMMAND:
        command = request.command or ""
        policy.commands.check(command)
        if policy.commands.shell:
            argv: tuple[str, ...] = (SHELL, "-c", command)
        else:
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise CommandNotAllowed(f"command cannot be split into words: {exc}",
                                        field="command") from None
            if not argv:
                raise CommandNotAllowed("command is empty", field="command")
    elif kind is TaskType.TEST:
        target = policy.resolve_file(request.file_path, cwd) if request.file_path else cwd
        report_path = (report_dir or tmpdir) / REPORT_NAME
        argv = python_argv("-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *pytest_args(target, policy.allowed_directories),
                           f"--junitxml={report_path}", str(target))
    elif kind is TaskType.SCRIPT:
        script = policy.resolve_file(request.file_path, cwd, must_be_file=True)
        argv = python_argv(str(script))
    elif kind is TaskType.CUSTOM:
        argv = python_argv("-c", request.custom_script or "")
    else:
        raise TaskTypeNotAllowed(f"unknown task type {kind!r}", field="type")
    return LaunchPlan(argv=argv, cwd=cwd, env=env, limits=limits, tmpdir=tmpdir,
                      report_path=report_path)


def check_request(request: RunRequest) -> None:
    """Raise the PolicyViolation that would reject ``request`` at run time, if any.

    The create-time check is the run-time check, run early: one set of rules for both.
    """
    plan_run(request, Path("/nonexistent/run-tmp"), source_env={})
