"""Errors raised by the policy package, and the root of every error of the server.

Every error carries a stable snake_case ``code`` and, where one field of a request or of the
policy file is at fault, that ``field``. :class:`TaskSchedulerError` lives here because this
is the lowest layer: each package's ``errors.py`` derives its base from it, and the HTTP
layer maps the classes to status codes in one place; nothing below it knows about HTTP.
"""

from __future__ import annotations


class TaskSchedulerError(Exception):
    """Root of every error the server raises on purpose: ``code``, ``message``, ``field``."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class PolicyError(TaskSchedulerError):
    """Base class of every error raised by :mod:`policies`."""

    code = "policy_error"


class PolicyFileError(PolicyError):
    """The policy file cannot be read or does not validate; ``field`` is the key path."""

    code = "invalid_policy"


class PolicyViolation(PolicyError):
    """A task or run asks for something the policy does not allow."""

    code = "policy_violation"


class PathNotAllowed(PolicyViolation):
    """A path resolves outside every allowed directory (or does not exist)."""

    code = "path_not_allowed"


class TaskTypeNotAllowed(PolicyViolation):
    """The policy's ``task_types`` does not include the requested type."""

    code = "task_type_not_allowed"


class CommandNotAllowed(PolicyViolation):
    """A command is not on the allow list, matches the deny list, or shell use is off."""

    code = "command_not_allowed"


class LimitExceeded(PolicyViolation):
    """A requested limit (timeout, memory, ...) is above the policy's ceiling."""

    code = "limit_exceeded"


class EnvNotAllowed(PolicyViolation):
    """A task environment variable is one the policy does not let a task set."""

    code = "env_not_allowed"


class UrlNotAllowed(PolicyViolation):
    """A notification URL is not under the policy's ``notifications.allowed_urls``."""

    code = "url_not_allowed"


class IsolationUnavailable(PolicyViolation):
    """The policy requires an isolation level this machine cannot provide."""

    code = "isolation_unavailable"
