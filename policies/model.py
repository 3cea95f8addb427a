"""The typed policy and the checks made against it.

A :class:`Policy` is immutable: the loader builds one from the operator's YAML file and the
layers above (API, scheduler, sandbox) ask it questions -- may this task type run, is this
path inside the allowed directories, may this command run, which environment does a run get.
Every refusal is a :class:`~policies.errors.PolicyViolation` subclass carrying ``field``.
This module imports nothing from the rest of the repository: it is the bottom layer.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import pathlib
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from typing import Literal

from .isolation import IsolationLevel
from .errors import (
    CommandNotAllowed, EnvNotAllowed, LimitExceeded, PathNotAllowed, TaskTypeNotAllowed,
    UrlNotAllowed,
)

#: Variables that change how programs load code or how the shell parses input; neither the
#: policy file nor a task may set or pass them. Matched case-insensitively because some
#: platforms (and some programs) treat environment names without regard to case.
DANGEROUS_ENV = re.compile(
    r"(LD_.*|DYLD_.*|PYTHON.*|BASH_ENV|ENV|BASH_FUNC_.*|SHELLOPTS|BASHOPTS|PS4|IFS"
    r"|GCONV_PATH|LOCPATH|NLSPATH|MALLOC_.*)", re.IGNORECASE | re.DOTALL)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # portable names, ASCII only
MAX_ENV_NAME_LEN = 128
MAX_ENV_VALUE_LEN = 4096
MAX_TASK_ENV_ENTRIES = 64
MAX_PATH_LEN = 4096  # Linux PATH_MAX; longer strings are refused before touching the disk
DEFAULT_PASS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
WEEK = 7 * 86400
#: The value of a setting that the server works out for the machine it runs on.
AUTO = "auto"
#: Runs in flight (prepared or running) per CPU that ``max_concurrent_runs: auto`` allows:
#: most runs wait on something other than the CPU, and a prepared one waits on its slot.
CONCURRENT_RUNS_PER_CPU = 16
MAX_CONCURRENT_RUNS = 10_000


def is_dangerous_env(name: str) -> bool:
    """True if ``name`` is in the :data:`DANGEROUS_ENV` set."""
    return DANGEROUS_ENV.fullmatch(name) is not None


def env_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an environment variable name we accept, or None if it can."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if len(name) > MAX_ENV_NAME_LEN or ENV_NAME.fullmatch(name) is None:
        return "is not a valid variable name (letters, digits and '_', not starting with a digit)"
    if is_dangerous_env(name):
        return ("may not be set: it changes how programs load code or how the shell parses "
                "input (LD_*, DYLD_*, PYTHON*, BASH_ENV, IFS, ...)")
    return None


def env_value_problem(value: object) -> str | None:
    """Why ``value`` cannot be an environment variable value, or None if it can."""
    if not isinstance(value, str):
        return f"must have a string value, got {type(value).__name__}"
    if len(value) > MAX_ENV_VALUE_LEN:
        return f"has a value longer than {MAX_ENV_VALUE_LEN} characters"
    if "\x00" in value:
        return "has a value containing a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "has a value that is not valid UTF-8 text"
    return None


def show(value: object, limit: int = 120) -> str:
    """``repr`` of a value for an error message, cut short so a huge input stays readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TaskType(str, enum.Enum):
    """The kinds of task an agent may schedule, each with the one request field (its
    ``parameter``) that says what it runs."""

    COMMAND = "command"
    TEST = "test"
    SCRIPT = "script"
    CUSTOM = "custom"

    @property
    def parameter(self) -> str:
        """The field a task of this type takes: ``command``, ``file_path`` or ``custom_script``."""
        return _PARAMETER[self]

    @property
    def parameter_required(self) -> bool:
        """False only for ``test``: without ``file_path`` it tests the working directory."""
        return self is not TaskType.TEST


_PARAMETER = {TaskType.COMMAND: "command", TaskType.TEST: "file_path",
              TaskType.SCRIPT: "file_path", TaskType.CUSTOM: "custom_script"}
# Every type's parameter, in the order a request's fields are checked.
TASK_PARAMETERS: tuple[str, ...] = tuple(dict.fromkeys(_PARAMETER.values()))


def _bounded(default: int | str, ceiling: int, floor: int = 1, *, auto: bool = False):
    """An integer setting, >= ``floor`` and <= ``ceiling``, or with ``auto`` also the word
    ``auto`` (the loader reads ``metadata["min"]``, ``["max"]`` and ``["auto"]``)."""
    return dataclasses.field(default=default,
                             metadata={"min": floor, "max": ceiling, "auto": auto})


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run defaults and ceilings. Bounds: a week of time, 1 TiB, 1 GiB of output."""

    timeout_seconds: int = _bounded(300, WEEK)
    memory_mb: int = _bounded(512, 1024 * 1024)
    cpu_seconds: int = _bounded(300, WEEK)
    max_processes: int = _bounded(64, 65536)
    max_output_kb: int = _bounded(1024, 1024 * 1024)
    file_size_mb: int = _bounded(1024, 1024 * 1024)
    tmp_mb: int = _bounded(256, 1024 * 1024)
    max_retries: int = _bounded(3, 100, floor=0)  # the most ``retries`` a task may ask for


@dataclasses.dataclass(frozen=True)
class RateLimits:
    """Request and run rates; ``min_interval_seconds`` is the shortest schedule interval.
    ``max_concurrent_runs`` bounds the runs in flight at once (prepared ahead of their slot
    or running) across all workers; read it through ``concurrent_runs``."""

    requests_per_minute: int = _bounded(600, 1_000_000)
    runs_per_minute: int = _bounded(120, 100_000)
    min_interval_seconds: int = _bounded(1, WEEK)
    max_tasks: int = _bounded(1000, 1_000_000)
    max_concurrent_runs: int | Literal["auto"] = _bounded(AUTO, MAX_CONCURRENT_RUNS, auto=True)

    @property
    def concurrent_runs(self) -> int:
        """How many runs may be in flight at once: ``max_concurrent_runs``, where ``auto``
        is :data:`CONCURRENT_RUNS_PER_CPU` per CPU of this machine (at most
        :data:`MAX_CONCURRENT_RUNS`)."""
        if self.max_concurrent_runs == AUTO:
            return min(CONCURRENT_RUNS_PER_CPU * (os.cpu_count() or 1), MAX_CONCURRENT_RUNS)
        return self.max_concurrent_runs


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def url_problem(url: object) -> str | None:
    """Why ``url`` is not an http(s) URL the server would send to, or None: it needs a
    host, and may carry no user name or password (a secret in a URL ends up in logs)."""
    if not isinstance(url, str) or not url.strip():
        return "must be a non-empty string"
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 for c in url):
        return "must be at most 2048 characters without spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if _path_escapes(parts.path):
        return ("must not hold '.' or '..' path segments, nor an encoded '.', '/' or '\\' "
                "(a receiver would resolve them outside the allowed prefix)")
    return None


_ENCODED_PATH_CHARS = ("%2e", "%2f", "%5c")


def _path_escapes(path: str) -> bool:
    """Whether a URL path could name something outside its own prefix once a receiver or a
    proxy normalises it: dot segments, backslashes, or dots and slashes percent-encoded."""
    lowered = path.lower()
    if "\\" in path or any(code in lowered for code in _ENCODED_PATH_CHARS):
        return True
    return any(segment in (".", "..") for segment in path.split("/"))


@dataclasses.dataclass(frozen=True)
class NotificationRules:
    """Where the server may send run notifications, and the secret that signs them.

    ``allowed_urls`` are URL prefixes compared by parts, never as strings: the scheme, host
    and port must be equal and the path must be the prefix's path or lie below it, so
    ``http://hooks.local/ci`` allows ``http://hooks.local/ci/build`` but neither
    ``http://hooks.local/cid`` nor ``http://hooks.local.evil.net/ci``. Empty: nothing may
    be sent anywhere. ``secret_env`` names the server's environment variable whose value
    keys the HMAC-SHA256 signature of every body.
    """

    allowed_urls: tuple[str, ...] = ()
    secret_env: str | None = None

    def allows(self, url: str) -> bool:
        """True if ``url`` is a usable URL under one of ``allowed_urls``."""
        if url_problem(url) is not None:
            return False
        target = urllib.parse.urlsplit(url)
        return any(_under(target, urllib.parse.urlsplit(prefix)) for prefix in self.allowed_urls)

    def check(self, url: object, *, field: str = "notify") -> str:
        """``url`` if the policy lets the server send to it, else :class:`UrlNotAllowed`."""
        problem = url_problem(url)
        if problem is not None:
            raise UrlNotAllowed(f"notify.url {problem}, got {show(url)}", field=field)
        if not self.allows(url):  # type: ignore[arg-type]
            allowed = ", ".join(self.allowed_urls) or "none: the policy allows no URL"
            raise UrlNotAllowed(f"notify.url {show(url)} is not under the policy's "
                                f"notifications.allowed_urls ({allowed})", field=field)
        return url  # type: ignore[return-value]


def _under(url: urllib.parse.SplitResult, prefix: urllib.parse.SplitResult) -> bool:
    if (url.scheme, url.hostname) != (prefix.scheme, prefix.hostname):
        return False
    if (url.port or _default_port(url.scheme)) != (prefix.port or _default_port(prefix.scheme)):
        return False
    base = prefix.path.rstrip("/")
    return url.path == base or url.path.startswith(base + "/") or (not base and not url.path)


# Outside quotes these let one sh command line start further programs: ; & | newline,
# subshells and process substitution ( ), command substitution ` and $( (also inside "...").
_SHELL_CONTROL = frozenset(";&|\n()`")


def _shell_control(command: str) -> str | None:
    """The first shell operator that could start another program, honouring sh quoting."""
    quote, i = None, 0
    while i < len(command):
        c, two = command[i], command[i:i + 2]
        if quote == "'":
            quote = None if c == "'" else quote
        elif c == "\\":
            i += 1  # the next character is literal (inside "..." too, for the ones that matter)
        elif quote == '"' and c == '"':
            quote = None
        elif c == "`" or two == "$(" or (quote is None and c in _SHELL_CONTROL):
            return two if two == "$(" else c
        elif quote is None and c in "'\"":
            quote = c
        i += 1
    return None


@dataclasses.dataclass(frozen=True)
class CommandRules:
    """What ``command`` tasks may run.

    ``shell`` true runs a command through ``/bin/sh -c``; false runs ``shlex.split(command)``
    without a shell, so only commands shlex can split are accepted. ``allow`` (if not empty)
    lists program names or absolute paths; ``deny`` regexes are searched in the whole text.
    """

    shell: bool = True
    allow: tuple[str, ...] = ()
    deny: tuple[re.Pattern, ...] = ()

    def check(self, command: str) -> None:
        """Refuse ``command`` with :class:`CommandNotAllowed` (field ``command``) naming the rule.

        With ``shell`` true and a non-empty ``allow``, shell operators outside quotes
        (``; & | ( ) ` $(`` and newlines) are refused too: otherwise ``allowed; anything``
        would pass a check that looks only at the first word.
        """
        def refuse(message: str) -> CommandNotAllowed:
            return CommandNotAllowed(message, field="command")
        if not isinstance(command, str):
            raise refuse(f"command must be a string, got {type(command).__name__}")
        if "\x00" in command:
            raise refuse("command contains a NUL character, which no program can receive")
        if not command.strip():
            raise refuse("command is empty")
        for pattern in self.deny:
            if pattern.search(command):
                raise refuse(f"command matches the policy's deny rule {show(pattern.pattern)}")
        if self.shell and not self.allow:
            return
        try:
            words = shlex.split(command)
        except ValueError as exc:  # unbalanced quotes, trailing backslash
            raise refuse(f"command cannot be split into words ({exc})") from None
        if not words:
            raise refuse("command has no program to run")
        if self.allow and not self._allows(words[0]):
            raise refuse(f"program {show(words[0])} is not on the policy's allow list: "
                         + ", ".join(self.allow))
        if self.allow and self.shell and (op := _shell_control(command)) is not None:
            raise refuse(f"command uses the shell operator {show(op)}, which could run a "
                         "program that is not on the policy's allow list")

    def _allows(self, program: str) -> bool:
        """An absolute-path entry matches only that path; a bare name matches the name
        itself (looked up on PATH) or any path whose last component is that name."""
        path = os.path.normpath(program) if "/" in program else program
        return any(path == entry if "/" in entry else entry in (program, os.path.basename(path))
                   for entry in self.allow)


@dataclasses.dataclass(frozen=True)
class EnvironmentRules:
    """Which variables a run gets: ``passthrough`` (``pass`` in YAML) names copied from the
    server's environment, then ``set`` fixed values, then the task's own ``env``."""

    passthrough: tuple[str, ...] = DEFAULT_PASS
    set: tuple[tuple[str, str], ...] = ()

    def check_task_env(self, env: object) -> dict[str, str]:
        """Validate a task's requested ``env`` and return it as a plain dict (``None``, no
        ``env`` given, is ``{}``). Raises :class:`EnvNotAllowed` with field ``env`` (shape,
        size) or ``env.NAME`` (that variable)."""
        if env is None:
            return {}
        if not isinstance(env, Mapping):
            raise EnvNotAllowed("env must be a JSON object of names to strings, "
                                f"got {type(env).__name__}", field="env")
        if len(env) > MAX_TASK_ENV_ENTRIES:
            raise EnvNotAllowed(f"env has {len(env)} variables; at most {MAX_TASK_ENV_ENTRIES} "
                                "are allowed", field="env")
        result: dict[str, str] = {}
        for name, value in env.items():
            if not isinstance(name, str):
                raise EnvNotAllowed(f"env names must be strings, got {show(name)}", field="env")
            problem = env_name_problem(name) or env_value_problem(value)
            if problem is not None:
                raise EnvNotAllowed(f"env variable {show(name)} {problem}",
                                    field=f"env.{name[:MAX_ENV_NAME_LEN]}")
            result[name] = value
        return result

    def build(self, source: Mapping[str, str], task_env: Mapping[str, str]) -> dict[str, str]:
        """The environment of one run: the ``pass`` names found in ``source``, then ``set``,
        then ``task_env``. Nothing else from ``source`` is ever copied. ``task_env`` is
        checked again (it may have been stored long ago), so a dangerous name never runs."""
        result = {name: source[name] for name in self.passthrough if name in source}
        result.update(self.set)
        result.update(self.check_task_env(task_env))
        return result


def _path_problem(path: object) -> str | None:
    """Why ``path`` is not a path string we are willing to resolve, or None."""
    if not isinstance(path, str):
        return f"must be a string, got {type(path).__name__}"
    if not path:
        return "must not be empty"
    if "\x00" in path:
        return "contains a NUL character"
    if len(path) > MAX_PATH_LEN:
        return f"is longer than {MAX_PATH_LEN} characters"
    return None


@dataclasses.dataclass(frozen=True)
class Policy:
    """The operator's policy; ``allowed_directories`` are absolute and realpath'd.

    Path checks resolve symlinks with ``os.path.realpath`` on both sides and compare by path
    components, so ``/proj-evil`` is not inside ``/proj``. They describe the file system at
    the moment of the check: callers must use the returned resolved path, not the request's.
    """

    version: int
    allowed_directories: tuple[pathlib.Path, ...]
    task_types: frozenset[TaskType]
    commands: CommandRules
    limits: Limits
    rate_limits: RateLimits
    network: bool
    environment: EnvironmentRules
    isolation_minimum: IsolationLevel = IsolationLevel.FILESYSTEM
    notifications: NotificationRules = NotificationRules()
    source: pathlib.Path | None = dataclasses.field(default=None, compare=False)
    # Which load of the policy file this is (1: the first; 0: not from a PolicySource), so
    # that whoever is told of a new policy can tell it from an older one.
    revision: int = dataclasses.field(default=0, compare=False)

    def __post_init__(self) -> None:
        # A Policy built by hand (tests, other layers) gets the same guarantees as a loaded one.
        dirs = tuple(pathlib.Path(os.path.realpath(d)) for d in self.allowed_directories)
        if not dirs:
            raise ValueError("a Policy needs at least one allowed directory")
        object.__setattr__(self, "allowed_directories", dirs)
        object.__setattr__(self, "task_types", frozenset(TaskType(t) for t in self.task_types))

    def _inside(self, real: str) -> bool:
        return any(os.path.commonpath([str(root), real]) == str(root)
                   for root in self.allowed_directories)

    def _realpath_inside(self, path: str) -> str | None:
        """realpath of the absolute ``path`` if it lies inside an allowed directory."""
        try:
            real = os.path.realpath(path)
            return real if self._inside(real) else None
        except (OSError, ValueError):  # ValueError: unencodable text (lone surrogates)
            return None

    def is_allowed(self, path: str | os.PathLike) -> bool:
        """True if ``path`` exists and its realpath is inside (or is) an allowed directory.

        A relative path is resolved against the process's working directory, as ``open``
        would. Never raises: anything that is not a usable path string is refused.
        """
        try:
            path = os.fspath(path)
        except TypeError:
            return False
        if _path_problem(path) is not None or _path_problem(os.path.abspath(path)) is not None:
            return False
        real = self._realpath_inside(os.path.abspath(path))
        return real is not None and os.path.exists(real)

    def check_task_type(self, task_type: TaskType) -> None:
        """Raise :class:`TaskTypeNotAllowed` (field ``type``) unless the policy allows it."""
        try:
            kind = TaskType(task_type)
        except ValueError:
            raise TaskTypeNotAllowed(f"unknown task type {show(task_type)}; the types are "
                                     + ", ".join(t.value for t in TaskType), field="type") from None
        if kind not in self.task_types:
            allowed = ", ".join(sorted(t.value for t in self.task_types))
            raise TaskTypeNotAllowed(f"task type '{kind.value}' is not allowed by the policy; "
                                     f"allowed: {allowed}", field="type")

    def _resolve(self, path: object, base: str | os.PathLike, field: str) -> str:
        """realpath of ``path`` (relative to ``base``); it must lie inside and exist."""
        problem = _path_problem(path)
        if problem is None:
            path = os.path.join(base, path)  # an absolute ``path`` ignores ``base``
            problem = _path_problem(path)
        if problem is not None:
            raise PathNotAllowed(f"{field} {problem}", field=field)
        real = self._realpath_inside(path)
        # Containment is checked before existence, so a refusal does not reveal whether a
        # path outside the allowed directories exists.
        if real is None:
            allowed = ", ".join(str(d) for d in self.allowed_directories)
            raise PathNotAllowed(f"{field} {show(path)} is outside the allowed directories: "
                                 f"{allowed}", field=field)
        if not os.path.exists(real):
            raise PathNotAllowed(f"{field} {show(path)} does not exist", field=field)
        return real

    def resolve_working_dir(self, working_dir: str | None) -> pathlib.Path:
        """The run's working directory: ``None`` means the first allowed directory, a
        relative path is taken from it. Raises :class:`PathNotAllowed` (``working_dir``)."""
        first = self.allowed_directories[0]
        real = self._resolve(str(first) if working_dir is None else working_dir, first,
                             "working_dir")
        if not os.path.isdir(real):
            raise PathNotAllowed(f"working_dir {show(working_dir)} is not a directory",
                                 field="working_dir")
        return pathlib.Path(real)

    def resolve_file(self, file_path: str, cwd: pathlib.Path, *, field: str = "file_path",
                     must_be_file: bool = False) -> pathlib.Path:
        """Resolve ``file_path`` (relative to ``cwd``); it must exist inside an allowed
        directory and, with ``must_be_file``, be a regular file. Raises :class:`PathNotAllowed`."""
        real = self._resolve(file_path, cwd, field)
        if must_be_file and not os.path.isfile(real):
            raise PathNotAllowed(f"{field} {show(file_path)} is not a regular file", field=field)
        return pathlib.Path(real)

    def check_limits(self, *, timeout: float | None = None) -> None:
        """Refuse a requested ``timeout`` that is not a positive number or is above
        ``limits.timeout_seconds``, with :class:`LimitExceeded` (field ``timeout``)."""
        if timeout is None:
            return
        ceiling = self.limits.timeout_seconds
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or (isinstance(timeout, float) and not math.isfinite(timeout)) or timeout <= 0):
            raise LimitExceeded(f"timeout must be a positive number of seconds (at most "
                                f"{ceiling}), got {show(timeout, 40)}", field="timeout")
        if timeout > ceiling:
            raise LimitExceeded(f"timeout {show(timeout, 40)} is above the policy's ceiling of "
                                f"{ceiling} seconds (limits.timeout_seconds)", field="timeout")
