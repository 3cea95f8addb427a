"""1. Lateness: N tasks at 1-3 s intervals for a window of S seconds, "spread" (random phases)
and "aligned" (every first slot on one whole second), on our server and on three baselines.

Every system gets the same plan (seeded): task i is due at first_i + k * interval_i. Ours
gets it through `create` with `start_at` (whole-second 'YYYY-MM-DD HH:MM:SS' when aligned,
ISO 8601 with milliseconds and offset when spread), then `start`; its lateness is the run
records' `lateness_ms` (due time → job process started), read from the store after the
server stopped. Fires: runs recorded with a due time in the window vs the ideal count;
skipped runs are recorded too (overlap). Drift: how far a task's n-th due time moved from
its n-th ideal slot (0 when no slot is lost or shifted).
"""

from __future__ import annotations

import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from . import common
from .common import PY, median, pct

WORKERS = 4
LEAD = 4.0  # seconds between the system being ready and the first slot


def make_plan(n: int, seconds: float, mode: str, t0: float, seed: int = 7) -> dict:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        interval = rng.choice((1, 2, 3))
        first = t0 if mode == "aligned" else round(t0 + rng.uniform(0, interval), 3)
        tasks.append({"id": f"t{i:03d}", "interval": interval, "first": first})
    return {"tasks": tasks, "t0": t0, "end": t0 + seconds, "command": "true", "mode": mode}


def _start_at(first: float, mode: str) -> str:
    local = datetime.fromtimestamp(first).astimezone()
    if mode == "aligned":
        return local.strftime("%Y-%m-%d %H:%M:%S")
    return local.isoformat(timespec="milliseconds")


def run_ours(n: int, seconds: float, mode: str, base: Path, lead: float) -> tuple[dict, list]:
    with common.server(base, workers=WORKERS) as srv:
        plan = make_plan(n, seconds, mode, math.ceil(time.time() + lead))
        for task in plan["tasks"]:
            srv.post("create", task_id=task["id"], type="command", command=plan["command"],
                     interval=f"every {task['interval']} seconds",
                     start_at=_start_at(task["first"], mode))
        srv.post("start")
        if time.time() > plan["t0"]:
            print(f"warning: ours/{mode}: set-up ran past the first slot", flush=True)
        common.sleep_until(plan["end"] + 0.5)
        srv.post("stop")
        common.wait_until(lambda: srv.post("status")["runs"] == {"active": 0, "queued": 0},
                          timeout=60, message="the last runs to finish")
    rows = common.read_runs(srv.data_dir / "scheduler.db", "trigger = 'schedule'")
    return plan, [[r["task_id"], r["scheduled_for"], r["lateness_ms"], r["status"]] for r in rows]


def run_peer(kind: str, n: int, seconds: float, mode: str, base: Path, lead: float) -> tuple[dict, list]:
    base.mkdir(parents=True, exist_ok=True)
    plan = make_plan(n, seconds, mode, math.ceil(time.time() + lead))
    plan_path, out_path = base / "plan.json", base / "records.json"
    plan_path.write_text(json.dumps(plan))
    with common.child([PY, "-m", "bench.peers", f"lateness-{kind}", str(plan_path), str(out_path)]) as proc:
        proc.wait(timeout=seconds + lead + 60)
    records = json.loads(out_path.read_text())
    return plan, [[task, due, None if started is None else (started - due) * 1000, status]
                  for task, due, started, status in records]


def analyse(plan: dict, records: list) -> dict:
    """records: [task_id, due, lateness_ms or None, status]."""
    end, tasks = plan["end"], {t["id"]: t for t in plan["tasks"]}
    ideal = sum(math.ceil((end - t["first"]) / t["interval"] - 1e-9) for t in tasks.values())
    in_window = [r for r in records if r[0] in tasks and tasks[r[0]]["first"] - 1e-3 <= r[1] < end - 1e-6]
    lateness = [r[2] for r in in_window if r[2] is not None]
    per_task: dict[str, list[float]] = {}
    for task_id, due, *_ in in_window:
        per_task.setdefault(task_id, []).append(due)
    drift = 0.0
    for task_id, dues in per_task.items():
        t = tasks[task_id]
        dues.sort()
        drift = max(drift, abs(dues[-1] - (t["first"] + (len(dues) - 1) * t["interval"])) * 1000)
    return {"p50": pct(lateness, 50), "p99": pct(lateness, 99), "max": max(lateness, default=None),
            "fires": len(lateness), "skipped": sum(1 for r in in_window if r[3] == "skipped"),
            "recorded": len(in_window), "ideal": ideal, "drift": drift,
            "failed": sum(1 for r in in_window if r[3] not in ("succeeded", "skipped"))}


SYSTEMS = {"ours": None, "schedule + sleep(1)": "schedule",
           "schedule + idle_seconds": "schedule-idle", "APScheduler 3": "aps"}


def run(tmp: Path, quick: bool) -> str:
    n, seconds = (20, 5.0) if quick else (200, 60.0)
    lead = 2.0 if quick else LEAD
    jobs = [(mode, name) for mode in ("spread", "aligned") for name in SYSTEMS]

    def one(job):
        mode, name = job
        base = tmp / f"lateness-{mode}-{SYSTEMS[name] or 'ours'}"
        print(f"  lateness: {name}, {mode}, {n} tasks for {seconds:g} s", flush=True)
        if SYSTEMS[name] is None:
            return analyse(*run_ours(n, seconds, mode, base, lead))
        return analyse(*run_peer(SYSTEMS[name], n, seconds, mode, base, lead))

    if quick:  # a smoke test: everything at once, figures not comparable
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = dict(zip(jobs, pool.map(one, jobs)))
    else:
        results = {job: one(job) for job in jobs}
    rows = []
    for mode in ("spread", "aligned"):
        got = [results[(mode, name)] for name in SYSTEMS]
        for key, label in (("p50", "p50 ms"), ("p99", "p99 ms"), ("max", "max ms")):
            rows.append((f"{mode}: lateness {label} (lower is better)", *[g[key] for g in got]))
        rows.append((f"{mode}: fires (ideal {got[0]['ideal']:,})", *[g["fires"] for g in got]))
        rows.append((f"{mode}: skipped runs", *[g["skipped"] for g in got]))
        rows.append((f"{mode}: drift of the last due time, max ms", *[g["drift"] for g in got]))
    failed = sum(r["failed"] for r in results.values())
    notes = [f"{n} tasks, intervals 1/2/3 s (seed 7), {seconds:g} s window, command `true` "
             f"(`/bin/sh -c true` everywhere); ours: {WORKERS} workers, runs_per_minute 100000.",
             "Baselines launch the command from the job with subprocess (Popen, start time "
             "taken right after it returns, as our worker does); `schedule` runs jobs serially "
             "in its loop, either the usual `run_pending(); sleep(1)` or sleeping "
             "`schedule.idle_seconds()` (until the next job is due); APScheduler in its "
             "10-thread pool (coalesce, max_instances 1).",
             f"runs that did not succeed (besides skipped): {failed}."]
    if quick:
        notes.append(common.quick_note(len(jobs)))
    return common.table("1. Lateness (due time → job process started)", list(SYSTEMS)[1:],
                        rows, notes)
