"""The MCP interface against a real server process, with the SDK's own client: Streamable
HTTP at /mcp (with and without a token, a foreign Origin refused) and stdio
(``python -m api.mcp``): the tool list and its schemas, create, list, run with a wait, a
refused call's code, a policy change reflected in the description; and the HTTP API's
``wait_seconds`` (bounded waiters) and ``after_run_id``."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
import requests

from ..helpers import POLICY_TEMPLATE
from .mcp_clients import call, http_client, stdio_client

TOOL_NAMES = {"create_task", "update_task", "get_task", "list_tasks", "remove_task",
              "pause_task", "resume_task", "run_task", "list_runs", "get_run_output",
              "scheduler_status", "validate_schedule", "start_scheduler", "stop_scheduler"}


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


async def _session(client) -> dict:
    """The scenario every transport must serve; returns what it saw."""
    seen = {}
    listed = (await client.list_tools()).tools
    seen["tools"] = {tool.name: tool for tool in listed}
    error, body = await call(client, "create_task", task_id="hello", type="command",
                             interval="every 1 hour", command="echo hello from mcp")
    assert not error, body
    assert body["task_id"] == "hello" and body["status"] == "success"
    error, body = await call(client, "list_tasks")
    assert not error and [t["id"] for t in body["tasks"]] == ["hello"]
    error, body = await call(client, "run_task", task_id="hello", wait_seconds=30)
    assert not error, body
    assert body["finished"] is True and body["run"]["status"] == "succeeded"
    assert body["run"]["stdout"] == "hello from mcp\n"
    seen["run_id"] = body["run_id"]
    error, body = await call(client, "create_task", task_id="bad", type="command",
                             interval="every 0 minutes", command="true")
    assert error and body["code"] == "invalid_interval" and body["field"] == "interval"
    error, body = await call(client, "get_task", task_id="nope")
    assert error and body["code"] == "task_not_found"
    error, body = await call(client, "list_runs", after_run_id=0)
    assert not error and [r["run_id"] for r in body["runs"]] == [seen["run_id"]]
    return seen


def _check_tools(tools: dict) -> None:
    assert set(tools) == TOOL_NAMES
    create = tools["create_task"].input_schema
    assert {"task_id", "type", "interval"} <= set(create["required"])
    assert "action" not in create["properties"]
    assert create["additionalProperties"] is False
    wait = tools["run_task"].input_schema["properties"]["wait_seconds"]
    assert (wait["minimum"], wait["maximum"]) == (0, 300)
    text = tools["create_task"].description
    assert "daily at" in text and "custom_script" in text and "allowed directories" in text
    assert tools["list_tasks"].annotations.read_only_hint is True


def test_http_tools_round_trip_and_audit(make_server):
    server = make_server()
    seen = _run(_runner(http_client(server.url)))
    _check_tools(seen["tools"])
    assert str(server.workspace.resolve()) in seen["tools"]["create_task"].description
    audit = (server.data_dir / "audit.log").read_text()
    assert '"action": "create"' in audit and '"action": "run"' in audit
    assert '"action": "list"' not in audit  # read-only tools are not audited


async def _runner(manager):
    async with manager as client:
        return await _session(client)


def test_http_with_token_and_foreign_origin(make_server):
    server = make_server(extra_args=("--token", "s3cret"))
    seen = _run(_runner(http_client(server.url, token="s3cret")))
    assert set(seen["tools"]) == TOOL_NAMES
    with pytest.raises(Exception):
        _run(_runner(http_client(server.url)))
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    plain = requests.post(server.url + "/mcp", json=body, timeout=10)
    assert plain.status_code == 401 and plain.json()["code"] == "unauthorized"
    foreign = requests.post(server.url + "/mcp", json=body, timeout=10,
                            headers={"Authorization": "Bearer s3cret",
                                     "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["code"] == "origin_not_allowed"
    host = requests.post(server.url + "/mcp", json=body, timeout=10,
                         headers={"Authorization": "Bearer s3cret", "Host": "evil.example"})
    assert host.status_code == 403
    big = requests.post(server.url + "/mcp", data=b"x" * (600 * 1024), timeout=10,
                        headers={"Authorization": "Bearer s3cret",
                                 "Content-Type": "application/json"})
    assert big.status_code == 413
    assert '"action": "mcp", "task_id": null, "run_id": null, "status": 401' in (
        server.data_dir / "audit.log").read_text()


def test_http_rate_limit_is_a_429(make_server):
    server = make_server(requests_per_minute=3)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    statuses = [requests.post(server.url + "/mcp", json=body, timeout=10).status_code
                for _ in range(5)]
    assert statuses[-1] == 429, statuses


def test_stdio_round_trip_and_policy_change(make_server):
    server = make_server(extra_args=("--token", "s3cret"))

    async def scenario():
        async with stdio_client(server.url, token="s3cret") as client:
            seen = await _session(client)
            async with client.listen(tools_list_changed=True) as changes:
                server.policy_path.write_text(POLICY_TEMPLATE.format(
                    workspace=server.workspace, timeout=77, max_output_kb=1024,
                    runs_per_minute=100000, max_tasks=100000, requests_per_minute=1000000))
                with anyio.fail_after(30):
                    seen["event"] = await anext(changes)

            async def refreshed():
                for _ in range(200):
                    tools = {t.name: t for t in (await client.list_tools()).tools}
                    if "timeout_seconds 77" in tools["create_task"].description:
                        return True
                    await asyncio.sleep(0.1)
                return False
            seen["refreshed"] = await refreshed()
            return seen
    seen = _run(scenario())
    _check_tools(seen["tools"])
    assert "timeout_seconds 60" in seen["tools"]["create_task"].description
    assert seen["refreshed"], "the policy change did not reach the create_task description"
    assert type(seen["event"]).__name__ == "ToolsListChanged"


def test_stdio_without_a_server_answers_how_to_start_it(tmp_path):
    async def scenario():
        async with stdio_client("http://127.0.0.1:9") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            answers = [await call(client, name) for name in sorted(tools)]
            return tools, answers
    tools, answers = _run(scenario())
    assert set(tools) == TOOL_NAMES
    for error, body in answers:
        assert error and body["code"] == "server_unreachable"
        assert "python -m api" in body["message"]


# ------------------------------------------------------------------ HTTP run and runs

def test_run_wait_seconds_and_after_run_id(server):
    server.post("create", task_id="echo", type="command", interval="every 1 hour",
                command="echo waited")
    answer = server.post("run", task_id="echo", wait_seconds=30)
    assert answer["finished"] is True and answer["run"]["stdout"] == "waited\n"
    assert answer["run"]["run_id"] == answer["run_id"]
    quick = server.post("run", task_id="echo", wait_seconds=0)
    assert quick["run"]["status"] in ("queued", "running", "succeeded")
    assert quick["run_id"] == answer["run_id"] + 1
    plain = server.post("run", task_id="echo")
    assert plain["run"]["run_id"] == plain["run_id"] and plain["finished"] in (True, False)
    server.wait_run(plain["run_id"])
    inbox = server.post("runs", after_run_id=answer["run_id"])
    assert [r["run_id"] for r in inbox["runs"]] == [quick["run_id"], plain["run_id"]]
    assert server.post("runs", after_run_id=plain["run_id"])["runs"] == []
    assert [r["run_id"] for r in server.post("runs", after_run_id=0, limit=1)["runs"]] == [
        answer["run_id"]]
    for bad in (-1, 301, "5", True):
        refused = server.post("run", task_id="echo", wait_seconds=bad, expect=400)
        assert refused["field"] == "wait_seconds"
    assert server.post("runs", after_run_id=-1, expect=400)["field"] == "after_run_id"


@pytest.mark.slow
def test_waiting_clients_are_bounded_and_do_not_starve_the_server(make_server):
    """4 HTTP threads: at most 2 clients wait; 12 more are answered at once, and the server
    keeps answering others while the waiters hold their threads."""
    server = make_server(workers=4, extra_args=("--threads", "4"))
    server.post("create", task_id="slow", type="command", interval="every 1 hour",
                command="sleep 3")

    def run_waiting(_):
        started = time.monotonic()
        body = requests.post(server.url + "/schedule", timeout=60, json={
            "action": "run", "task_id": "slow", "wait_seconds": 20}).json()
        return body, time.monotonic() - started

    with ThreadPoolExecutor(14) as pool:
        futures = [pool.submit(run_waiting, i) for i in range(14)]
        time.sleep(1.0)
        started = time.monotonic()
        assert requests.get(server.url + "/health", timeout=5).ok
        assert server.post("status")["running"] in (True, False)
        assert time.monotonic() - started < 2.0
        results = [f.result(timeout=60) for f in futures]
    waited = [r for r, _ in results if r["finished"]]
    refused = [(r, t) for r, t in results if not r["finished"]]
    assert 1 <= len(waited) <= 2, [r["message"] for r, _ in results]
    assert all("already waiting" in r["message"] and t < 2.5 for r, t in refused)
    for body, _ in results:
        server.wait_run(body["run_id"])


@pytest.mark.slow
def test_mcp_and_http_clients_together(make_server):
    """20 MCP clients and 20 HTTP clients, 20 calls each, at once: nothing 5xx, every MCP
    call answered; /schedule's throughput with and without the MCP load is printed."""
    from bench.mcp_call import load

    server = make_server(extra_args=("--threads", "32"))
    server.post("create", task_id="load", type="command", interval="every 1 hour",
                command="true")
    alone = load(server.url, http_clients=20, mcp_clients=0, calls=20)
    mixed = load(server.url, http_clients=20, mcp_clients=20, calls=20)
    assert set(alone["statuses"]) == {200} and set(mixed["statuses"]) == {200}, mixed
    assert mixed["mcp_failures"] == []
    print(f"/schedule list: {alone['http_rps']:.0f} req/s alone, "
          f"{mixed['http_rps']:.0f} req/s beside 20 MCP clients")
