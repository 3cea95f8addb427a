"""The operator's policy: what agents may schedule and what every run is limited to.

This is the bottom layer of the server; it imports nothing from the rest of the repository.
Load a policy with :func:`load_policy` (or :func:`default_policy`), then ask it questions:
``check_task_type``, ``resolve_working_dir``, ``resolve_file``, ``commands.check``,
``environment.check_task_env`` / ``environment.build`` and ``check_limits``.
"""

from .errors import (
    CommandNotAllowed, EnvNotAllowed, LimitExceeded, PathNotAllowed, PolicyError, PolicyFileError,
    PolicyViolation, TaskSchedulerError, TaskTypeNotAllowed, UrlNotAllowed,
)
from .isolation import IsolationLevel
from .loader import default_policy, load_policy, parse_policy
from .model import (
    DANGEROUS_ENV, TASK_PARAMETERS, CommandRules, EnvironmentRules, Limits, NotificationRules,
    Policy, RateLimits, TaskType, is_dangerous_env,
)

__all__ = [
    "DANGEROUS_ENV", "CommandNotAllowed", "CommandRules", "EnvNotAllowed", "EnvironmentRules", "IsolationLevel",
    "LimitExceeded", "Limits", "PathNotAllowed", "Policy", "PolicyError", "PolicyFileError",
    "PolicyViolation", "RateLimits", "TASK_PARAMETERS", "TaskSchedulerError", "TaskType",
    "TaskTypeNotAllowed", "NotificationRules", "UrlNotAllowed", "default_policy",
    "is_dangerous_env", "load_policy", "parse_policy",
]
