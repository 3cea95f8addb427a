"""``--log-format json``: every line the server and its workers log is one JSON object, and
a line about a run carries its ``run_id`` and ``task_id``."""

from __future__ import annotations

import json

LINE_KEYS = {"time", "level", "logger", "pid", "message"}


def test_every_log_line_is_a_json_object_with_the_run_and_task_ids(make_server):
    server = make_server(extra_args=("--log-format", "json"))
    gone = server.workspace / "gone"
    gone.mkdir()
    server.post("create", task_id="vanishing", type="command", interval="every 1 hour",
                command="true", working_dir=str(gone))
    gone.rmdir()  # the policy re-check at run time refuses the run: a logged warning
    run = server.run_now("vanishing")
    assert run["status"] == "rejected", run
    assert server.stop() == 0

    lines = [json.loads(line) for line in server.read_log().splitlines()]
    assert lines and all(LINE_KEYS <= set(entry) for entry in lines)
    assert {entry["level"] for entry in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert any(entry["pid"] != server.proc.pid for entry in lines)  # a worker's line
    about_run = [e for e in lines if e.get("run_id") == run["run_id"]]
    assert about_run and about_run[0]["task_id"] == "vanishing"
    assert about_run[0]["level"] == "WARNING" and "rejected" in about_run[0]["message"]
    assert lines[-1]["message"] == "stopped"


def test_text_is_the_default(make_server):
    server = make_server()
    server.stop()
    first = server.read_log().splitlines()[0]
    assert not first.startswith("{") and " INFO " in first
