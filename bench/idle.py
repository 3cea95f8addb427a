"""4. Idle and scale: N tasks scheduled hourly (first slots spread over the hour, none due
during the measurement): start-up time, RSS, memory per task, CPU % of a core while idle,
and `list` latency; against APScheduler 3 (BackgroundScheduler, MemoryJobStore) holding
the same N interval jobs.

Ours: the store is filled directly (bench.common.populate, scheduler marked running), so
start-up is the real restart path: `python -m api` launched → tasks loaded → slots planned
→ GET /health answers. APScheduler's start-up: the process launched → N add_job → start()
→ it prints "ready". RSS is the main process's (ours: the server, not its idle workers),
taken 2 s after start-up, before any `list`; memory per task = (RSS with N − RSS with 0) / N.
CPU: user + system time of the whole process tree over the window. `list`: ours is one
HTTP request, timed to the last byte of the body; APScheduler's is in-process get_jobs() +
a dict per job + json.dumps (no HTTP), so it flatters the baseline.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from . import common
from .common import PY, median

SETTLE = 2.0


def _list_ms(srv) -> float:
    began = time.perf_counter()
    response = srv.raw("POST", json={"action": "list"})
    response.content  # noqa: B018 - the whole body
    assert response.ok, response.status_code
    return (time.perf_counter() - began) * 1000


def _measure(procs, window: float) -> dict:
    if window <= 0:
        return {}
    time.sleep(1.0)
    c0, t0 = common.cpu_seconds(procs), time.monotonic()
    time.sleep(window)
    return {"cpu": (common.cpu_seconds(procs) - c0) / (time.monotonic() - t0) * 100}


def ours(base: Path, n: int, starts: int, window: float, lists: int) -> dict:
    common.populate(base / "data" / "scheduler.db", n)
    out: dict = {"startup": []}
    for i in range(starts):
        began = time.perf_counter()
        with common.server(base) as srv:
            out["startup"].append(time.perf_counter() - began)
            if i:
                continue
            time.sleep(SETTLE)
            procs = common.family(srv.proc.pid)
            out["rss"], out["rss_tree"] = common.rss_mb(procs[:1]), common.rss_mb(procs)
            out["list"] = [_list_ms(srv) for _ in range(lists)]
            out.update(_measure(procs, window))
    return out


def aps(n: int, starts: int, window: float, lists: int) -> dict:
    out: dict = {"startup": []}
    for i in range(starts):
        began = time.perf_counter()
        argv = [PY, "-m", "bench.peers", "idle-aps", str(n), "1"]
        with common.child(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
            watchdog = threading.Timer(300, proc.kill)  # readline must not wait forever
            watchdog.start()
            try:
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"APScheduler baseline did not start (exit {proc.poll()})")
                out["startup"].append(time.perf_counter() - began)
                if i:
                    continue
                time.sleep(SETTLE)
                procs = common.family(proc.pid)
                out["rss"] = out["rss_tree"] = common.rss_mb(procs[:1])
                out["list"] = []
                for _ in range(lists):
                    proc.stdin.write("list\n")
                    proc.stdin.flush()
                    out["list"].append(json.loads(proc.stdout.readline())["ms"])
                out.update(_measure(procs, window))
            finally:
                watchdog.cancel()
    return out


def run(tmp: Path, quick: bool) -> str:
    sizes = (1000,) if quick else (10_000, 100_000)
    window, starts = (2.0, 1) if quick else (20.0, 3)
    print("  idle: 0 tasks (memory floor)", flush=True)
    zero = {"ours": ours(tmp / "ours-0", 0, 1, 0, 0), "aps": aps(0, 1, 0, 0)}
    got = {}
    for n in sizes:
        lists = 3 if n >= 100_000 else 5
        print(f"  idle: ours, {n:,} tasks", flush=True)
        got[("ours", n)] = ours(tmp / f"ours-{n}", n, starts, window, lists)
        print(f"  idle: APScheduler 3, {n:,} tasks", flush=True)
        got[("aps", n)] = aps(n, starts, window, lists)
    rows = [("0 tasks: RSS MB", zero["ours"]["rss"], zero["aps"]["rss"]),
            ("0 tasks: start-up s", zero["ours"]["startup"][0], zero["aps"]["startup"][0])]
    for n in sizes:
        o, a = got[("ours", n)], got[("aps", n)]
        per = [(r[("rss")] - zero[k]["rss"]) * 2**20 / n for k, r in (("ours", o), ("aps", a))]
        rows += [(f"{n:,} tasks: idle CPU % of a core, {window:g} s (lower is better)", o["cpu"], a["cpu"]),
                 (f"{n:,} tasks: RSS MB (lower is better)", o["rss"], a["rss"]),
                 (f"{n:,} tasks: bytes of RSS per task (lower is better)", *per),
                 (f"{n:,} tasks: start-up s, median (lower is better)", median(o["startup"]), median(a["startup"])),
                 (f"{n:,} tasks: `list` ms, median (lower is better)", median(o["list"]), median(a["list"]))]
    notes = [f"start-ups: {starts} per size; {window:g} s CPU window; ours: server default "
             "workers (2 here), hourly command tasks; APScheduler: hourly interval jobs, same first slots.",
             "RSS of our whole tree (server + workers): " + "; ".join(
                 f"{n:,} tasks {got[('ours', n)]['rss_tree']:.0f} MB" for n in sizes)
             + f" (0 tasks {zero['ours']['rss_tree']:.0f} MB).",
             "start-up samples s, ours / APScheduler: " + "; ".join(
                 f"{n:,}: {', '.join(f'{x:.2f}' for x in got[('ours', n)]['startup'])} / "
                 f"{', '.join(f'{x:.2f}' for x in got[('aps', n)]['startup'])}" for n in sizes) + ".",
             "APScheduler's `list` is in-process (get_jobs + json.dumps), ours over HTTP."]
    return common.table("4. Idle and scale", ["APScheduler 3"], rows, notes)
