"""tsctl's parts without a server: following runs with and without the server's cursor,
colour rules, time and duration forms; the JSON log formatter; the console scripts."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import tomllib
from datetime import datetime

import pytest

from api.logformat import JsonFormatter
from api.tsctl import commands, render
from api.tsctl.client import ServerRefused

from ..helpers import ROOT


class FakeServer:
    """Answers ``runs`` (newest first, or after a cursor oldest first) and ``output`` from
    a script of states: each poll, the next state of the run table is in force."""

    def __init__(self, states: list[dict[int, str]], *, cursor: bool):
        self.states, self.cursor, self.polls = states, cursor, 0
        self.requests: list[dict] = []

    def table(self) -> dict[int, str]:
        return self.states[min(self.polls, len(self.states) - 1)]

    def post(self, action: str, **fields):
        self.requests.append({"action": action, **fields})
        if action == "output":
            return {"run": record(fields["run_id"], self.table()[fields["run_id"]])}
        assert action == "runs"
        if "after_run_id" in fields and not self.cursor:
            raise ServerRefused(400, {"message": "'after_run_id' is not an option",
                                      "code": "unknown_field", "field": "after_run_id"})
        table = self.table()
        self.polls += 1
        if "after_run_id" in fields:
            return {"runs": [record(i, table[i]) for i in sorted(table)
                             if i > fields["after_run_id"]]}
        newest = sorted(table, reverse=True)[:fields.get("limit", 20)]
        return {"runs": [record(i, table[i]) for i in newest]}


def record(run_id: int, status: str) -> dict:
    return {"run_id": run_id, "task_id": "t", "trigger": "schedule", "status": status,
            "exit_code": 0 if status == "succeeded" else None, "started_at": None,
            "scheduled_for": "2030-01-01 00:00:00", "duration_ms": 5, "reason": None}


STATES = [
    {1: "succeeded", 2: "running"},
    {1: "succeeded", 2: "running", 3: "succeeded"},
    {1: "succeeded", 2: "failed", 3: "succeeded", 4: "queued"},
    {1: "succeeded", 2: "failed", 3: "succeeded", 4: "succeeded", 5: "succeeded"},
]


@pytest.mark.parametrize("cursor", [True, False], ids=["cursor", "newest-runs"])
def test_follow_prints_each_run_once_when_it_has_finished(cursor):
    server = FakeServer(STATES, cursor=cursor)
    out = io.StringIO()
    ctx = commands.Context(client=server, out=out, err=io.StringIO(), style=render.Style(),
                           as_json=True)
    args = argparse.Namespace(task_id=None, limit=2, count=5, poll=0)
    assert commands._follow(ctx, args) == 0
    printed = [(r["run_id"], r["status"]) for r in map(json.loads, out.getvalue().splitlines())]
    assert printed == [(1, "succeeded"), (3, "succeeded"), (2, "failed"), (4, "succeeded"),
                       (5, "succeeded")]
    used_cursor = any("after_run_id" in r for r in server.requests if r["action"] == "runs")
    assert used_cursor
    if not cursor:  # refused once, then never asked again
        assert sum("after_run_id" in r for r in server.requests) == 1


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert render.wants_colour(Tty()) and not render.wants_colour(io.StringIO())
    assert not render.wants_colour(Tty(), disabled=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.wants_colour(Tty())
    monkeypatch.setenv("NO_COLOR", "")  # the convention: only a non-empty value counts
    assert render.wants_colour(Tty())
    assert render.Style(True).paint("failed") == "\x1b[31mfailed\x1b[0m"
    assert render.Style(False).paint("failed") == "failed"


def test_coloured_tables_stay_aligned():
    runs = [record(1, "succeeded"), record(22, "failed")]
    plain = render.runs_table(runs, render.Style(False))
    coloured = render.runs_table(runs, render.Style(True))
    assert "\x1b[" in coloured
    assert [len(line) for line in plain.splitlines()] == \
        [len(line.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", ""))
         for line in coloured.splitlines()]


def test_times_and_durations():
    assert render.local_time("2030-01-01 00:00:00") == "2030-01-01 00:00:00"
    assert render.local_time(None) == "-"
    iso = "2030-01-01T12:00:00+00:00"
    expected = datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert render.local_time("ignored", iso) == expected
    assert [render.duration(ms) for ms in (None, 12.4, 1500, 125_000, 7_380_000)] == \
        ["-", "12 ms", "1.5 s", "2 min 5 s", "2 h 3 min"]
    assert render.shorten("line one\nline two") == "line one …"
    assert len(render.shorten("x" * 200)) == render.WHAT_WIDTH


def test_json_log_lines_carry_the_ids_and_stay_on_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.logformat")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("run %d of task %r\nsecond line", 7, "t", extra={"run_id": 7, "task_id": "t"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["message"] == "run 7 of task 't'\nsecond line"
    assert (first["run_id"], first["task_id"], first["level"]) == (7, "t", "WARNING")
    assert first["logger"] == "test.logformat" and first["time"][10] == "T"
    assert "run_id" not in second and "ValueError: boom" in second["exception"]


def test_console_scripts_name_functions_that_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert set(scripts) == {"task-scheduler", "tsctl"}
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name))
    # Every package directory is listed, or `pip install .` would leave it out.
    packages = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("api", "scheduler", "sandbox", "policies")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= packages, found - packages


class FakeRunServer:
    """``run`` with or without ``wait_seconds``; ``output`` finishes the run on its 2nd call."""

    def __init__(self, *, waits: bool, status: str):
        self.waits, self.status, self.outputs = waits, status, 0
        self.requests: list[dict] = []

    def post(self, action: str, **fields):
        return self.post_waiting(action, 0, **fields)

    def post_waiting(self, action: str, wait: float, **fields):
        self.requests.append({"action": action, **fields})
        if action == "run":
            if "wait_seconds" in fields and not self.waits:
                raise ServerRefused(400, {"message": "unknown", "code": "unknown_field",
                                          "field": "wait_seconds"})
            reply = {"status": "success", "run_id": 9, "message": "running"}
            if "wait_seconds" in fields:
                reply["run"] = record(9, self.status)
            return reply
        self.outputs += 1
        return {"run": record(9, self.status if self.outputs > 1 else "running")}


@pytest.mark.parametrize("waits", [True, False], ids=["wait_seconds", "polling"])
@pytest.mark.parametrize("status, code", [("succeeded", 0), ("timed_out", 4)])
def test_run_wait_uses_the_servers_wait_or_polls(monkeypatch, waits, status, code):
    monkeypatch.setattr(commands, "POLL_SECONDS", 0)
    server = FakeRunServer(waits=waits, status=status)
    ctx = commands.Context(client=server, out=io.StringIO(), err=io.StringIO(),
                           style=render.Style(), as_json=True)
    args = argparse.Namespace(task_id="t", wait=True, wait_timeout=10.0)
    assert commands.run(ctx, args) == code
    assert json.loads(ctx.out.getvalue())["run"]["status"] == status
    runs_started = [r for r in server.requests if r["action"] == "run"]
    assert runs_started[0]["wait_seconds"] == 10
    assert len(runs_started) == (1 if waits else 2) and server.outputs == (0 if waits else 2)
