"""Prepared runs seen from the API: a scheduled run is handed to a worker ahead of its slot
(``--prepare-ahead``) but never starts before it; a run its task can no longer take (task
paused or removed, scheduler stopped, policy changed) is taken back with nothing started,
nothing recorded as run and nothing left behind."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

import pytest

from sandbox import cgroups

from ..helpers import Server, wait_until

FORBIDS_COMMANDS = """\
version: 1
allowed_directories: [{workspace}]
task_types: [script, custom]
rate_limits:
  runs_per_minute: 100000
"""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _epoch(shown: str) -> float:
    """A time as the API shows it (server local time, whole seconds)."""
    return time.mktime(time.strptime(shown, "%Y-%m-%d %H:%M:%S"))


def _runs(server: Server, task_id: str) -> list[dict]:
    return server.post("get", task_id=task_id)["runs"]


def _prepared(server: Server, task_id: str) -> dict:
    """The task's run waiting for its slot, once the scheduler has handed it over."""
    return wait_until(lambda: next((r for r in _runs(server, task_id) if r["status"] == "queued"),
                                   None), timeout=15, message=f"a prepared run of {task_id}")


def _pids(server: Server) -> set[int]:
    """The server's descendants, a zombie not yet reaped included."""
    return {proc.pid for proc in server.descendants()}


def _groups_of(run_id: int) -> list:
    support = cgroups.detect()
    return [path for base in support.bases for path in base.glob(f"{cgroups.PREFIX}*-run-{run_id}")]


def test_scheduled_runs_start_at_their_slot_never_before(make_server):
    server = make_server(autostart=True)
    first = math.ceil(time.time()) + 2
    server.post("create", task_id="clock", type="command", interval="every 1 seconds",
                command="date +%s.%N", start_at=_iso(first), max_runs=3)
    runs = wait_until(lambda: [r for r in _runs(server, "clock") if r["status"] == "succeeded"]
                      if len(_runs(server, "clock")) == 3 and all(
                          r["status"] not in ("queued", "running") for r in _runs(server, "clock"))
                      else None, timeout=20, message="three runs of the clock task")
    assert len(runs) == 3
    for run in runs:
        stdout = server.post("output", run_id=run["run_id"])["run"]["stdout"]
        assert float(stdout) >= _epoch(run["scheduled_for"]), (stdout, run)
        assert run["lateness_ms"] >= 0


@pytest.mark.parametrize("action", ["pause", "remove", "stop"])
def test_a_run_its_task_can_no_longer_take_is_discarded(make_server, action):
    server = make_server(autostart=True, extra_args=("--prepare-ahead", "3"))
    marker = server.workspace / "ran"
    # By pid, not by count: a worker that has just started may still have its short-lived
    # isolation probe as a child, so a count taken now need not be the count once idle.
    before = _pids(server)
    server.post("create", task_id="later", type="command", interval="every 1 hour",
                command=f"touch {marker}", start_at=_iso(math.ceil(time.time()) + 5))
    run = _prepared(server, "later")
    prepared = wait_until(lambda: _pids(server) - before, timeout=10,
                          message="the prepared process")
    if action == "stop":
        server.post("stop")
    else:
        server.post(action, task_id="later")
    wait_until(lambda: not _pids(server) & prepared, timeout=10,
               message="the prepared process to be gone")
    if action != "remove":
        wait_until(lambda: all(r["run_id"] != run["run_id"] for r in _runs(server, "later")),
                   timeout=5, message="the run's record to be taken back")
    assert server.post("output", run_id=run["run_id"], expect=404)["status"] == "error"
    wait_until(lambda: not _groups_of(run["run_id"]), timeout=5,
               message="the run's cgroups to be removed")
    wait_until(lambda: time.time() > _epoch(run["scheduled_for"]) + 1.5, timeout=10,
               interval=0.1, message="the slot to pass")
    assert not marker.exists()
    if action != "remove":
        assert _runs(server, "later") == []


def test_resuming_before_the_slot_runs_it_after_all(make_server):
    server = make_server(autostart=True, extra_args=("--prepare-ahead", "3"))
    slot = math.ceil(time.time()) + 5
    server.post("create", task_id="again", type="command", interval="every 1 hour",
                command="echo ran", start_at=_iso(slot))
    first = _prepared(server, "again")
    server.post("pause", task_id="again")
    wait_until(lambda: _runs(server, "again") == [], timeout=5, message="the run taken back")
    server.post("resume", task_id="again")
    run = wait_until(lambda: next((r for r in _runs(server, "again")
                                   if r["status"] == "succeeded"), None),
                     timeout=15, message="the slot to run after the resume")
    assert run["scheduled_for"] == first["scheduled_for"]


def test_a_policy_that_forbids_a_prepared_run_rejects_it_unstarted(make_server):
    server = make_server(autostart=True, extra_args=("--prepare-ahead", "5"))
    marker = server.workspace / "ran"
    server.post("create", task_id="forbidden", type="command", interval="every 1 hour",
                command=f"touch {marker}", start_at=_iso(math.ceil(time.time()) + 7))
    run = _prepared(server, "forbidden")
    server.policy_path.write_text(FORBIDS_COMMANDS.format(workspace=server.workspace))
    final = server.wait_run(run["run_id"], timeout=15)
    assert final["status"] == "rejected" and "command" in final["reason"]
    assert final["started_at"] is None
    assert not marker.exists() and not _groups_of(run["run_id"])
