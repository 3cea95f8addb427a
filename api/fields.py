"""JSON request bodies → typed values. Every failure names the field and what is accepted.

``Body`` wraps the parsed object and remembers which keys an action read, so that an
option the server does not understand is refused (400 ``unknown_field``) rather than
silently ignored. Every action calls :meth:`Body.complete` once it has read its fields and
before it acts: that refuses unknown options, then runs the ``admit`` hook (the
per-client rate limit), so a malformed request is a 400 before it can be a 429.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from policies import TaskType
from scheduler.models import Misfire, Overlap

from .errors import ApiError

TASK_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}")
MAX_TEXT = {"command": 65536, "custom_script": 262144, "file_path": 4096, "working_dir": 4096}


_ABSENT = object()


def _encodable(text: str) -> bool:
    """False for strings with lone surrogates (JSON allows "\\ud800"; no OS call does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bad(field: str, message: str, code: str = "invalid_parameter") -> ApiError:
    return ApiError(400, code, message, field=field)


class Body:
    """A request body (a JSON object) whose fields are read through typed accessors."""

    def __init__(self, data: dict[str, Any], *, admit: Callable[[], None] = lambda: None):
        self.data = data
        self.read: set[str] = {"action"}
        self._admit = admit
        self.admitted = False

    def complete(self, action: str) -> None:
        """All fields are read: refuse unknown options (400), then admit the request."""
        self.refuse_unknown(action)
        self._admit()
        self.admitted = True

    def has(self, key: str) -> bool:
        self.read.add(key)
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def refuse_unknown(self, action: str) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise bad(unknown[0], f"'{unknown[0]}' is not an option of the '{action}' action. "
                      f"Accepted: {', '.join(sorted(self.read - {'action'})) or 'no options'}.",
                      "unknown_field")

    def required(self, key: str) -> Any:
        if not self.has(key):
            raise bad(key, f"'{key}' is required for this action.", "missing_field")
        return self.data[key]

    def interval(self, *, required: bool) -> Any:
        """The raw interval (the grammar judges it); only an absent key is 'missing'."""
        self.read.add("interval")
        if "interval" not in self.data:
            if required:
                raise bad("interval", "'interval' is required for this action.", "missing_field")
            return _ABSENT
        return self.data["interval"]

    def task_id(self) -> str:
        value = self.required("task_id")
        if not isinstance(value, str) or not TASK_ID.fullmatch(value):
            raise bad("task_id", "task_id must be a string of 1-128 letters, digits and _ . : @ - "
                      "(not starting with a punctuation mark other than _).", "invalid_task_id")
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        if not self.has(key):
            if required:
                raise bad(key, f"'{key}' is required for this action.", "missing_field")
            return None
        value = self.data[key]
        limit = MAX_TEXT.get(key, 4096)
        if not isinstance(value, str):
            raise bad(key, f"'{key}' must be a string, got {type(value).__name__}.")
        if not value.strip():
            raise bad(key, f"'{key}' must not be empty.")
        if "\x00" in value or not _encodable(value):
            raise bad(key, f"'{key}' must be UTF-8 text without NUL characters.")
        if len(value) > limit:
            raise bad(key, f"'{key}' is longer than {limit} characters.")
        return value

    def task_type(self, *, required: bool) -> TaskType | None:
        if not self.has("type"):
            if required:
                raise bad("type", "'type' is required: one of command, test, script, custom.",
                          "missing_field")
            return None
        value = self.data["type"]
        try:
            return TaskType(value)
        except ValueError:
            raise bad("type", f"'type' must be one of command, test, script, custom; got {value!r}.",
                      "invalid_type") from None

    def choice(self, key: str, enum_cls):
        if not self.has(key):
            return None
        try:
            return enum_cls(self.data[key])
        except ValueError:
            accepted = ", ".join(m.value for m in enum_cls)
            raise bad(key, f"'{key}' must be one of {accepted}; got {self.data[key]!r}.") from None

    def positive_number(self, key: str) -> float | None:
        if not self.has(key):
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or value != value or value == float("inf"):
            raise bad(key, f"'{key}' must be a positive number of seconds; got {value!r}.")
        return float(value)

    def positive_int(self, key: str, *, maximum: int | None = None, default: int | None = None) -> int | None:
        if not self.has(key):
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 \
                or (maximum is not None and value > maximum):
            upper = f" up to {maximum}" if maximum else ""
            raise bad(key, f"'{key}' must be a positive integer{upper}; got {value!r}.")
        return value

    def timestamp(self, key: str) -> float | None:
        """A time as 'YYYY-MM-DD HH:MM:SS' (server local time) or ISO 8601 with an offset."""
        if not self.has(key):
            return None
        value = self.data[key]
        if isinstance(value, str) and len(value) <= 64:
            try:
                return datetime.fromisoformat(value.strip()).timestamp()
            except ValueError:
                pass
        raise bad(key, f"'{key}' must be a time like '2030-01-31 23:59:00' (server local time) "
                  f"or ISO 8601 with an offset; got {value!r}.")

    def env(self) -> dict[str, str] | None:
        """Type only; which names a task may set is the policy's to say."""
        if not self.has("env"):
            return None
        value = self.data["env"]
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            raise bad("env", "'env' must be an object mapping variable names to string values.")
        return value


def spec_fields(body: Body, *, creating: bool) -> dict[str, Any]:
    """The task fields present in ``body`` (all create/update options), typed."""
    fields: dict[str, Any] = {}
    task_type = body.task_type(required=creating)
    if task_type is not None:
        fields["task_type"] = task_type
    interval = body.interval(required=creating)
    if interval is not _ABSENT:
        fields["interval"] = interval
    for key in ("command", "file_path", "custom_script", "working_dir"):
        value = body.text(key)
        if value is not None:
            fields[key] = value
    readers = {"env": body.env, "timeout": lambda: body.positive_number("timeout"),
               "overlap": lambda: body.choice("overlap", Overlap),
               "misfire": lambda: body.choice("misfire", Misfire),
               "until": lambda: body.timestamp("until"),
               "start_at": lambda: body.timestamp("start_at"),
               "max_runs": lambda: body.positive_int("max_runs")}
    for key, reader in readers.items():
        value = reader()
        if value is not None:
            fields[key] = value
    return fields
