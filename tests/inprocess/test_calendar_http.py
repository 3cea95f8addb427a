"""Calendar schedules through POST /schedule, in-process: cron and one-shot intervals, the
``timezone`` and ``jitter`` options on create, update and validate, what task details,
``validate``, ``status`` and run records show, the server's default zone, and every
refusal (code, field, and nothing changed)."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.helpers import wait_until

from ..envelope import command_task, reject
from .harness import App

ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
SEED_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A never-started application on the default zone Asia/Kathmandu (UTC+05:45, no DST:
    an offset no machine's own zone is likely to share)."""
    app = App(tmp_path_factory.mktemp("calendar"), config={"timezone": "Asia/Kathmandu"})
    create(app, command_task("baseline"))
    yield app
    app.close()


def create(app: App, body: dict) -> dict:
    fields = dict(body)
    return app.post(fields.pop("action"), **fields)


def details(app: App, task_id: str) -> dict:
    return app.post("get", task_id=task_id)["task"]["details"]


# --------------------------------------------------------------------------- task details

def test_a_cron_task_in_a_zone_shows_the_zone_and_its_next_run_with_the_offset(srv):
    created = create(srv, command_task("berlin", interval="30 2 * * mon-fri",
                                                timezone="europe/berlin", jitter=90))
    d = created["task"]["details"]
    assert d["timezone"] == "Europe/Berlin"  # as the zone database spells it
    assert d["jitter"] == 90 and d["interval"] == "30 2 * * mon-fri"
    at = datetime.fromisoformat(d["next_run_at"])
    assert ISO_RE.match(d["next_run_at"]) and (at.hour, at.minute) == (2, 30)
    assert at.utcoffset().total_seconds() in (3600, 7200) and at.weekday() < 5
    # next_run keeps the original form (the server's local time), the same instant
    assert SEED_TIME_RE.match(d["next_run"])
    assert datetime.strptime(d["next_run"], "%Y-%m-%d %H:%M:%S").timestamp() == at.timestamp()
    assert created["next_run_at"] == d["next_run_at"] and created["next_run"] == d["next_run"]
    assert details(srv, "berlin") == d


def test_a_task_without_a_zone_follows_the_server_default(srv):
    d = create(srv, command_task("local", interval="daily at 09:00"))["task"]["details"]
    assert d["timezone"] == "Asia/Kathmandu" and d["jitter"] is None
    assert d["next_run_at"].endswith("T09:00:00+05:45")
    assert srv.post("status")["timezone"] == "Asia/Kathmandu"


def test_interval_tasks_show_their_zone_but_count_elapsed_time(srv):
    d = details(srv, "baseline")
    assert d["timezone"] == "Asia/Kathmandu" and d["next_run_at"].endswith("+05:45")


def test_update_moves_a_clock_schedule_to_another_zone_and_sets_jitter(srv):
    create(srv, command_task("moving", interval="daily at 09:00"))
    updated = srv.post("update", task_id="moving", timezone="America/New_York", jitter=30)
    d = updated["task"]["details"]
    assert d["timezone"] == "America/New_York" and d["jitter"] == 30
    assert re.search(r"T09:00:00-0[45]:00$", d["next_run_at"])


def test_macros_and_one_shots_are_accepted(srv):
    for task_id, interval, canonical in [("m1", "@Daily", "@daily"),
                                         ("m2", "@midnight", "@daily"),
                                         ("o1", "once at 2099-01-31 9:00", "once at 2099-01-31 09:00"),
                                         ("o2", "in 2 hours", "in 2 hours")]:
        created = create(srv, command_task(task_id, interval=interval))
        assert created["schedule"] == canonical and created["task"]["details"]["state"] == "scheduled"
    assert details(srv, "o1")["next_run_at"] == "2099-01-31T09:00:00+05:45"


# --------------------------------------------------------------------------- validate

def test_validate_shows_runs_in_the_zone_a_description_and_the_zone(srv):
    answer = srv.post("validate", interval="0 2 * * MON-FRI", timezone="America/New_York")
    assert answer["interval"] == "0 2 * * mon-fri" and answer["timezone"] == "America/New_York"
    assert answer["description"] == "at 02:00 on Monday through Friday"
    assert len(answer["next_runs"]) == len(answer["next_runs_at"]) == 5
    for seed, iso in zip(answer["next_runs"], answer["next_runs_at"]):
        at = datetime.fromisoformat(iso)
        assert (at.hour, at.minute, at.weekday() < 5) == (2, 0, True)
        assert datetime.strptime(seed, "%Y-%m-%d %H:%M:%S").timestamp() == at.timestamp()


def test_validate_defaults_to_the_server_zone(srv):
    answer = srv.post("validate", interval="daily at 2:00")
    assert answer["timezone"] == "Asia/Kathmandu"
    assert all(t.endswith("T02:00:00+05:45") for t in answer["next_runs_at"])
    assert answer["description"] == "at 02:00 every day"


def test_validate_of_a_one_shot_lists_its_one_run(srv):
    answer = srv.post("validate", interval="once at 2099-06-01 12:00", timezone="UTC")
    assert answer["next_runs_at"] == ["2099-06-01T12:00:00+00:00"]
    assert answer["description"] == "once, at 2099-06-01 12:00"


def test_validate_accepts_a_jitter_within_the_bound(srv):
    assert srv.post("validate", interval="every 10 minutes", jitter=300)["status"] == "success"


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("action", ["create", "update", "validate"])
@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/../../etc/passwd", "", "x" * 65,
                                  5, True, ["UTC"]])
def test_an_unknown_zone_is_refused(srv, action, zone):
    body = {"create": command_task("new", timezone=zone),
            "update": {"action": "update", "task_id": "baseline", "timezone": zone},
            "validate": {"action": "validate", "interval": "daily at 2:00", "timezone": zone},
            }[action]
    error = reject(srv, 400, "invalid_timezone", "timezone", body)
    assert "IANA" in error["message"]


@pytest.mark.parametrize("interval, named", [
    ("61 * * * *", "minute"), ("0 24 * * *", "hour"), ("0 0 32 * *", "day-of-month"),
    ("0 0 * 13 *", "month"), ("0 0 * * funday", "day-of-week"), ("0 0 30 2 *", "day-of-month"),
    ("@fortnightly", "@fortnightly"),
])
def test_a_bad_cron_expression_names_the_field(srv, interval, named):
    for body in (command_task("new", interval=interval),
                 {"action": "validate", "interval": interval}):
        error = reject(srv, 400, "invalid_interval", "interval", body)
        assert named in error["message"]


@pytest.mark.parametrize("interval", ["once at 2001-01-01 00:00", "once at 2099-02-30 10:00",
                                      "in 0 minutes", "in 5 fortnights"])
def test_a_one_shot_in_the_past_or_malformed_is_refused(srv, interval):
    reject(srv, 400, "invalid_interval", "interval", command_task("new", interval=interval))
    reject(srv, 400, "invalid_interval", "interval", {"action": "validate", "interval": interval})


@pytest.mark.parametrize("jitter", [-1, 3601, "5", True, [1]])
def test_a_jitter_of_the_wrong_type_or_range_is_refused(srv, jitter):
    for body in (command_task("new", jitter=jitter),
                 {"action": "validate", "interval": "hourly", "jitter": jitter}):
        reject(srv, 400, "invalid_parameter", "jitter", body)


@pytest.mark.parametrize("interval, jitter", [("every 1 minute", 31), ("*/10 * * * *", 301),
                                              ("daily at 3:00", 3600.5)])
def test_a_jitter_above_half_the_shortest_gap_is_refused(srv, interval, jitter):
    for body in (command_task("new", interval=interval, jitter=jitter),
                 {"action": "validate", "interval": interval, "jitter": jitter}):
        error = reject(srv, 400, "invalid_parameter", "jitter", body)
        assert "half" in error["message"]


def test_an_update_that_breaks_the_jitter_bound_is_refused(srv):
    create(srv, command_task("jittery", interval="every 1 hour", jitter=1000))
    reject(srv, 400, "invalid_parameter", "jitter",
           {"action": "update", "task_id": "jittery", "interval": "every 10 minutes"})


def test_the_openapi_document_has_the_calendar_fields(srv):
    schemas = srv.raw("GET", "/openapi.json").json()["components"]["schemas"]
    for name in ("CreateRequest", "UpdateRequest", "ValidateRequest"):
        assert {"timezone", "jitter"} <= set(schemas[name]["properties"])
    assert {"next_runs_at", "description", "timezone"} <= set(
        schemas["ValidateResponse"]["properties"])
    assert {"timezone", "next_run_at", "jitter"} <= set(schemas["TaskDetails"]["properties"])
    assert "jitter_ms" in schemas["Run"]["properties"]


# --------------------------------------------------------------------------- runs

@pytest.fixture
def running(tmp_path):
    app = App(tmp_path)
    app.post("start")
    yield app
    app.close()


def test_a_one_shot_fires_once_then_is_finished_and_stays(running):
    create(running, command_task("soon", interval="in 1 second", jitter=0))
    wait_until(lambda: running.post("runs", task_id="soon")["count"] == 1, timeout=10)
    wait_until(lambda: details(running, "soon")["state"] == "finished", timeout=5)
    d = details(running, "soon")
    assert d["next_run"] is None and d["next_run_at"] is None and d["runs_fired"] == 1
    [run] = running.post("runs", task_id="soon")["runs"]
    assert run["trigger"] == "schedule" and run["jitter_ms"] == 0
    manual = running.post("run", task_id="soon")["run_id"]  # still there, still runnable
    assert running.post("output", run_id=manual)["run"]["jitter_ms"] is None
    assert [t["id"] for t in running.post("list")["tasks"]] == ["soon"]
