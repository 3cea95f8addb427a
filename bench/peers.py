"""The baselines, each run as its own process by the benchmarks (``python -m bench.peers``).

    lateness-schedule PLAN OUT   the `schedule` library's usual run_pending(); sleep(1) loop
    lateness-schedule-idle PLAN OUT
                                 the same, sleeping schedule.idle_seconds() instead of 1 s
    lateness-aps PLAN OUT        APScheduler 3 BackgroundScheduler (misfire grace off)
    ontime-aps PLAN OUT THREADS  the same with a pool of THREADS threads, each job reading its
                                 own clock (the command's output) until the plan's last slot
    idle-aps N SEED              APScheduler 3 holding N hourly interval jobs (MemoryJobStore);
                                 prints "ready", then answers "list" lines on stdin until EOF
    idle-schedule N SEED LOOP    the `schedule` library holding N hourly jobs, its loop
                                 (LOOP: sleep1 or idle) in the main thread; "ready" and
                                 "list" as idle-aps (answered by a thread reading stdin)

A lateness PLAN is JSON: {"tasks": [{"id", "interval", "first"}], "end", "command"}: each
task is due at first + k * interval. Jobs launch the same `/bin/sh -c COMMAND` the server
runs; a job's start time is taken right after Popen returned, as the server's worker does.
OUT receives the records: [task_id, due, started or null, status]. An on-time PLAN also has
"last", the last slot of every task, and its command prints the instant it started (the
job's own clock): that instant is "started".
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

MAX_PAUSE = 3600.0


def _launch(command: str) -> float:
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL)
    started = time.time()
    proc.wait()
    return started


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


def _schedule_loop(loop: str, deadline: float) -> None:
    """The `schedule` library's documented loops until ``deadline``: ``sleep1`` is
    run_pending(); sleep(1), ``idle`` sleeps until the next job is due (idle_seconds)."""
    import schedule

    while time.time() < deadline:
        schedule.run_pending()
        if loop == "sleep1":
            time.sleep(1)
            continue
        idle = schedule.idle_seconds()
        # Capped by the deadline, so that the process ends, and by MAX_PAUSE (no jobs at
        # all, or an endless deadline), since sleep() needs a finite time.
        pause = min(MAX_PAUSE if idle is None else idle, deadline - time.time(), MAX_PAUSE)
        if pause > 0:
            time.sleep(pause)


def lateness_schedule(plan: dict, out: str, loop: str = "sleep1") -> None:
    import schedule

    records, command = [], plan["command"]

    def fire(task_id: str, job) -> None:
        due = job.next_run.timestamp()  # still this run's due time while the job runs
        records.append([task_id, due, _launch(command), "succeeded"])

    for task in plan["tasks"]:
        job = schedule.every(task["interval"]).seconds.do(lambda: None)
        job.job_func = functools.partial(fire, task["id"], job)
        job.next_run = datetime.fromtimestamp(task["first"])  # naive local, as schedule keeps it
    _schedule_loop(loop, plan["end"] + 1.5)
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


def _stash_run_times() -> _RunTimeStash:
    """Install the filter on the default executor's logger (where "Running job" is logged)."""
    log = logging.getLogger("apscheduler.executors.default")
    log.setLevel(logging.INFO)
    stash = _RunTimeStash()
    log.addFilter(stash)
    return stash


def _aps(plan: dict, out: str, job: Callable[[str], tuple[float | None, str]], *,
         threads: int = 10, last: float | None = None, until: float) -> None:
    """Every task of the plan as an APScheduler 3 interval job (ending at the slot ``last``
    if given) in a pool of ``threads`` threads, until ``until``; ``job(command)`` runs the
    command and gives the record's started instant and status."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    stash = _stash_run_times()
    records, command, lock = [], plan["command"], threading.Lock()

    def fire(task_id: str) -> None:
        due = stash.local.run_time.timestamp()
        started, status = job(command)
        with lock:
            records.append([task_id, due, started, status])

    def skipped(event) -> None:
        with lock:
            records.extend([event.job_id, t.timestamp(), None, "skipped"]
                           for t in event.scheduled_run_times)

    sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(threads)},
                                job_defaults={"misfire_grace_time": None, "coalesce": True,
                                              "max_instances": 1})
    sched.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
    end_date = datetime.fromtimestamp(last, tz=timezone.utc) if last is not None else None
    for task in plan["tasks"]:
        sched.add_job(fire, "interval", seconds=task["interval"], id=task["id"], args=(task["id"],),
                      start_date=datetime.fromtimestamp(task["first"], tz=timezone.utc),
                      end_date=end_date)
    sched.start()
    _sleep_until(until)
    sched.shutdown(wait=True)  # the pool's queued runs too
    with open(out, "w") as f:
        json.dump(records, f)


def lateness_aps(plan: dict, out: str) -> None:
    """Every task of the plan as an interval job in APScheduler's default pool (10 threads);
    each run records when its process was launched."""
    _aps(plan, out, lambda command: (_launch(command), "succeeded"), until=plan["end"] + 1.0)


def _read_clock(command: str) -> tuple[float | None, str]:
    """Run the job; its output is the instant it started by its own clock (None, and
    ``failed``, if it printed no number)."""
    done = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    try:
        return float(done.stdout), "succeeded"
    except ValueError:
        return None, "failed"


def ontime_aps(plan: dict, out: str, threads: int) -> None:
    """Every task of the plan as an interval job ending at the plan's last slot, in a pool of
    ``threads`` threads; each run records the clock its job printed."""
    _aps(plan, out, _read_clock, threads=threads, last=plan["last"],
         until=plan["last"] + 1.0)


def _noop(command: str) -> None:
    pass


def _first_slots(n: int, seed: int) -> list[float]:
    """The same first slots as bench.common.populate gives our tasks (seconds from now)."""
    rng = random.Random(seed)
    return [rng.uniform(300.0, 3600.0) for _ in range(n)]


def _answer_lists(jobs_as_dicts) -> None:
    """Answer each "list" line on stdin with the time to build the jobs' JSON, until EOF."""
    for line in sys.stdin:
        if line.strip() != "list":
            continue
        began = time.perf_counter()
        jobs = jobs_as_dicts()
        body = json.dumps({"status": "success", "tasks": jobs, "count": len(jobs)})
        print(json.dumps({"ms": (time.perf_counter() - began) * 1000, "bytes": len(body)}),
              flush=True)


def idle_schedule(n: int, seed: int, loop: str) -> None:
    import schedule

    now = time.time()
    for i, offset in enumerate(_first_slots(n, seed)):
        job = schedule.every(1).hours.do(_noop, "true").tag(f"task-{i:06d}")
        job.next_run = datetime.fromtimestamp(now + offset)  # naive local, as schedule keeps it
    print("ready", flush=True)

    def jobs_as_dicts() -> list[dict]:
        return [{"id": next(iter(j.tags)), "interval": f"every {j.interval} {j.unit}",
                 "args": list(j.job_func.args), "next_run": j.next_run.isoformat()}
                for j in schedule.get_jobs()]

    # stdin closing (the benchmark is done) ends the process, whatever the loop is doing.
    reader = threading.Thread(target=lambda: (_answer_lists(jobs_as_dicts), os._exit(0)),
                              daemon=True)
    reader.start()
    _schedule_loop(loop, float("inf"))


def idle_aps(n: int, seed: int) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    now = datetime.now(timezone.utc)
    sched = BackgroundScheduler(job_defaults={"misfire_grace_time": None})
    for i, offset in enumerate(_first_slots(n, seed)):
        sched.add_job(_noop, "interval", hours=1, id=f"task-{i:06d}", args=("true",),
                      start_date=now + timedelta(seconds=offset))
    sched.start()
    print("ready", flush=True)
    # What `list` does: every job as a dict, as JSON.
    _answer_lists(lambda: [{"id": j.id, "trigger": str(j.trigger), "args": list(j.args),
                            "next_run": j.next_run_time.isoformat() if j.next_run_time else None}
                           for j in sched.get_jobs()])
    sched.shutdown(wait=False)


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "lateness-schedule":
        lateness_schedule(json.load(open(argv[1])), argv[2])
    elif mode == "lateness-schedule-idle":
        lateness_schedule(json.load(open(argv[1])), argv[2], loop="idle")
    elif mode == "lateness-aps":
        lateness_aps(json.load(open(argv[1])), argv[2])
    elif mode == "ontime-aps":
        ontime_aps(json.load(open(argv[1])), argv[2], int(argv[3]))
    elif mode == "idle-aps":
        idle_aps(int(argv[1]), int(argv[2]))
    elif mode == "idle-schedule":
        idle_schedule(int(argv[1]), int(argv[2]), argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
