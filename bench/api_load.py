"""3. API: requests/s and p99 latency of `list` and `create` with 1k and 10k stored tasks,
against a bare Flask endpoint on the same WSGI server (cheroot, same thread count).

The store is filled directly (bench.common.populate: the product's Store, one transaction,
hourly command tasks) before the server starts. Load: wrk (one thread, 16 connections) with
a Lua script for the POST bodies — every `create` a new task id — or, where wrk is absent,
a Python load generator (4 processes × 4 keep-alive connections); the same tool for both
sides. `list` is measured before `create` (which adds tasks); between two loads the
server is given time to finish the requests still queued (its CPU falls under 5 %). Baselines: the bare endpoint
answering a response of the same shape and size (task dicts built in memory), and a tiny
`{"status": "success"}`.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from . import common
from .common import PY, median, pct

CONNECTIONS = 16
THREADS = 8  # our server's default --threads; the bare endpoint gets the same

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local action, prefix, n = "%(action)s", "%(prefix)s", 0
request = function()
  if action == "create" then
    n = n + 1
    return wrk.format(nil, "/schedule", nil, string.format(
      '{"action":"create","task_id":"%%s-%%d","type":"command","interval":"every 1 hour","command":"true"}',
      prefix, n))
  end
  return wrk.format(nil, "/schedule", nil, '{"action":"list"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%%d,"us":%%d,"p99":%%d,"p50":%%d,"errors":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(99), latency:percentile(50),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _body(action: str, prefix: str, n: int) -> bytes:
    if action == "create":
        return json.dumps({"action": "create", "task_id": f"{prefix}-{n}", "type": "command",
                           "interval": "every 1 hour", "command": "true"}).encode()
    return b'{"action":"list"}'


def _py_worker(args) -> tuple[list[float], int]:
    port, action, prefix, seconds, conns = args
    latencies, errors, lock = [], [0], threading.Lock()

    def loop(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        end, n, mine = time.perf_counter() + seconds, 0, []
        while (began := time.perf_counter()) < end:
            n += 1
            conn.request("POST", "/schedule", _body(action, f"{prefix}-{k}", n),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append((time.perf_counter() - began) * 1e6)
            if resp.status != 200:
                errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def load(port: int, action: str, seconds: float) -> dict:
    """req/s, p50/p99 ms and errors of `seconds` of `action` requests."""
    prefix = uuid.uuid4().hex[:8]
    if shutil.which("wrk"):
        script = Path(f"/tmp/bench-{prefix}.lua")
        script.write_text(LUA % {"action": action, "prefix": prefix})
        try:
            out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "30s",
                                  "-s", str(script), f"http://127.0.0.1:{port}/schedule"],
                                 capture_output=True, text=True, timeout=seconds + 60).stdout
        finally:
            script.unlink(missing_ok=True)
        got = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("WRK ")))
        return {"rps": got["requests"] / (got["us"] / 1e6), "p99": got["p99"] / 1000,
                "p50": got["p50"] / 1000, "errors": got["errors"]}
    procs, per = 4, CONNECTIONS // 4
    began = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(_py_worker, [(port, action, f"{prefix}{i}", seconds, per) for i in range(procs)]))
    elapsed = time.perf_counter() - began
    lat = [x for part in parts for x in part[0]]
    return {"rps": len(lat) / elapsed, "p99": pct(lat, 99) / 1000, "p50": pct(lat, 50) / 1000,
            "errors": sum(part[1] for part in parts)}


def tool() -> str:
    return (f"wrk -t1 -c{CONNECTIONS}" if shutil.which("wrk")
            else f"Python load generator, 4 processes × {CONNECTIONS // 4} connections")


@contextmanager
def bare(tasks: int, tiny: bool = False):
    port = common.free_port()
    argv = [PY, "-m", "bench.bare_app", "--port", str(port), "--threads", str(THREADS),
            "--tasks", str(tasks), *(["--tiny"] if tiny else [])]
    with common.child(argv) as proc:
        def up():
            if proc.poll() is not None:
                raise RuntimeError(f"the bare app exited with {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            except OSError:
                return False
        common.wait_until(up, timeout=30, message="the bare app")
        yield port, proc.pid


def run(tmp: Path, quick: bool) -> str:
    sizes, seconds = ((1000,), 1.0) if quick else ((1000, 10000), 5.0)
    res: dict[tuple, dict] = {}
    for n in sizes:
        base = tmp / f"n{n}"
        common.populate(base / "data" / "scheduler.db", n)
        with common.server(base, args=("--threads", str(THREADS))) as srv:
            for action in ("list", "create"):
                print(f"  api: ours, {action}, {n} tasks", flush=True)
                res[("ours", action, n)] = load(srv.port, action, seconds)
                common.settle(srv.proc.pid)
        with bare(n) as (port, pid):
            for action in ("list", "create"):
                print(f"  api: bare (same-size), {action}, {n} tasks", flush=True)
                res[("same", action, n)] = load(port, action, seconds)
                common.settle(pid)
    with bare(0, tiny=True) as (port, pid):
        for action in ("list", "create"):
            print(f"  api: bare (tiny), {action}", flush=True)
            res[("tiny", action)] = load(port, action, seconds)
            common.settle(pid)
    rows = []
    for action in ("list", "create"):
        for n in sizes:
            ours, same, tiny = res[("ours", action, n)], res[("same", action, n)], res[("tiny", action)]
            rows.append((f"`{action}`, {n:,} tasks: req/s (higher is better)", ours["rps"], same["rps"], tiny["rps"]))
            rows.append((f"`{action}`, {n:,} tasks: p99 ms (lower is better)", ours["p99"], same["p99"], tiny["p99"]))
    errors = {f"{k[0]}/{'/'.join(map(str, k[1:]))}": v["errors"] for k, v in res.items() if v["errors"]}
    notes = [f"Load: {tool()}, {seconds:g} s per cell, on the same 2 cores as the server; "
             f"{THREADS} cheroot threads on both sides; store filled directly (product Store).",
             "p50 ms, ours / same-size: " + "; ".join(
                 f"{a} {n:,}: {res[('ours', a, n)]['p50']:.1f} / {res[('same', a, n)]['p50']:.1f}"
                 for a in ("list", "create") for n in sizes) + ".",
             f"non-2xx or socket errors: {errors or 'none'}."]
    return common.table("3. API (`POST /schedule`)",
                        ["bare Flask, same-size response", "bare Flask, tiny response"], rows, notes)
