"""Calendar schedules on a real server: a cron task in a time zone of its own fires on the
minute through a worker, its run records the jitter it started with, and the server's
``--timezone`` is the default zone of tasks that name none."""

from __future__ import annotations

from datetime import datetime

import pytest

from scheduler.jitter import jitter_offset

from ..helpers import wait_until

pytestmark = pytest.mark.slow

JITTER = 2  # seconds: small, so that the test waits at most a minute and a bit


def _epoch(seed_time: str) -> float:
    return datetime.strptime(seed_time, "%Y-%m-%d %H:%M:%S").timestamp()


def test_a_cron_task_in_its_zone_fires_and_records_its_jitter(make_server):
    server = make_server(autostart=True, extra_args=("--timezone", "Asia/Kathmandu"))
    assert server.post("status")["timezone"] == "Asia/Kathmandu"
    created = server.post("create", task_id="tick", type="command", interval="* * * * *",
                          timezone="Pacific/Chatham", jitter=JITTER, command="echo tick")
    details = created["task"]["details"]
    assert details["timezone"] == "Pacific/Chatham" and details["jitter"] == JITTER
    # Chatham is UTC+12:45 or +13:45: the minute is still on the minute.
    assert details["next_run_at"][-6:] in ("+12:45", "+13:45")
    assert details["next_run_at"][17:19] == "00"

    def finished():
        runs = server.post("runs", task_id="tick")["runs"]
        return runs[-1] if runs and runs[-1]["status"] not in ("queued", "running") else None

    run = wait_until(finished, timeout=60 + JITTER + 30, message="the first cron run")
    assert run["status"] == "succeeded" and run["trigger"] == "schedule", run
    assert server.post("output", run_id=run["run_id"])["run"]["stdout"] == "tick\n"
    slot = _epoch(run["scheduled_for"])
    assert run["scheduled_for"].endswith(":00")
    assert run["jitter_ms"] == round(jitter_offset("tick", slot, JITTER) * 1000, 3)
    assert 0 <= run["jitter_ms"] <= JITTER * 1000
    # Lateness counts from the jittered start, not from the slot.
    assert run["lateness_ms"] is not None and run["lateness_ms"] < 10_000
    assert _epoch(run["started_at"]) >= slot + run["jitter_ms"] / 1000 - 1

    other = server.post("create", task_id="local", type="command", interval="daily at 7:15",
                        command="true")["task"]["details"]
    assert other["timezone"] == "Asia/Kathmandu" and other["next_run_at"].endswith("T07:15:00+05:45")
