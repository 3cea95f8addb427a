"""How tsctl shows responses to people: aligned tables (tabulate), local times, colour.

Colour is used only when the stream is a terminal, and never when ``NO_COLOR`` is set to
anything non-empty (https://no-color.org) or ``--no-color`` is given. Every status is
written out as a word, so a table reads the same without colour.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from tabulate import tabulate

GREEN, RED, YELLOW, CYAN, DIM = "32", "31", "33", "36", "2"
COLOURS = {
    "succeeded": GREEN, "failed": RED, "timed_out": RED, "killed": RED, "rejected": RED,
    "error": RED, "interrupted": RED, "skipped": YELLOW, "queued": CYAN, "running": CYAN,
    "scheduled": GREEN, "paused": YELLOW, "finished": DIM,
    "stopped": YELLOW,
}
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "killed", "rejected",
                            "skipped", "interrupted", "error"})
WHAT_WIDTH = 48
VALUE_WIDTH = 72  # key/value blocks wrap longer values (isolation layers, a command)
TABLE_FORMAT = "simple"


def wants_colour(stream: TextIO, disabled: bool = False) -> bool:
    if disabled or os.environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass(frozen=True)
class Style:
    """Paints words by meaning (a status, a state) when colour is on; a no-op otherwise."""

    colour: bool = False

    def paint(self, word: str | None) -> str:
        text = "-" if word is None else str(word)
        code = COLOURS.get(text)
        if not self.colour or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"


def local_time(text: str | None, iso: str | None = None) -> str:
    """A time for a table: the ISO form with an offset converted to this machine's zone when
    the server sent one, else the server's own ``YYYY-MM-DD HH:MM:SS`` (its local time)."""
    if iso:
        try:
            return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
    return text or "-"


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"


def shorten(text: str | None, width: int = WHAT_WIDTH) -> str:
    """One line of at most ``width`` characters (the rest is in ``get`` or ``--json``)."""
    if not text:
        return "-"
    lines = text.strip().splitlines() or [""]
    line = lines[0] + (" …" if len(lines) > 1 else "")
    return line if len(line) <= width else line[:width - 1] + "…"


def table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt=TABLE_FORMAT, disable_numparse=True,
                    missingval="-")


def pairs(rows: list[tuple[str, Any]]) -> str:
    """A two-column key/value block."""
    return tabulate([[k, _wrap(v)] for k, v in rows], tablefmt="plain", disable_numparse=True)


def _wrap(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if len(text) <= VALUE_WIDTH or "\x1b[" in text:
        return text
    return textwrap.fill(text, VALUE_WIDTH, break_on_hyphens=False, break_long_words=False)


def _what(details: dict[str, Any]) -> str:
    return shorten(details.get("command") or details.get("custom_script")
                   or details.get("file_path"))


def tasks_table(tasks: list[dict[str, Any]], style: Style) -> str:
    if not tasks:
        return "No tasks. Create one with: tsctl create ID --every '5 minutes' --command '...'"
    rows = []
    for task in tasks:
        d = task.get("details", {})
        rows.append([task.get("id"), d.get("type"), d.get("interval"),
                     local_time(d.get("next_run"), d.get("next_run_at")),
                     style.paint(d.get("state")), _what(d)])
    return table(rows, ["ID", "TYPE", "SCHEDULE", "NEXT RUN", "STATE", "WHAT"])


def _detail(run: dict[str, Any]) -> str:
    tests = run.get("tests")
    if tests:
        counts = ", ".join(f"{tests[k]} {k}" for k in ("passed", "failed", "errors", "skipped")
                           if tests.get(k))
        return counts or "no tests"
    return shorten(run.get("reason"), 40) if run.get("reason") else ""


def run_row(run: dict[str, Any], style: Style) -> list[Any]:
    exit_code = run.get("exit_code")
    return [run.get("run_id"), run.get("task_id"), run.get("trigger"),
            style.paint(run.get("status")), "-" if exit_code is None else exit_code,
            local_time(run.get("started_at") or run.get("scheduled_for")),
            duration(run.get("duration_ms")), _detail(run)]


RUN_HEADERS = ["RUN", "TASK", "TRIGGER", "STATUS", "EXIT", "STARTED", "DURATION", "DETAIL"]


def runs_table(runs: list[dict[str, Any]], style: Style) -> str:
    if not runs:
        return "No runs yet."
    return table([run_row(r, style) for r in runs], RUN_HEADERS)


def run_line(run: dict[str, Any], style: Style) -> str:
    """One run on one line, for a stream (``runs --follow``): a table cannot be aligned
    before the rows have arrived, so the fields are padded to usual widths instead."""
    run_id, task, trigger, status, exit_code, started, took, detail = run_row(run, style)
    status_pad = " " * max(0, 11 - len(str(run.get("status"))))
    return (f"{started}  run {run_id:<6} {task:<24} {status}{status_pad} exit {exit_code!s:<4} "
            f"{took:>9}  {trigger}{'  ' + detail if detail else ''}").rstrip()


def task_block(task: dict[str, Any], style: Style) -> str:
    d = dict(task.get("details", {}))
    rows: list[tuple[str, Any]] = [("id", task.get("id"))]
    for key, value in d.items():
        if value is None or value == {}:
            continue
        if key in ("next_run", "created_at", "updated_at"):
            value = local_time(value, d.get(key + "_at"))
        elif key == "state":
            value = style.paint(value)
        elif key == "env":
            value = " ".join(f"{k}={v}" for k, v in (value or {}).items()) or None
        elif isinstance(value, (dict, list)):
            value = repr(value)
        rows.append((key, value))
    return pairs(rows)


def status_block(response: dict[str, Any], style: Style) -> str:
    workers = response.get("workers") or {}
    runs = response.get("runs") or {}
    policy = response.get("policy") or {}
    rows = [("scheduler", style.paint("running" if response.get("running") else "stopped")),
            ("tasks", response.get("tasks")),
            ("workers", f"{workers.get('alive', '?')} alive of {workers.get('configured', '?')}"),
            ("runs", f"{runs.get('active', 0)} active, {runs.get('queued', 0)} queued")
            if runs else ("runs", None),
            ("isolation", f"{response.get('isolation_level') or '-'} "
                          f"({', '.join(response.get('isolation') or []) or 'none'})"),
            ("time zone", response.get("timezone")),
            ("policy", policy.get("path")),
            ("policy loaded", policy.get("loaded_at")),
            ("policy error", policy.get("error") or "none")]
    if response.get("cgroup_layout"):
        rows.insert(5, ("cgroups", response["cgroup_layout"]))
    store = response.get("store")
    if store:
        rows.append(("store", "ok" if store.get("ok") else
                     f"failing since {store.get('since')}: {store.get('error')} "
                     f"({store.get('deferred', 0)} writes deferred)"))
    return pairs(rows)
