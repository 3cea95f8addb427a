"""6. On time: how late a job starts, as the job's own clock sees it.

The job is the command `date +%s.%N`: what it prints is the instant it ran, read by the job
itself, and its lateness is that instant minus the whole second its slot was due. Two
scenarios, each on our server and on APScheduler 3 (a BackgroundScheduler running the same
`/bin/sh -c 'date +%s.%N'` with subprocess from the job, with a pool of 10 and of 50
threads), all in the same run:

- *every second*: one task due every 1 s, 60 slots (quick: 15);
- *burst*: 50 tasks due on the same second every 5 s, 6 rounds (quick: 2).

Ours gets each task through `create`: `every N seconds` with `start_at` the first slot as
'YYYY-MM-DD HH:MM:SS', so a task's slots are start_at + k·N and the 50 tasks share theirs,
and `max_runs` the number of slots; then `start`. Once the last slot has passed and no run
is active or queued, the `runs` action gives each run's output and the server's own
`lateness_ms` (due time → job process started, as the worker sees it). APScheduler's due
time is the scheduled run time it logs right before calling the job (misfire grace off,
coalesce, max_instances 1, as in table 1); its jobs end at the plan's last slot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from . import common
from .common import PY, median, pct

COMMAND = "date +%s.%N"
WORKERS = 4  # as table 1
LEAD = 4.0  # seconds between the system being ready and the first slot
QUICK_LEAD = 3.0  # six systems start at once in quick mode
CONCURRENT_RUNS = 64  # rate_limits.max_concurrent_runs
API_TIME = "%Y-%m-%d %H:%M:%S"  # how run records show scheduled_for (local, to the second)
PAGE = 1000  # the most runs one `runs` request returns


@dataclasses.dataclass(frozen=True)
class Scenario:
    """``tasks`` tasks due together every ``interval`` seconds, ``slots`` times each."""

    key: str
    label: str
    tasks: int
    interval: int
    slots: int
    quick_slots: int


SCENARIOS = (Scenario("second", "every second", tasks=1, interval=1, slots=60, quick_slots=15),
             Scenario("burst", "burst of 50", tasks=50, interval=5, slots=6, quick_slots=2))
SYSTEMS = {"ours": None, "APScheduler 3, 10 threads": 10, "APScheduler 3, 50 threads": 50}


def policy() -> str:
    """The benchmark policy, with ``rate_limits.max_concurrent_runs`` high enough for the
    whole burst to be prepared ahead."""
    return common.POLICY.replace("rate_limits:\n",
                                 f"rate_limits:\n  max_concurrent_runs: {CONCURRENT_RUNS}\n", 1)


def make_plan(scenario: Scenario, slots: int, t0: int) -> dict:
    """Every task due at t0 + k * interval for k < slots; ``last`` is the last of them."""
    tasks = [{"id": f"{scenario.key}-{i:02d}", "interval": scenario.interval, "first": t0}
             for i in range(scenario.tasks)]
    return {"tasks": tasks, "t0": t0, "last": t0 + (slots - 1) * scenario.interval,
            "slots": slots, "command": COMMAND}


def _clock(stdout: str) -> float | None:
    try:
        return float(stdout)
    except ValueError:
        return None


def _all_runs(srv: common.Server) -> list[dict]:
    """Every run record, oldest first, a page at a time (``after_run_id`` is the cursor)."""
    records, cursor = [], 0
    while True:
        page = srv.post("runs", after_run_id=cursor, limit=PAGE)["runs"]
        records += page
        if len(page) < PAGE:
            return records
        cursor = page[-1]["run_id"]


def run_ours(scenario: Scenario, slots: int, base: Path, lead: float) -> tuple[dict, list]:
    with common.server(base, workers=WORKERS, policy=policy()) as srv:
        plan = make_plan(scenario, slots, math.ceil(time.time() + lead))
        start_at = datetime.fromtimestamp(plan["t0"]).strftime(API_TIME)
        for task in plan["tasks"]:
            srv.post("create", task_id=task["id"], type="command", command=plan["command"],
                     interval=f"every {task['interval']} seconds", start_at=start_at,
                     max_runs=slots)
        srv.post("start")
        if time.time() > plan["t0"]:
            print(f"warning: ours/{scenario.key}: set-up ran past the first slot", flush=True)
        common.sleep_until(plan["last"] + 0.5)
        common.wait_until(lambda: srv.post("status")["runs"] == {"active": 0, "queued": 0},
                          timeout=60, interval=0.1, message="the last runs to finish")
        runs = [r for r in _all_runs(srv) if r["trigger"] == "schedule"]
    records = []
    for r in runs:
        due = time.mktime(time.strptime(r["scheduled_for"], API_TIME))
        clock = _clock(r["stdout"]) if r["status"] == "succeeded" else None
        records.append([r["task_id"], due, None if clock is None else (clock - due) * 1000,
                        r["status"], r["lateness_ms"]])
    return plan, records


def run_peer(threads: int, scenario: Scenario, slots: int, base: Path, lead: float) -> tuple[dict, list]:
    base.mkdir(parents=True, exist_ok=True)
    plan = make_plan(scenario, slots, math.ceil(time.time() + lead))
    plan_path, out_path = base / "plan.json", base / "records.json"
    plan_path.write_text(json.dumps(plan))
    argv = [PY, "-m", "bench.peers", "ontime-aps", str(plan_path), str(out_path), str(threads)]
    with common.child(argv) as proc:
        proc.wait(timeout=plan["last"] - time.time() + 60)
    records = json.loads(out_path.read_text())
    return plan, [[task, due, None if clock is None else (clock - due) * 1000, status, None]
                  for task, due, clock, status in records]


def _in_plan(plan: dict, due: float) -> bool:
    """Whether ``due`` is one of the plan's slots (within a millisecond)."""
    interval = plan["tasks"][0]["interval"]
    k = round((due - plan["t0"]) / interval)
    return 0 <= k < plan["slots"] and abs(due - (plan["t0"] + k * interval)) < 1e-3


def analyse(plan: dict, records: list) -> dict:
    """records: [task_id, due, lateness_ms by the job's clock or None, status,
    server-side lateness_ms or None]."""
    ours = [r for r in records if _in_plan(plan, r[1])]
    clock = [r[2] for r in ours if r[2] is not None]
    server = [r[4] for r in ours if r[4] is not None]
    gap = [r[2] - r[4] for r in ours if r[2] is not None and r[4] is not None]
    return {"p50": pct(clock, 50), "p99": pct(clock, 99), "max": max(clock, default=None),
            "read": len(clock), "ideal": len(plan["tasks"]) * plan["slots"],
            "server_p50": pct(server, 50), "server_p99": pct(server, 99),
            "gap": median(gap), "skipped": sum(1 for r in ours if r[3] == "skipped"),
            "failed": sum(1 for r in ours if r[3] not in ("succeeded", "skipped"))}


def _rows(scenario: Scenario, got: list[dict]) -> list[tuple]:
    label, rows = scenario.label, []
    for key, name in (("p50", "p50"), ("p99", "p99"), ("max", "max")):
        rows.append((f"{label}: lateness {name} ms, the job's clock (lower is better)",
                     *[g[key] for g in got]))
    rows.append((f"{label}: runs that read their clock (ideal {got[0]['ideal']:,})",
                 *[g["read"] for g in got]))
    rows.append((f"{label}: skipped runs", *[g["skipped"] for g in got]))
    for key, name in (("server_p50", "p50"), ("server_p99", "p99")):
        rows.append((f"{label}: server-side `lateness_ms` {name}", got[0][key],
                     *[None] * (len(got) - 1)))
    return rows


def run(tmp: Path, quick: bool) -> str:
    lead = QUICK_LEAD if quick else LEAD
    jobs = [(scenario, name) for scenario in SCENARIOS for name in SYSTEMS]

    def one(job):
        scenario, name = job
        slots = scenario.quick_slots if quick else scenario.slots
        threads = SYSTEMS[name]
        base = tmp / f"ontime-{scenario.key}-{threads or 'ours'}"
        print(f"  on time: {name}, {scenario.label}, {slots} slots", flush=True)
        if threads is None:
            return analyse(*run_ours(scenario, slots, base, lead))
        return analyse(*run_peer(threads, scenario, slots, base, lead))

    if quick:  # a smoke test: everything at once, figures not comparable
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = dict(zip(jobs, pool.map(one, jobs)))
    else:
        results = {job: one(job) for job in jobs}
    rows = []
    for scenario in SCENARIOS:
        rows += _rows(scenario, [results[(scenario, name)] for name in SYSTEMS])
    failed = sum(r["failed"] for r in results.values())
    gaps = ", ".join(f"{s.label} {common.fmt(results[(s, 'ours')]['gap'])}" for s in SCENARIOS)
    notes = [f"Command `{COMMAND}` (`/bin/sh -c` everywhere); lateness = the instant it printed "
             "− the second its slot was due. every second: 1 task every 1 s; burst of 50: 50 "
             "tasks due on the same second every 5 s.",
             f"Ours: {WORKERS} workers, runs_per_minute 100000, max_concurrent_runs "
             f"{CONCURRENT_RUNS}; its server-side `lateness_ms` (due → job process started, "
             "as the worker sees it) from the run records. The job's clock reads later by "
             f"(median ms): {gaps}.",
             "APScheduler 3: BackgroundScheduler, the job runs the command with "
             "`subprocess.run` in a pool of 10 or 50 threads (misfire grace off, coalesce, "
             "max_instances 1).",
             f"runs that did not succeed (besides skipped): {failed}."]
    if quick:
        notes.append(common.quick_note(len(jobs)))
    return common.table("6. On time (due second → the job's own clock)", list(SYSTEMS)[1:],
                        rows, notes)
