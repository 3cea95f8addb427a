"""The OpenAPI 3.1 document of the API, served at ``GET /openapi.json``.

Generated: the request schemas from the request models (:mod:`api.requests`), the response
schemas from the typed dicts the handlers return (:mod:`api.responses`). What is written
here is only what no model holds: the paths, the error statuses and the security scheme.
The integration tests hold the live server to it. JSON Schema 2020-12; an optional field
sent as ``null`` counts as absent.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from .actions import ACTIONS, response_type
from .requests import REQUESTS, SchemaGenerator
from .responses import Error

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"


def _ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _obj(properties: dict[str, Schema]) -> Schema:
    return {"type": "object", "properties": properties, "required": list(properties)}


def _schemas() -> Schema:
    """Every request, response and shared shape, keyed by its name in the components."""
    adapters = [(f"{_name(a)}Request", "validation", TypeAdapter(REQUESTS[a])) for a in ACTIONS]
    adapters += [(f"{_name(a)}Response", "serialization", TypeAdapter(response_type(a)))
                 for a in ACTIONS]
    adapters.append(("Error", "serialization", TypeAdapter(Error)))
    keyed, defs = TypeAdapter.json_schemas(adapters, ref_template=REF,
                                           schema_generator=SchemaGenerator)
    schemas = dict(defs["$defs"])
    for (name, _), schema in keyed.items():
        # A shape shared by several actions (start/stop, create/update) is defined once.
        if schema != _ref(name):
            schemas[name] = schema
    return schemas


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
    assert set(REQUESTS) == set(ACTIONS), "an action without a request model, or the reverse"
    schemas = _schemas()
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
