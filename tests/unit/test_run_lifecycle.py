"""Unit tests of the run lifecycle: retries with back-off, chained runs and the notices a
run's end sends (scheduler.lifecycle, and its use in scheduler.service).

Same set-up as test_service: a real store, the fake executor and a clock that moves only
when told to; the pending retries go to a stub dispatcher that fires only when a test says
so, and notices to a recording notifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import pytest

from policies import LimitExceeded, NotificationRules, UrlNotAllowed
from sandbox.types import Outcome
from scheduler.errors import ChainCycle, ChainTargetNotFound, TaskInChain
from scheduler.lifecycle import MAX_RETRY_DELAY, check_chains, notify_event, retry_delay
from scheduler.models import Notify, NotifyOn, RunStatus, Trigger
from scheduler.notify import signature
from scheduler.store import Store
from tests.unit.test_service import T0, Harness, StubDispatcher, spec


class RecordingNotifier:
    """Stands in for scheduler.notify.Notifier: keeps what it is given."""

    def __init__(self):
        self.notices = []

    def open(self) -> None:
        pass

    def close(self, timeout: float = 2.0) -> None:
        pass

    def submit(self, notice) -> bool:
        self.notices.append(notice)
        return True


class LifeHarness(Harness):
    """A Harness whose pending retries and notices stay where a test can see them."""

    def __init__(self, base, **kwargs):
        self.retries = StubDispatcher()
        self.notifier = RecordingNotifier()
        super().__init__(base, scheduler_options=dict(retry_dispatcher=self.retries,
                                                      notifier=self.notifier), **kwargs)
        self.policy_value = dataclasses.replace(
            self.policy_value, notifications=NotificationRules(
                allowed_urls=("http://127.0.0.1:9/hooks",)))

    def run(self, task_id: str) -> int:
        return self.sched.run_now(task_id)

    def finish(self, run_id: int, status: Outcome = Outcome.FAILED, *, after: float = 1.0):
        started = self.clock.now
        self.executor.finish(run_id, status, started_at=started,
                             finished_at=self.clock.advance(after),
                             exit_code=0 if status is Outcome.SUCCEEDED else 1)

    def fire_retry(self, key: str) -> None:
        """Fire a pending retry at its due time, as the retry dispatcher would."""
        due = self.retries.due_times.pop(key)
        self.clock.now = max(self.clock.now, due)
        self.retries.fire(key, due)


@pytest.fixture
def life(tmp_path):
    made = []

    def factory(**kwargs) -> LifeHarness:
        harness = LifeHarness(tmp_path, **kwargs)
        made.append(harness)
        return harness.open()

    yield factory
    for harness in made:
        harness.close()


@pytest.fixture
def h(life) -> LifeHarness:
    return life()


# --- retry timing ------------------------------------------------------------------------

def test_retry_delay_doubles_and_is_capped_at_an_hour():
    assert [retry_delay(10, k) for k in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(1000, 3) == MAX_RETRY_DELAY == 3600
    assert retry_delay(0.5, 10_000) == 3600


def test_a_failed_run_is_retried_with_doubling_delays_then_given_up(h):
    h.create("t", retries=2, retry_delay=10.0)
    first = h.run("t")
    h.finish(first, after=2.0)
    assert h.retries.due_times == {str(first): T0 + 2.0 + 10.0}
    assert h.store.pending_retries() == [(first, "t", 2, T0 + 12.0)]

    h.fire_retry(str(first))
    second = h.executor.ids[-1]
    h.finish(second, after=1.0)
    assert h.retries.due_times == {str(first): T0 + 13.0 + 20.0}

    h.fire_retry(str(first))
    third = h.executor.ids[-1]
    h.finish(third, Outcome.TIMED_OUT)
    assert h.retries.due_times == {}
    assert h.store.pending_retries() == []
    runs = h.runs("t")
    assert [(r.trigger, r.attempt, r.retry_of) for r in runs] == [
        (Trigger.MANUAL, 1, None), (Trigger.RETRY, 2, first), (Trigger.RETRY, 3, first)]
    assert [r.scheduled_for for r in runs[1:]] == [T0 + 12.0, T0 + 33.0]


def test_a_lowered_policy_ceiling_bounds_the_retries_of_existing_tasks(h):
    h.create("t", retries=2, retry_delay=10.0)
    h.policy_value = dataclasses.replace(
        h.policy_value, limits=dataclasses.replace(h.policy_value.limits, max_retries=0))
    first = h.run("t")
    h.finish(first, after=2.0)
    assert h.retries.due_times == {} and h.store.pending_retries() == []


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.TIMED_OUT, Outcome.ERROR,
                                     Outcome.INTERRUPTED])
def test_each_failing_outcome_is_retried(h, outcome):
    h.create("t", retries=1)
    run_id = h.run("t")
    h.finish(run_id, outcome)
    assert str(run_id) in h.retries.due_times


@pytest.mark.parametrize("outcome", [Outcome.SUCCEEDED, Outcome.KILLED, Outcome.REJECTED])
def test_other_outcomes_are_not_retried(h, outcome):
    h.create("t", retries=3)
    h.finish(h.run("t"), outcome)
    assert h.retries.due_times == {} and h.store.pending_retries() == []


def test_a_task_without_retries_is_not_retried(h):
    h.create("t")
    h.finish(h.run("t"))
    assert h.retries.due_times == {}


def test_retries_do_not_count_towards_max_runs(h):
    h.create("t", retries=1, max_runs=1)
    slot, _ = h.fire("t")
    first = h.executor.ids[-1]
    h.finish(first)
    h.fire_retry(str(first))
    assert h.sched.task("t").runs_fired == 1
    assert h.runs("t")[-1].trigger is Trigger.RETRY


def test_pausing_or_removing_the_task_cancels_its_pending_retries(h):
    h.create("p", retries=2)
    h.create("r", retries=2)
    h.finish(h.run("p"))
    h.finish(h.run("r"))
    assert len(h.store.pending_retries()) == 2
    h.sched.set_paused("p", True)
    assert [row[1] for row in h.store.pending_retries()] == ["r"]
    h.sched.remove("r")
    assert h.store.pending_retries() == [] and h.retries.due_times == {}


def test_a_retry_that_falls_due_while_the_task_is_active_obeys_overlap_skip(h):
    h.create("t", retries=1)
    first = h.run("t")
    h.finish(first)
    h.run("t")  # active when the retry falls due
    h.fire_retry(str(first))
    retry = h.runs("t")[-1]
    assert (retry.trigger, retry.status, retry.attempt) == (Trigger.RETRY, RunStatus.SKIPPED, 2)
    assert "overlap" in retry.reason


def test_a_retry_over_runs_per_minute_is_skipped(life):
    h = life(runs_per_minute=1)
    h.create("t", retries=1)
    first = h.run("t")
    h.finish(first, after=1.0)
    h.fire_retry(str(first))  # due 11 s after the first run: still inside the minute
    retry = h.runs("t")[-1]
    assert retry.status is RunStatus.SKIPPED and "rate limit" in retry.reason


def test_a_pending_retry_survives_a_restart_and_runs_once(life):
    h = life()
    h.create("t", retries=1, retry_delay=30.0)
    first = h.run("t")
    h.finish(first)
    h.crash()
    again = life()
    assert again.retries.due_times == {str(first): T0 + 31.0}
    again.fire_retry(str(first))
    again.retries.fire(str(first), T0 + 31.0)  # a repeated fire launches nothing twice
    assert [(r.trigger, r.attempt) for r in again.runs("t")] == [
        (Trigger.MANUAL, 1), (Trigger.RETRY, 2)]


def test_a_run_the_last_process_left_unfinished_is_retried(life):
    h = life()
    h.create("t", retries=1, retry_delay=5.0)
    h.create("plain")
    first = h.run("t")
    h.run("plain")
    h.crash()
    again = life()
    assert again.store.get_run(first).status is RunStatus.INTERRUPTED
    assert again.retries.due_times == {str(first): T0 + 5.0}


def test_retries_above_the_policy_ceiling_are_refused(h):
    with pytest.raises(LimitExceeded) as info:
        h.create("t", retries=4)
    assert info.value.field == "retries"


# --- chaining ----------------------------------------------------------------------------

def test_a_run_starts_its_on_success_or_on_failure_tasks(h):
    h.create("ok")
    h.create("bad")
    h.create("a", on_success=("ok",), on_failure=("bad",))
    first = h.run("a")
    h.finish(first, Outcome.SUCCEEDED)
    [chained] = h.runs("ok")
    assert (chained.trigger, chained.parent_run_id) == (Trigger.CHAIN, first)
    second = h.run("a")
    h.finish(second, Outcome.FAILED)
    [chained] = h.runs("bad")
    assert chained.parent_run_id == second


def test_on_failure_waits_for_the_last_retry(h):
    h.create("bad")
    h.create("a", retries=1, on_failure=("bad",))
    first = h.run("a")
    h.finish(first)
    assert h.runs("bad") == []
    h.fire_retry(str(first))
    retry = h.executor.ids[-1]
    h.finish(retry)
    assert [r.parent_run_id for r in h.runs("bad")] == [retry]


def test_a_chained_run_counts_against_runs_per_minute(life):
    h = life(runs_per_minute=1)
    h.create("b")
    h.create("a", on_success=("b",))
    h.finish(h.run("a"), Outcome.SUCCEEDED)
    [chained] = h.runs("b")
    assert chained.status is RunStatus.SKIPPED and "rate limit" in chained.reason


def test_a_paused_task_takes_no_chained_run(h):
    h.create("b")
    h.create("a", on_success=("b",))
    h.sched.set_paused("b", True)
    h.finish(h.run("a"), Outcome.SUCCEEDED)
    [chained] = h.runs("b")
    assert chained.status is RunStatus.SKIPPED and "paused" in chained.reason


def test_chain_targets_must_exist(h):
    with pytest.raises(ChainTargetNotFound) as info:
        h.create("a", on_failure=("nobody",))
    assert (info.value.code, info.value.field) == ("task_not_found", "on_failure")


@pytest.mark.parametrize("edges", [
    {"a": ("a",)},
    {"b": ("a",), "a": ("b",)},
    {"c": ("a",), "b": ("c",), "a": ("b",)},
])
def test_a_chain_that_loops_is_refused_on_create_or_update(h, edges):
    *first, (last_id, last_targets) = list(edges.items())
    for task_id in edges:
        h.create(task_id)
    for task_id, targets in first:
        h.sched.update(task_id, {"on_success": targets})
    with pytest.raises(ChainCycle) as info:
        h.sched.update(last_id, {"on_failure": last_targets})
    assert (info.value.code, info.value.field) == ("chain_cycle", "on_failure")
    with pytest.raises(ChainCycle):
        h.create("new", on_success=("new",))


def test_check_chains_names_the_loop():
    edges = {"b": ("c",), "c": ("a",), "d": ()}
    with pytest.raises(ChainCycle, match="a → b → c → a"):
        check_chains("a", spec(on_success=("d", "b")), edges)
    check_chains("a", spec(on_success=("d",), on_failure=("b",)), {"b": ("c",), "c": (), "d": ()})


def test_a_task_others_chain_to_cannot_be_removed(h):
    h.create("b")
    h.create("a", on_success=("b",))
    with pytest.raises(TaskInChain, match="'a'"):
        h.sched.remove("b")
    h.sched.update("a", {"on_success": ()})
    h.sched.remove("b")


# --- notifications -----------------------------------------------------------------------

def test_notify_events():
    F, S, C = NotifyOn.FAILURE, NotifyOn.SUCCESS, NotifyOn.CHANGE
    assert notify_event([F], RunStatus.FAILED, None) == "failure"
    assert notify_event([F], RunStatus.KILLED, RunStatus.KILLED) == "failure"
    assert notify_event([F], RunStatus.SUCCEEDED, RunStatus.FAILED) is None
    assert notify_event([F], RunStatus.SKIPPED, None) is None
    assert notify_event([S], RunStatus.SUCCEEDED, None) == "success"
    assert notify_event([C], RunStatus.SUCCEEDED, RunStatus.FAILED) == "change"
    assert notify_event([C], RunStatus.SUCCEEDED, RunStatus.SUCCEEDED) is None
    assert notify_event([C], RunStatus.SUCCEEDED, None) is None
    assert notify_event([C, F], RunStatus.FAILED, RunStatus.SUCCEEDED) == "failure"


def test_a_notice_is_queued_once_the_run_is_final(h):
    url = "http://127.0.0.1:9/hooks/t"
    h.create("t", retries=1, notify=Notify(url=url, on=(NotifyOn.FAILURE,)))
    first = h.run("t")
    h.finish(first)
    assert h.notifier.notices == []  # a retry follows
    h.fire_retry(str(first))
    retry = h.executor.ids[-1]
    h.finish(retry)
    [notice] = h.notifier.notices
    assert (notice.run_id, notice.task_id, notice.event, notice.url) == (retry, "t", "failure", url)


def test_a_notify_url_outside_the_policy_is_refused(h):
    for url in ("http://127.0.0.1:9/other", "http://127.0.0.1:10/hooks",
                "http://169.254.169.254/hooks", "file:///etc/passwd"):
        with pytest.raises(UrlNotAllowed) as info:
            h.create("t", notify=Notify(url=url))
        assert (info.value.code, info.value.field) == ("url_not_allowed", "notify")


def test_notification_rules_compare_urls_by_parts():
    rules = NotificationRules(allowed_urls=("http://hooks.local:8080/ci", "https://h.example/"))
    assert rules.allows("http://hooks.local:8080/ci")
    assert rules.allows("http://HOOKS.local:8080/ci/build?x=1")
    assert rules.allows("https://h.example/anything")
    assert rules.allows("https://h.example:443")
    for url in ("http://hooks.local:8080/cid", "http://hooks.local/ci",
                "http://hooks.local:8080.evil.net/ci", "http://user@hooks.local:8080/ci",
                "https://hooks.local:8080/ci", "http://h.example/", "ftp://h.example/"):
        assert not rules.allows(url), url
    assert not NotificationRules().allows("http://127.0.0.1/")


def test_signature_is_the_hex_hmac_sha256_of_the_body():
    body = b'{"event": "failure"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature(b"k", body) == "sha256=" + expected


def test_a_notification_outcome_is_part_of_the_run(h):
    h.create("t")
    run_id = h.run("t")
    h.store.set_notification(run_id, {"status": "delivered", "attempts": 2, "http_status": 204})
    assert h.store.get_run(run_id).notification == {
        "status": "delivered", "attempts": 2, "http_status": 204}


def test_a_schema_2_store_gains_the_lifecycle_columns(tmp_path):
    import sqlite3
    db = tmp_path / "old.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE pending_retries")
    for column in ("attempt", "retry_of", "parent_run_id", "notification"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.execute("INSERT INTO runs (task_id, trigger, status, scheduled_for) "
                "VALUES ('t', 'manual', 'succeeded', 1.0)")
    con.commit()
    con.close()
    store = Store(db)
    [run] = store.recent_runs("t")
    assert (run.attempt, run.retry_of, run.parent_run_id, run.notification) == (1, None, None, None)
    store.add_retry("t", run.run_id, 2, 5.0)
    assert store.pending_retries() == [(run.run_id, "t", 2, 5.0)]
    store.close()


# --- the policy's keys -------------------------------------------------------------------

@pytest.mark.parametrize("keys, field", [
    ({"limits": {"max_retries": -1}}, "limits.max_retries"),
    ({"limits": {"max_retries": 101}}, "limits.max_retries"),
    ({"limits": {"max_retries": True}}, "limits.max_retries"),
    ({"notifications": {"allowed_url": []}}, "notifications.allowed_url"),
    ({"notifications": {"allowed_urls": "http://x/"}}, "notifications.allowed_urls"),
    ({"notifications": {"allowed_urls": ["ftp://x/"]}}, "notifications.allowed_urls[0]"),
    ({"notifications": {"allowed_urls": ["http://u:p@x/"]}}, "notifications.allowed_urls[0]"),
    ({"notifications": {"allowed_urls": ["http://x/?a=1"]}}, "notifications.allowed_urls[0]"),
    ({"notifications": {"secret_env": "LD_PRELOAD"}}, "notifications.secret_env"),
    ({"notifications": {"secret_env": "1X"}}, "notifications.secret_env"),
    ({"notifications": []}, "notifications"),
])
def test_policy_lifecycle_keys_are_validated(tmp_path, keys, field):
    from policies import PolicyFileError, parse_policy
    with pytest.raises(PolicyFileError) as info:
        parse_policy({"version": 1, **keys}, base_dir=tmp_path)
    assert info.value.field == field


def test_policy_lifecycle_keys_and_defaults(tmp_path):
    from policies import parse_policy
    default = parse_policy({"version": 1}, base_dir=tmp_path)
    assert default.limits.max_retries == 3
    assert default.notifications == NotificationRules()
    policy = parse_policy({"version": 1, "limits": {"max_retries": 0},
                           "notifications": {"allowed_urls": ["http://127.0.0.1:9000/h"],
                                             "secret_env": "HOOK_SECRET"}}, base_dir=tmp_path)
    assert policy.limits.max_retries == 0
    assert policy.notifications == NotificationRules(("http://127.0.0.1:9000/h",), "HOOK_SECRET")


# --- delivery (a receiver on 127.0.0.1) --------------------------------------------------

class _Receiver:
    """Answers every POST with ``status`` (and a Location header); records the paths."""

    def __init__(self, status: int, location: str = ""):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        paths = self.paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                paths.append(self.path)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def delivery(tmp_path):
    from policies import default_policy
    from scheduler.notify import Notifier, NotifierConfig
    store = Store(tmp_path / "n.db")
    run_id = store.insert_run("t", Trigger.MANUAL, RunStatus.QUEUED, T0, slot=False)
    receivers = []

    def make(status: int, *allowed_paths: str, location: str = "", env=None):
        receiver = _Receiver(status, location)
        receivers.append(receiver)
        rules = NotificationRules(tuple(receiver.base + p for p in allowed_paths), "HOOK_KEY")
        state = {"policy": dataclasses.replace(default_policy(base_dir=tmp_path),
                                               notifications=rules)}
        notifier = Notifier(store, lambda: state["policy"], environ=env or {"HOOK_KEY": "k"},
                            config=NotifierConfig(tries=3, timeout=2.0, backoff=0.01))
        return receiver, notifier, state

    yield store, run_id, make
    for receiver in receivers:
        receiver.close()
    store.close()


def test_a_redirect_is_not_followed(delivery):
    from scheduler.notify import Notice
    store, run_id, make = delivery
    receiver, notifier, _ = make(302, "/hooks", location="http://169.254.169.254/latest")
    outcome = notifier.deliver(Notice(run_id, "t", "failure", receiver.base + "/hooks"))
    assert outcome == {"status": "failed", "attempts": 3, "http_status": 302}
    assert receiver.paths == ["/hooks"] * 3
    assert store.get_run(run_id).notification == outcome


def test_the_url_is_checked_again_at_delivery(delivery):
    from scheduler.notify import Notice
    store, run_id, make = delivery
    receiver, notifier, state = make(204, "/hooks")
    state["policy"] = dataclasses.replace(state["policy"], notifications=NotificationRules())
    outcome = notifier.deliver(Notice(run_id, "t", "failure", receiver.base + "/hooks"))
    assert outcome == {"status": "failed", "attempts": 0, "http_status": None}
    assert receiver.paths == []


def test_a_full_queue_records_the_notice_as_failed(delivery):
    from scheduler.notify import Notice, Notifier, NotifierConfig
    store, run_id, make = delivery
    _, notifier, state = make(204, "/hooks")
    full = Notifier(store, lambda: state["policy"], config=NotifierConfig(queue_size=1))
    assert full.submit(Notice(run_id, "t", "failure", "http://127.0.0.1:9/x"))  # not opened
    assert not full.submit(Notice(run_id, "t", "failure", "http://127.0.0.1:9/x"))
    assert store.get_run(run_id).notification == {"status": "failed", "attempts": 0,
                                                  "http_status": None}


def test_one_task_cannot_crowd_the_notification_queue():
    from scheduler.notify import Notice, Notifier, NotifierConfig

    class Outcomes:
        def __init__(self):
            self.recorded = {}

        def set_notification(self, run_id, outcome):
            self.recorded[run_id] = outcome

    store = Outcomes()
    notifier = Notifier(store, lambda: None, config=NotifierConfig(per_task=2))  # not opened
    url = "http://127.0.0.1:9/hooks"
    assert notifier.submit(Notice(1, "noisy", "failure", url))
    assert notifier.submit(Notice(2, "noisy", "failure", url))
    assert not notifier.submit(Notice(3, "noisy", "failure", url))
    assert store.recorded == {3: {"status": "failed", "attempts": 0, "http_status": None}}
    assert notifier.submit(Notice(4, "quiet", "failure", url))
