"""Each task type really runs (docs/ARCHITECTURE.md): command, test, script and custom tasks, their
working directory and environment, signals, the timeout, the output cap, and scheduled runs.

Runs are started with `run` and awaited through `output` until their record is final.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime

import psutil
import pytest

from ..helpers import Server, wait_until

TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")

MIXED_TESTS = '''\
import pytest

def test_adds():
    assert 1 + 1 == 2

def test_upper():
    assert "a".upper() == "A"

def test_fails():
    assert 2 + 2 == 5, "deliberate failure"

@pytest.mark.skip(reason="deliberately skipped")
def test_skipped():
    pass
'''

GREEN_TESTS = '''\
def test_one():
    assert True

def test_two():
    assert [1, 2] == [1, 2]

def test_three():
    assert "x" in "xyz"
'''

SHOW_CWD = '''\
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv}))
'''


def _leftovers(pids: set[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A shared, never-started server whose workspace holds test files and scripts."""
    server = Server(tmp_path_factory.mktemp("types")).start()
    ws = server.workspace
    for name, files in {"mixed": {"test_mixed.py": MIXED_TESTS},
                        "green": {"test_green.py": GREEN_TESTS},
                        "sub": {"show_cwd.py": SHOW_CWD}}.items():
        (ws / name).mkdir()
        for file_name, text in files.items():
            (ws / name / file_name).write_text(text)
    (ws / "show_cwd.py").write_text(SHOW_CWD)
    yield server
    family = {p.pid for p in server.descendants()}
    server.stop()
    wait_until(lambda: not _leftovers(family), timeout=5, message="no stray processes")


def run_task(server: Server, task_id: str, timeout: float = 30.0, **fields) -> dict:
    """Create a task (hourly: it never fires by itself here), run it now, return the record."""
    fields.setdefault("interval", "every 1 hour")
    server.post("create", task_id=task_id, **fields)
    return server.run_now(task_id, timeout=timeout)


def check_final(run: dict, status: str) -> None:
    assert run["status"] == status, run
    assert run["trigger"] == "manual"
    for key in ("scheduled_for", "started_at", "finished_at"):
        assert TIME_RE.fullmatch(run[key]), run
    assert run["duration_ms"] >= 0


# --------------------------------------------------------------------------- command

def test_command_succeeds_with_its_output(srv):
    run = run_task(srv, "echo", type="command", command="echo hello")
    check_final(run, "succeeded")
    assert (run["stdout"], run["stderr"], run["exit_code"], run["reason"]) == ("hello\n", "", 0, None)
    assert run["truncated"] is False and run["tests"] is None


def test_command_failure_names_the_exit_code(srv):
    run = run_task(srv, "exit3", type="command", command="echo partial; echo oops >&2; exit 3")
    check_final(run, "failed")
    assert run["exit_code"] == 3
    assert re.search(r"\b3\b", run["reason"]), run["reason"]
    assert (run["stdout"], run["stderr"]) == ("partial\n", "oops\n")


def test_command_ended_by_a_signal_has_negative_exit_code(srv):
    run = run_task(srv, "sigterm", type="command", command="kill -TERM $$")
    check_final(run, "failed")
    assert run["exit_code"] == -15
    assert "SIGTERM" in run["reason"], run["reason"]


def test_command_runs_through_the_shell(srv):
    run = run_task(srv, "shell", type="command", command="for i in 1 2 3; do printf $i; done | wc -c")
    check_final(run, "succeeded")
    assert run["stdout"].strip() == "3"


# --------------------------------------------------------------------------- test

def test_test_task_reports_pytest_counts(srv):
    run = run_task(srv, "pytest-mixed", type="test", file_path="mixed/test_mixed.py")
    check_final(run, "failed")
    assert run["tests"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert run["exit_code"] == 1
    assert "test_fails" in run["stdout"] and "deliberate failure" in run["stdout"]


def test_test_task_all_passing_succeeds(srv):
    run = run_task(srv, "pytest-green", type="test", file_path="green/test_green.py")
    check_final(run, "succeeded")
    assert run["tests"] == {"passed": 3, "failed": 0, "errors": 0, "skipped": 0}
    assert run["exit_code"] == 0


def test_test_task_without_file_path_tests_its_working_directory(srv):
    run = run_task(srv, "pytest-dir", type="test", working_dir="green")
    check_final(run, "succeeded")
    assert run["tests"] == {"passed": 3, "failed": 0, "errors": 0, "skipped": 0}
    run = run_task(srv, "pytest-dir-mixed", type="test", working_dir="mixed")
    assert run["tests"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}


def test_test_task_directory_file_path(srv):
    run = run_task(srv, "pytest-path-dir", type="test", file_path="green")
    check_final(run, "succeeded")
    assert run["tests"]["passed"] == 3


# --------------------------------------------------------------------------- script

def test_script_runs_in_the_workspace(srv):
    run = run_task(srv, "script", type="script", file_path="show_cwd.py")
    check_final(run, "succeeded")
    shown = json.loads(run["stdout"])
    assert shown["cwd"] == os.path.realpath(srv.workspace)
    assert os.path.realpath(shown["argv"][0]) == os.path.realpath(srv.workspace / "show_cwd.py")
    assert shown["argv"][1:] == []


def test_script_path_is_relative_to_the_working_dir(srv):
    run = run_task(srv, "script-sub", type="script", file_path="show_cwd.py", working_dir="sub")
    check_final(run, "succeeded")
    shown = json.loads(run["stdout"])
    assert shown["cwd"] == os.path.realpath(srv.workspace / "sub")
    assert os.path.realpath(shown["argv"][0]) == os.path.realpath(srv.workspace / "sub" / "show_cwd.py")


def test_script_removed_after_create_is_rejected_at_run_time(srv):
    (srv.workspace / "ephemeral.py").write_text("print('here')\n")
    srv.post("create", task_id="ephemeral", type="script", interval="hourly", file_path="ephemeral.py")
    (srv.workspace / "ephemeral.py").unlink()
    run = srv.run_now("ephemeral")
    assert run["status"] == "rejected", run
    assert run["reason"] and "file_path" in run["reason"]
    assert run["started_at"] is None and run["stdout"] == ""


# --------------------------------------------------------------------------- custom

def test_custom_code_runs(srv):
    run = run_task(srv, "custom", type="custom",
                   custom_script="import sys\nprint('inline', sum(range(5)))\nprint(sys.version_info[0])")
    check_final(run, "succeeded")
    assert run["stdout"] == "inline 10\n3\n"


def test_custom_code_raising_fails_with_the_traceback(srv):
    run = run_task(srv, "custom-raise", type="custom",
                   custom_script="def f():\n    raise ValueError('boom')\nf()")
    check_final(run, "failed")
    assert run["exit_code"] == 1
    assert "Traceback (most recent call last)" in run["stderr"]
    assert "ValueError: boom" in run["stderr"]


# --------------------------------------------------------------------------- working_dir and env

@pytest.mark.parametrize("task_type, fields", [
    ("command", {"command": "pwd -P"}),
    ("custom", {"custom_script": "import os; print(os.getcwd())"}),
])
def test_working_dir_is_the_runs_cwd(srv, task_type, fields):
    run = run_task(srv, f"wd-{task_type}", type=task_type, working_dir="sub", **fields)
    check_final(run, "succeeded")
    assert run["stdout"].strip() == os.path.realpath(srv.workspace / "sub")


def test_default_cwd_is_the_first_allowed_directory(srv):
    run = run_task(srv, "wd-default", type="command", command="pwd -P")
    assert run["stdout"].strip() == os.path.realpath(srv.workspace)


def test_task_env_is_visible_to_the_run(srv):
    run = run_task(srv, "env-task", type="command", command='printf "%s|%s" "$GREETING" "$OTHER"',
                   env={"GREETING": "hello from env", "OTHER": "x=y z"})
    check_final(run, "succeeded")
    assert run["stdout"] == "hello from env|x=y z"


def test_server_environment_does_not_leak_into_runs(monkeypatch, make_server):
    monkeypatch.setenv("CANARY_SECRET", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-key")
    server = make_server()
    run = run_task(server, "env", type="command", command="env")
    check_final(run, "succeeded")
    assert "PATH=" in run["stdout"], "the run's environment was not captured"
    for leaked in ("CANARY_SECRET", "s3cret", "AWS_SECRET_ACCESS_KEY", "canary-aws-key"):
        assert leaked not in run["stdout"], f"{leaked} leaked into the run"
    run = run_task(server, "env-py", type="custom",
                   custom_script="import os; print(os.environ.get('CANARY_SECRET'))")
    assert run["stdout"] == "None\n"


# --------------------------------------------------------------------------- limits

def _sleepers(server: Server) -> list[psutil.Process]:
    found = []
    for proc in server.descendants():
        try:
            if proc.name() == "sleep" and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_timeout_stops_the_run(srv):
    srv.post("create", task_id="sleepy", type="command", interval="hourly", command="sleep 30",
             timeout=1)
    started = time.monotonic()
    run = srv.run_now("sleepy", timeout=15)
    elapsed = time.monotonic() - started
    assert run["status"] == "timed_out", run
    assert "timeout" in run["reason"].lower(), run["reason"]
    assert elapsed < 8, f"a 1 s timeout took {elapsed:.1f} s"
    assert 900 <= run["duration_ms"] < 5000, run["duration_ms"]
    wait_until(lambda: not _sleepers(srv), timeout=5, message="the timed-out sleep to be gone")


def test_output_cap_kills_the_run_and_keeps_head_and_tail(make_server):
    server = make_server(max_output_kb=64)
    server.post("create", task_id="loud", type="command", interval="hourly",
                command="seq -f 'line-%07g-end' 1 70000")  # 17 bytes a line: about 1.2 MB
    started = time.monotonic()
    run = server.run_now("loud")
    assert time.monotonic() - started < 10
    assert run["status"] == "killed", run["status"]
    assert run["reason"].startswith("output"), run["reason"]
    assert run["truncated"] is True
    stdout = run["stdout"]
    assert 32 * 1024 <= len(stdout.encode()) <= 64 * 1024 + 256, len(stdout)
    assert stdout.startswith("line-0000001-end\nline-0000002-end\n")
    numbers = [int(n) for n in re.findall(r"^line-(\d{7})-end$", stdout, re.M)]
    breaks = [i for i in range(len(numbers) - 1) if numbers[i + 1] != numbers[i] + 1]
    assert len(breaks) == 1, "expected one contiguous head and one contiguous tail"
    head, tail = numbers[:breaks[0] + 1], numbers[breaks[0] + 1:]
    assert head == list(range(1, len(head) + 1))
    assert tail and tail[0] > head[-1] + 1 and tail == list(range(tail[0], tail[0] + len(tail)))
    assert len(head) * 17 >= 16 * 1024 and len(tail) * 17 >= 16 * 1024, (len(head), len(tail))


# --------------------------------------------------------------------------- schedule

def test_every_second_task_fires_on_schedule(server):
    server.post("create", task_id="warm", type="command", interval="hourly", command="true")
    server.run_now("warm")  # the pool is warm, so lateness measures the dispatcher, not start-up
    created = server.post("create", task_id="tick", type="command", interval="every 1 second",
                          command="echo tick")
    assert server.post("start")["status"] == "success"

    def finished_runs():
        runs = server.post("runs", task_id="tick", limit=100)["runs"]
        final = all(r["status"] not in ("queued", "running") for r in runs)
        return runs if len(runs) >= 3 and final else None

    runs = wait_until(finished_runs, timeout=10, message="3 scheduled runs")
    server.post("stop")
    assert all(r["trigger"] == "schedule" for r in runs), runs
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in runs), runs
    for run in runs:
        assert 0 <= run["lateness_ms"] < 500, run
    slots = sorted(datetime.strptime(r["scheduled_for"], "%Y-%m-%d %H:%M:%S") for r in runs)
    assert len(set(slots)) == len(slots), "a slot ran twice"
    assert all((b - a).total_seconds() == 1 for a, b in zip(slots, slots[1:])), slots
    assert slots[0] >= datetime.strptime(created["next_run"], "%Y-%m-%d %H:%M:%S")
    run = server.post("output", run_id=runs[0]["run_id"])["run"]
    assert run["stdout"] == "tick\n"
