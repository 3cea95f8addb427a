"""Notifications off the run path: runs of a task that notifies a slow receiver against runs
of the same task without ``notify``, on one server.

    .venv/bin/python -m bench.notify [--runs N] [--quick]

Two command tasks run ``true`` with ``overlap: allow``; one has ``notify`` (on success) to a
receiver on 127.0.0.1 that answers each POST after 2 s, the other has none. Each is run N
times by ``run`` requests sent back to back, alternating in blocks of 10; the figures are,
per task, the ``run`` request's round trip, the run's start lateness (``lateness_ms``) and
its duration, read from the run records, plus the wall time until every run of the task
had finished. The target: the notifying task's figures are the quiet task's, within noise
(ratio near 1), although its notices queue up for seconds behind the slow receiver.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import common
from .common import median, pct

DELAY = 2.0


class _Slow(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(DELAY)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _policy(workspace: Path, url: str) -> str:
    return (common.POLICY.format(workspace=workspace)
            + f"notifications:\n  allowed_urls: [{url}]\n")


def measure(base: Path, runs: int) -> str:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_port}/hooks"
    base.mkdir(parents=True, exist_ok=True)
    srv = common.Server(base, workers=2, policy_text=_policy(base / "workspace", url))
    timings: dict[str, list[float]] = {"quiet": [], "notify": []}
    try:
        srv.start()
        for task_id, extra in (("quiet", {}), ("notify", {"notify": {"url": url,
                                                                     "on": ["success"]}})):
            srv.post("create", task_id=task_id, type="command", interval="every 1 hour",
                     command="true", overlap="allow", **extra)
        ids: dict[str, list[int]] = {"quiet": [], "notify": []}
        began = {"quiet": 0.0, "notify": 0.0}
        for block in range(0, runs, 10):
            for task_id in ("quiet", "notify"):
                began[task_id] -= time.monotonic()
                for _ in range(min(10, runs - block)):
                    sent = time.monotonic()
                    ids[task_id].append(srv.post("run", task_id=task_id)["run_id"])
                    timings[task_id].append((time.monotonic() - sent) * 1000)
                for run_id in ids[task_id][-10:]:
                    srv.wait_run(run_id, timeout=60)
                began[task_id] += time.monotonic()
        records = {task_id: [srv.post("output", run_id=i)["run"] for i in ids[task_id]]
                   for task_id in ids}
        delivered = sum(1 for r in records["notify"] if r["notification"])
    finally:
        common.stop_server(srv)
        receiver.shutdown()
        receiver.server_close()

    def col(task_id: str, key: str) -> list[float]:
        return [r[key] for r in records[task_id] if r[key] is not None]

    rows = [
        ("`run` round trip, median ms (lower is better)", median(timings["notify"]),
         median(timings["quiet"])),
        ("`run` round trip, p95 ms", pct(timings["notify"], 95), pct(timings["quiet"], 95)),
        ("lateness, median ms", median(col("notify", "lateness_ms")),
         median(col("quiet", "lateness_ms"))),
        ("duration, median ms", median(col("notify", "duration_ms")),
         median(col("quiet", "duration_ms"))),
        (f"wall time of {runs} runs in blocks of 10, s", began["notify"], began["quiet"]),
    ]
    return common.table("Runs with a notification to a slow receiver", ["without notify"], rows,
                        [f"receiver answers each POST after {DELAY:g} s; {delivered} of "
                         f"{runs} notices had been delivered when the last run ended",
                         "ratio = with notify ÷ without, measured in the same run"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 runs per task")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        print(measure(Path(tmp), 20 if args.quick else args.runs))


if __name__ == "__main__":
    main()
