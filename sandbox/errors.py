"""Errors raised by the sandbox package (one base class)."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error raised by :mod:`sandbox`."""

    code = "sandbox_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class PoolClosed(SandboxError):
    """A run was submitted to a pool that is stopping or stopped."""

    code = "pool_closed"

