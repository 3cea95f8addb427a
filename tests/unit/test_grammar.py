"""Unit tests for scheduler.grammar: parsing, canonical texts, and deterministic slots.

Times are injected (anchor/after); only the oracle test against the `schedule` library reads
the clock, because that library computes its next run from "now".
"""

from __future__ import annotations

import math
import time as clock
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import schedule
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import InvalidInterval
from scheduler.grammar import ACCEPTED_FORMS, Schedule, parse_interval

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
ZONES = [UTC, BERLIN, ZoneInfo("America/New_York"), KOLKATA, ZoneInfo("Australia/Lord_Howe")]
# No example database: keeps runs deterministic and writes no files into the repository.
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PROPERTY = settings(max_examples=150, deadline=None, database=None)


def at(zone: ZoneInfo, *fields: int) -> float:
    """Epoch seconds of a local wall-clock time in `zone` (fold=0)."""
    return datetime(*fields, tzinfo=zone).timestamp()


def local(t: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(t, zone)


# --------------------------------------------------------------------------- accepted text

@pytest.mark.parametrize("text, canonical, period", [
    ("every 5 minutes", "every 5 minutes", 300),
    ("every 1 minute", "every minute", 60),
    ("every 1 minutes", "every minute", 60),
    ("every minute", "every minute", 60),
    ("every second", "every second", 1),
    ("every 1 second", "every second", 1),
    ("every 30 seconds", "every 30 seconds", 30),
    ("every 2 hours", "every 2 hours", 7200),
    ("every hour", "every hour", 3600),
    ("every 3 days", "every 3 days", 259200),
    ("every day", "every day", 86400),
    ("every 2 weeks", "every 2 weeks", 1209600),
    ("every week", "every week", 604800),
    ("every 0005 minutes", "every 5 minutes", 300),
    ("every 10 secs", "every 10 seconds", 10),
    ("every 10 sec", "every 10 seconds", 10),
    ("every sec", "every second", 1),
    ("every 15 mins", "every 15 minutes", 900),
    ("every min", "every minute", 60),
    ("every 3 hrs", "every 3 hours", 10800),
    ("every hr", "every hour", 3600),
    ("every 5 minute", "every 5 minutes", 300),
    ("hourly", "every hour", 3600),
    ("daily", "every day", 86400),
    ("weekly", "every week", 604800),
    ("daily at 2:00", "every day at 02:00", 86400),
    ("daily at 02:00", "every day at 02:00", 86400),
    ("daily at 02:00:30", "every day at 02:00:30", 86400),
    ("daily at 02:00:00", "every day at 02:00", 86400),
    ("every day at 23:59", "every day at 23:59", 86400),
    ("every 1 day at 0:00", "every day at 00:00", 86400),
    ("every 3 days at 02:00", "every 3 days at 02:00", 259200),
    ("monday at 09:30", "every monday at 09:30", 604800),
    ("every monday at 9:30", "every monday at 09:30", 604800),
    ("every monday", "every monday at 00:00", 604800),
    ("sunday at 23:59:59", "every sunday at 23:59:59", 604800),
    ("every tuesday", "every tuesday at 00:00", 604800),
    ("wednesday at 12:00", "every wednesday at 12:00", 604800),
    ("thursday at 12:00", "every thursday at 12:00", 604800),
    ("friday at 17:30", "every friday at 17:30", 604800),
    ("saturday at 06:00", "every saturday at 06:00", 604800),
    ("every 5 minutes at :15", "every 5 minutes at :15", 300),
    ("every minute at :05", "every minute at :05", 60),
    ("every 2 hours at 30:00", "every 2 hours at 30:00", 7200),
    ("every hour at :15", "every hour at 15:00", 3600),
    ("every hour at 15:30", "every hour at 15:30", 3600),
    ("every 315360000 seconds", "every 315360000 seconds", 315360000),
    ("every 5256000 minutes", "every 5256000 minutes", 315360000),
    ("every 87600 hours", "every 87600 hours", 315360000),
    ("every 3650 days", "every 3650 days", 315360000),
    ("every 521 weeks", "every 521 weeks", 315100800),
])
def test_accepted_forms(text: str, canonical: str, period: int) -> None:
    parsed = parse_interval(text, tz=UTC)
    assert isinstance(parsed, Schedule)
    assert parsed.canonical == canonical
    assert parsed.period_seconds == period
    assert parse_interval(canonical, tz=UTC) == parsed  # canonical text round-trips


@pytest.mark.parametrize("text", [
    "EVERY 5 MINUTES", "Every 5 Minutes", "  every 5 minutes  ", "every   5\tminutes",
    "\n every\t 5   minutes \r\n", "eVeRy 5 mInUtEs",
])
def test_case_and_whitespace_are_ignored(text: str) -> None:
    assert parse_interval(text).canonical == "every 5 minutes"


@pytest.mark.parametrize("text, canonical", [
    ("DAILY AT 2:00", "every day at 02:00"), ("  Monday   at  09:30 ", "every monday at 09:30"),
    ("Every Hour At :15", "every hour at 15:00"), ("HOURLY", "every hour"),
    ("EVERY SUNDAY", "every sunday at 00:00"), ("every 2 Hours at 30:00", "every 2 hours at 30:00"),
])
def test_case_and_whitespace_in_calendar_forms(text: str, canonical: str) -> None:
    assert parse_interval(text).canonical == canonical


def test_schedules_are_values() -> None:
    a, b = parse_interval("daily at 2:00", tz=UTC), parse_interval("every day at 02:00", tz=UTC)
    assert a == b and hash(a) == hash(b)
    assert parse_interval("every 60 minutes") != parse_interval("every hour")
    with pytest.raises(AttributeError):
        a.days = 2  # type: ignore[misc]  # frozen


# --------------------------------------------------------------------------- rejections

@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("   ", "empty"), ("\t\n", "empty"),
    (None, "must be a string"), (5, "must be a string"), (5.0, "must be a string"),
    (True, "must be a string"), (False, "must be a string"), ([], "must be a string"),
    (["every 5 minutes"], "must be a string"), ({}, "must be a string"),
    ({"every": 5}, "must be a string"), (b"every 5 minutes", "must be a string"),
    ("every 0 minutes", "at least 1"), ("every 000 minutes", "at least 1"),
    ("every -5 minutes", "digits only"), ("every +5 minutes", "digits only"),
    ("every 1.5 hours", "digits only"), ("every 1e3 seconds", "digits only"),
    ("every 5minutes", "digits only"), ("every five minutes", "expected a number"),
    ("every \uff15 minutes", "ASCII"), ("every 5 m\u012bnutes", "ASCII"),
    ("daily at 25:00", "hour 25"), ("daily at 24:00", "hour 24"), ("daily at 12:60", "minute 60"),
    ("daily at 12:00:60", "second 60"), ("daily at 123:00", "must be H:MM"),
    ("daily at 12:5", "must be H:MM"), ("daily at 12", "must be H:MM"), ("daily at noon", "must be H:MM"),
    ("tuesday at 9", "must be H:MM"), ("every monday at 9", "must be H:MM"),
    ("every 5 fortnights", "unknown unit 'fortnights'"), ("every 5", "unit is missing"),
    ("every", "must be followed"), ("every minutes", "number is missing"),
    ("every 5 minutes please", "unexpected 'please'"), ("daily at 02:00 please", "unexpected 'please'"),
    ("every 5 minutes at", "missing"), ("daily at", "missing"), ("monday", "expected 'at <time>'"),
    ("hourly please", "unexpected 'please'"), ("weekly at 10:00", "unexpected"),
    ("5 minutes", "must start with"), ("at 10:00", "must start with"), ("tomorrow", "must start with"),
    ("every 3651 days", "10 years"), ("every 315360001 seconds", "10 years"),
    ("every 522 weeks", "10 years"), ("every 99999999999999999999 seconds", "10 years"),
    ("every " + "9" * 85 + " seconds", "10 years"),
    ("x" * 101, "longer than 100"), ("every 5 minutes" + " " * 90, "longer than 100"),
    ("every 5 seconds at :10", "cannot be used with seconds"),
    ("every week at 10:00", "cannot be used with weeks"),
    ("every 5 minutes at :60", "second 60"), ("every minute at 15", "takes ':SS'"),
    ("every minute at 00:15", "takes ':SS'"), ("every hour at 60:00", "minute 60"),
    ("every hour at :60", "minute 60"), ("every hour at 1:00:00", "takes 'MM:SS' or ':MM'"),
    ("every 2 days at :15", "must be H:MM"), ("every monday at 09:30 and friday", "unexpected"),
    ("mon at 09:30", "must start with"),
])
def test_rejections(text: object, reason: str) -> None:
    with pytest.raises(InvalidInterval) as caught:
        parse_interval(text, tz=UTC)
    error = caught.value
    assert error.code == "invalid_interval"
    assert error.field == "interval"
    assert reason in error.message
    assert ACCEPTED_FORMS in error.message
    assert str(error) == error.message


def test_accepted_forms_is_one_readable_paragraph() -> None:
    assert "\n" not in ACCEPTED_FORMS
    for form in ("every N minutes", "hourly", "daily at T", "every <weekday>", "at :SS", "H:MM"):
        assert form in ACCEPTED_FORMS


# --------------------------------------------------------------------------- interval slots

def test_interval_slots_count_from_the_anchor() -> None:
    s = parse_interval("every 5 minutes")
    anchor = 1_700_000_000.25
    assert s.next_slot(anchor, anchor) == anchor + 300  # first run one period after the anchor
    assert s.next_slot(anchor, anchor - 10_000) == anchor + 300  # `after` before the anchor
    assert s.next_slot(anchor, anchor + 300) == anchor + 600  # strictly after
    assert s.next_slot(anchor, anchor + 299.999) == anchor + 300
    assert s.next_slots(anchor, anchor + 1000, 3) == [anchor + 1200, anchor + 1500, anchor + 1800]
    assert s.next_slots(anchor, anchor, 0) == []


def test_interval_slots_ignore_when_runs_happened() -> None:
    # Asking late (a run was skipped or slow) yields the next grid point, not now + period.
    s = parse_interval("every 10 seconds")
    assert s.next_slot(100.0, 153.7) == 160.0
    assert s.next_slot(100.0, 1e9 + 3) == 1e9 + 10


def test_no_drift_over_a_year_of_seconds() -> None:
    s = parse_interval("every second")
    anchor = 1_767_225_600.1  # a fractional anchor is the hard case for float arithmetic
    k = 365 * 86400
    assert s.next_slot(anchor, anchor + k - 0.5) == anchor + k
    slots = s.next_slots(anchor, math.nextafter(anchor + k, -math.inf), 5)
    assert slots == [anchor + (k + i) for i in range(5)]


def test_interval_slots_ignore_dst() -> None:
    s = parse_interval("every hour", tz=BERLIN)
    anchor = at(BERLIN, 2026, 3, 29, 0, 30)
    slots = s.next_slots(anchor, anchor, 4)
    assert [b - a for a, b in zip([anchor, *slots], slots)] == [3600.0] * 4
    assert [local(t, BERLIN).hour for t in slots] == [1, 3, 4, 5]  # 02:xx does not exist that day


def test_bad_times_and_counts() -> None:
    s = parse_interval("every minute")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            s.next_slot(0.0, bad)
        with pytest.raises(ValueError):
            s.next_slot(bad, 0.0)
    with pytest.raises(ValueError):
        s.next_slots(0.0, 0.0, -1)
    with pytest.raises(TypeError):
        parse_interval("daily at 02:00", tz="Europe/Berlin")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- aligned slots

def test_minutes_at_second() -> None:
    s = parse_interval("every 5 minutes at :15", tz=UTC)
    assert s.next_slot(at(UTC, 2026, 1, 1, 12, 0, 10), 0) == at(UTC, 2026, 1, 1, 12, 0, 15)
    anchor = at(UTC, 2026, 1, 1, 12, 0, 20)
    expected = [at(UTC, 2026, 1, 1, 12, m, 15) for m in (1, 6, 11)]
    assert s.next_slots(anchor, anchor, 3) == expected
    anchor = at(UTC, 2026, 1, 1, 12, 0, 15)  # exactly on the second: first slot is the next one
    assert s.next_slot(anchor, anchor) == at(UTC, 2026, 1, 1, 12, 1, 15)


def test_hours_at_minute_second() -> None:
    s = parse_interval("every 2 hours at 30:00", tz=UTC)
    anchor = at(UTC, 2026, 1, 1, 10, 45)
    assert s.next_slots(anchor, anchor, 3) == [at(UTC, 2026, 1, 1, h, 30) for h in (11, 13, 15)]
    s = parse_interval("every hour at :15", tz=UTC)
    assert s.next_slot(anchor, anchor) == at(UTC, 2026, 1, 1, 11, 15)
    s = parse_interval("every hour at 45:10", tz=UTC)
    assert s.next_slot(anchor, anchor) == at(UTC, 2026, 1, 1, 10, 45, 10)


def test_hours_at_follow_local_clock_with_half_hour_offset() -> None:
    s = parse_interval("every hour at :00", tz=KOLKATA)  # UTC+05:30
    anchor = at(UTC, 2026, 1, 1, 12, 0)
    assert s.next_slot(anchor, anchor) == at(UTC, 2026, 1, 1, 12, 30)


def test_hours_at_across_fall_back() -> None:
    s = parse_interval("every hour at 30:00", tz=BERLIN)
    anchor = at(BERLIN, 2026, 10, 25, 0, 0)
    slots = s.next_slots(anchor, anchor, 5)
    assert [local(t, BERLIN).strftime("%H:%M%z") for t in slots] == [
        "00:30+0200", "01:30+0200", "02:30+0200", "02:30+0100", "03:30+0100"]
    assert all(b - a == 3600 for a, b in zip(slots, slots[1:]))


# --------------------------------------------------------------------------- day slots

def test_every_two_days_fires_today_when_time_is_still_ahead() -> None:
    s = parse_interval("every 2 days at 23:59", tz=UTC)
    anchor = at(UTC, 2026, 11, 23, 10, 0)
    assert s.next_slots(anchor, anchor, 3) == [at(UTC, 2026, 11, d, 23, 59) for d in (23, 25, 27)]


def test_daily_at_before_and_after_the_time() -> None:
    s = parse_interval("daily at 2:00", tz=UTC)
    assert s.next_slot(at(UTC, 2026, 11, 23, 1, 0), 0) == at(UTC, 2026, 11, 23, 2, 0)
    assert s.next_slot(at(UTC, 2026, 11, 23, 3, 0), 0) == at(UTC, 2026, 11, 23 + 1, 2, 0)
    anchor = at(UTC, 2026, 11, 23, 2, 0)  # exactly at the time: strictly after, so tomorrow
    assert s.next_slot(anchor, anchor) == at(UTC, 2026, 11, 24, 2, 0)
    # Far in the future: still on the grid, counted from the anchor date.
    assert s.next_slot(anchor, at(UTC, 2036, 5, 7, 2, 0)) == at(UTC, 2036, 5, 8, 2, 0)
    s3 = parse_interval("every 3 days at 02:00:30", tz=UTC)
    assert s3.next_slot(anchor, at(UTC, 2026, 12, 1, 12, 0)) == at(UTC, 2026, 12, 2, 2, 0, 30)


def test_daily_follows_wall_clock_across_dst() -> None:
    s = parse_interval("daily at 09:00", tz=BERLIN)
    anchor = at(BERLIN, 2026, 3, 27, 12, 0)
    slots = s.next_slots(anchor, anchor, 3)
    assert [local(t, BERLIN).hour for t in slots] == [9, 9, 9]
    assert slots[1] - slots[0] == 23 * 3600  # spring forward: a 23-hour day
    anchor = at(BERLIN, 2026, 10, 23, 12, 0)
    slots = s.next_slots(anchor, anchor, 3)
    assert [local(t, BERLIN).hour for t in slots] == [9, 9, 9]
    assert slots[1] - slots[0] == 25 * 3600  # fall back: a 25-hour day


def test_daily_in_spring_forward_gap_fires_at_the_end_of_the_gap() -> None:
    s = parse_interval("daily at 02:30", tz=BERLIN)
    anchor = at(BERLIN, 2026, 3, 27, 12, 0)
    assert s.next_slots(anchor, anchor, 3) == [
        at(UTC, 2026, 3, 28, 1, 30),  # 02:30 CET
        at(UTC, 2026, 3, 29, 1, 0),  # 02:30 does not exist: the first instant after the gap, 03:00 CEST
        at(UTC, 2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_daily_at_ambiguous_time_fires_once_at_first_occurrence() -> None:
    s = parse_interval("daily at 02:30", tz=BERLIN)
    anchor = at(BERLIN, 2026, 10, 23, 12, 0)
    assert s.next_slots(anchor, anchor, 3) == [
        at(UTC, 2026, 10, 24, 0, 30),  # 02:30 CEST
        at(UTC, 2026, 10, 25, 0, 30),  # 02:30 happens twice; the first (CEST) one
        at(UTC, 2026, 10, 26, 1, 30),  # 02:30 CET
    ]


# --------------------------------------------------------------------------- weekday slots

def test_weekday_slots() -> None:
    monday_10 = at(UTC, 2026, 11, 23, 10, 0)  # a Monday

    def next_slot(text: str) -> float:
        return parse_interval(text, tz=UTC).next_slot(monday_10, monday_10)

    assert next_slot("monday at 09:30") == at(UTC, 2026, 11, 30, 9, 30)
    assert next_slot("every monday at 10:30") == at(UTC, 2026, 11, 23, 10, 30)
    assert next_slot("monday at 10:00") == at(UTC, 2026, 11, 30, 10, 0)  # strictly after
    assert next_slot("every monday") == at(UTC, 2026, 11, 30, 0, 0)
    assert next_slot("sunday at 02:30") == at(UTC, 2026, 11, 29, 2, 30)
    assert next_slot("tuesday at 00:00") == at(UTC, 2026, 11, 24, 0, 0)
    s = parse_interval("friday at 17:30", tz=UTC)
    assert s.next_slots(monday_10, monday_10, 3) == [
        at(UTC, 2026, 11, 27, 17, 30), at(UTC, 2026, 12, 4, 17, 30), at(UTC, 2026, 12, 11, 17, 30)]


def test_weekday_across_dst() -> None:
    s = parse_interval("every sunday at 02:30", tz=BERLIN)
    anchor = at(BERLIN, 2026, 3, 27, 12, 0)  # a Friday
    assert s.next_slots(anchor, anchor, 2) == [at(UTC, 2026, 3, 29, 1, 0), at(UTC, 2026, 4, 5, 0, 30)]
    s = parse_interval("every sunday at 12:00", tz=BERLIN)
    anchor = at(BERLIN, 2026, 3, 20, 12, 0)  # the Friday before: Sunday 22nd (CET), 29th (CEST)
    slots = s.next_slots(anchor, anchor, 2)
    assert slots[1] - slots[0] == 604800 - 3600
    assert [local(t, BERLIN).hour for t in slots] == [12, 12]


# --------------------------------------------------------------------------- properties

def _texts() -> st.SearchStrategy[str]:
    unit = st.sampled_from(["seconds", "minutes", "hours", "days", "weeks"])
    hh, mm, ss = st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)
    weekday = st.sampled_from(WEEKDAYS)
    return st.one_of(
        st.builds(lambda n, u: f"every {n} {u}", st.integers(1, 500), unit),
        st.builds(lambda n, s: f"every {n} minutes at :{s:02d}", st.integers(1, 200), ss),
        st.builds(lambda n, m, s: f"every {n} hours at {m:02d}:{s:02d}", st.integers(1, 50), mm, ss),
        st.builds(lambda n, h, m, s: f"every {n} days at {h}:{m:02d}:{s:02d}", st.integers(1, 40), hh, mm, ss),
        st.builds(lambda d, h, m: f"{d} at {h:02d}:{m:02d}", weekday, hh, mm),
    )


anchors = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
offsets = st.floats(min_value=-1e6, max_value=3e8, allow_nan=False, allow_infinity=False)


@PROPERTY
@given(_texts(), st.sampled_from(ZONES), anchors, offsets)
def test_property_next_slot_is_strictly_after_and_is_a_slot(text: str, zone: ZoneInfo,
                                                            anchor: float, offset: float) -> None:
    s = parse_interval(text, tz=zone)
    after = anchor + offset
    slot = s.next_slot(anchor, after)
    assert slot > after and slot > anchor
    assert s.next_slot(anchor, math.nextafter(slot, -math.inf)) == slot
    first = s.next_slot(anchor, anchor)
    assert s.next_slot(anchor, anchor - 1e6) == first  # before the anchor means the first slot
    slots = s.next_slots(anchor, after, 4)
    assert slots[0] == slot
    assert all(a < b for a, b in zip(slots, slots[1:]))
    assert s.next_slot(anchor, slots[1]) == slots[2]


@PROPERTY
@given(st.integers(1, 500), st.sampled_from(["second", "minute", "hour", "day", "week"]),
       anchors, st.integers(1, 10**7))
def test_property_interval_slots_never_drift(n: int, unit: str, anchor: float, k: int) -> None:
    s = parse_interval(f"every {n} {unit}s")
    p = s.period_seconds
    kth = anchor + k * p
    assert s.next_slot(anchor, math.nextafter(kth, -math.inf)) == kth
    assert s.next_slot(anchor, kth) == anchor + (k + 1) * p
    slots = s.next_slots(anchor, kth, 3)
    assert slots == [anchor + (k + i) * p for i in (1, 2, 3)]
    # Spacing equals the period up to float rounding of the (possibly huge) absolute times.
    assert all(b - a == pytest.approx(p, rel=1e-8, abs=1e-5) for a, b in zip(slots, slots[1:]))


@PROPERTY
@given(st.sampled_from(ZONES[:4]), anchors, offsets, st.integers(1, 200), st.booleans(),
       st.integers(0, 59), st.integers(0, 59))
def test_property_aligned_slots_match_the_local_clock(zone: ZoneInfo, anchor: float, offset: float,
                                                      n: int, hours: bool, mm: int, ss: int) -> None:
    # Zones whose offsets change by whole hours only (Lord Howe's 30-minute DST is left out).
    text = f"every {n} hours at {mm:02d}:{ss:02d}" if hours else f"every {n} minutes at :{ss:02d}"
    s = parse_interval(text, tz=zone)
    size = 3600 if hours else 60
    first, slot = s.next_slot(anchor, anchor), s.next_slot(anchor, anchor + offset)
    assert 0 < first - anchor <= size  # the first matching instant after the anchor
    assert (slot - first) % s.period_seconds == 0  # then a fixed grid
    wall = local(slot, zone)
    assert wall.second == ss and (wall.minute == mm or not hours)


def _brute_force_calendar(s: Schedule, zone: ZoneInfo, anchor: float, after: float) -> float:
    """Walk candidate dates one by one from the anchor's date (the slow, obvious algorithm)."""
    when = s.canonical.rsplit(" ", 1)[1]
    clock_time = datetime.strptime(when, "%H:%M:%S" if when.count(":") == 2 else "%H:%M").time()
    day = local(anchor, zone).date()
    step = s.period_seconds // 86400
    if " day" not in s.canonical:  # weekday form: start on the first such weekday
        while WEEKDAYS[day.weekday()] != s.canonical.split()[1]:
            day = day.fromordinal(day.toordinal() + 1)
    while True:
        wall = datetime.combine(day, clock_time)
        candidate = wall.replace(tzinfo=zone).timestamp()
        while local(candidate - 60, zone).replace(tzinfo=None) > wall:  # in a gap: its end
            candidate -= 60
        if candidate > anchor and candidate > after:
            return candidate
        day = day.fromordinal(day.toordinal() + step)


@PROPERTY
@given(st.one_of(
    st.builds(lambda n, h, m, s: f"every {n} days at {h}:{m:02d}:{s:02d}",
              st.integers(1, 10), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
    st.builds(lambda d, h, m: f"{d} at {h:02d}:{m:02d}",
              st.sampled_from(["monday", "wednesday", "sunday"]), st.integers(0, 23), st.integers(0, 59)),
), st.sampled_from(ZONES), anchors, st.floats(min_value=-1e6, max_value=1e7))
def test_property_calendar_matches_brute_force(text: str, zone: ZoneInfo, anchor: float, offset: float) -> None:
    s = parse_interval(text, tz=zone)
    assert s.next_slot(anchor, anchor + offset) == _brute_force_calendar(s, zone, anchor, anchor + offset)


@PROPERTY
@given(_texts(), st.data())
def test_property_canonical_round_trips_through_case_and_spacing(text: str, data: st.DataObject) -> None:
    s = parse_interval(text, tz=UTC)
    words = s.canonical.split(" ")
    n = len(words)
    upper = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.sampled_from(["", " ", "  ", "\t", " \n "]), min_size=n + 1, max_size=n + 1))
    gaps[1:n] = [gap or " " for gap in gaps[1:n]]  # words need some whitespace between them
    messy = gaps[0] + "".join((w.upper() if u else w) + g for w, u, g in zip(words, upper, gaps[1:]))
    assert parse_interval(messy, tz=UTC) == s
    assert parse_interval(s.canonical, tz=UTC).canonical == s.canonical


# --------------------------------------------------------------------------- oracle

ORACLE_FORMS = [
    ("every day at 02:00", lambda sc: sc.every().day.at("02:00")),
    ("daily at 23:59:30", lambda sc: sc.every().day.at("23:59:30")),
    ("every monday at 09:30", lambda sc: sc.every().monday.at("09:30")),
    ("every hour at :15", lambda sc: sc.every().hour.at(":15")),
    ("every hour at 30:15", lambda sc: sc.every().hour.at("30:15")),
    ("every minute at :15", lambda sc: sc.every().minute.at(":15")),
] + [
    (f"{day} at {hhmm}", lambda sc, day=day, hhmm=hhmm: getattr(sc.every(), day).at(hhmm))
    for day in WEEKDAYS
    for hhmm in ("00:00", "12:00", "23:59")
]


@pytest.mark.parametrize("text, make_job", ORACLE_FORMS)
def test_oracle_against_schedule_library(text: str, make_job) -> None:
    ours = parse_interval(text)  # tz None: the server's local zone, as `schedule` uses
    for _ in range(3):
        before = clock.time()
        job = make_job(schedule.Scheduler()).do(lambda: None)
        after = clock.time()
        # If a slot boundary fell between the two clock reads, the comparison is ambiguous; retry.
        if ours.next_slot(before, before) == ours.next_slot(after, after):
            assert ours.next_slot(before, before) == job.next_run.timestamp()  # naive local time
            return
    pytest.fail("clock kept crossing a slot boundary")


@pytest.mark.parametrize("text, make_job", [
    ("every 5 minutes", lambda sc: sc.every(5).minutes),
    ("every 2 hours", lambda sc: sc.every(2).hours),
    ("daily", lambda sc: sc.every().day),
    ("weekly", lambda sc: sc.every().week),
])
def test_oracle_intervals_against_schedule_library(text: str, make_job) -> None:
    # `schedule` takes "now" itself, microseconds after ours; both must agree to the second.
    now = clock.time()
    theirs = make_job(schedule.Scheduler()).do(lambda: None).next_run
    assert abs(parse_interval(text).next_slot(now, now) - theirs.timestamp()) < 1


def test_schedule_library_rejects_single_digit_hour_but_we_accept_it() -> None:
    with pytest.raises(schedule.ScheduleValueError):
        schedule.Scheduler().every().day.at("2:00")
    assert parse_interval("daily at 2:00", tz=timezone.utc).canonical == "every day at 02:00"
