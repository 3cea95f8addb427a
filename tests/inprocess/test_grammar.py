"""The schedule grammar through the API, in-process: every accepted form through
`validate` and `create` with its canonical text and next runs, and every refused form as a
400 ``invalid_interval`` naming the field and listing the accepted forms.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from .harness import App

TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
ERROR_KEYS = {"status", "message", "code", "field"}
MINUTE, HOUR, DAY, WEEK = 60, 3600, 86400, 604800
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    app = App(tmp_path_factory.mktemp("grammar"))
    yield app
    app.close()


def parse_time(text: str) -> datetime:
    assert isinstance(text, str) and TIME_RE.fullmatch(text), text
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


class Form:
    """An accepted interval text, its canonical form, and what its next runs must look like."""

    def __init__(self, text: str, canonical: str, period: int, *, clock: str | None = None,
                 weekday: int | None = None):
        self.text, self.canonical, self.period = text, canonical, period
        self.clock = clock        # every next run's time of day ends with this ("02:00:30", ":15")
        self.weekday = weekday    # every next run falls on this weekday (0 = Monday)

    def __repr__(self) -> str:
        return repr(self.text)


FORMS = [
    # every N units, plural
    Form("every 5 seconds", "every 5 seconds", 5),
    Form("every 30 seconds", "every 30 seconds", 30),
    Form("every 5 minutes", "every 5 minutes", 5 * MINUTE),
    Form("every 90 minutes", "every 90 minutes", 90 * MINUTE),
    Form("every 2 hours", "every 2 hours", 2 * HOUR),
    Form("every 3 days", "every 3 days", 3 * DAY),
    Form("every 2 weeks", "every 2 weeks", 2 * WEEK),
    # singular units, with and without 1
    Form("every second", "every second", 1),
    Form("every minute", "every minute", MINUTE),
    Form("every hour", "every hour", HOUR),
    Form("every day", "every day", DAY),
    Form("every week", "every week", WEEK),
    Form("every 1 second", "every second", 1),
    Form("every 1 minute", "every minute", MINUTE),
    Form("every 1 hour", "every hour", HOUR),
    Form("every 1 day", "every day", DAY),
    Form("every 1 week", "every week", WEEK),
    # words
    Form("hourly", "every hour", HOUR),
    Form("daily", "every day", DAY),
    Form("weekly", "every week", WEEK),
    # daily at
    Form("daily at 2:00", "every day at 02:00", DAY, clock="02:00:00"),
    Form("daily at 02:00", "every day at 02:00", DAY, clock="02:00:00"),
    Form("daily at 02:00:30", "every day at 02:00:30", DAY, clock="02:00:30"),
    Form("daily at 10:30", "every day at 10:30", DAY, clock="10:30:00"),
    Form("daily at 23:59:59", "every day at 23:59:59", DAY, clock="23:59:59"),
    Form("every day at 9:05", "every day at 09:05", DAY, clock="09:05:00"),
    Form("every day at 00:00", "every day at 00:00", DAY, clock="00:00:00"),
    Form("every 3 days at 02:00", "every 3 days at 02:00", 3 * DAY, clock="02:00:00"),
    Form("every 2 days at 7:15:45", "every 2 days at 07:15:45", 2 * DAY, clock="07:15:45"),
    # weekdays, with and without "every"
    *[Form(f"{day} at 09:30", f"every {day} at 09:30", WEEK, clock="09:30:00", weekday=i)
      for i, day in enumerate(WEEKDAYS)],
    *[Form(f"every {day} at 17:45", f"every {day} at 17:45", WEEK, clock="17:45:00", weekday=i)
      for i, day in enumerate(WEEKDAYS)],
    Form("monday at 9:30", "every monday at 09:30", WEEK, clock="09:30:00", weekday=0),
    Form("friday at 17:30:15", "every friday at 17:30:15", WEEK, clock="17:30:15", weekday=4),
    Form("every monday", "every monday at 00:00", WEEK, clock="00:00:00", weekday=0),
    Form("every sunday", "every sunday at 00:00", WEEK, clock="00:00:00", weekday=6),
    # aligned offsets
    Form("every 5 minutes at :15", "every 5 minutes at :15", 5 * MINUTE, clock=":15"),
    Form("every minute at :00", "every minute at :00", MINUTE, clock=":00"),
    Form("every 2 hours at 30:00", "every 2 hours at 30:00", 2 * HOUR, clock="30:00"),
    Form("every hour at 05:30", "every hour at 05:30", HOUR, clock="05:30"),
    # case and spaces
    Form("EVERY 5 MINUTES", "every 5 minutes", 5 * MINUTE),
    Form("Every 2 Hours", "every 2 hours", 2 * HOUR),
    Form("HOURLY", "every hour", HOUR),
    Form("Daily At 02:00", "every day at 02:00", DAY, clock="02:00:00"),
    Form("  every   5    minutes  ", "every 5 minutes", 5 * MINUTE),
    Form("\tMonday   AT  9:30 ", "every monday at 09:30", WEEK, clock="09:30:00", weekday=0),
    Form(" daily  at  2:00 ", "every day at 02:00", DAY, clock="02:00:00"),
]


def check_next_runs(form: Form, next_runs: list[str], not_before: datetime) -> list[datetime]:
    times = [parse_time(t) for t in next_runs]
    assert len(times) == 5, next_runs
    assert times[0] >= not_before, (times[0], not_before)
    assert times[0] <= not_before + timedelta(seconds=form.period + 2)
    for earlier, later in zip(times, times[1:]):
        gap = (later - earlier).total_seconds()
        # times are shown in local time: across a DST switch a gap may look 1 h off
        slack = HOUR if form.period >= HOUR else 0
        assert abs(gap - form.period) <= slack, (form, next_runs)
    for t in times:
        if form.clock:
            assert t.strftime("%H:%M:%S").endswith(form.clock), (form, next_runs)
        if form.weekday is not None:
            assert t.weekday() == form.weekday, (form, next_runs)
    return times


@pytest.mark.parametrize("form", FORMS, ids=repr)
def test_validate_accepts(srv, form):
    not_before = datetime.now().replace(microsecond=0)
    body = srv.post("validate", interval=form.text)
    assert body["status"] == "success"
    assert body["interval"] == form.canonical
    check_next_runs(form, body["next_runs"], not_before)
    # the canonical text is itself accepted and means the same
    again = srv.post("validate", interval=form.canonical)
    assert again["interval"] == form.canonical


@pytest.mark.parametrize("form", FORMS, ids=repr)
def test_create_accepts(srv, form):
    task_id = "g-" + re.sub(r"[^a-z0-9]+", "-", form.text.lower()).strip("-")
    first = srv.post("validate", interval=form.text)["next_runs"][0]
    body = srv.post("create", task_id=task_id, type="command", interval=form.text, command="true")
    last = srv.post("validate", interval=form.text)["next_runs"][0]
    assert body["status"] == "success" and body["task_id"] == task_id
    assert body["message"] == f"Task '{task_id}' scheduled to run {form.text}"
    # created between the two validations, so its next run lies between theirs
    assert first <= body["next_run"] <= last, (first, body["next_run"], last)
    task = srv.post("get", task_id=task_id)["task"]
    assert task["details"]["interval"] == form.text  # kept as written
    assert task["details"]["next_run"] == body["next_run"]
    srv.post("remove", task_id=task_id)


def test_update_keeps_new_interval_as_written(srv):
    srv.post("create", task_id="upd-grammar", type="command", interval="hourly", command="true")
    body = srv.post("update", task_id="upd-grammar", interval="  Friday AT 7:05 ")
    assert body["message"].endswith("  Friday AT 7:05 ")
    next_run = parse_time(body["next_run"])
    assert next_run.weekday() == 4 and next_run.strftime("%H:%M:%S") == "07:05:00"
    assert srv.post("get", task_id="upd-grammar")["task"]["details"]["interval"] == "  Friday AT 7:05 "
    srv.post("remove", task_id="upd-grammar")


# --------------------------------------------------------------------------- refused forms

INVALID = [
    "every 0 minutes", "every -5 minutes", "daily at 25:00", "tuesday at 9", "", "   ", 5,
    pytest.param(None, id="null"), [], "every 5 fortnights",
    # more of the same families
    "every 0 seconds", "every 00 hours", "every 1.5 hours", "every five minutes", "every +5 minutes",
    "every 5", "every", "every minutes", "daily at 2:60", "daily at 24:00", "monday at 24:00",
    "daily at 2", "daily at", "daily at 2:00pm", "at 10:00", "10:30", "mondays at 9:00",
    "every 5 minutes at 15", "every 5 seconds at :10", "every 2 weeks at 10:00",
    "every 5 minutes please", "hourly at 10:00", "every 10 years", "every 99999999999 seconds",
    "every 5 mínutes", "every\u00a05 minutes", 5.5, True, {}, {"every": 5}, ["every 5 minutes"],
]


def _ids(value) -> str:
    return repr(value)[:40]


def check_invalid(response) -> dict:
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert set(body) == ERROR_KEYS and body["status"] == "error", body
    assert body["code"] == "invalid_interval", body
    assert body["field"] == "interval", body
    message = body["message"]
    assert "Traceback" not in message
    # the message lists the accepted forms
    for hint in ("every N", "hourly", "daily at", "monday"):
        assert hint in message, (hint, message)
    return body


@pytest.mark.parametrize("interval", INVALID, ids=_ids)
def test_validate_refuses(srv, interval):
    check_invalid(srv.raw("POST", json={"action": "validate", "interval": interval}))


@pytest.mark.parametrize("interval", INVALID, ids=_ids)
def test_create_refuses_and_changes_nothing(srv, interval):
    before = srv.post("list")
    check_invalid(srv.raw("POST", json={"action": "create", "task_id": "bad-interval",
                                        "type": "command", "command": "true",
                                        "interval": interval}))
    assert srv.post("list") == before


@pytest.mark.parametrize("interval", ["every 0 minutes", "daily at 25:00", "", 5, []], ids=_ids)
def test_update_refuses_and_changes_nothing(srv, interval):
    if srv.raw("POST", json={"action": "get", "task_id": "keeper"}).status_code == 404:
        srv.post("create", task_id="keeper", type="command", interval="every 1 hour", command="true")
    before = srv.post("list")
    check_invalid(srv.raw("POST", json={"action": "update", "task_id": "keeper",
                                        "interval": interval}))
    assert srv.post("list") == before


def test_policy_minimum_interval(tmp_path_factory):
    """rate_limits.min_interval_seconds refuses too-short intervals."""
    base = tmp_path_factory.mktemp("min-interval")
    server = App(base, policy_text=f"version: 1\nallowed_directories: [{base / 'workspace'}]\n"
                                   "rate_limits:\n  min_interval_seconds: 60\n")
    try:
        for text in ("every 30 seconds", "every second", "every 59 seconds"):
            for action in ("validate", "create"):
                response = server.raw("POST", json={
                    "action": action, "interval": text,
                    **({"task_id": "fast", "type": "command", "command": "true"}
                       if action == "create" else {})})
                assert response.status_code == 400, response.text
                body = response.json()
                assert body["field"] == "interval" and "60" in body["message"], body
        assert server.post("list")["count"] == 0
        assert server.post("validate", interval="every minute")["interval"] == "every minute"
        server.post("create", task_id="ok", type="command", command="true", interval="every 60 seconds")
    finally:
        server.close()
