"""The MCP tools' parts without a server: schemas from the request models, descriptions
from the policy, result shapes; and the scheduler's bounded waits for runs."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

from api.mcp import tools
from api.requests import REQUESTS, request_schema
from policies import default_policy
from policies.model import Limits
from scheduler.launcher import FinishedRun
from scheduler.models import Run, RunStatus, Trigger
from scheduler.waiting import RunWaits


def test_every_action_has_its_tool_with_the_models_schema():
    assert {tool.action for tool in tools.TOOLS} == set(REQUESTS)
    assert len(tools.TOOLS) == 14
    for tool in tools.tool_list(None):
        action = tools.BY_NAME[tool.name].action
        assert tool.input_schema == request_schema(action, with_action=False)
        assert tools.input_schema(tool.name) is tools.input_schema(tool.name)  # built once
    assert tools.input_schema("nope") is None


def test_descriptions_carry_the_policy_in_force(tmp_path):
    policy = replace(default_policy(), allowed_directories=(tmp_path,),
                     limits=Limits(timeout_seconds=42))
    listed = {t.name: t.description for t in tools.tool_list(tools.PolicyView.of(policy))}
    create = listed["create_task"]
    assert str(tmp_path.resolve()) in create and "timeout_seconds 42" in create
    assert "daily at" in create and "custom_script" in create  # forms and types
    assert "timeout_seconds 42" in listed["run_task"]
    assert "could not be read. start it" in tools.tool_list(
        None, unavailable="start it")[0].description


def test_results_are_the_http_object_as_structure_and_text():
    ok = tools.result({"status": "success", "count": 0}, error=False)
    assert ok.structured_content == json.loads(ok.content[0].text) and not ok.is_error
    refused = tools.refusal("task_not_found", "No task 'x'.", "task_id")
    assert refused.is_error
    assert refused.structured_content == {"status": "error", "message": "No task 'x'.",
                                          "code": "task_not_found", "field": "task_id"}
    assert tools.request_body(tools.BY_NAME["list_tasks"], {"action": "remove"}) == {
        "action": "list"}


class FakeScheduler:
    def __init__(self):
        self.status = RunStatus.RUNNING
        self.listeners = []

    def add_run_listener(self, listener):
        self.listeners.append(listener)

    def run(self, run_id):
        return Run(run_id=run_id, task_id="t", trigger=Trigger.MANUAL, status=self.status,
                   scheduled_for=0.0)

    def finish(self, run_id):
        self.status = RunStatus.SUCCEEDED
        for listener in self.listeners:
            listener(FinishedRun(run_id, "t", Trigger.MANUAL, RunStatus.SUCCEEDED, 0.0))


def test_a_waiter_hears_the_end_of_its_run():
    scheduler = FakeScheduler()
    waits = RunWaits(scheduler, capacity=2)
    threading.Timer(0.2, scheduler.finish, args=(7,)).start()
    started = time.monotonic()
    run, admitted = waits.wait(7, 10)
    assert admitted and run.status is RunStatus.SUCCEEDED
    assert time.monotonic() - started < 5
    assert waits.waiting == 0


def test_waiters_beyond_the_capacity_are_answered_at_once():
    scheduler = FakeScheduler()
    waits = RunWaits(scheduler, capacity=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(waits.wait(1, 10)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while waits.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    run, admitted = waits.wait(1, 10)
    assert not admitted and run.status is RunStatus.RUNNING
    assert time.monotonic() - started < 1
    scheduler.finish(1)
    for thread in threads:
        thread.join(5)
    assert [admitted for _, admitted in results] == [True, True]
    assert waits.waiting == 0


def test_a_wait_that_times_out_returns_the_record_as_it_is():
    waits = RunWaits(FakeScheduler(), capacity=1)
    run, admitted = waits.wait(3, 0.05)
    assert admitted and run.status is RunStatus.RUNNING and waits.waiting == 0
