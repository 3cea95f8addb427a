"""The error envelope and what a refused request must leave alone, for tests that talk to a
real server (:class:`tests.helpers.Server`) or to the application in-process
(:class:`tests.inprocess.harness.App`): both have ``post`` and ``raw``."""

from __future__ import annotations

import re

ERROR_KEYS = {"status", "message", "code", "field"}
CODE_RE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
DROP = object()  # marks a field to leave out of a request


def check_error(response, status: int, code: str | None, field: str | None | object = DROP) -> dict:
    """The error envelope: exactly {status, message, code, field}, JSON, no traceback."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and len(body["message"]) > 10, body
    assert "Traceback" not in body["message"] and 'File "' not in body["message"]
    assert isinstance(body["code"], str) and CODE_RE.fullmatch(body["code"]), body
    if code is not None:
        assert body["code"] == code, body
    if field is not DROP:
        assert body["field"] == field, body
    return body


def state(server) -> tuple[dict, dict]:
    """What a rejected request must not change: the task list and the run history."""
    return server.post("list"), server.post("runs", limit=1000)


def reject(server, status: int, code: str | None, field, body: dict) -> dict:
    """POST ``body`` as JSON, expect the error, and check that nothing changed."""
    before = state(server)
    response = server.raw("POST", json=body)
    error = check_error(response, status, code, field)
    assert state(server) == before, f"rejected request {body!r} changed the stored state"
    return error


def reject_raw(server, status: int, code: str | None, field=None, **kwargs) -> dict:
    before = state(server)
    error = check_error(server.raw(**kwargs), status, code, field)
    assert state(server) == before
    return error


def task_in_list(server, task_id: str) -> dict | None:
    return next((t for t in server.post("list")["tasks"] if t["id"] == task_id), None)


def command_task(task_id: str, /, **over) -> dict:
    body = {"action": "create", "task_id": task_id, "type": "command",
            "interval": "every 1 hour", "command": "echo hi"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not DROP}
