"""2. Throughput: runs of `true` through the full path — a `run` request, the worker pool
starting the child process, the run recorded in the store — in runs per second, with the
server's default pool, against a bare loop of subprocess.run and a 2-worker
ProcessPoolExecutor running the same `/bin/sh -c true`.

Ours: TASKS command tasks (scheduler stopped, so only the `run`s fire; several tasks since
the store keeps the newest 100 runs of each); R `run` requests, round-robin over the tasks,
go out back to back on one keep-alive connection, and the clock stops when the store holds all
R runs with a final status (polled read-only every 10 ms). Rounds alternate ours / loop /
pool; medians of the rounds.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from api.config import ServerConfig

from . import common
from .common import SHELL_TRUE, median

TASKS = 50
FINAL = "('succeeded', 'failed', 'timed_out', 'killed', 'rejected', 'skipped', 'interrupted', 'error')"


def _run_true(_: int) -> int:
    return subprocess.run(SHELL_TRUE).returncode


def bare_loop(runs: int) -> float:
    began = time.perf_counter()
    for _ in range(runs):
        subprocess.run(SHELL_TRUE)
    return runs / (time.perf_counter() - began)


def process_pool(runs: int) -> float:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_run_true, range(4)))  # warm: the workers exist, as ours do
        began = time.perf_counter()
        codes = list(pool.map(_run_true, range(runs)))
        elapsed = time.perf_counter() - began
    assert codes.count(0) == runs, "the pool's runs failed"
    return runs / elapsed


def _done(db: sqlite3.Connection, after: int) -> tuple[int, int]:
    row = db.execute(f"SELECT COUNT(*), SUM(status = 'succeeded') FROM runs WHERE run_id > ? "
                     f"AND status IN {FINAL}", (after,)).fetchone()
    return row[0], row[1] or 0


def ours(srv, runs: int) -> dict:
    db = sqlite3.connect(f"file:{srv.data_dir / 'scheduler.db'}?mode=ro", uri=True)
    try:
        last = db.execute("SELECT COALESCE(MAX(run_id), 0) FROM runs").fetchone()[0]
        began = time.perf_counter()
        for i in range(runs):
            srv.post("run", task_id=f"tp{i % TASKS}")
        sent = time.perf_counter()
        deadline = sent + 120
        while (done := _done(db, last))[0] < runs and time.perf_counter() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        first, end = db.execute("SELECT MIN(started_at), MAX(finished_at) FROM runs WHERE run_id > ?",
                                (last,)).fetchone()
    finally:
        db.close()
    return {"rate": runs / elapsed, "requests": runs / (sent - began), "ok": done[1],
            "recorded": done[0], "span": runs / (end - first) if end and first else None}


def run(tmp: Path, quick: bool) -> str:
    runs, rounds = (200, 1) if quick else (2000, 3)
    workers = ServerConfig().workers
    got = {"ours": [], "loop": [], "pool": [], "span": [], "requests": []}
    ok = recorded = 0
    with common.server(tmp / "server", workers=workers) as srv:
        for i in range(TASKS):
            srv.post("create", task_id=f"tp{i}", type="command", command="true",
                     interval="every 1 hour")
        ours(srv, min(runs, 100))  # warm-up round, not counted
        for i in range(rounds):
            print(f"  throughput: round {i + 1}/{rounds}, {runs} runs each", flush=True)
            result = ours(srv, runs)
            got["ours"].append(result["rate"])
            got["span"].append(result["span"])
            got["requests"].append(result["requests"])
            ok += result["ok"]
            recorded += result["recorded"]
            got["loop"].append(bare_loop(runs))
            got["pool"].append(process_pool(runs))
    m = {k: median([v for v in vals if v is not None]) for k, vals in got.items()}
    rows = [("runs/s, full path (higher is better)", m["ours"], m["loop"], m["pool"]),
            ("runs/s, first start → last finish in the records", m["span"], m["loop"], m["pool"]),
            ("`run` requests answered/s (HTTP side alone)", m["requests"], None, None)]
    notes = [f"{runs} runs × {rounds} round(s), medians; ours: default pool of {workers} workers "
             f"(python -m api default on this machine), one client on one keep-alive connection.",
             f"runs recorded {recorded} of {runs * rounds}, succeeded {ok}.",
             "Per-round figures: ours " + ", ".join(f"{v:.0f}" for v in got["ours"])
             + "; loop " + ", ".join(f"{v:.0f}" for v in got["loop"])
             + "; pool " + ", ".join(f"{v:.0f}" for v in got["pool"]) + "."]
    return common.table("2. Throughput (runs of `true`, runs/s)",
                        ["bare subprocess.run loop", "ProcessPoolExecutor(2)"], rows, notes)
