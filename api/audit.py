"""The audit log: one JSON line per state-changing request, in ``<data-dir>/audit.log``.

What is recorded: every ``POST /schedule`` except the read-only actions (``list``, ``get``,
``runs``, ``output``, ``status``, ``validate``), whatever its outcome. A request refused
before its action could be read (guards, body, JSON) is recorded too: it may have been an
attempt to change state. Each line says who (client address, whether a token was
presented and accepted), what (action, ``task_id``/``run_id`` where present) and the
result (HTTP status, error ``code``). Request bodies are never written: commands, scripts
and ``env`` values may hold secrets, and the token never appears anywhere.

The file is bounded: past ``max_bytes`` it is renamed to ``audit.log.1`` (replacing the
previous one) and a new file is started, so the log never takes more than twice that.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

READ_ONLY_ACTIONS = frozenset({"list", "get", "runs", "output", "status", "validate"})
MAX_ID_CHARS = 128  # a task_id from a refused request can be anything; keep lines short


def _short(value: Any) -> Any:
    """An id as it may appear in a line: strings cut, non-scalar values not at all."""
    if isinstance(value, str):
        return value[:MAX_ID_CHARS]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _open_private(path: Path):
    """Open for appending, readable by the server's user only (it names clients)."""
    return open(path, "ab", buffering=0, opener=lambda p, flags: os.open(p, flags, 0o600))


class AuditLog:
    """Appends audit records as JSON lines, rotating at ``max_bytes``; thread-safe."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 5 * 1024 * 1024):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file = None
        self._failed = False

    def record(self, *, client: str | None, token_used: bool, action: Any, status: int,
               code: str | None, task_id: Any = None, run_id: Any = None) -> None:
        """Write one record. A failure to write is logged once and never fails the request."""
        entry = {"time": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                 "client": client, "token_used": token_used, "action": _short(action),
                 "task_id": _short(task_id), "run_id": _short(run_id), "status": status,
                 "code": code}
        # ensure_ascii: a line is one line whatever the ids contain (no log injection).
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode()
        with self._lock:
            try:
                self._write(line)
                self._failed = False
            except OSError as exc:
                if not self._failed:
                    log.error("cannot write the audit log %s: %s", self.path, exc)
                self._failed = True

    def _write(self, line: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open_private(self.path)
        if self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
            self._file.close()
            self._file = None
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = _open_private(self.path)
        self._file.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
