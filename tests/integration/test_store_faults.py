"""Store faults against a real server: its data directory is a tiny tmpfs of its own.

* a full disk: the test fills the tmpfs with a file, then deletes it;
* a database locked by another connection: the test holds ``BEGIN EXCLUSIVE``;
* a read-only remount: the kernel refuses it while the database is open for writing, so
  the server must simply go on (the store's unit tests cover a read-only database).

In each case the server keeps answering (reads work, writes are a 503 ``store_unavailable``
with ``Retry-After``), ``status`` shows the fault, no slot is recorded twice, and once the
fault clears the server works again by itself. Root only (to mount); skipped otherwise,
failed under ``CI=true``. Every test unmounts its tmpfs and stops its server, whatever
happens.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.helpers import Server, Tmpfs, require_root, wait_until

pytestmark = pytest.mark.slow

TICK = {"task_id": "tick", "type": "command", "interval": "every 1 second",
        "command": "yes 0123456789abcdef | head -c 20000"}


@pytest.fixture
def server(tmp_path):
    require_root("mount a tmpfs as the server's data directory")
    srv = Server(tmp_path / "server", workers=1, autostart=True)
    fs = Tmpfs(srv.data_dir, size_kb=2048)
    try:
        srv.start()
        srv.fs = fs
        yield srv
    finally:
        srv.stop()
        fs.unmount()


def store_status(server: Server) -> dict:
    return server.post("status")["store"]


def ticks(server: Server) -> list[dict]:
    return server.post("runs", task_id="tick", limit=1000)["runs"]


def assert_no_slot_twice(server: Server) -> None:
    with sqlite3.connect(f"file:{server.data_dir / 'scheduler.db'}?mode=ro", uri=True) as db:
        twice = db.execute("SELECT task_id, slot_ms, COUNT(*) FROM runs WHERE slot_ms IS NOT NULL "
                           "GROUP BY task_id, slot_ms HAVING COUNT(*) > 1").fetchall()
    assert twice == []
    slots = [r["scheduled_for"] for r in ticks(server) if r["trigger"] == "schedule"]
    assert len(slots) == len(set(slots))


def refused(response) -> dict:
    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["status"], body["code"]) == ("error", "store_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    return body


def create(server: Server, task_id: str):
    return server.raw("POST", json={"action": "create", "task_id": task_id, "type": "command",
                                    "interval": "hourly", "command": "true"})


def recovers(server: Server, since: float) -> None:
    """The store is healthy again, writes work and the ticking task runs again."""
    wait_until(lambda: store_status(server)["ok"], timeout=10, message="the store to recover")
    assert create(server, "after").status_code == 200
    wait_until(lambda: any(r["status"] == "succeeded" and _epoch(r["scheduled_for"]) > since
                           for r in ticks(server)), timeout=10, message="a run after recovery")
    assert store_status(server) == {"ok": True, "error": None, "since": None, "fault": None,
                                    "deferred": 0}


def _epoch(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_full_disk(server):
    server.post("create", **TICK)
    wait_until(lambda: len(ticks(server)) >= 2, timeout=10, message="two runs")
    filler = server.fs.fill()
    # SQLite reuses free pages and WAL frames, so small writes may still fit while large
    # ones fail: the store's state can go back and forth, and the checks below poll.
    big = "true # " + "x" * 60_000

    def refused_create():
        response = server.raw("POST", json={"action": "create", "task_id": f"t{time.time_ns()}",
                                            "type": "command", "interval": "hourly",
                                            "command": big})
        return [response] if response.status_code == 503 else None  # a 503 Response is falsy

    [response] = wait_until(refused_create, timeout=15, message="a create refused")
    body = refused(response)
    assert "full" in body["message"]
    status = wait_until(lambda: (lambda s: s if not s["ok"] else None)(store_status(server)),
                        timeout=15, message="status to show the fault")
    assert status["fault"] == "disk_full" and "full" in status["error"]
    assert status["since"] is not None
    assert server.post("list")["count"] >= 1  # reads go on
    assert ticks(server)
    assert "the disk holding the database is full" in server.read_log()

    filler.unlink()
    cleared = time.time()
    recovers(server, cleared)
    assert_no_slot_twice(server)
    stuck = [r for r in ticks(server) if r["status"] in ("queued", "running")
             and _epoch(r["scheduled_for"]) < cleared - 5]
    assert stuck == []  # results that could not be written then were written later


def test_database_locked_by_another_connection(server):
    server.post("create", **TICK)
    wait_until(lambda: ticks(server), timeout=10, message="a first run")
    holder = sqlite3.connect(server.data_dir / "scheduler.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        body = refused(create(server, "during"))
        assert "locked" in body["message"]
        status = store_status(server)
        assert (status["ok"], status["fault"]) == (False, "busy")
        began = time.monotonic()
        assert server.post("list")["count"] == 1
        assert server.post("output", run_id=ticks(server)[0]["run_id"])["run"]
        assert time.monotonic() - began < 2.0  # while failing, nothing waits for the lock
        time.sleep(2)  # slots fall due while locked
        locked_runs = len(ticks(server))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    released = time.time()
    recovers(server, released)
    assert len(ticks(server)) > locked_runs
    missed = [r for r in ticks(server) if r["status"] == "error"]
    assert missed and all("the store could not record the run" in r["reason"] for r in missed)
    assert_no_slot_twice(server)


def test_read_only_remount_is_refused_while_the_store_is_open(server):
    server.post("create", **TICK)
    refusal = server.fs.remount("ro")
    assert refusal.returncode != 0 and "busy" in refusal.stderr
    assert create(server, "still").status_code == 200
    assert store_status(server)["ok"]
