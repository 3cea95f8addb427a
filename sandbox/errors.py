"""Errors raised by the sandbox package (one base class, under the server-wide root)."""

from __future__ import annotations

from policies.errors import TaskSchedulerError


class SandboxError(TaskSchedulerError):
    """Base class of every error raised by :mod:`sandbox`."""

    code = "sandbox_error"


class PoolClosed(SandboxError):
    """A run was submitted to a pool that is stopping or stopped."""

    code = "pool_closed"

