"""The OpenAPI 3.1 document of the API, served at ``GET /openapi.json``.

Written by hand from the same tables the handlers use (the actions in
:data:`api.actions.ACTIONS`, the text limits in :mod:`api.fields`), and checked against the
live server by the integration tests: every action's request fields and response keys,
and every error status. JSON Schema 2020-12 (``type: [..., "null"]`` for nullable values):
an optional field sent as ``null`` counts as absent.
"""

from __future__ import annotations

from typing import Any

from policies import TaskType
from scheduler.models import Misfire, Overlap

from .actions import ACTIONS, MAX_ID, MAX_RUNS_LIMIT
from .fields import MAX_TEXT, TASK_ID

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def _obj(properties: dict[str, Schema], required: list[str] | None = None, *,
         closed: bool = False, description: str | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties,
                      "required": list(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False  # the server refuses unknown options (400)
    if description:
        schema["description"] = description
    return schema


STR = {"type": "string"}
TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        "description": "server local time, YYYY-MM-DD HH:MM:SS"}
TIME_OR_NULL = _nullable(TIME)
INT = {"type": "integer"}
BOOL = {"type": "boolean"}

TASK_ID_SCHEMA = {"type": "string", "pattern": f"^{TASK_ID.pattern}$", "maxLength": 128}
INTERVAL = {"type": "string", "description": "e.g. 'every 5 minutes', 'daily at 2:00', "
            "'monday at 9:30'; bounded by rate_limits.min_interval_seconds"}
LIMIT = _nullable({"type": "integer", "minimum": 1, "maximum": MAX_RUNS_LIMIT, "default": 20})


def _text(key: str) -> Schema:
    # Not blank, no NUL character (and valid Unicode: lone surrogates are refused too).
    return _nullable({"type": "string", "minLength": 1, "maxLength": MAX_TEXT.get(key, 4096),
                      "pattern": "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"})


TASK_OPTIONS: dict[str, Schema] = {
    "type": {"type": "string", "enum": [t.value for t in TaskType]},
    "interval": INTERVAL,
    "command": _text("command"),
    "file_path": _text("file_path"),
    "custom_script": _text("custom_script"),
    "working_dir": _text("working_dir"),
    "env": _nullable({"type": "object", "additionalProperties": STR,
                      "description": "names the policy refuses (LD_*, PYTHON*, ...) are a 400"}),
    "timeout": _nullable({"type": "number", "exclusiveMinimum": 0,
                          "description": "seconds, at most the policy's limits.timeout_seconds"}),
    "overlap": _nullable({"type": "string", "enum": [o.value for o in Overlap]}),
    "misfire": _nullable({"type": "string", "enum": [m.value for m in Misfire]}),
    "until": _nullable({"type": "string", "description": "YYYY-MM-DD HH:MM:SS or ISO 8601"}),
    "start_at": _nullable({"type": "string", "description": "YYYY-MM-DD HH:MM:SS or ISO 8601"}),
    "max_runs": _nullable({"type": "integer", "minimum": 1}),
}
TYPE_PARAMETER = {"command": "command", "test": "file_path", "script": "file_path",
                  "custom": "custom_script"}


def _type_rule(kind: str) -> Schema:
    param = TYPE_PARAMETER[kind]
    others = {p: {"type": "null"} for p in set(TYPE_PARAMETER.values()) - {param}}
    if kind == "test":
        return {"properties": others}
    return {"required": [param], "properties": {param: {"type": "string"}, **others}}


def _request(action: str, fields: dict[str, Schema] | None = None,
             required: tuple[str, ...] = ()) -> Schema:
    properties = {"action": {"type": "string", "const": action}, **(fields or {})}
    return _obj(properties, ["action", *required], closed=True)


def _requests() -> dict[str, Schema]:
    task = {"task_id": TASK_ID_SCHEMA}
    create = _request("create", {**task, **TASK_OPTIONS}, ("task_id", "type", "interval"))
    # Each type takes its own parameter (required except for test) and refuses the others.
    create["allOf"] = [{"if": {"properties": {"type": {"const": kind.value}}, "required": ["type"]},
                        "then": _type_rule(kind.value)} for kind in TaskType]
    update_options = {**TASK_OPTIONS, "type": _nullable(TASK_OPTIONS["type"])}
    return {
        "start": _request("start"), "stop": _request("stop"), "list": _request("list"),
        "status": _request("status"), "create": create,
        "update": _request("update", {**task, **update_options}, ("task_id",)),
        "remove": _request("remove", task, ("task_id",)),
        "get": _request("get", {**task, "limit": LIMIT}, ("task_id",)),
        "pause": _request("pause", task, ("task_id",)),
        "resume": _request("resume", task, ("task_id",)),
        "run": _request("run", task, ("task_id",)),
        "runs": _request("runs", {"task_id": _nullable(TASK_ID_SCHEMA), "limit": LIMIT}),
        "output": _request("output", {"run_id": {"type": "integer", "minimum": 1,
                                                 "maximum": MAX_ID}}, ("run_id",)),
        "validate": _request("validate", {"interval": INTERVAL}, ("interval",)),
    }


def _entities() -> dict[str, Schema]:
    details = _obj({
        "type": TASK_OPTIONS["type"], "interval": STR, "command": _nullable(STR),
        "file_path": _nullable(STR), "custom_script": _nullable(STR), "next_run": TIME_OR_NULL,
        "created_at": TIME, "schedule": STR, "updated_at": TIME_OR_NULL,
        "working_dir": _nullable(STR), "env": {"type": "object", "additionalProperties": STR},
        "timeout": _nullable({"type": "number"}),
        "overlap": {"type": "string", "enum": [o.value for o in Overlap]},
        "misfire": {"type": "string", "enum": [m.value for m in Misfire]}, "until": TIME_OR_NULL,
        "start_at": TIME_OR_NULL, "max_runs": _nullable(INT), "paused": BOOL,
        "state": {"type": "string", "enum": ["scheduled", "paused", "finished"]},
        "runs_fired": INT})
    counts = _obj({k: INT for k in ("passed", "failed", "errors", "skipped")})
    run = _obj({
        "run_id": INT, "task_id": STR,
        "trigger": {"type": "string", "enum": ["schedule", "manual", "catch_up"]},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed",
                                              "timed_out", "killed", "rejected", "skipped",
                                              "interrupted", "error"]},
        "reason": _nullable(STR), "exit_code": _nullable(INT), "scheduled_for": TIME_OR_NULL,
        "started_at": TIME_OR_NULL, "finished_at": TIME_OR_NULL,
        "duration_ms": _nullable({"type": "number"}), "lateness_ms": _nullable({"type": "number"}),
        "truncated": BOOL, "tests": {"oneOf": [_ref("TestCounts"), {"type": "null"}]},
        "stdout": STR, "stderr": STR,
        "output_is_tail": {"type": "boolean", "description": "true when runs shows only the "
                           "last 4096 characters of a stream (output shows all that was kept)"}})
    error = _obj({"status": {"type": "string", "const": "error"}, "message": STR,
                  "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                  "field": _nullable(STR)}, closed=True,
                 description="every error: a sentence to act on, a stable code, the field at fault")
    return {"TaskDetails": details, "Task": _obj({"id": STR, "details": _ref("TaskDetails")}),
            "TestCounts": counts, "Run": run, "Error": error}


def _responses() -> dict[str, Schema]:
    ok = {"type": "string", "const": "success"}
    message = _obj({"status": {"type": "string", "enum": ["success", "info"]}, "message": STR})
    scheduled = _obj({"status": ok, "message": STR, "task_id": STR, "next_run": TIME_OR_NULL,
                      "schedule": STR, "task": _ref("Task")})
    paused = _obj({"status": ok, "message": STR, "task_id": STR, "next_run": TIME_OR_NULL,
                   "task": _ref("Task")})
    runs = {"type": "array", "items": _ref("Run")}
    count = {"type": "integer", "minimum": 0}
    return {
        "start": message, "stop": message, "create": scheduled, "update": scheduled,
        "list": _obj({"status": ok, "tasks": {"type": "array", "items": _ref("Task")},
                      "count": count}),
        "remove": _obj({"status": ok, "message": STR}),
        "get": _obj({"status": ok, "task": _ref("Task"), "runs": runs}),
        "pause": paused, "resume": paused,
        "run": _obj({"status": ok, "message": STR, "task_id": STR, "run_id": INT}),
        "runs": _obj({"status": ok, "runs": runs, "count": count}),
        "output": _obj({"status": ok, "run": _ref("Run")}),
        "status": _obj({
            "status": ok, "running": BOOL, "tasks": count,
            "workers": _obj({"alive": INT, "configured": INT}),
            "runs": _obj({"active": INT, "queued": INT}),
            "isolation": {"type": "array", "items": STR}, "isolation_level": _nullable(STR),
            "cgroup_layout": _nullable(STR),
            "policy": _obj({"path": STR, "loaded_at": TIME_OR_NULL, "error": _nullable(STR)})}),
        "validate": _obj({"status": ok, "message": STR, "interval": STR,
                          "next_runs": {"type": "array", "items": TIME}}),
    }


def _name(action: str) -> str:
    return action.capitalize()


ERROR_STATUSES = {
    "400": "missing or invalid parameter (the message names the field and what is accepted)",
    "401": "token missing or wrong (only when the server runs with --token)",
    "403": "refused by a guard: Host not allowed, a foreign Origin, a cross-site browser request",
    "404": "unknown task or run", "405": "wrong method", "409": "task_id already exists",
    "413": "body too large", "415": "body not sent as application/json",
    "429": "rate limited: requests_per_minute per client, or runs_per_minute for 'run'",
    "500": "unexpected server fault (logged; the message says nothing more)",
}


def _error(description: str, status: str) -> Schema:
    response: Schema = {"description": description,
                        "content": {"application/json": {"schema": _ref("Error")}}}
    if status == "429":
        response["headers"] = {"Retry-After": {"description": "seconds to wait",
                                               "schema": {"type": "integer", "minimum": 1}}}
    return response


def _errors(*statuses: str) -> dict[str, Schema]:
    return {s: _error(ERROR_STATUSES[s], s) for s in statuses}


def document() -> Schema:
    """The whole OpenAPI document (a fresh dict each call)."""
    requests, responses = _requests(), _responses()
    assert set(requests) == set(responses) == set(ACTIONS), "the document misses an action"
    schemas = _entities()
    for action in ACTIONS:
        schemas[f"{_name(action)}Request"] = requests[action]
        schemas[f"{_name(action)}Response"] = responses[action]
    body_schema = {"oneOf": [_ref(f"{_name(a)}Request") for a in ACTIONS],
                   "discriminator": {"propertyName": "action", "mapping": {
                       a: f"#/components/schemas/{_name(a)}Request" for a in ACTIONS}}}
    json_of = lambda schema: {"application/json": {"schema": schema}}  # noqa: E731
    guarded = ("401", "403", "405")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Task Scheduler Server", "version": "1",
                 "description": "Schedule commands, pytest runs, scripts and inline Python. "
                 "Every response is JSON with status success | info | error."},
        "paths": {
            "/schedule": {"post": {
                "operationId": "schedule",
                "summary": "One action, chosen by the body's 'action'",
                "requestBody": {"required": True, "content": json_of(body_schema)},
                "responses": {
                    "200": {"description": "the action's answer (see <Action>Response)",
                            "content": json_of({"anyOf": [_ref(f"{_name(a)}Response")
                                                          for a in ACTIONS]})},
                    **_errors("400", *guarded, "404", "409", "413", "415", "429", "500")}}},
            "/health": {"get": {
                "operationId": "health", "summary": "Liveness; needs no token", "security": [],
                "responses": {"200": {"description": "the server accepts requests",
                                      "content": json_of(_obj({"status": {"const": "ok",
                                                                          "type": "string"}}))},
                              **_errors("403", "405")}}},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": json_of({"type": "object"})},
                              **_errors(*guarded)}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description":
                                           "required when the server runs with --token"}},
        },
        # Either the token or nothing: which one applies is the server's configuration.
        "security": [{"bearer": []}, {}],
    }
