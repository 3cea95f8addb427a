"""Unit tests of calendar schedules at the scheduler's level: time zones per task and by
default, what ``preview`` shows, one-shot tasks across restarts, jitter, restarts across
daylight-saving transitions, and the store's upgrade of an older database.

The harness of ``test_service`` drives the scheduler: a real store, a fake executor, a clock
that moves only when told to, and a stub dispatcher (slots are fired by the test).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import InvalidInterval, InvalidRequest
from scheduler.jitter import jitter_offset
from scheduler.models import Misfire, RunStatus, Trigger, task_state
from scheduler.service import SchedulerConfig
from scheduler.store import SCHEMA_VERSION, Store
from tests.helpers import wait_until
from tests.unit.test_service import Clock, Harness

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def at(zone: ZoneInfo, *fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=zone, fold=fold).timestamp()


@pytest.fixture
def make(tmp_path):
    made: list[Harness] = []

    def factory(*, tz=None, **kwargs) -> Harness:
        options = {"tz": tz} if tz is not None else {}  # a default zone for the scheduler
        harness = Harness(tmp_path, scheduler_options=options, **kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


@pytest.fixture
def h(make) -> Harness:
    return make().open()


def reopen(make, old: Harness, now: float, **kwargs) -> Harness:
    """A new server process on the same database at ``now``, after ``old`` died."""
    old.crash()
    return make(clock=Clock(now), **kwargs).open(start=False)


# --- time zones ----------------------------------------------------------------------------

def test_a_clock_schedule_follows_the_task_zone(h):
    task = h.create(interval="daily at 09:00", timezone="Europe/Berlin")
    assert task.next_run == at(BERLIN, 2023, 11, 15, 9, 0)
    assert h.sched.timezone_of(task) == "Europe/Berlin"
    assert h.sched.next_run_at(task) == "2023-11-15T09:00:00+01:00"


def test_the_zone_name_is_case_insensitive_and_stored_as_the_database_spells_it(h):
    task = h.create(interval="daily at 09:00", timezone="  america/new_york ")
    assert task.spec.timezone == "America/New_York"
    assert task.next_run == at(NEW_YORK, 2023, 11, 15, 9, 0)


def test_tasks_without_a_zone_follow_the_scheduler_default(make):
    h = make(tz=NEW_YORK).open()
    task = h.create(interval="0 9 * * *")
    assert task.spec.timezone is None
    assert task.next_run == at(NEW_YORK, 2023, 11, 15, 9, 0)
    assert h.sched.timezone_of(task) == "America/New_York"
    assert h.sched.next_run_at(task) == "2023-11-15T09:00:00-05:00"


def test_interval_schedules_ignore_the_zone(h):
    plain = h.create("plain", interval="every 90 minutes")
    zoned = h.create("zoned", interval="every 90 minutes", timezone="Asia/Kolkata")
    assert plain.next_run == zoned.next_run == T0 + 5400


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", "Europe/", "/UTC",
                                  "Europe/Berlin\x00", 5, "x" * 200])
def test_an_unknown_zone_is_refused(h, zone):
    with pytest.raises(InvalidRequest) as caught:
        h.create(interval="daily at 09:00", timezone=zone)
    assert (caught.value.code, caught.value.field) == ("invalid_timezone", "timezone")
    assert "IANA" in caught.value.message
    assert h.sched.tasks() == [] and h.store.load_tasks() == []


def test_update_moves_a_clock_schedule_to_another_zone(h):
    h.create(interval="daily at 09:00", timezone="Europe/Berlin")
    task = h.sched.update("t1", {"timezone": "America/New_York"})
    assert task.next_run == at(NEW_YORK, 2023, 11, 15, 9, 0)
    assert h.dispatcher.due("t1") == task.next_run
    with pytest.raises(InvalidRequest, match="not a known time zone"):
        h.sched.update("t1", {"timezone": "Nowhere/Land"})
    assert h.sched.task("t1").spec.timezone == "America/New_York"


def test_zone_and_jitter_survive_a_restart(make):
    h = make().open()
    h.create(interval="daily at 09:00", timezone="Europe/Berlin", jitter=120)
    again = reopen(make, h, T0 + 10)
    task = again.sched.task("t1")
    assert (task.spec.timezone, task.spec.jitter) == ("Europe/Berlin", 120)
    assert again.sched.display_next_run(task) == at(BERLIN, 2023, 11, 15, 9, 0)


# --- preview (validate) ----------------------------------------------------------------------

def test_preview_shows_runs_in_the_zone_and_a_description(h):
    preview = h.sched.preview("0 2 * * mon-fri", timezone="Europe/Berlin")
    assert preview.schedule.canonical == "0 2 * * mon-fri"
    assert preview.timezone == "Europe/Berlin"
    assert preview.description == "at 02:00 on Monday through Friday"
    assert preview.next_runs_at == ["2023-11-15T02:00:00+01:00", "2023-11-16T02:00:00+01:00",
                                    "2023-11-17T02:00:00+01:00", "2023-11-20T02:00:00+01:00",
                                    "2023-11-21T02:00:00+01:00"]
    assert preview.next_runs[0] == at(BERLIN, 2023, 11, 15, 2, 0)
    assert h.sched.tasks() == []
    schedule, slots = h.sched.validate("0 2 * * mon-fri", timezone="Europe/Berlin")
    assert (schedule, slots) == (preview.schedule, preview.next_runs)


def test_preview_of_a_one_shot_lists_one_run(h):
    preview = h.sched.preview("in 2 hours")
    assert preview.next_runs == [T0 + 7200]
    assert preview.description == "once, 2 hours after the task was created or updated"


@pytest.mark.parametrize("fields, error, code, field", [
    (dict(interval="0 25 * * *"), InvalidInterval, "invalid_interval", "interval"),
    (dict(interval="once at 2023-11-14 10:00"), InvalidInterval, "invalid_interval", "interval"),
    (dict(interval="daily at 09:00", timezone="Atlantis"), InvalidRequest, "invalid_timezone", "timezone"),
    (dict(interval="every 10 minutes", jitter=301), InvalidRequest, "invalid_parameter", "jitter"),
])
def test_preview_refuses_what_create_refuses(h, fields, error, code, field):
    interval = fields.pop("interval")
    with pytest.raises(error) as caught:
        h.sched.preview(interval, **fields)
    assert (caught.value.code, caught.value.field) == (code, field)
    with pytest.raises(error) as caught:
        h.create(interval=interval, **fields)
    assert (caught.value.code, caught.value.field) == (code, field)


# --- one-shot ---------------------------------------------------------------------------------

def test_a_one_shot_fires_once_then_is_finished_and_stays(h):
    task = h.create(interval="in 10 minutes")
    assert task.next_run == T0 + 600
    slot, following = h.fire()
    assert slot == T0 + 600 and following is None
    assert [(r.trigger, r.scheduled_for) for r in h.runs()] == [(Trigger.SCHEDULE, T0 + 600)]
    task = h.sched.task("t1")
    assert task.next_run is None and task_state(task, h.sched.display_next_run(task)) == "finished"
    assert h.sched.next_run_at(task) is None


def test_a_finished_one_shot_stays_finished_after_a_restart(make):
    h = make().open()
    h.create(interval="once at 2023-11-15 00:00", timezone="UTC")
    h.fire()
    again = reopen(make, h, T0 + 86400)
    again.sched.start()
    task = again.sched.task("t1")
    assert task.next_run is None and len(again.runs()) == 1


def test_a_finished_one_shot_can_still_be_edited(h):
    h.create(interval="in 1 minute")
    h.fire()
    task = h.sched.update("t1", {"command": "echo changed"})
    assert task.spec.command == "echo changed" and task.next_run is None


@pytest.mark.parametrize("misfire, runs", [(Misfire.RUN_ONCE, [Trigger.CATCH_UP]), (Misfire.SKIP, [])])
def test_a_one_shot_missed_while_down_follows_misfire(make, misfire, runs):
    h = make().open()
    h.create(interval="once at 2023-11-14 23:00", timezone="UTC", misfire=misfire)
    again = reopen(make, h, at(ZoneInfo("UTC"), 2023, 11, 15, 1, 0))
    assert [r.trigger for r in again.runs()] == runs
    assert again.sched.task("t1").next_run is None


def test_a_one_shot_in_the_past_is_refused(h):
    with pytest.raises(InvalidInterval, match="already passed"):
        h.create(interval="once at 2023-11-14 22:13:20", timezone="UTC")
    assert h.sched.tasks() == []
    h.create(interval="every hour")
    with pytest.raises(InvalidInterval, match="already passed"):
        h.sched.update("t1", {"interval": "once at 2020-01-01 00:00"})
    assert h.sched.task("t1").spec.interval == "every hour"


# --- jitter -------------------------------------------------------------------------------------

def test_jitter_starts_the_slot_late_but_keeps_its_identity(h):
    h.create(interval="every 10 minutes", jitter=120)
    slot = h.sched.task("t1").next_run
    offset = jitter_offset("t1", slot, 120)
    assert 0 <= offset <= 120 and h.dispatcher.jitters == {"t1": 120}
    h.clock.now = slot + offset
    h.dispatcher.fire("t1", slot)
    [run] = h.runs()
    assert run.scheduled_for == slot and run.jitter_ms == round(offset * 1000, 3)
    [request] = h.executor.submitted
    h.executor.report_start(request.run_id, slot + offset + 0.25)
    assert h.store.get_run(request.run_id).lateness_ms == 250.0  # from the jittered start


def test_jitter_offsets_are_deterministic_spread_and_bounded():
    slots = [T0 + k * 600 for k in range(2000)]
    offsets = [jitter_offset("backup", s, 300) for s in slots]
    assert offsets == [jitter_offset("backup", s, 300) for s in slots]  # a restart agrees
    assert all(0 <= o <= 300 and round(o, 3) == o for o in offsets)
    assert min(offsets) < 30 and max(offsets) > 270  # spread over the whole range
    assert offsets != [jitter_offset("other", s, 300) for s in slots]
    assert jitter_offset("backup", T0, None) == jitter_offset("backup", T0, 0) == 0.0


@pytest.mark.parametrize("interval, jitter, ok", [
    ("every 10 minutes", 300, True), ("every 10 minutes", 300.5, False),
    ("*/10 * * * *", 300, True), ("*/10 * * * *", 301, False),
    ("daily at 02:00", 3600, True), ("daily at 02:00", 3601, False),
    ("in 5 minutes", 3600, True), ("every 10 minutes", 0, True),
    ("every 10 minutes", -1, False), ("every 10 minutes", "60", False),
    ("every 10 minutes", True, False), ("every 10 minutes", float("nan"), False),
])
def test_jitter_bounds(h, interval, jitter, ok):
    if ok:
        task = h.create(interval=interval, jitter=jitter)
        assert task.spec.jitter == (jitter or None)
    else:
        with pytest.raises(InvalidRequest) as caught:
            h.create(interval=interval, jitter=jitter)
        assert caught.value.field == "jitter"


def test_scheduled_runs_without_jitter_record_zero_and_manual_runs_none(h):
    h.create(interval="every 10 minutes")
    h.fire()
    h.sched.run_now("t1")
    assert [(r.trigger, r.jitter_ms) for r in h.runs()] == [(Trigger.SCHEDULE, 0.0),
                                                             (Trigger.MANUAL, None)]


@pytest.mark.parametrize("lead", [0.0, 1.0])
def test_the_real_dispatcher_fires_at_the_jittered_start(make, lead):
    """Less the lead: the run is handed out ``lead`` seconds early, to start at its start."""
    h = make(real_dispatcher=True, config=SchedulerConfig(prepare_ahead=lead)).open()
    h.create(interval="every 10 minutes", jitter=240)
    slot = h.sched.task("t1").next_run
    start = slot + jitter_offset("t1", slot, 240)
    h.clock.now = start - lead - 0.001
    h.dispatcher.set_active(True)  # wakes the thread: the slot is due, its start is not
    time.sleep(0.05)
    assert h.runs() == []
    h.clock.now = start - lead
    h.dispatcher.set_active(True)
    wait_until(lambda: len(h.runs()) == 1, timeout=5)
    [run] = h.runs()
    assert run.scheduled_for == slot and run.jitter_ms == round((start - slot) * 1000, 3)
    assert [r.scheduled_for for r in h.executor.submitted] == [start]


# --- restarts across daylight-saving transitions ---------------------------------------------

def test_a_restart_across_spring_forward_neither_skips_nor_repeats(make):
    h = make(clock=Clock(at(BERLIN, 2026, 3, 27, 12, 0))).open()
    h.create(interval="daily at 02:30", timezone="Europe/Berlin", misfire=Misfire.RUN_ONCE)
    h.fire()  # Saturday 02:30 CET
    # Down from 01:59 CET on Sunday to 03:30 CEST: the 02:30 that did not exist was due at 03:00.
    h.clock.now = at(BERLIN, 2026, 3, 29, 1, 59)
    again = reopen(make, h, at(BERLIN, 2026, 3, 29, 3, 30))
    assert [(r.trigger, r.scheduled_for) for r in again.runs()] == [
        (Trigger.SCHEDULE, at(BERLIN, 2026, 3, 28, 2, 30)),
        (Trigger.CATCH_UP, at(BERLIN, 2026, 3, 29, 3, 0))]
    again.sched.start()
    assert again.sched.task("t1").next_run == at(BERLIN, 2026, 3, 30, 2, 30)


def test_a_restart_right_after_the_gap_slot_fires_it_once(make):
    h = make(clock=Clock(at(BERLIN, 2026, 3, 28, 12, 0))).open()
    h.create(interval="30 2 * * *", timezone="Europe/Berlin", misfire=Misfire.RUN_ONCE)
    slot, _ = h.fire()
    assert slot == at(BERLIN, 2026, 3, 29, 3, 0)
    again = reopen(make, h, slot + 30)
    again.sched.start()
    assert [r.scheduled_for for r in again.runs()] == [slot]
    assert again.sched.task("t1").next_run == at(BERLIN, 2026, 3, 30, 2, 30)


def test_a_restart_inside_the_repeated_hour_does_not_fire_again(make):
    h = make(clock=Clock(at(BERLIN, 2026, 10, 24, 12, 0))).open()
    h.create(interval="30 2 * * *", timezone="Europe/Berlin", misfire=Misfire.RUN_ONCE)
    slot, _ = h.fire()
    assert slot == at(BERLIN, 2026, 10, 25, 2, 30, fold=0)  # 02:30 CEST, the first one
    again = reopen(make, h, at(BERLIN, 2026, 10, 25, 2, 45, fold=1))  # 02:45 CET
    again.sched.start()
    assert [r.scheduled_for for r in again.runs()] == [slot]
    assert again.sched.task("t1").next_run == at(BERLIN, 2026, 10, 26, 2, 30)


def test_sub_hourly_slots_of_the_repeated_hour_all_run_once_across_a_restart(make):
    h = make(clock=Clock(at(BERLIN, 2026, 10, 25, 1, 50))).open()
    h.create(interval="*/30 * * * *", timezone="Europe/Berlin", misfire=Misfire.RUN_ONCE)
    for _ in range(3):  # 02:00 CEST, 02:30 CEST, 02:00 CET
        h.fire()
    again = reopen(make, h, at(BERLIN, 2026, 10, 25, 2, 10, fold=1))
    again.sched.start()
    for _ in range(2):  # 02:30 CET, 03:00 CET
        again.fire()
    slots = [r.scheduled_for for r in again.runs()]
    assert slots == [at(BERLIN, 2026, 10, 25, 1, 0, fold=0) + 3600 + k * 1800 for k in range(5)]
    assert len(set(slots)) == 5


# --- the store's upgrade of an older database --------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, anchor REAL NOT NULL, checkpoint REAL NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0, runs_fired INTEGER NOT NULL DEFAULT 0);
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, trigger TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, exit_code INTEGER, scheduled_for REAL NOT NULL,
    slot_ms INTEGER, started_at REAL, finished_at REAL, lateness_ms REAL,
    stdout TEXT NOT NULL DEFAULT '', stderr TEXT NOT NULL DEFAULT '',
    truncated INTEGER NOT NULL DEFAULT 0, tests TEXT, out_bytes INTEGER NOT NULL DEFAULT 0);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO tasks VALUES ('old', '{"command": "true", "custom_script": null, "env": {},
  "file_path": null, "interval": "daily at 02:00", "max_runs": null, "misfire": "skip",
  "overlap": "skip", "start_at": null, "task_type": "command", "timeout": null, "until": null,
  "working_dir": null}', 1.0, 1.0, 1.0, 1.0, 0, 1);
INSERT INTO runs (task_id, trigger, status, scheduled_for, slot_ms) VALUES ('old', 'schedule',
  'succeeded', 7200.0, 7200000);
"""


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(_V1_SCHEMA)
    store = Store(path)
    try:
        [row] = store.load_tasks()
        assert row["task_id"] == "old" and row["columns"] == dict(timezone=None, jitter=None)
        [run] = store.recent_runs("old")
        assert run.status is RunStatus.SUCCEEDED and run.jitter_ms is None
        assert store.insert_run("old", Trigger.SCHEDULE, RunStatus.QUEUED, 7200.0, slot=True) is None
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
    Store(path).close()  # opening the upgraded database again changes nothing
