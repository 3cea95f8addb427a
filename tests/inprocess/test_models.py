"""The request models are the parser and the schemas: one model, handler and answer per
action; schemas any JSON Schema tool accepts; the order in which refusals are reported."""

from __future__ import annotations

import jsonschema
import pytest

from api.actions import ACTIONS, response_type
from api.requests import REQUESTS, request_schema

from ..envelope import check_error
from .harness import App

CREATE = {"action": "create", "task_id": "m1", "type": "command", "interval": "hourly",
          "command": "true"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = App(tmp_path_factory.mktemp("models"))
    yield app
    app.close()


def test_every_action_has_a_model_a_handler_and_an_answer():
    assert set(REQUESTS) == set(ACTIONS)
    for action in ACTIONS:
        assert REQUESTS[action].model_fields["action"].annotation.__args__ == (action,)
        assert response_type(action).__annotations__["status"]


@pytest.mark.parametrize("action", sorted(REQUESTS))
def test_each_action_has_a_json_schema_for_any_front_end(action):
    schema = request_schema(action)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["action"]["const"] == action
    assert schema["additionalProperties"] is False
    arguments = request_schema(action, with_action=False)
    jsonschema.Draft202012Validator.check_schema(arguments)
    assert "action" not in arguments["properties"] and "action" not in arguments["required"]
    assert set(arguments["properties"]) == set(schema["properties"]) - {"action"}


def test_the_create_schema_states_each_types_parameter():
    validator = jsonschema.Draft202012Validator(request_schema("create"))
    assert validator.is_valid(CREATE)
    assert not validator.is_valid({**CREATE, "command": None})
    assert not validator.is_valid({**CREATE, "file_path": "x.py"})
    test = {**CREATE, "type": "test", "command": None}
    assert validator.is_valid(test) and validator.is_valid({**test, "file_path": "tests"})


@pytest.mark.parametrize("body, code, field", [
    # the first field in the model's order is the one reported ...
    ({**CREATE, "task_id": 5, "timeout": -1}, "invalid_task_id", "task_id"),
    ({**CREATE, "timeout": -1, "max_runs": 0}, "invalid_parameter", "timeout"),
    ({**CREATE, "type": None, "interval": None}, "missing_field", "type"),
    # ... and an unknown option only once every known field passed
    ({**CREATE, "zzz": 1, "max_runs": 0}, "invalid_parameter", "max_runs"),
    ({**CREATE, "aaa": 1, "zzz": 1}, "unknown_field", "aaa"),
    ({**CREATE, "aaa": None}, "unknown_field", "aaa"),
    # null is absent, so a required field sent as null is missing ...
    ({**CREATE, "task_id": None}, "missing_field", "task_id"),
    # ... except the interval, which the grammar judges
    ({**CREATE, "interval": None}, "invalid_interval", "interval"),
    ({"action": "validate", "interval": None}, "invalid_interval", "interval"),
    # an error deep in a value names the top-level field
    ({**CREATE, "env": {"A": ["x"]}}, "invalid_parameter", "env"),
])
def test_which_refusal_is_reported(app, body, code, field):
    check_error(app.raw("POST", json=body), 400, code, field)


def test_optional_fields_sent_as_null_are_absent(app):
    assert app.post("runs", task_id=None, limit=None)["count"] == 0
    created = app.post(**{**CREATE, "task_id": "nulls", "timeout": None, "env": None,
                          "file_path": None, "overlap": None})
    assert created["task"]["details"]["overlap"] == "skip"
    assert app.post("update", task_id="nulls", type=None, command=None)["status"] == "success"


def test_the_messages_say_what_is_accepted(app):
    message = app.raw("POST", json={**CREATE, "overlap": "sometimes"}).json()["message"]
    assert "skip, queue, allow" in message and "'sometimes'" in message
    message = app.raw("POST", json={"action": "runs", "limit": 0}).json()["message"]
    assert "1000" in message
    message = app.raw("POST", json={"action": "get", "task_id": "a", "tail": 1}).json()["message"]
    assert "Accepted: limit, task_id." in message
