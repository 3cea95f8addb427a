"""Store faults against a real server: its data directory is a tiny tmpfs of its own.

* a full disk: the test fills the tmpfs with a file, then deletes it;
* a database locked by another connection: the test holds ``BEGIN EXCLUSIVE``;
* a read-only remount: the kernel refuses ``mount -o remount,ro`` while the database is
  open for writing, so the server simply goes on; the kernel's own forced read-only remount
  (ext4 ``errors=remount-ro`` after an error) is met with the store failing cleanly.

In each case the server keeps answering (reads work, writes are a 503 ``store_unavailable``
with ``Retry-After``), ``status`` shows the fault, no slot is recorded twice, and once the
fault clears the server works again by itself (a forced read-only ext4 stays read-only
until an fsck, so that case stops at the fault). Root only (to mount); skipped otherwise,
failed under ``CI=true``. Every test unmounts its tmpfs and stops its server, whatever
happens.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import psutil
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
    path = server.data_dir / "scheduler.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
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


@pytest.fixture
def ext4_server(tmp_path):
    """A server whose data directory is an ext4 image (on a tmpfs) mounted with
    ``errors=remount-ro``: the kernel itself remounts it read-only on an error."""
    require_root("mount an ext4 image as the server's data directory")
    if shutil.which("mkfs.ext4") is None or not Path("/dev/loop-control").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("needs mkfs.ext4 (e2fsprogs) and loop devices")
        pytest.skip("needs mkfs.ext4 (apt-get install e2fsprogs) and loop devices")
    backing = Tmpfs(tmp_path / "backing", size_kb=16 * 1024)
    srv = Server(tmp_path / "server", workers=1, autostart=True)
    mounted = False
    try:
        image = backing.path / "data.img"
        subprocess.run(["truncate", "-s", "12M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True)
        srv.data_dir.mkdir(parents=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(srv.data_dir)],
                       check=True, capture_output=True)
        mounted = True
        srv.start()
        yield srv
    finally:
        family = srv.descendants() if srv.proc else []
        srv.stop()
        psutil.wait_procs(family, timeout=10)
        if mounted:  # a loop mount detaches its device once unmounted
            unmount = ["umount", str(srv.data_dir)]
            if not _retry(lambda: subprocess.run(unmount, capture_output=True).returncode == 0):
                subprocess.run(["umount", "-l", str(srv.data_dir)], capture_output=True)
        backing.unmount()


def _retry(attempt, seconds: float = 10.0) -> bool:
    try:
        wait_until(attempt, timeout=seconds, interval=0.2, message="unmount")
        return True
    except AssertionError:
        return False


def test_kernel_remounts_the_data_directory_read_only(ext4_server):
    server = ext4_server
    server.post("create", **TICK)
    wait_until(lambda: ticks(server), timeout=10, message="a first run")
    source = subprocess.run(["findmnt", "-no", "SOURCE", str(server.data_dir)],
                            capture_output=True, text=True, check=True).stdout.strip()
    Path(f"/sys/fs/ext4/{Path(source).name}/trigger_fs_error").write_text("store fault test\n")
    options = subprocess.run(["findmnt", "-no", "OPTIONS", str(server.data_dir)],
                             capture_output=True, text=True, check=True).stdout.split(",")
    assert {"ro", "emergency_ro"} & {o.strip() for o in options}, options

    wait_until(lambda: not store_status(server)["ok"], timeout=10, message="the store to fail")
    refused(create(server, "during"))
    # After the I/O error the store reopens its database: read-only now, and says so.
    status = wait_until(lambda: (lambda s: s if s["fault"] == "read_only" else None)(
        store_status(server)), timeout=10, message="a read-only fault")
    assert "read-only" in status["error"]
    assert server.post("list")["count"] == 1  # reads go on
    assert ticks(server)
    time.sleep(1.5)  # slots fall due: not run, and the server goes on answering
    assert server.post("status")["running"] is True
    assert_no_slot_twice(server)
