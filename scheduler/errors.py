"""Errors raised by the scheduler package.

One base class, :class:`SchedulerError` (under the server-wide root
:class:`policies.errors.TaskSchedulerError`); each error has a stable ``code`` that clients
branch on and, where one request field is at fault, that ``field``. The HTTP layer maps the
classes to status codes in one place.
"""

from __future__ import annotations

import enum

from policies.errors import TaskSchedulerError


class SchedulerError(TaskSchedulerError):
    """Base class of every error raised by :mod:`scheduler`."""

    code = "scheduler_error"


class InvalidRequest(SchedulerError):
    """A request field is missing, of the wrong type, or has a value that is not accepted."""

    code = "invalid_parameter"


class InvalidInterval(InvalidRequest):
    """The ``interval`` text is not one of the accepted schedule forms."""

    code = "invalid_interval"

    def __init__(self, message: str, *, field: str | None = "interval", code: str | None = None):
        super().__init__(message, field=field, code=code)


class QuotaExceeded(InvalidRequest):
    """A policy quota (``max_tasks``) would be exceeded."""

    code = "quota_exceeded"


class TaskNotFound(SchedulerError):
    """No task has the given ``task_id``."""

    code = "task_not_found"

    def __init__(self, task_id: str):
        super().__init__(f"No task with task_id '{task_id}'. Use the 'list' action to see the tasks.",
                         field="task_id")
        self.task_id = task_id


class RunNotFound(SchedulerError):
    """No run has the given ``run_id``."""

    code = "run_not_found"

    def __init__(self, run_id: object):
        super().__init__(f"No run with run_id {run_id!r}. Use the 'runs' action to see recent runs.",
                         field="run_id")
        self.run_id = run_id


class TaskExists(SchedulerError):
    """A task with the given ``task_id`` already exists."""

    code = "task_exists"

    def __init__(self, task_id: str):
        super().__init__(f"A task with task_id '{task_id}' already exists. Choose another task_id, "
                         "or use 'update' to change it.", field="task_id")
        self.task_id = task_id


class RateLimited(SchedulerError):
    """A rate limit was hit; ``retry_after`` is the number of seconds to wait (a fraction:
    the HTTP layer rounds it up for its header)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(SchedulerError):
    """The store cannot be opened or used (corrupt file, wrong schema, closed); a fault that
    may clear by itself (locked, disk full, read-only, I/O error) is :class:`StoreUnavailable`."""

    code = "store_error"


class StoreFault(str, enum.Enum):
    """Why the store cannot be used right now; each clears when its cause does."""

    BUSY = "busy"            # another connection holds the database locked
    DISK_FULL = "disk_full"  # the file system holding the database is full
    READ_ONLY = "read_only"  # the database or its file system is read-only
    IO_ERROR = "io_error"    # the disk reported an I/O error


class StoreUnavailable(StoreError):
    """The store cannot be written (or read) now, for a reason that may clear by itself.

    Nothing was changed; ``retry_after`` is the number of seconds a client should wait
    before trying again, ``fault`` says which of the :class:`StoreFault` causes it is and
    ``detail`` names the cause alone (for the ``status`` action and the log).
    """

    code = "store_unavailable"

    def __init__(self, message: str, *, fault: StoreFault, retry_after: int, detail: str):
        super().__init__(message)
        self.fault = fault
        self.retry_after = retry_after
        self.detail = detail


class ChainTargetNotFound(InvalidRequest):
    """``on_success`` or ``on_failure`` names a task that does not exist."""

    code = "task_not_found"


class ChainCycle(InvalidRequest):
    """``on_success``/``on_failure`` would make a chain of tasks that loops."""

    code = "chain_cycle"


class TaskInChain(SchedulerError):
    """A task cannot be removed while other tasks chain to it."""

    code = "task_in_chain"
