"""Editing policies/allowed.yaml while the server runs (README, "Live policy"): an edit is in force
within seconds, without a restart; a bad file is not applied (the last good policy stays,
the error is logged and shown by ``status``); tasks a new policy forbids stay stored but
their runs are ``rejected`` with the reason."""

from __future__ import annotations

import os
import time

import pytest

from ..helpers import Server, wait_until

POLICY = """\
version: 1
allowed_directories: [{workspace}]
commands:
  deny: [{deny}]
rate_limits:
  requests_per_minute: 100000
  runs_per_minute: {runs}
  min_interval_seconds: {min_interval}
  max_tasks: {max_tasks}
"""
DEFAULTS = dict(deny="", runs=1000, min_interval=1, max_tasks=100)


def write_policy(server: Server, *, atomic: bool = True, **over) -> None:
    """Write the policy as an editor would: a new file renamed over (or in place)."""
    text = POLICY.format(workspace=server.workspace, **{**DEFAULTS, **over})
    if atomic:
        tmp = server.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, server.policy_path)
    else:
        server.policy_path.write_text(text)


@pytest.fixture
def live(make_server) -> Server:
    server = make_server()
    write_policy(server)
    wait_until(lambda: server.post("status")["policy"]["error"] is None, timeout=5)
    return server


def in_force_within(server: Server, check, seconds: float = 3.0) -> float:
    """How long after now ``check()`` first held (fails after ``seconds``)."""
    started = time.monotonic()
    wait_until(check, timeout=seconds, interval=0.05, message="the policy edit in force")
    return time.monotonic() - started


def code_of(server: Server, **body) -> str | None:
    reply = server.raw("POST", json=body).json()
    return reply.get("code")


def create_refused(server: Server, task_id: str, command: str = "true") -> str | None:
    """Probe with a create: the refusal's code, or None (and the task removed again) if
    the old policy still let it through."""
    code = code_of(server, action="create", task_id=task_id, type="command", interval="hourly",
                   command=command)
    if code is None:
        server.post("remove", task_id=task_id)
    return code


def test_an_edit_is_in_force_within_seconds_without_restart(live):
    pid = live.proc.pid
    loaded = live.post("status")["policy"]["loaded_at"]
    assert live.post("validate", interval="every 30 seconds")["status"] == "success"
    write_policy(live, min_interval=60)
    too_short = dict(action="validate", interval="every 30 seconds")
    took = in_force_within(live, lambda: code_of(live, **too_short) == "interval_too_short")
    assert took < 2.5, took
    status = live.post("status")["policy"]
    assert status["error"] is None and status["loaded_at"] >= loaded
    assert os.path.samefile(status["path"], live.policy_path)
    # an in-place edit (same file, new content) is picked up too
    live.post("create", task_id="one", type="command", interval="hourly", command="true")
    write_policy(live, atomic=False, min_interval=60, max_tasks=1)
    in_force_within(live, lambda: create_refused(live, "two") == "quota_exceeded")
    assert live.proc.pid == pid and live.proc.poll() is None  # same process throughout


def test_a_bad_file_is_not_applied_and_is_reported(live):
    write_policy(live, min_interval=60)
    in_force_within(live, lambda: code_of(live, action="validate", interval="every 30 seconds"))
    good_loaded = live.post("status")["policy"]["loaded_at"]
    live.policy_path.write_text(live.policy_path.read_text() + "limits: {memory_mb: lots}\n")
    started = time.monotonic()
    # logged by the watcher even though no request asks for the policy meanwhile
    wait_until(lambda: "not applied" in live.read_log(), timeout=3, interval=0.05,
               message="the error in the server log")
    assert time.monotonic() - started < 2.5
    status = live.post("status")["policy"]
    assert status["error"] and "limits" in status["error"], status
    assert status["loaded_at"] == good_loaded
    # the last good policy stays in force
    assert code_of(live, action="validate", interval="every 30 seconds") == "interval_too_short"
    write_policy(live, min_interval=1)
    in_force_within(live, lambda: live.post("status")["policy"]["error"] is None)
    assert live.post("validate", interval="every 30 seconds")["status"] == "success"


def test_a_deleted_file_keeps_the_last_good_policy(live):
    live.post("create", task_id="a", type="command", interval="hourly", command="true")
    write_policy(live, max_tasks=1)
    in_force_within(live, lambda: create_refused(live, "b") == "quota_exceeded")
    live.policy_path.unlink()
    in_force_within(live, lambda: live.post("status")["policy"]["error"])
    assert "cannot read" in live.post("status")["policy"]["error"]
    assert create_refused(live, "b") == "quota_exceeded"


def test_forbidden_tasks_stay_stored_and_their_runs_are_rejected(live):
    live.post("create", task_id="greet", type="command", interval="every 1 second",
              command="echo hello")
    assert live.run_now("greet")["status"] == "succeeded"
    write_policy(live, deny='"^echo"')
    in_force_within(live, lambda: create_refused(live, "x", "echo x") == "command_not_allowed")
    manual = live.run_now("greet")
    assert manual["status"] == "rejected" and "deny" in (manual["reason"] or ""), manual
    live.post("start")
    try:
        wait_until(lambda: [r for r in live.post("runs", task_id="greet")["runs"]
                            if r["trigger"] == "schedule"], timeout=10, message="a scheduled run")
    finally:
        live.post("stop")
    scheduled = [r for r in live.post("runs", task_id="greet")["runs"]
                 if r["trigger"] == "schedule"]
    assert all(r["status"] == "rejected" for r in scheduled), scheduled
    assert live.post("get", task_id="greet")["task"]["details"]["command"] == "echo hello"


def test_runs_per_minute_follows_the_live_policy(live):
    live.post("create", task_id="r", type="command", interval="hourly", command="true")
    write_policy(live, runs=1)
    time.sleep(2.2)  # no probe: a probing run would use up the minute's one run
    live.post("run", task_id="r")
    response = live.raw("POST", json={"action": "run", "task_id": "r"})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
