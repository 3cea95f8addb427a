"""The run lifecycle's fields through HTTP, in-process: what create/update accept and refuse
(retries, retry_delay, notify, on_success, on_failure), what task details and run records
show, and the OpenAPI document's account of them."""

from __future__ import annotations

import pytest

from ..helpers import POLICY_TEMPLATE
from .harness import App

HOOK = "http://127.0.0.1:9/hooks"


@pytest.fixture
def app(tmp_path):
    text = POLICY_TEMPLATE.format(workspace=tmp_path / "workspace", timeout=60,
                                  max_output_kb=1024, runs_per_minute=1000, max_tasks=100,
                                  requests_per_minute=100000)
    (tmp_path / "workspace").mkdir()
    made = App(tmp_path, policy_text=text + f"notifications:\n  allowed_urls: [{HOOK}]\n")
    yield made
    made.close()


def create(app, task_id="t", expect=200, **fields):
    return app.post("create", task_id=task_id, type="command", interval="every 1 hour",
                    command="true", expect=expect, **fields)


def test_task_details_show_the_lifecycle_options(app):
    create(app, "b")
    create(app, "t", retries=2, retry_delay=1.5, notify={"url": HOOK + "/t"},
           on_success=["b"], on_failure=["b", "b"])
    details = app.post("get", task_id="t")["task"]["details"]
    assert {k: details[k] for k in ("retries", "retry_delay", "notify", "on_success",
                                    "on_failure")} == {
        "retries": 2, "retry_delay": 1.5, "notify": {"url": HOOK + "/t", "on": ["failure"]},
        "on_success": ["b"], "on_failure": ["b"]}
    plain = app.post("get", task_id="b")["task"]["details"]
    assert (plain["retries"], plain["retry_delay"], plain["notify"]) == (0, 10.0, None)


def test_run_records_carry_the_lifecycle_keys(app):
    create(app)
    run_id = app.post("run", task_id="t")["run_id"]
    for record in (app.post("output", run_id=run_id)["run"], app.post("runs")["runs"][0]):
        assert {k: record[k] for k in ("attempt", "retry_of", "parent_run_id",
                                       "notification")} == {
            "attempt": 1, "retry_of": None, "parent_run_id": None, "notification": None}


@pytest.mark.parametrize("fields, code, field", [
    ({"retries": 4}, "limit_exceeded", "retries"),
    ({"retries": -1}, "invalid_parameter", "retries"),
    ({"retries": 1.0}, "invalid_parameter", "retries"),
    ({"retry_delay": 0}, "invalid_parameter", "retry_delay"),
    ({"retry_delay": 3601}, "invalid_parameter", "retry_delay"),
    ({"notify": HOOK}, "invalid_parameter", "notify"),
    ({"notify": {"url": HOOK, "on": []}}, "invalid_parameter", "notify"),
    ({"notify": {"url": HOOK, "on": ["sometimes"]}}, "invalid_parameter", "notify"),
    ({"notify": {"url": HOOK, "secret": "x"}}, "invalid_parameter", "notify"),
    ({"notify": {"url": "http://127.0.0.1:9/other"}}, "url_not_allowed", "notify"),
    ({"notify": {"url": "http://10.0.0.1/hooks"}}, "url_not_allowed", "notify"),
    ({"on_success": "b"}, "invalid_parameter", "on_success"),
    ({"on_success": ["no such"]}, "invalid_parameter", "on_success"),
    ({"on_failure": ["nobody"]}, "task_not_found", "on_failure"),
    ({"on_failure": ["t"]}, "chain_cycle", "on_failure"),
])
def test_refused_lifecycle_options(app, fields, code, field):
    answer = create(app, expect=400, **fields)
    assert (answer["code"], answer["field"]) == (code, field)
    assert app.post("list")["count"] == 0


def test_removing_a_task_others_chain_to_is_a_409(app):
    create(app, "b")
    create(app, "a", on_failure=["b"])
    answer = app.post("remove", task_id="b", expect=409)
    assert (answer["code"], answer["field"]) == ("task_in_chain", "task_id")
    app.post("update", task_id="a", on_failure=[])
    app.post("remove", task_id="b")


def test_openapi_documents_the_lifecycle_options(app):
    document = app.raw("GET", "/openapi.json").json()
    text = str(document)
    for name in ("retries", "retry_delay", "notify", "on_success", "on_failure", "attempt",
                 "retry_of", "parent_run_id", "notification"):
        assert f"'{name}'" in text, name
