"""``GET /metrics``: the scheduler in the Prometheus text format (prometheus-client).

Each app has its own :class:`~prometheus_client.CollectorRegistry`, never the library's
global one, so several apps in one process (the tests) do not share series.

Two kinds of series:

* read from the scheduler at scrape time by :class:`SchedulerCollector` (next run and last
  success per task, workers, runs active and queued, policy reload errors, and the run
  counts per task): nothing is updated when a task changes, and a removed task's series
  disappear with it, so ``task_id`` labels stay bounded by the policy's ``max_tasks``;
* updated as things happen: the run duration and lateness histograms (by :class:`RunMetrics`,
  a listener of the scheduler's finished runs) and the HTTP responses by status code.

The route sits behind the edge like every path: Host/Origin guards, then the token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Flask, Response, current_app
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.source import PolicySource
from scheduler.launcher import FinishedRun
from scheduler.models import RunStatus
from scheduler.service import Scheduler

EXTENSION = "task_scheduler_metrics"
PREFIX = "task_scheduler"

# Lateness is the scheduler's own overhead: sub-millisecond when all is well, seconds
# when the pool is saturated or the machine was suspended.
LATENESS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)
# Durations are the jobs' own: from a quick check to the policy's longest timeouts.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0, 1800.0, 3600.0)


class RunMetrics:
    """What finished runs leave behind: counts per (task, status), each task's last
    success, and the duration and lateness histograms. Fed by the scheduler's listener."""

    def __init__(self, registry: CollectorRegistry):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._last_success: dict[str, float] = {}
        self._missing: set[str] = set()
        self._seeded = False
        self.duration = Histogram(f"{PREFIX}_run_duration_seconds",
                                  "Wall-clock time from a run's process start to its end.",
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.lateness = Histogram(f"{PREFIX}_run_lateness_seconds",
                                  "Time from a run's due time to its process having started.",
                                  buckets=LATENESS_BUCKETS, registry=registry)

    def record(self, run: FinishedRun) -> None:
        """The scheduler's run listener: count one finished run."""
        with self._lock:
            key = (run.task_id, run.status.value)
            self._counts[key] = self._counts.get(key, 0) + 1
            if run.status is RunStatus.SUCCEEDED and run.finished_at is not None:
                self._note_success(run.task_id, run.finished_at)
        if run.duration is not None:
            self.duration.observe(run.duration)
        if run.lateness is not None:
            self.lateness.observe(run.lateness)

    def seed(self, last_success: dict[str, float]) -> None:
        """Merge last successes recorded before this process (read once, at first scrape)."""
        with self._lock:
            for task_id, finished in last_success.items():
                self._note_success(task_id, finished)
            self._seeded = True

    @property
    def seeded(self) -> bool:
        return self._seeded

    def snapshot(self, task_ids: set[str]) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
        """Counts and last successes of the tasks in ``task_ids`` (the tasks that exist).

        The others are not shown, and are forgotten once they were missing from two scrapes
        in a row: a task created (and run) while the scrape was listing the tasks is missing
        from that one list, but keeps its counts for the next scrape."""
        with self._lock:
            missing = {task_id for task_id, _ in self._counts} | set(self._last_success)
            missing -= task_ids
            gone = missing & self._missing
            self._missing = missing - gone
            if gone:
                self._counts = {k: v for k, v in self._counts.items() if k[0] not in gone}
                self._last_success = {k: v for k, v in self._last_success.items()
                                      if k not in gone}
            return ({k: v for k, v in self._counts.items() if k[0] in task_ids},
                    {k: v for k, v in self._last_success.items() if k in task_ids})

    def _note_success(self, task_id: str, finished: float) -> None:
        if finished > self._last_success.get(task_id, 0.0):
            self._last_success[task_id] = finished


class SchedulerCollector(Collector):
    """The gauges and per-task counters, read from the scheduler at each scrape."""

    def __init__(self, scheduler: Scheduler, policy: PolicySource, runs: RunMetrics):
        self._scheduler = scheduler
        self._policy = policy
        self._runs = runs

    def collect(self) -> Iterator[Metric]:
        scheduler = self._scheduler
        if not self._runs.seeded:
            self._runs.seed(scheduler.store.last_finished(RunStatus.SUCCEEDED))
        tasks = scheduler.tasks()
        next_run = GaugeMetricFamily(f"{PREFIX}_task_next_run_timestamp_seconds",
                                     "When the task runs next (Unix time); absent when it "
                                     "will not run again.", labels=["task_id"])
        for task in tasks:
            due = scheduler.display_next_run(task)
            if due is not None and not task.paused:
                next_run.add_metric([task.task_id], due)
        yield next_run

        counts, last_success = self._runs.snapshot({task.task_id for task in tasks})
        success = GaugeMetricFamily(f"{PREFIX}_task_last_success_timestamp_seconds",
                                    "When the task's latest successful run finished (Unix time).",
                                    labels=["task_id"])
        for task_id, finished in last_success.items():
            success.add_metric([task_id], finished)
        yield success
        runs = CounterMetricFamily(f"{PREFIX}_runs", "Runs that reached a final status since "
                                   "the server started, by task and status.",
                                   labels=["task_id", "status"])
        for (task_id, status), count in counts.items():
            runs.add_metric([task_id, status], count)
        yield runs

        status = scheduler.status()
        workers = GaugeMetricFamily(f"{PREFIX}_workers", "Worker processes: alive now, and "
                                    "configured.", labels=["state"])
        workers.add_metric(["alive"], status.workers_alive)
        workers.add_metric(["configured"], status.workers_configured)
        yield workers
        yield GaugeMetricFamily(f"{PREFIX}_runs_active", "Runs whose process is running now.",
                                value=status.runs_active)
        yield GaugeMetricFamily(f"{PREFIX}_runs_queued", "Runs handed to the pool that wait "
                                "for their start: for a worker, or prepared ahead of their "
                                "slot.", value=status.runs_queued)
        yield CounterMetricFamily(f"{PREFIX}_policy_reload_errors",
                                  "Policy file changes that were not applied because the file "
                                  "was invalid.", value=self._policy.reload_errors)


def install(app: Flask, scheduler: Scheduler, policy: PolicySource) -> CollectorRegistry:
    """Give ``app`` its registry, the run listener, the response counter and the route."""
    # No ``*_created`` series beside each counter and histogram: the exposition carries the
    # documented names only. The switch is process-wide; the server has no other registry.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=False)
    runs = RunMetrics(registry)
    scheduler.add_run_listener(runs.record)
    registry.register(SchedulerCollector(scheduler, policy, runs))
    responses = Counter(f"{PREFIX}_http_requests", "HTTP responses by status code.",
                        labelnames=["code"], registry=registry)
    app.extensions[EXTENSION] = registry

    def count_response(response: Response) -> Response:
        # The label is the status code only: method and path would let any client mint
        # new series with made-up paths.
        responses.labels(code=str(response.status_code)).inc()
        return response

    app.after_request(count_response)
    app.add_url_rule("/metrics", "metrics", _scrape, methods=["GET"],
                     provide_automatic_options=False)
    return registry


def _scrape() -> Response:
    registry: CollectorRegistry = current_app.extensions[EXTENSION]
    return Response(generate_latest(registry), mimetype=None,
                    headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
