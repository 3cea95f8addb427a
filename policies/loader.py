"""Load the operator's YAML policy file into a :class:`~policies.model.Policy`, strictly.

Every key is optional except ``version``; a missing key takes the default of
``policies/allowed.yaml``. Unknown keys, duplicate keys, wrong types and out-of-range values
are errors: a typo in a security policy must not silently fall back to a default. Every
problem is a :class:`~policies.errors.PolicyFileError` whose ``field`` is the key path
(``limits.memory_mb``, ``commands.deny[2]``) and whose message names it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import urllib.parse
from collections.abc import Mapping

import yaml

from .errors import PolicyFileError
from .isolation import IsolationLevel
from .model import (
    AUTO, DEFAULT_PASS, CommandRules, EnvironmentRules, Limits, NotificationRules, Policy, RateLimits,
    TaskType, env_name_problem, env_value_problem, show, url_problem,
)

#: A policy file is a page of YAML; anything this big is a mistake (or an attack on the parser).
MAX_POLICY_BYTES = 1024 * 1024
SUPPORTED_VERSION = 1
_TOP_KEYS = ("version", "allowed_directories", "task_types", "commands", "limits",
             "rate_limits", "network", "environment", "isolation", "notifications")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges may override keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key; construct_mapping reports it
                continue
            if duplicate:
                mark = key_node.start_mark
                raise PolicyFileError(
                    f"duplicate key {show(key)} at line {mark.line + 1}, column {mark.column + 1}",
                    field=str(key))  # the key itself: the loader does not track the path
        return super().construct_mapping(node, deep=deep)


def _fail(field: str, message: str) -> PolicyFileError:
    return PolicyFileError(f"{field} {message}", field=field)


def _type_name(value: object) -> str:
    return "null (an empty value)" if value is None else type(value).__name__


def _mapping(value: object, field: str, keys: tuple[str, ...]) -> Mapping[str, object]:
    """Require a mapping whose keys are all strings among ``keys``."""
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a mapping, got {_type_name(value)}")
    for key in value:
        if not isinstance(key, str) or key not in keys:
            where = f"{field}.{key}" if field else str(key)
            raise PolicyFileError(f"unknown key {show(where)}; the keys of "
                                  f"{field or 'the policy'} are: {', '.join(keys)}", field=where)
    return value


def _list(value: object, field: str, *, non_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise _fail(field, f"must be a list, got {_type_name(value)}")
    if non_empty and not value:
        raise _fail(field, "must not be empty")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(field, f"must be a non-empty string, got {show(value)}")
    if "\x00" in value:
        raise _fail(field, "contains a NUL character")
    return value


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(field, f"must be true or false, got {show(value)}")
    return value


def _positive_int(value: object, field: str, ceiling: int, floor: int = 1) -> int:
    # bool is a subclass of int in Python; `timeout_seconds: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < floor:
        kind = "a positive integer" if floor == 1 else f"an integer of at least {floor}"
        raise _fail(field, f"must be {kind}, got {show(value)}")
    if value > ceiling:
        raise _fail(field, f"must be at most {ceiling}, got {value}")
    return value


def _int_or_auto(value: object, field: str, ceiling: int, floor: int = 1) -> int | str:
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or not floor <= value <= ceiling:
        raise _fail(field, f"must be an integer from {floor} to {ceiling} or '{AUTO}', "
                           f"got {show(value)}")
    return value


def _numbers(cls, value: object, field: str):
    """Build ``Limits`` / ``RateLimits``; each field's bounds are its ``metadata["min"]``
    and ``["max"]``, and ``["auto"]`` says whether it also takes the word ``auto``."""
    fields = {f.name: f.metadata for f in dataclasses.fields(cls)}
    data = _mapping(value, field, tuple(fields))
    return cls(**{name: (_int_or_auto if meta["auto"] else _positive_int)(
                      data[name], f"{field}.{name}", meta["max"], meta["min"])
                  for name, meta in fields.items() if name in data})


def _directories(value: object, base_dir: str) -> tuple[pathlib.Path, ...]:
    result: list[pathlib.Path] = []
    for i, item in enumerate(_list(value, "allowed_directories", non_empty=True)):
        field = f"allowed_directories[{i}]"
        text = _string(item, field)
        try:
            real = pathlib.Path(os.path.realpath(os.path.join(base_dir, text)))
        except (OSError, ValueError) as exc:
            raise _fail(field, f"{show(text)} cannot be resolved: {exc}") from None
        if not real.is_dir():
            raise _fail(field, f"{show(text)} (resolved to {real}) does not exist or is not a "
                               "directory")
        if real not in result:  # the same directory written twice is harmless
            result.append(real)
    return tuple(result)


def _task_types(value: object) -> frozenset[TaskType]:
    result = set()
    for i, item in enumerate(_list(value, "task_types", non_empty=True)):
        try:
            result.add(TaskType(item))
        except ValueError:
            raise _fail(f"task_types[{i}]", f"must be one of "
                        f"{', '.join(t.value for t in TaskType)}, got {show(item)}") from None
    return frozenset(result)


def _commands(value: object) -> CommandRules:
    data = _mapping(value, "commands", ("shell", "allow", "deny"))
    shell = _bool(data.get("shell", True), "commands.shell")
    allow = []
    for i, item in enumerate(_list(data.get("allow", []), "commands.allow")):
        field = f"commands.allow[{i}]"
        program = _string(item, field)
        if any(c.isspace() for c in program):
            raise _fail(field, f"must be one program name or absolute path, got {show(program)}")
        if "/" in program:
            if not os.path.isabs(program):
                raise _fail(field, f"must be a program name or an absolute path, "
                                   f"got {show(program)}")
            program = os.path.normpath(program)
        allow.append(program)
    deny = []
    for i, item in enumerate(_list(data.get("deny", []), "commands.deny")):
        field = f"commands.deny[{i}]"
        text = _string(item, field)
        try:
            deny.append(re.compile(text))
        except (re.error, OverflowError, RecursionError) as exc:
            raise _fail(field, f"is not a valid regular expression {show(text)}: {exc}") from None
    return CommandRules(shell=shell, allow=tuple(allow), deny=tuple(deny))


def _env_name(name: object, field: str) -> str:
    problem = env_name_problem(name)
    if problem is not None:
        raise _fail(field, f"{show(name)} {problem}")
    return name  # type: ignore[return-value]


def _environment(value: object) -> EnvironmentRules:
    data = _mapping(value, "environment", ("pass", "set"))
    passthrough = tuple(dict.fromkeys(  # dict.fromkeys: drop repeats, keep order
        _env_name(name, f"environment.pass[{i}]")
        for i, name in enumerate(_list(data.get("pass", list(DEFAULT_PASS)), "environment.pass"))))
    fixed = data.get("set", {})
    if not isinstance(fixed, Mapping):
        raise _fail("environment.set", f"must be a mapping of names to strings, "
                                       f"got {_type_name(fixed)}")
    pairs = []
    for name, val in fixed.items():
        field = f"environment.set.{name}"
        _env_name(name, field)
        problem = env_value_problem(val)
        if problem is not None:
            raise _fail(field, f"{problem} (quote numbers and booleans in YAML)"
                        if not isinstance(val, str) else problem)
        pairs.append((name, val))
    return EnvironmentRules(passthrough=passthrough, set=tuple(pairs))


def _notifications(value: object) -> NotificationRules:
    data = _mapping(value, "notifications", ("allowed_urls", "secret_env"))
    urls = []
    for i, item in enumerate(_list(data.get("allowed_urls", []), "notifications.allowed_urls")):
        field = f"notifications.allowed_urls[{i}]"
        problem = url_problem(item)
        if problem is None and (urllib.parse.urlsplit(item).query
                                or urllib.parse.urlsplit(item).fragment):
            problem = "must not have a query or a fragment (it is a prefix of paths)"
        if problem is not None:
            raise _fail(field, f"{problem}, got {show(item)}")
        urls.append(item)
    secret_env = data.get("secret_env")
    if secret_env is not None:
        secret_env = _env_name(secret_env, "notifications.secret_env")
    return NotificationRules(allowed_urls=tuple(urls), secret_env=secret_env)


def _isolation(value: object) -> IsolationLevel:
    section = _mapping(value, "isolation", ("minimum",))
    minimum = section.get("minimum", IsolationLevel.FILESYSTEM.value)
    try:
        return IsolationLevel(minimum)
    except ValueError:
        accepted = ", ".join(level.value for level in IsolationLevel)
        raise _fail("isolation.minimum", f"must be one of {accepted}, got {show(minimum)}") from None


def parse_policy(data: object, *, base_dir: str | os.PathLike | None = None,
                 source: str | os.PathLike | None = None) -> Policy:
    """Build a :class:`Policy` from already-parsed YAML ``data``.

    Relative ``allowed_directories`` are taken from ``base_dir`` (default: the process's
    working directory). Raises :class:`PolicyFileError`.
    """
    if data is None:
        raise PolicyFileError("the policy file is empty; it needs at least 'version: 1'")
    if not isinstance(data, Mapping):
        raise PolicyFileError(f"the policy must be a mapping of keys (version, limits, ...), "
                              f"got {_type_name(data)}")
    top = _mapping(data, "", _TOP_KEYS)
    if "version" not in top:
        raise PolicyFileError("version is missing; write 'version: 1' at the top of the "
                              "policy file", field="version")
    version = top["version"]
    if type(version) is not int or version != SUPPORTED_VERSION:  # not True, not 1.0
        raise _fail("version", f"must be {SUPPORTED_VERSION}, got {show(version)}")
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    return Policy(
        version=SUPPORTED_VERSION,
        allowed_directories=_directories(top.get("allowed_directories", ["."]), base),
        task_types=_task_types(top.get("task_types", [t.value for t in TaskType])),
        commands=_commands(top.get("commands", {})),
        limits=_numbers(Limits, top.get("limits", {}), "limits"),
        rate_limits=_numbers(RateLimits, top.get("rate_limits", {}), "rate_limits"),
        network=_bool(top.get("network", True), "network"),
        environment=_environment(top.get("environment", {})),
        isolation_minimum=_isolation(top.get("isolation", {})),
        notifications=_notifications(top.get("notifications", {})),
        source=pathlib.Path(os.path.abspath(source)) if source is not None else None,
    )


def load_policy(path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None) -> Policy:
    """Read and validate the policy file at ``path``. Raises :class:`PolicyFileError` for an
    unreadable file, a YAML syntax error or an invalid policy -- never a yaml exception."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except (OSError, ValueError, TypeError) as exc:
        raise PolicyFileError(f"cannot read the policy file {show(path)}: {exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyFileError(f"the policy file {show(path)} is larger than "
                              f"{MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFileError(f"the policy file {show(path)} is not UTF-8 text: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except PolicyFileError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyFileError(f"the policy file {show(str(path))} is not valid YAML{where}: "
                              f"{exc.problem or exc}") from None
    # Beyond YAMLError, the safe constructors raise ValueError & co. for values such as
    # the timestamp 2001-13-01, and deep nesting raises RecursionError; none may escape.
    except Exception as exc:
        raise PolicyFileError(f"the policy file {show(str(path))} cannot be parsed: "
                              f"{exc}") from None
    return parse_policy(data, base_dir=base_dir, source=path)


def default_policy(*, base_dir: str | os.PathLike | None = None) -> Policy:
    """The shipped defaults, with ``base_dir`` (default: the working directory) as the only
    allowed directory."""
    return parse_policy({"version": SUPPORTED_VERSION}, base_dir=base_dir)
