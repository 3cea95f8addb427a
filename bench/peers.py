"""The baselines, each run as its own process by the benchmarks (``python -m bench.peers``).

    lateness-schedule PLAN OUT   the `schedule` library's usual run_pending(); sleep(1) loop
    lateness-aps PLAN OUT        APScheduler 3 BackgroundScheduler (misfire grace off)
    idle-aps N SEED              APScheduler 3 holding N hourly interval jobs (MemoryJobStore);
                                 prints "ready", then answers "list" lines on stdin until EOF

A lateness PLAN is JSON: {"tasks": [{"id", "interval", "first"}], "end", "command"}: each
task is due at first + k * interval. Jobs launch the same `/bin/sh -c COMMAND` the server
runs; a job's start time is taken right after Popen returned, as the server's worker does.
OUT receives the records: [task_id, due, started or null, status].
"""

from __future__ import annotations

import functools
import json
import logging
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone


def _launch(command: str) -> float:
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL)
    started = time.time()
    proc.wait()
    return started


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


def lateness_schedule(plan: dict, out: str) -> None:
    import schedule

    records, command = [], plan["command"]

    def fire(task_id: str, job) -> None:
        due = job.next_run.timestamp()  # still this run's due time while the job runs
        records.append([task_id, due, _launch(command), "succeeded"])

    for task in plan["tasks"]:
        job = schedule.every(task["interval"]).seconds.do(lambda: None)
        job.job_func = functools.partial(fire, task["id"], job)
        job.next_run = datetime.fromtimestamp(task["first"])  # naive local, as schedule keeps it
    deadline = plan["end"] + 1.5
    while time.time() < deadline:  # the usual loop
        schedule.run_pending()
        time.sleep(1)
    schedule.clear()
    with open(out, "w") as f:
        json.dump(records, f)


class _RunTimeStash(logging.Filter):
    """APScheduler logs 'Running job "%s" (scheduled at %s)' in the executor thread right
    before calling the job: keep that scheduled time for the job, drop the record."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg.startswith("Running job"):
            self.local.run_time = record.args[1]
        return False


def lateness_aps(plan: dict, out: str) -> None:
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES
    from apscheduler.schedulers.background import BackgroundScheduler

    log = logging.getLogger("apscheduler.executors.default")
    log.setLevel(logging.INFO)
    stash = _RunTimeStash()
    log.addFilter(stash)
    records, command, lock = [], plan["command"], threading.Lock()

    def fire(task_id: str) -> None:
        due = stash.local.run_time.timestamp()
        started = _launch(command)
        with lock:
            records.append([task_id, due, started, "succeeded"])

    def skipped(event) -> None:
        with lock:
            records.extend([event.job_id, t.timestamp(), None, "skipped"]
                           for t in event.scheduled_run_times)

    sched = BackgroundScheduler(job_defaults={"misfire_grace_time": None, "coalesce": True,
                                              "max_instances": 1})
    sched.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
    for task in plan["tasks"]:
        sched.add_job(fire, "interval", seconds=task["interval"], id=task["id"], args=(task["id"],),
                      start_date=datetime.fromtimestamp(task["first"], tz=timezone.utc))
    sched.start()
    _sleep_until(plan["end"] + 1.0)
    sched.shutdown(wait=True)
    with open(out, "w") as f:
        json.dump(records, f)


def _noop(command: str) -> None:
    pass


def idle_aps(n: int, seed: int) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    sched = BackgroundScheduler(job_defaults={"misfire_grace_time": None})
    for i in range(n):  # the same first slots as bench.common.populate gives our tasks
        sched.add_job(_noop, "interval", hours=1, id=f"task-{i:06d}", args=("true",),
                      start_date=now + timedelta(seconds=rng.uniform(300.0, 3600.0)))
    sched.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "list":
            continue
        began = time.perf_counter()  # what `list` does: every job as a dict, as JSON
        jobs = [{"id": j.id, "trigger": str(j.trigger), "args": list(j.args),
                 "next_run": j.next_run_time.isoformat() if j.next_run_time else None}
                for j in sched.get_jobs()]
        body = json.dumps({"status": "success", "tasks": jobs, "count": len(jobs)})
        print(json.dumps({"ms": (time.perf_counter() - began) * 1000, "bytes": len(body)}),
              flush=True)
    sched.shutdown(wait=False)


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "lateness-schedule":
        lateness_schedule(json.load(open(argv[1])), argv[2])
    elif mode == "lateness-aps":
        lateness_aps(json.load(open(argv[1])), argv[2])
    elif mode == "idle-aps":
        idle_aps(int(argv[1]), int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
