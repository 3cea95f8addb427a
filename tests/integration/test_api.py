"""POST /schedule over real HTTP: every action's success shape, with real runs, and the
refusals that need a real server (a chunked body, quotas over real runs). The other
refusals (envelope, fields, policy checks at create) run in-process:
tests/inprocess/test_requests.py.

Shapes follow README and docs/ARCHITECTURE.md (responses may carry more keys, never fewer). Every
refused request is checked to leave the stored state alone (``list`` before == after).
Most tests share one module-scoped server that is never started, so its hourly tasks never
fire and ``list`` is stable; tests that start the scheduler get a server of their own.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

import psutil
import pytest

from ..envelope import DROP, check_error, command_task, reject, reject_raw, state, task_in_list
from ..helpers import Server, wait_until

TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DETAIL_KEYS = {"type", "interval", "command", "file_path", "custom_script", "next_run", "created_at"}
RUN_KEYS = {"run_id", "task_id", "trigger", "status", "reason", "exit_code", "scheduled_for",
            "started_at", "finished_at", "duration_ms", "lateness_ms", "truncated", "tests"}
FINAL = {"succeeded", "failed", "timed_out", "killed", "rejected", "skipped", "interrupted", "error"}


# --------------------------------------------------------------------------- helpers

def _leftovers(pids: set[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def _stop_checked(server: Server) -> None:
    family = {p.pid for p in server.descendants()}
    server.stop()
    wait_until(lambda: not _leftovers(family), timeout=5, message="no stray processes")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A shared, never-started server with one baseline task (so `list` is not trivially [])."""
    server = Server(tmp_path_factory.mktemp("api")).start()
    server.post("create", task_id="baseline", type="command", interval="every 1 hour",
                command="echo baseline")
    yield server
    _stop_checked(server)


def parse_time(text: str) -> datetime:
    assert isinstance(text, str) and TIME_RE.fullmatch(text), text
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def now_floor() -> datetime:
    return datetime.now().replace(microsecond=0)


# ----------------------------------------------------------------------- original actions

def test_create_response_and_list_shape(srv):
    before = now_floor()
    body = srv.post("create", task_id="backup_task", type="command", interval="every 1 hour",
                    command="python backup.py")
    assert body["status"] == "success"
    assert body["message"] == "Task 'backup_task' scheduled to run every 1 hour"
    assert body["task_id"] == "backup_task"
    next_run = parse_time(body["next_run"])
    assert before + timedelta(hours=1) - timedelta(seconds=2) <= next_run \
        <= now_floor() + timedelta(hours=1, seconds=2)

    listing = srv.post("list")
    assert listing["status"] == "success"
    assert listing["count"] == len(listing["tasks"])
    ids = [t["id"] for t in listing["tasks"]]
    assert "backup_task" in ids and "baseline" in ids
    task = task_in_list(srv, "backup_task")
    assert set(task) >= {"id", "details"}
    details = task["details"]
    assert DETAIL_KEYS <= set(details), details
    assert details["type"] == "command"
    assert details["interval"] == "every 1 hour"
    assert details["command"] == "python backup.py"
    assert details["file_path"] is None and details["custom_script"] is None
    assert details["next_run"] == body["next_run"]
    created = parse_time(details["created_at"])
    assert before - timedelta(seconds=1) <= created <= now_floor()


def test_create_keeps_the_interval_as_written_and_every_option(srv):
    (srv.workspace / "opts").mkdir()
    written = "  Every   2 HOURS "
    body = srv.post("create", task_id="opts", type="command", interval=written,
                    command="echo $X", working_dir="opts", env={"X": "1"}, timeout=30,
                    overlap="queue", misfire="run_once", until="2099-01-31 23:59:00", max_runs=7)
    assert body["message"] == f"Task 'opts' scheduled to run {written}"
    details = task_in_list(srv, "opts")["details"]
    assert details["interval"] == written
    assert (details["working_dir"], details["env"], details["timeout"]) == ("opts", {"X": "1"}, 30)
    assert (details["overlap"], details["misfire"], details["max_runs"]) == ("queue", "run_once", 7)
    assert details["until"] == "2099-01-31 23:59:00"


@pytest.mark.parametrize("task_type, extra", [
    ("test", {}),
    ("test", {"file_path": "."}),
    ("custom", {"custom_script": "print(1)"}),
])
def test_create_other_types_shows_their_parameter(srv, task_type, extra):
    task_id = f"type-{task_type}-{len(extra)}"
    body = srv.post("create", task_id=task_id, type=task_type, interval="daily at 2:00", **extra)
    assert body["message"] == f"Task '{task_id}' scheduled to run daily at 2:00"
    assert parse_time(body["next_run"]).strftime("%H:%M:%S") == "02:00:00"
    details = task_in_list(srv, task_id)["details"]
    assert details["type"] == task_type
    assert details["command"] is None
    assert details["file_path"] == extra.get("file_path")
    assert details["custom_script"] == extra.get("custom_script")


def test_remove(srv):
    srv.post("create", **{k: v for k, v in command_task("gone").items() if k != "action"})
    count = srv.post("list")["count"]
    body = srv.post("remove", task_id="gone")
    assert (body["status"], body["message"]) == ("success", "Task 'gone' removed")
    assert task_in_list(srv, "gone") is None
    assert srv.post("list")["count"] == count - 1
    reject(srv, 404, "task_not_found", "task_id", {"action": "get", "task_id": "gone"})
    reject(srv, 404, "task_not_found", "task_id", {"action": "remove", "task_id": "gone"})


def test_start_and_stop_answer_success_then_info(server):
    assert server.post("status")["running"] is False, "a fresh data dir starts stopped"
    first_stop = server.post("stop")
    assert first_stop["status"] == "info" and first_stop["message"]
    start = server.post("start")
    assert (start["status"], start["message"]) == ("success", "Scheduler started")
    again = server.post("start")
    assert again["status"] == "info" and isinstance(again["message"], str) and again["message"]
    assert server.post("status")["running"] is True
    stop = server.post("stop")
    assert stop["status"] == "success" and stop["message"] == "Scheduler stopped"
    again = server.post("stop")
    assert again["status"] == "info" and again["message"]
    assert server.post("status")["running"] is False


# --------------------------------------------------------------------------- extension actions

def test_get_returns_task_and_runs_at_top_level(srv):
    srv.post("create", task_id="getme", type="custom", interval="hourly", custom_script="print('g')")
    empty = srv.post("get", task_id="getme")
    assert empty["status"] == "success" and empty["runs"] == []
    assert empty["task"] == task_in_list(srv, "getme")
    first = srv.run_now("getme")
    second = srv.run_now("getme")
    body = srv.post("get", task_id="getme")
    assert {"task", "runs"} <= set(body)
    assert body["task"]["id"] == "getme" and DETAIL_KEYS <= set(body["task"]["details"])
    assert [r["run_id"] for r in body["runs"]] == [second["run_id"], first["run_id"]]
    assert all(RUN_KEYS <= set(r) and r["task_id"] == "getme" for r in body["runs"])
    assert [r["run_id"] for r in srv.post("get", task_id="getme", limit=1)["runs"]] == [second["run_id"]]


def test_update_is_like_create_and_changes_the_task(srv):
    srv.post("create", task_id="upd", type="command", interval="every 1 hour", command="echo one")
    before = now_floor()
    body = srv.post("update", task_id="upd", interval="every 2 hours", command="echo two")
    assert body["status"] == "success" and body["task_id"] == "upd"
    assert "'upd'" in body["message"] and body["message"].endswith("every 2 hours")
    next_run = parse_time(body["next_run"])
    assert before + timedelta(hours=2, seconds=-2) <= next_run <= now_floor() + timedelta(hours=2, seconds=2)
    details = task_in_list(srv, "upd")["details"]
    assert (details["interval"], details["command"], details["next_run"]) == \
        ("every 2 hours", "echo two", body["next_run"])
    assert srv.run_now("upd")["stdout"] == "two\n"

    srv.post("update", task_id="upd", type="custom", custom_script="print('three')")
    details = task_in_list(srv, "upd")["details"]
    assert (details["type"], details["command"], details["custom_script"]) == \
        ("custom", None, "print('three')")
    assert details["interval"] == "every 2 hours"
    assert srv.run_now("upd")["stdout"] == "three\n"


def test_pause_and_resume_while_stopped(srv):
    created = srv.post("create", task_id="pz", type="command", interval="every 1 hour", command="true")
    paused = srv.post("pause", task_id="pz")
    assert paused["status"] == "success" and "'pz'" in paused["message"]
    assert paused["next_run"] is None
    details = task_in_list(srv, "pz")["details"]
    assert details["next_run"] is None and details["paused"] is True
    again = srv.post("pause", task_id="pz")  # idempotent
    assert again["status"] in ("success", "info") and again["next_run"] is None
    resumed = srv.post("resume", task_id="pz")
    assert resumed["status"] == "success" and "'pz'" in resumed["message"]
    assert parse_time(resumed["next_run"]) >= now_floor()
    # it keeps its place: the same slot as before the pause (anchored at creation)
    assert resumed["next_run"] == created["next_run"]
    assert task_in_list(srv, "pz")["details"]["next_run"] == created["next_run"]


def test_paused_task_does_not_fire_and_resumed_one_does(server):
    for task_id in ("control", "paused", "capped"):
        server.post("create", task_id=task_id, type="command", interval="every 1 second",
                    command=f"echo {task_id}", max_runs=2 if task_id == "capped" else None)
    assert server.post("pause", task_id="paused")["next_run"] is None
    server.post("start")

    def scheduled(task_id):
        return [r for r in server.post("runs", task_id=task_id, limit=1000)["runs"]
                if r["trigger"] == "schedule"]

    wait_until(lambda: len(scheduled("control")) >= 4, timeout=10, message="4 control runs")
    assert scheduled("paused") == [], "a paused task fired"
    assert task_in_list(server, "paused")["details"]["next_run"] is None
    capped = scheduled("capped")
    assert len(capped) == 2, "max_runs=2 must stop the task after 2 scheduled runs"
    assert task_in_list(server, "capped")["details"]["next_run"] is None

    resumed = server.post("resume", task_id="paused")
    assert parse_time(resumed["next_run"]) >= now_floor()
    wait_until(lambda: scheduled("paused"), timeout=5, message="the resumed task to fire")


def test_run_works_while_the_scheduler_is_stopped(srv):
    assert srv.post("status")["running"] is False
    srv.post("create", task_id="manual", type="command", interval="weekly", command="echo manual")
    body = srv.post("run", task_id="manual")
    assert body["status"] == "success" and isinstance(body["run_id"], int)
    run = srv.wait_run(body["run_id"])
    assert (run["status"], run["trigger"], run["task_id"], run["stdout"]) == \
        ("succeeded", "manual", "manual", "manual\n")


def test_runs_newest_first_with_count_limit_and_task_filter(srv):
    srv.post("create", task_id="r1", type="command", interval="hourly", command="echo r1")
    srv.post("create", task_id="r2", type="command", interval="hourly", command="echo r2")
    ids = [srv.post("run", task_id=t)["run_id"] for t in ("r1", "r2", "r1", "r2", "r1")]
    for run_id in ids:
        srv.wait_run(run_id)
    everything = srv.post("runs")
    assert everything["status"] == "success"
    assert everything["count"] == len(everything["runs"]) <= 20
    listed = [r["run_id"] for r in everything["runs"]]
    assert listed == sorted(listed, reverse=True)
    assert listed[:5] == ids[::-1]
    for run in everything["runs"]:
        assert RUN_KEYS <= set(run), run
        assert run["status"] in FINAL

    two = srv.post("runs", limit=2)
    assert two["count"] == 2 and [r["run_id"] for r in two["runs"]] == ids[::-1][:2]

    r1 = srv.post("runs", task_id="r1")
    assert [r["run_id"] for r in r1["runs"]] == [ids[4], ids[2], ids[0]] and r1["count"] == 3
    assert all(r["task_id"] == "r1" and r["status"] == "succeeded" for r in r1["runs"])


def test_runs_default_limit_is_20_and_goes_up_to_1000(srv):
    srv.post("create", task_id="many", type="command", interval="hourly", command="true")
    ids = [srv.post("run", task_id="many")["run_id"] for _ in range(22)]
    for run_id in ids:
        srv.wait_run(run_id)
    assert srv.post("runs", task_id="many")["count"] == 20
    assert srv.post("runs", task_id="many", limit=1000)["count"] == 22
    assert srv.post("get", task_id="many")["runs"][0]["run_id"] == ids[-1]


def test_runs_records_keep_stdout_and_stderr_keys(srv):
    srv.post("create", task_id="tails", type="command", interval="hourly", command="echo out; echo err >&2")
    srv.run_now("tails")
    run = srv.post("runs", task_id="tails")["runs"][0]
    assert run["stdout"].endswith("out\n") and run["stderr"].endswith("err\n")


def test_output_nests_the_run_with_all_its_output(srv):
    srv.post("create", task_id="outp", type="custom", interval="hourly",
             custom_script="import sys\nprint('to out')\nprint('to err', file=sys.stderr)")
    run_id = srv.post("run", task_id="outp")["run_id"]
    srv.wait_run(run_id)
    body = srv.post("output", run_id=run_id)
    assert body["status"] == "success"
    run = body["run"]
    assert RUN_KEYS | {"stdout", "stderr"} <= set(run)
    assert (run["run_id"], run["task_id"], run["status"]) == (run_id, "outp", "succeeded")
    assert (run["stdout"], run["stderr"], run["exit_code"], run["truncated"]) == \
        ("to out\n", "to err\n", 0, False)
    assert run["reason"] is None and run["tests"] is None
    for key in ("scheduled_for", "started_at", "finished_at"):
        parse_time(run[key])
    assert run["duration_ms"] >= 0 and run["lateness_ms"] >= 0


def test_status_shape(srv):
    body = srv.post("status")
    assert body["status"] == "success"
    assert body["running"] is False
    assert body["tasks"] == srv.post("list")["count"]
    assert body["workers"]["configured"] == 2
    wait_until(lambda: srv.post("status")["workers"]["alive"] == 2, timeout=10,
               message="both workers alive")
    assert isinstance(body["isolation"], list) and all(isinstance(x, str) for x in body["isolation"])
    policy = body["policy"]
    assert set(policy) >= {"path", "loaded_at", "error"}
    assert os.path.realpath(policy["path"]) == os.path.realpath(srv.policy_path)
    assert parse_time(policy["loaded_at"]) <= now_floor()
    assert policy["error"] is None


def test_status_names_the_isolation_layers_in_force(srv):
    status = wait_until(lambda: (s := srv.post("status"))["isolation"] and s,
                        message="a worker to report its isolation")
    assert "process-group" in status["isolation"] and "subreaper-kill" in status["isolation"]
    assert status["isolation_level"] in ("process", "resources", "filesystem", "full")


def test_validate_shows_canonical_form_and_creates_nothing(srv):
    before = state(srv)
    tasks_before = srv.post("status")["tasks"]
    body = srv.post("validate", interval="Every 1 Hour")
    assert body["status"] == "success"
    assert body["interval"] == "every hour"
    times = [parse_time(t) for t in body["next_runs"]]
    assert len(times) == 5
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:]))
    assert now_floor() <= times[0] + timedelta(seconds=1)
    assert state(srv) == before
    assert srv.post("status")["tasks"] == tasks_before


def test_health(srv):
    response = srv.raw("GET", "/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


# --------------------------------------------------------------------------- HTTP-level errors

def _big_create(size: int) -> bytes:
    return (b'{"action": "create", "task_id": "big", "type": "command", "interval": "hourly", '
            b'"command": "' + b"x" * size + b'"}')


def test_body_over_512_kb_is_413(srv):
    body = _big_create(513 * 1024)
    reject_raw(srv, 413, None, method="POST", path="/schedule", data=body,
               headers={"Content-Type": "application/json"})
    # without a Content-Length (chunked), too
    reject_raw(srv, 413, None, method="POST", path="/schedule",
               data=(body[i:i + 65536] for i in range(0, len(body), 65536)),
               headers={"Content-Type": "application/json"})
    # the size check comes before the content-type check (docs/ARCHITECTURE.md)
    reject_raw(srv, 413, None, method="POST", path="/schedule", data=body,
               headers={"Content-Type": "text/plain"})
    assert task_in_list(srv, "big") is None


# --------------------------------------------------------------------------- quotas

def test_quota_and_manual_run_rate_limit(make_server):
    server = make_server(max_tasks=2, runs_per_minute=2)
    server.post("create", task_id="q1", type="command", interval="hourly", command="true")
    server.post("create", task_id="q2", type="command", interval="hourly", command="true")
    error = reject(server, 400, "quota_exceeded", DROP, command_task("q3"))
    assert "2" in error["message"]
    server.run_now("q1")
    server.run_now("q2")
    before = state(server)
    response = server.raw("POST", json={"action": "run", "task_id": "q1"})
    check_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert state(server) == before
