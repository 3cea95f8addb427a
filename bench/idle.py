"""4. Idle and scale: N tasks scheduled hourly (first slots spread over the hour, none due
during the measurement): start-up time, RSS, memory per task, CPU % of a core while idle,
and `list` latency; against APScheduler 3 (BackgroundScheduler, MemoryJobStore) and the
`schedule` library in its two loops (`run_pending(); sleep(1)`, and sleeping
`idle_seconds()`), each holding the same N hourly jobs with the same first slots.

Ours: the store is filled directly (bench.common.populate, scheduler marked running), so
start-up is the real restart path: `python -m api` launched → tasks loaded → slots planned
→ GET /health answers. A baseline's start-up: the process launched → N jobs added (and
APScheduler's start()) → it prints "ready". RSS is the whole process tree's (ours: the
server and its workers; a baseline is one process), taken 2 s after start-up (0.5 s in
quick mode), before any `list`; memory per task = (RSS with N − RSS with 0) / N. The
tree's PSS (shared pages counted once) is in the notes. CPU: user + system time of the
whole process tree over the window. `list`: ours is one HTTP request, timed to the last byte of the body; a
baseline's is in-process (its jobs + a dict per job + json.dumps, no HTTP), so it flatters
the baseline.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from . import common
from .common import PY, median

SETTLE = 2.0  # seconds after start-up before RSS is read (quick mode: QUICK_SETTLE)
QUICK_SETTLE = 0.5


def _list_ms(srv) -> float:
    began = time.perf_counter()
    response = srv.raw("POST", json={"action": "list"})
    response.content  # noqa: B018 - the whole body
    assert response.ok, response.status_code
    return (time.perf_counter() - began) * 1000


def _measure(procs, window: float, settle: float) -> dict:
    if window <= 0:
        return {}
    time.sleep(settle / 2)
    c0, t0 = common.cpu_seconds(procs), time.monotonic()
    time.sleep(window)
    return {"cpu": (common.cpu_seconds(procs) - c0) / (time.monotonic() - t0) * 100}


def ours(base: Path, n: int, starts: int, window: float, lists: int, settle: float = SETTLE) -> dict:
    common.populate(base / "data" / "scheduler.db", n)
    out: dict = {"startup": []}
    for i in range(starts):
        began = time.perf_counter()
        with common.server(base) as srv:
            out["startup"].append(time.perf_counter() - began)
            if i:
                continue
            time.sleep(settle)
            procs = common.family(srv.proc.pid)
            out["rss"], out["rss_server"] = common.rss_mb(procs), common.rss_mb(procs[:1])
            out["pss"], out["processes"] = common.pss_mb(procs), len(procs)
            out["list"] = [_list_ms(srv) for _ in range(lists)]
            out.update(_measure(procs, window, settle))
    return out


PEERS = {"APScheduler 3": ["idle-aps"], "schedule + sleep(1)": ["idle-schedule", "sleep1"],
         "schedule + idle_seconds": ["idle-schedule", "idle"]}


def peer(name: str, n: int, starts: int, window: float, lists: int, settle: float = SETTLE) -> dict:
    out: dict = {"startup": []}
    mode, *extra = PEERS[name]
    for i in range(starts):
        began = time.perf_counter()
        argv = [PY, "-m", "bench.peers", mode, str(n), "1", *extra]
        with common.child(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
            watchdog = threading.Timer(300, proc.kill)  # readline must not wait forever
            watchdog.start()
            try:
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{name} baseline did not start (exit {proc.poll()})")
                out["startup"].append(time.perf_counter() - began)
                if i:
                    continue
                time.sleep(settle)
                procs = common.family(proc.pid)
                out["rss"] = common.rss_mb(procs)
                out["pss"], out["processes"] = common.pss_mb(procs), len(procs)
                out["list"] = []
                for _ in range(lists):
                    proc.stdin.write("list\n")
                    proc.stdin.flush()
                    out["list"].append(json.loads(proc.stdout.readline())["ms"])
                out.update(_measure(procs, window, settle))
            finally:
                watchdog.cancel()
    return out


def run(tmp: Path, quick: bool) -> str:
    sizes = (1000,) if quick else (10_000, 100_000)
    window, starts = (1.0, 1) if quick else (20.0, 3)
    settle = QUICK_SETTLE if quick else SETTLE
    names = ["ours", *PEERS]
    print("  idle: 0 tasks (memory floor)", flush=True)
    zero = {"ours": ours(tmp / "ours-0", 0, 1, 0, 0, settle)}
    zero.update({name: peer(name, 0, 1, 0, 0, settle) for name in PEERS})
    got = {}
    for n in sizes:
        lists = 3 if n >= 100_000 else 5
        print(f"  idle: ours, {n:,} tasks", flush=True)
        got[("ours", n)] = ours(tmp / f"ours-{n}", n, starts, window, lists, settle)
        for name in PEERS:
            print(f"  idle: {name}, {n:,} tasks", flush=True)
            got[(name, n)] = peer(name, n, starts, window, lists, settle)
    rows = [("0 tasks: RSS MB, whole process tree", *[zero[k]["rss"] for k in names]),
            ("0 tasks: start-up s", *[zero[k]["startup"][0] for k in names])]
    for n in sizes:
        r = [got[(k, n)] for k in names]
        per = [(x["rss"] - zero[k]["rss"]) * 2**20 / n for k, x in zip(names, r)]
        rows += [(f"{n:,} tasks: idle CPU % of a core, {window:g} s (lower is better)", *[x["cpu"] for x in r]),
                 (f"{n:,} tasks: RSS MB, whole process tree (lower is better)", *[x["rss"] for x in r]),
                 (f"{n:,} tasks: bytes of RSS per task (lower is better)", *per),
                 (f"{n:,} tasks: start-up s, median (lower is better)", *[median(x["startup"]) for x in r]),
                 (f"{n:,} tasks: `list` ms, median (lower is better)", *[median(x["list"]) for x in r])]
    ours_n = [(n, got[("ours", n)]) for n in sizes]
    notes = [f"start-ups: {starts} per size; {window:g} s CPU window; ours: server default "
             "workers (2 here), hourly command tasks; baselines: hourly jobs, same first slots.",
             f"Ours is {zero['ours']['processes']} processes (server + workers), each baseline one. "
             "Server process alone: " + "; ".join(
                 f"{n:,} tasks {o['rss_server']:.0f} MB" for n, o in ours_n)
             + f" (0 tasks {zero['ours']['rss_server']:.0f} MB).",
             "PSS of the whole tree (shared pages counted once), MB, " + ", ".join(names) + ": "
             + "; ".join(f"{n:,} tasks " + " / ".join(f"{got[(k, n)]['pss']:.0f}" for k in names)
                         for n in sizes)
             + " (0 tasks " + " / ".join(f"{zero[k]['pss']:.0f}" for k in names) + ").",
             "start-up samples s, " + ", ".join(names) + ": " + "; ".join(
                 f"{n:,}: " + " / ".join(", ".join(f"{x:.2f}" for x in got[(k, n)]["startup"])
                                         for k in names) for n in sizes) + ".",
             "The baselines' `list` is in-process (their jobs + json.dumps), ours over HTTP."]
    return common.table("4. Idle and scale", list(PEERS), rows, notes)
