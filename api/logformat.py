"""How the server's log lines look: ``text`` for people, ``json`` for log collectors.

With ``json`` every line is one JSON object: ``time`` (ISO 8601 with the offset), ``level``,
``logger``, ``pid`` (the server's or a worker process's), ``message``, and ``task_id`` /
``run_id`` when the line is about a task or a run (the code passes them as ``logging``
extras: ``log.warning(..., extra={"run_id": 7})``). Worker processes log in the same form.
A traceback goes into ``exception`` of the same object, never onto lines of its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from enum import Enum

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The extras copied into a JSON line when a record carries them.
ID_FIELDS = ("task_id", "run_id")


class LogFormat(str, Enum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line whatever the message holds."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created).astimezone()
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: control characters and newlines in ids or messages stay escaped,
        # so a line is always exactly one record (no log injection through a task id).
        return json.dumps(entry, ensure_ascii=True, default=str)


def worker_formatter(log_format: LogFormat) -> logging.Formatter | None:
    """The formatter the worker processes log with: the server's JSON one, or None (their
    own text format, which names the worker)."""
    return JsonFormatter() if log_format is LogFormat.JSON else None


def configure(level: str, log_format: LogFormat, stream=None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
