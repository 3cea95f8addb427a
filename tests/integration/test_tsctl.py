"""tsctl against a real server: tables, --json, output, --wait, --follow and exit codes.

Most commands run in-process (``main(argv, out=..., err=...)``, the same code the console
script calls); the exit-code and streaming tests run ``python -m api.tsctl`` as a process,
as a script would.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from api.tsctl.cli import main
from api.tsctl.exitcodes import ExitCode

from ..helpers import ROOT, Server, free_port

TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
ANSI = "\x1b["


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One running server: its tasks are hourly unless a test says otherwise."""
    server = Server(tmp_path_factory.mktemp("tsctl"), autostart=True).start()
    yield server
    server.stop()


def tsctl(server: Server | None, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    url = ["--url", server.url] if server is not None else []
    try:
        code = main([*url, *argv], out=out, err=err)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def tsctl_process(*argv: str, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
    base.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "api.tsctl", *argv], cwd=ROOT,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def columns(table: str) -> tuple[list[str], list[str]]:
    lines = table.rstrip("\n").splitlines()
    return lines[0].split(), lines[2:]


def test_list_is_an_aligned_table_with_local_times(srv):
    for name, command in (("tbl-a", "echo a"), ("tbl-long-name", "echo 'a much longer command'")):
        assert tsctl(srv, "create", name, "--every", "1", "hour", "--command", command)[0] == 0
    code, out, err = tsctl(srv, "list")
    assert code == 0 and err == ""
    lines = out.rstrip("\n").splitlines()
    assert lines[0].split() == ["ID", "TYPE", "SCHEDULE", "NEXT", "RUN", "STATE", "WHAT"]
    rows = [line for line in lines[2:] if line.startswith("tbl-")]
    assert len(rows) == 2
    # Aligned: every column starts where its heading does, whatever the ids' lengths.
    for heading in ("TYPE", "SCHEDULE", "NEXT RUN", "STATE", "WHAT"):
        start = lines[0].index(heading)
        assert all(row[start - 2:start] == "  " and row[start] != " " for row in rows), heading
    assert all(TIME_RE.search(row) for row in rows)
    assert ANSI not in out  # not a terminal: no colour


def test_json_prints_the_raw_response(srv):
    tsctl(srv, "create", "raw", "--interval", "every 1 hour", "--command", "echo raw")
    code, out, _ = tsctl(srv, "list", "--json")
    assert code == 0
    assert json.loads(out) == srv.post("list")
    code, out, _ = tsctl(srv, "--json", "validate", "daily", "at", "2:00")
    body = json.loads(out)
    assert body["status"] == "success" and body["interval"] == "every day at 02:00"
    assert len(body["next_runs"]) == 5


def test_create_infers_the_type_and_passes_the_options(srv):
    code, out, _ = tsctl(srv, "create", "opts", "--every", "2", "hours", "--code", "print(1)",
                         "--timeout", "30", "--env", "LANG=C", "--overlap", "queue",
                         "--max-runs", "3", "--set", "misfire=\"run_once\"")
    assert code == 0 and "Task 'opts' scheduled to run every 2 hours" in out
    details = srv.post("get", task_id="opts")["task"]["details"]
    assert (details["type"], details["custom_script"], details["timeout"]) == ("custom", "print(1)", 30)
    assert (details["env"], details["overlap"], details["max_runs"], details["misfire"]) == \
        ({"LANG": "C"}, "queue", 3, "run_once")
    code, out, _ = tsctl(srv, "update", "opts", "--interval", "daily", "at", "3:00")
    assert code == 0 and srv.post("get", task_id="opts")["task"]["details"]["interval"] == "daily at 3:00"
    code, out, _ = tsctl(srv, "get", "opts")
    assert code == 0 and re.search(r"^interval\s+daily at 3:00$", out, re.M)
    for action, state in (("pause", "paused"), ("resume", "scheduled")):
        assert tsctl(srv, action, "opts")[0] == 0
        assert srv.post("get", task_id="opts")["task"]["details"]["state"] == state
    assert tsctl(srv, "remove", "opts")[0] == 0
    assert "opts" not in {t["id"] for t in srv.post("list")["tasks"]}


def test_calendar_options_and_what_validate_and_status_show(srv):
    code, out, _ = tsctl(srv, "create", "cal", "--interval", "0 2 * * mon-fri", "--command",
                         "true", "--timezone", "America/New_York", "--jitter", "120")
    assert code == 0 and "next run: " in out
    details = srv.post("get", task_id="cal")["task"]["details"]
    assert (details["timezone"], details["jitter"]) == ("America/New_York", 120)
    assert tsctl(srv, "update", "cal", "--jitter", "0")[0] == 0
    assert srv.post("get", task_id="cal")["task"]["details"]["jitter"] is None
    code, out, _ = tsctl(srv, "get", "cal")
    assert code == 0 and re.search(r"^timezone\s+America/New_York$", out, re.M)
    code, out, _ = tsctl(srv, "validate", "0 2 * * mon-fri", "--timezone", "Europe/Berlin")
    assert code == 0 and "(at 02:00 on Monday through Friday)" in out
    assert re.search(r"^time zone: Europe/Berlin$", out, re.M) and len(TIME_RE.findall(out)) == 5
    code, _, err = tsctl(srv, "validate", "hourly", "--jitter", "1801")
    assert code == ExitCode.REFUSED and "half" in err
    code, _, err = tsctl(srv, "validate", "hourly", "--timezone", "Nowhere/Land")
    assert code == ExitCode.REFUSED and "(invalid_timezone)" in err
    code, out, _ = tsctl(srv, "status")
    assert re.search(r"^time zone\s+\S+", out, re.M)
    assert tsctl(srv, "remove", "cal")[0] == 0


def test_run_wait_and_output_print_the_runs_streams(srv):
    tsctl(srv, "create", "streams", "--every", "1", "hour",
          "--command", "printf 'out line\\n'; printf 'err line\\n' >&2")
    code, out, _ = tsctl(srv, "run", "streams", "--wait")
    assert code == ExitCode.OK and "succeeded" in out
    run_id = srv.post("runs", task_id="streams")["runs"][0]["run_id"]
    code, out, err = tsctl(srv, "output", str(run_id))
    assert (code, out, err) == (0, "out line\n", "err line\n")
    code, out, _ = tsctl(srv, "runs", "streams")
    header, rows = columns(out)
    assert header[:4] == ["RUN", "TASK", "TRIGGER", "STATUS"]
    assert rows[0].split()[:4] == [str(run_id), "streams", "manual", "succeeded"]


def test_run_wait_exits_non_zero_when_the_run_fails(srv):
    tsctl(srv, "create", "fails", "--every", "1", "hour", "--command", "exit 7")
    code, out, _ = tsctl(srv, "run", "fails", "--wait", "--json")
    assert code == ExitCode.RUN_NOT_SUCCEEDED
    body = json.loads(out)
    assert body["run"]["status"] == "failed" and body["run"]["exit_code"] == 7


def test_refusals_print_the_servers_message_and_exit_1(srv):
    code, out, err = tsctl(srv, "get", "no-such-task")
    assert code == ExitCode.REFUSED and out == ""
    assert "No task with task_id 'no-such-task'" in err and "(task_not_found)" in err
    code, _, err = tsctl(srv, "create", "bad", "--every", "0", "minutes", "--command", "true")
    assert code == ExitCode.REFUSED and "invalid_interval" in err and "every 5 minutes" in err
    assert tsctl(srv, "output", "999999")[0] == ExitCode.REFUSED


def test_usage_errors_exit_2(srv):
    assert tsctl(srv)[0] == ExitCode.USAGE
    code, _, err = tsctl(srv, "create", "x", "--every", "1", "hour")
    assert code == ExitCode.USAGE and "--command" in err
    assert tsctl(srv, "update", "x")[0] == ExitCode.USAGE
    assert tsctl(srv, "runs", "--count", "2")[0] == ExitCode.USAGE
    assert tsctl(None, "--url", "localhost:1", "list")[0] == ExitCode.USAGE
    assert "x" not in {t["id"] for t in srv.post("list")["tasks"]}


def test_unreachable_server_exits_3_with_a_hint():
    result = tsctl_process("status", env={"TASK_SCHEDULER_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == ExitCode.UNREACHABLE
    assert "cannot reach the Task Scheduler Server" in result.stderr
    assert "task-scheduler" in result.stderr and "TASK_SCHEDULER_URL" in result.stderr


def test_the_token_comes_from_the_option_or_the_environment(make_server):
    server = make_server(extra_args=("--token", "s3cret"))
    result = tsctl_process("list", env={"TASK_SCHEDULER_URL": server.url})
    assert result.returncode == ExitCode.REFUSED and "TASK_SCHEDULER_TOKEN" in result.stderr
    result = tsctl_process("list", env={"TASK_SCHEDULER_URL": server.url,
                                        "TASK_SCHEDULER_TOKEN": "s3cret"})
    assert result.returncode == 0 and "No tasks" in result.stdout
    assert tsctl(server, "--token", "s3cret", "status")[0] == 0


def test_follow_streams_each_new_run_once(srv):
    tsctl(srv, "create", "ticker", "--every", "1", "second", "--command", "echo tick")
    result = tsctl_process("--url", srv.url, "runs", "ticker", "--follow", "--limit", "1",
                           "--count", "3", "--poll", "0.2", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    ids = [int(re.search(r"run (\d+)", line)[1]) for line in lines]
    assert ids == sorted(set(ids))
    assert all("ticker" in line and "succeeded" in line for line in lines)
    result = tsctl_process("--url", srv.url, "--json", "runs", "ticker", "-f", "--limit", "1",
                           "--count", "2", "--poll", "0.2", timeout=60)
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(runs) == 2 and runs[0]["run_id"] < runs[1]["run_id"]
    srv.post("remove", task_id="ticker")


def test_status_start_stop(srv):
    code, out, _ = tsctl(srv, "status")
    assert code == 0 and re.search(r"^scheduler\s+running$", out, re.M)
    assert re.search(r"^workers\s+\d+ alive of 2$", out, re.M)
    assert tsctl(srv, "stop")[1].strip() == "Scheduler stopped"
    assert tsctl(srv, "stop")[1].strip() == "Scheduler is not running"
    assert tsctl(srv, "start")[0] == 0 and srv.post("status")["running"] is True


def test_the_client_imports_nothing_of_the_server():
    code = ("import sys, api.tsctl.cli; "
            "print(sorted({n.split('.')[0] for n in sys.modules} & "
            "{'scheduler', 'sandbox', 'policies', 'flask', 'psutil'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
