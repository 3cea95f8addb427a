"""GET /openapi.json is accurate: every action's success response has exactly the keys the
document declares (recursively) and validates against it; every documented error status
of POST /schedule is one the server really answers, with the Error schema."""

from __future__ import annotations

import pytest

from ..helpers import Server
from .schema_tools import Validator

TOKEN = "openapi-token"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("openapi"), runs_per_minute=3,
                    extra_args=("--token", TOKEN)).start()
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    (server.workspace / "test_ok.py").write_text("def test_ok():\n    pass\n")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def doc(api) -> dict:
    document = api.raw("GET", "/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    return document


def same_keys(value, schema: dict, validator: Validator, path: str = "$") -> list[str]:
    """Where ``value`` has keys the schema does not declare, or lacks declared ones."""
    schema = validator.resolve(schema)
    out = []
    if isinstance(value, dict) and "properties" in schema:
        declared = set(schema["properties"])
        if set(value) != declared:
            out.append(f"{path}: extra {set(value) - declared}, missing {declared - set(value)}")
        for key in set(value) & declared:
            out += same_keys(value[key], schema["properties"][key], validator, f"{path}.{key}")
    for sub in schema.get("oneOf", []):
        if not validator.errors(value, sub):
            out += same_keys(value, sub, validator, path)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += same_keys(item, schema["items"], validator, f"{path}[{i}]")
    return out


def test_every_action_answers_as_documented(api, doc):
    validator = Validator(doc)
    schemas = doc["components"]["schemas"]
    create = {"task_id": "doc", "type": "test", "interval": "every 2 hours", "timeout": 30}
    steps = [("start", {}), ("stop", {}), ("create", create), ("update", {"task_id": "doc",
             "interval": "every 3 hours", "env": {"FOO": "1"}}), ("list", {}),
             ("pause", {"task_id": "doc"}), ("resume", {"task_id": "doc"}),
             ("run", {"task_id": "doc"}), ("validate", {"interval": "daily at 2:00"}),
             ("status", {})]
    seen = set()
    for action, fields in steps:
        reply = api.post(action, **fields)
        seen.add(action)
        if action == "run":
            api.wait_run(reply["run_id"])
            for later, extra in (("get", {"task_id": "doc"}), ("runs", {}),
                                 ("output", {"run_id": reply["run_id"]})):
                answer = api.post(later, **extra)
                check(later, answer, schemas, validator)
                seen.add(later)
        check(action, reply, schemas, validator)
    check("remove", api.post("remove", task_id="doc"), schemas, validator)
    assert seen | {"remove"} == set(doc["paths"]["/schedule"]["post"]["requestBody"]["content"]
                                    ["application/json"]["schema"]["discriminator"]["mapping"])


def check(action: str, reply: dict, schemas: dict, validator: Validator) -> None:
    schema = schemas[action.capitalize() + "Response"]
    assert not validator.errors(reply, schema), (action, validator.errors(reply, schema))
    assert not same_keys(reply, schema, validator), (action, same_keys(reply, schema, validator))
    request = schemas[action.capitalize() + "Request"]
    assert request["properties"]["action"]["const"] == action


def test_every_documented_error_status_is_real(api, doc):
    validator = Validator(doc)
    # 503 needs a failing store: tests/integration/test_store_faults.py produces it.
    documented = set(doc["paths"]["/schedule"]["post"]["responses"]) - {"200", "500", "503"}
    json_headers = {"Content-Type": "application/json"}
    api.post("create", task_id="e", type="command", interval="hourly", command="true")
    run = {"action": "run", "task_id": "e"}
    for _ in range(5):  # use up runs_per_minute (test order does not matter)
        if api.raw("POST", json=run).status_code == 429:
            break
    answers = {
        "400": api.raw("POST", json={"action": "nope"}),
        "401": api.raw("POST", json={"action": "list"}, headers={"Authorization": "Bearer no"}),
        "403": api.raw("POST", json={"action": "list"}, headers={"Host": "evil.example"}),
        "404": api.raw("POST", json={"action": "get", "task_id": "missing"}),
        "405": api.raw("GET", "/schedule"),
        "409": api.raw("POST", json={"action": "create", "task_id": "e", "type": "command",
                                     "interval": "hourly", "command": "true"}),
        "413": api.raw("POST", data=b"{" + b" " * (600 * 1024) + b"}", headers=json_headers),
        "415": api.raw("POST", data=b'{"action": "list"}', headers={"Content-Type": "text/plain"}),
        "429": api.raw("POST", json=run),
    }
    assert set(answers) == documented
    for status, response in answers.items():
        assert str(response.status_code) == status, (status, response.text)
        reply = response.json()
        assert not validator.errors(reply, {"$ref": "#/components/schemas/Error"}), reply
    assert "Retry-After" in doc["paths"]["/schedule"]["post"]["responses"]["429"]["headers"]
    assert int(answers["429"].headers["Retry-After"]) >= 1
    for path, method in (("/health", "get"), ("/openapi.json", "get")):
        assert set(doc["paths"][path]) == {method}
    assert doc["paths"]["/health"]["get"]["security"] == []
