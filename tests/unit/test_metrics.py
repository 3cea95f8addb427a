"""``GET /metrics`` in-process: the app from ``create_app`` with a fake executor (runs end
when a test says so), scraped with Flask's test client and read back with
prometheus-client's own parser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.app import EXTENSION, close_app, create_app
from api.config import ServerConfig
from api.metrics import DURATION_BUCKETS, LATENESS_BUCKETS, RunMetrics
from policies import TaskType
from sandbox.types import Outcome, RunResult
from scheduler.launcher import FinishedRun
from scheduler.models import RunStatus, TaskSpec, Trigger

TOKEN = "metrics-token"
NAMES = {
    "task_scheduler_runs", "task_scheduler_run_duration_seconds",
    "task_scheduler_run_lateness_seconds", "task_scheduler_task_next_run_timestamp_seconds",
    "task_scheduler_task_last_success_timestamp_seconds", "task_scheduler_workers",
    "task_scheduler_runs_active", "task_scheduler_runs_queued",
    "task_scheduler_policy_reload_errors", "task_scheduler_http_requests",
}
POLICY = """\
version: 1
allowed_directories: [{workspace}]
rate_limits:
  max_tasks: 20000
  runs_per_minute: 100000
  requests_per_minute: 1000000
"""


class Executor:
    """Runs nothing: records what it is given; a test ends each run through ``finish``."""

    size = 3

    def __init__(self):
        self.submitted = []
        self.on_started = self.on_result = None

    def open(self, on_started, on_result, on_discarded):
        self.on_started, self.on_result = on_started, on_result

    def submit(self, request):
        self.submitted.append(request)

    def discard(self, run_id):
        pass

    def revise(self, policy):
        pass

    def alive(self):
        return 2

    def busy(self):
        return 1

    def queued(self):
        return 4

    def isolation(self):
        return {"level": "process", "layers": ["process-group"]}

    def close(self, grace=10.0):
        pass

    def finish(self, run_id: int, status: Outcome, *, duration: float = 0.5) -> None:
        started = time.time()
        self.on_started(run_id, started, 4242)
        self.on_result(RunResult(run_id=run_id, status=status, started_at=started,
                                 finished_at=started + duration, exit_code=0))


def make_app(base: Path, **config):
    workspace = base / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    policy = base / "allowed.yaml"
    if not policy.exists():
        policy.write_text(POLICY.format(workspace=workspace))
    executor = Executor()
    app = create_app(ServerConfig(policy=policy, data_dir=base / "data", **config),
                     executor=executor)
    return app, executor


@pytest.fixture
def app(tmp_path):
    app, executor = make_app(tmp_path)
    app.executor = executor
    yield app
    close_app(app, grace=0)


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def samples(families: dict, name: str, sample_name: str | None = None) -> dict:
    """``{frozenset(labels): value}`` of one family's samples (by default its main ones)."""
    return {frozenset(s.labels.items()): s.value for s in families[name].samples
            if s.name == (sample_name or name)}


def create(app, task_id: str, interval: str = "every 10 minutes") -> None:
    app.extensions[EXTENSION].scheduler.create(
        task_id, TaskSpec(task_type=TaskType.COMMAND, interval=interval, command="true"))


def run(app, task_id: str, status: Outcome, **timing) -> None:
    run_id = app.extensions[EXTENSION].scheduler.run_now(task_id)
    app.executor.finish(run_id, status, **timing)


def test_exactly_the_documented_names_with_every_outcome_counted(app):
    client = app.test_client()
    create(app, "ok")
    create(app, "bad")
    run(app, "ok", Outcome.SUCCEEDED, duration=0.02)
    run(app, "ok", Outcome.SUCCEEDED, duration=42.0)
    for outcome in (Outcome.FAILED, Outcome.TIMED_OUT, Outcome.KILLED, Outcome.REJECTED,
                    Outcome.INTERRUPTED, Outcome.ERROR):
        run(app, "bad", outcome)

    families = scrape(client)

    assert set(families) == NAMES
    runs = samples(families, "task_scheduler_runs", "task_scheduler_runs_total")
    assert runs[frozenset({("task_id", "ok"), ("status", "succeeded")})] == 2
    for status in ("failed", "timed_out", "killed", "rejected", "interrupted", "error"):
        assert runs[frozenset({("task_id", "bad"), ("status", status)})] == 1, status
    assert len(runs) == 7
    durations = samples(families, "task_scheduler_run_duration_seconds",
                        "task_scheduler_run_duration_seconds_bucket")
    assert durations[frozenset({("le", "0.025")})] == 1
    assert durations[frozenset({("le", "60.0")})] == 8
    assert samples(families, "task_scheduler_run_lateness_seconds",
                   "task_scheduler_run_lateness_seconds_count")[frozenset()] == 8
    last = samples(families, "task_scheduler_task_last_success_timestamp_seconds")
    assert set(last) == {frozenset({("task_id", "ok")})}
    assert abs(last[frozenset({("task_id", "ok")})] - (time.time() + 42)) < 30
    next_run = samples(families, "task_scheduler_task_next_run_timestamp_seconds")
    assert set(next_run) == {frozenset({("task_id", "ok")}), frozenset({("task_id", "bad")})}
    assert all(time.time() < due <= time.time() + 600 for due in next_run.values())
    workers = samples(families, "task_scheduler_workers")
    assert workers == {frozenset({("state", "alive")}): 2,
                       frozenset({("state", "configured")}): 3}
    assert samples(families, "task_scheduler_runs_active")[frozenset()] == 1
    assert samples(families, "task_scheduler_runs_queued")[frozenset()] == 4
    assert samples(families, "task_scheduler_policy_reload_errors",
                   "task_scheduler_policy_reload_errors_total")[frozenset()] == 0


def test_buckets_fit_lateness_in_milliseconds_and_durations_up_to_an_hour():
    assert LATENESS_BUCKETS[0] == 0.0005 and LATENESS_BUCKETS[-1] == 10.0
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == 3600.0
    assert list(LATENESS_BUCKETS) == sorted(LATENESS_BUCKETS)
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_skipped_slots_count_without_duration_or_lateness():
    metrics = RunMetrics(CollectorRegistry())
    metrics.record(FinishedRun(7, "t", Trigger.SCHEDULE, RunStatus.SKIPPED, time.time()))
    counts, last_success = metrics.snapshot({"t"})
    assert counts == {("t", "skipped"): 1} and last_success == {}
    assert metrics.duration._sum.get() == 0 and metrics.lateness._sum.get() == 0


def test_a_task_missing_from_one_scrape_keeps_its_counts_until_missing_twice():
    metrics = RunMetrics(CollectorRegistry())
    metrics.record(FinishedRun(1, "new", Trigger.MANUAL, RunStatus.SUCCEEDED, 1.0, 1.0, 2.0))
    assert metrics.snapshot({"other"}) == ({}, {})  # created after the scrape listed tasks
    assert metrics.snapshot({"new"}) == ({("new", "succeeded"): 1}, {"new": 2.0})
    metrics.snapshot(set())  # removed
    metrics.snapshot(set())
    assert metrics.snapshot({"new"}) == ({}, {})  # forgotten: a new task of that name starts at 0


def test_a_removed_task_leaves_no_series(app):
    client = app.test_client()
    create(app, "gone")
    create(app, "kept")
    run(app, "gone", Outcome.SUCCEEDED)
    run(app, "kept", Outcome.FAILED)
    assert "gone" in client.get("/metrics").get_data(as_text=True)

    app.extensions[EXTENSION].scheduler.remove("gone")

    text = client.get("/metrics").get_data(as_text=True)
    assert 'task_id="gone"' not in text and 'task_id="kept"' in text


def test_a_paused_task_has_no_next_run(app):
    create(app, "p")
    app.extensions[EXTENSION].scheduler.set_paused("p", True)
    families = scrape(app.test_client())
    assert samples(families, "task_scheduler_task_next_run_timestamp_seconds") == {}


def test_last_success_survives_a_restart(tmp_path):
    app, executor = make_app(tmp_path)
    app.executor = executor
    try:
        create(app, "t")
        run(app, "t", Outcome.SUCCEEDED)
        before = samples(scrape(app.test_client()),
                         "task_scheduler_task_last_success_timestamp_seconds")
    finally:
        close_app(app, grace=0)
    again, _ = make_app(tmp_path)
    try:
        after = samples(scrape(again.test_client()),
                        "task_scheduler_task_last_success_timestamp_seconds")
    finally:
        close_app(again, grace=0)
    assert after == before and len(after) == 1


def test_http_responses_are_counted_by_code_only(app):
    client = app.test_client()
    client.get("/health")
    client.get("/no/such/path")
    client.post("/schedule", json={"action": "list"})
    client.post("/schedule", json={"action": "nope"})
    codes = samples(scrape(client), "task_scheduler_http_requests",
                    "task_scheduler_http_requests_total")
    assert codes[frozenset({("code", "200")})] >= 2
    assert codes[frozenset({("code", "404")})] == 1
    assert codes[frozenset({("code", "400")})] == 1


def test_policy_reload_errors_are_counted(app):
    ctx = app.extensions[EXTENSION]
    ctx.policy.path.write_text("version: 1\nnot_a_key: true\n")
    ctx.policy.refresh()
    families = scrape(app.test_client())
    assert samples(families, "task_scheduler_policy_reload_errors",
                   "task_scheduler_policy_reload_errors_total")[frozenset()] == 1


def test_metrics_need_the_token_and_a_local_host(tmp_path):
    app, _ = make_app(tmp_path, token=TOKEN)
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}",
                                               "Host": "attacker.example"}).status_code == 403
        families = scrape(client, Authorization=f"Bearer {TOKEN}")
        codes = samples(families, "task_scheduler_http_requests",
                        "task_scheduler_http_requests_total")
        assert codes[frozenset({("code", "401")})] == 2
        assert codes[frozenset({("code", "403")})] == 1
    finally:
        close_app(app, grace=0)


def test_two_apps_in_one_process_keep_their_own_series(tmp_path):
    one, one_executor = make_app(tmp_path / "one")
    two, _ = make_app(tmp_path / "two")
    one.executor = one_executor
    try:
        create(one, "only-in-one")
        run(one, "only-in-one", Outcome.SUCCEEDED)
        assert "only-in-one" in one.test_client().get("/metrics").get_data(as_text=True)
        families = scrape(two.test_client())
        assert samples(families, "task_scheduler_runs", "task_scheduler_runs_total") == {}
        assert samples(families, "task_scheduler_run_duration_seconds",
                       "task_scheduler_run_duration_seconds_count")[frozenset()] == 0
    finally:
        close_app(one, grace=0)
        close_app(two, grace=0)


@pytest.mark.slow
def test_a_scrape_with_10k_tasks_stays_cheap(app):
    """10k tasks (next run, last success) and 10k run series: about 2 MB of text, a few
    hundred milliseconds on a small machine; the bound leaves room for a loaded one."""
    count = 10_000
    for i in range(count):
        create(app, f"task-{i:05d}")
    for i in range(count):
        run(app, f"task-{i:05d}", Outcome.SUCCEEDED if i % 3 else Outcome.FAILED)
    client = app.test_client()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        response = client.get("/metrics")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert len(samples(families, "task_scheduler_task_next_run_timestamp_seconds")) == count
    assert len(samples(families, "task_scheduler_runs", "task_scheduler_runs_total")) == count
    print(f"\nscrape of {count} tasks: best {min(timings) * 1000:.0f} ms, "
          f"{len(response.data) / 1e6:.1f} MB")
    assert min(timings) < 3.0
