"""Plain data crossing the process boundary between the scheduler and the workers.

Everything here is picklable and carries no behaviour beyond small conveniences: a
:class:`RunRequest` goes to a worker, a :class:`RunResult` comes back.
"""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from policies import Policy, TaskType


class Outcome(str, enum.Enum):
    """How a run ended, as far as the worker pool can tell: the final states a worker (or
    the supervisor, for a worker that died or a pool that closed) can report.

    Queueing, skipping and the lifecycle before the end belong to the scheduler, which maps
    each outcome onto its own run status of the same value.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True)
class RunRequest:
    """One run to execute, with the policy in force when it was handed out.

    Paths are as the task stated them; the worker resolves and checks them again against
    ``policy`` at run time, since the file system and the policy may have changed since
    the task was created.
    """

    run_id: int
    task_id: str
    task_type: TaskType
    policy: Policy
    command: str | None = None
    file_path: str | None = None
    custom_script: str | None = None
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    scheduled_for: float | None = None


@dataclass(frozen=True)
class TestCounts:
    """pytest's own counts for a test run (from its JUnit XML report)."""

    __test__ = False  # not a test class, despite the name

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors,
                "skipped": self.skipped}


@dataclass(frozen=True)
class RunResult:
    """What happened to one run. ``started_at`` is None when no process was started."""

    run_id: int
    status: Outcome
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    tests: TestCounts | None = None
    pid: int | None = None


#: The directory of the installation that a policy may open to runs: the shipped policy's
#: workspace. Everything else in the code root stays read-only whatever the policy says.
WORKSPACE = "workspace"


@dataclass(frozen=True)
class ProtectedPaths:
    """The server's own ground, carved out of every run's view of the allowed directories.

    ``hidden`` paths (the data directory: the store, other tasks' output; the repository's
    ``.git``) are neither readable nor writable by a run; ``readonly`` ones (the whole code
    root -- packages, tests, Makefile, CI scripts, the virtual environment -- the policy file
    and the Python installation) are readable but cannot be changed, even where they lie
    inside an allowed directory: code planted there would later run unconfined, as whoever
    runs ``make``, ``git`` or the tests. Only ``workspace``, where a policy allows it, is
    writable inside the code root.
    """

    hidden: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    workspace: str | None = None
    code_root: str | None = None

    @classmethod
    def for_server(cls, *, data_dir: str | os.PathLike, policy_file: str | os.PathLike) -> "ProtectedPaths":
        code_root = os.path.realpath(Path(__file__).resolve().parent.parent)
        readonly = [code_root, os.path.realpath(policy_file), sys.prefix, sys.base_prefix]
        data = Path(data_dir)
        data.mkdir(parents=True, exist_ok=True)
        hidden = [os.path.realpath(data), os.path.join(code_root, ".git")]
        return cls(hidden=tuple(dict.fromkeys(hidden)),
                   readonly=tuple(dict.fromkeys(os.path.realpath(p) for p in readonly)),
                   workspace=os.path.join(code_root, WORKSPACE), code_root=code_root)

    def in_workspace(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` lies in the installation's workspace (the one writable part)."""
        return self.workspace is not None and inside(path, self.workspace)

    def unprotectable(self, allowed: Path) -> bool:
        """Whether runs allowed to write ``allowed`` could change the installation or reach
        the data unless a mount namespace covers them: the directory holds part of the code
        root or a hidden path."""
        if any(inside(hidden, allowed) for hidden in self.hidden):
            return True
        if self.code_root is None:
            return False
        if inside(self.code_root, allowed):
            return True
        return inside(allowed, self.code_root) and not self.in_workspace(allowed)


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` is ``root`` or lies below it, compared by path components (both
    resolved already)."""
    path, root = os.fspath(path), os.fspath(root)
    return os.path.commonpath([path, root]) == root
