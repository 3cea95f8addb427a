"""Unit tests for scheduler.zones: zone names, wall times across transitions, ISO times."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import InvalidRequest
from scheduler.zones import iso_time, local_zone, resolve_zone, wall_to_epoch, zone_name

UTC = ZoneInfo("UTC")


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("zone, wall, expected", [
    # An ordinary time.
    ("Europe/Berlin", datetime(2026, 7, 1, 12, 0), utc(2026, 7, 1, 10, 0)),
    # Spring-forward gaps: the first instant after the gap.
    ("Europe/Berlin", datetime(2026, 3, 29, 2, 0), utc(2026, 3, 29, 1, 0)),
    ("Europe/Berlin", datetime(2026, 3, 29, 2, 59, 59), utc(2026, 3, 29, 1, 0)),
    ("America/New_York", datetime(2026, 3, 8, 2, 30), utc(2026, 3, 8, 7, 0)),
    ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15), utc(2026, 10, 3, 15, 30)),
    ("America/Sao_Paulo", datetime(2018, 11, 4, 0, 30), utc(2018, 11, 4, 3, 0)),
    # Fall-back folds: the first occurrence.
    ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30)),
    ("America/New_York", datetime(2026, 11, 1, 1, 30), utc(2026, 11, 1, 5, 30)),
    ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45), utc(2026, 4, 4, 14, 45)),
    # The edges of a gap exist.
    ("Europe/Berlin", datetime(2026, 3, 29, 1, 59, 59), utc(2026, 3, 29, 0, 59, 59)),
    ("Europe/Berlin", datetime(2026, 3, 29, 3, 0), utc(2026, 3, 29, 1, 0)),
])
def test_wall_to_epoch(zone: str, wall: datetime, expected: float) -> None:
    assert wall_to_epoch(wall, ZoneInfo(zone)) == expected


def test_resolve_zone_accepts_database_names_in_any_case() -> None:
    assert resolve_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert zone_name(resolve_zone("europe/BERLIN")) == "Europe/Berlin"
    assert zone_name(resolve_zone("utc")) == "UTC"
    assert zone_name(resolve_zone("Etc/GMT+5")) == "Etc/GMT+5"


@pytest.mark.parametrize("name", ["Nowhere/Land", "../../../etc/passwd", "/etc/localtime", "",
                                  "Europe//Berlin", "Europe/Berlin ", None, 3.5, ["UTC"]])
def test_resolve_zone_refuses_anything_else(name) -> None:
    if name == "Europe/Berlin ":  # surrounding spaces are forgiven
        assert zone_name(resolve_zone(name)) == "Europe/Berlin"
        return
    with pytest.raises(InvalidRequest) as caught:
        resolve_zone(name)
    assert (caught.value.code, caught.value.field) == ("invalid_timezone", "timezone")


def test_the_local_zone_has_a_name() -> None:
    zone = local_zone()
    assert isinstance(zone, tzinfo) and zone_name(zone)


def test_iso_time_carries_the_offset_of_the_zone() -> None:
    assert iso_time(utc(2026, 3, 29, 1, 0), ZoneInfo("Europe/Berlin")) == "2026-03-29T03:00:00+02:00"
    assert iso_time(utc(2026, 10, 3, 15, 30) + 0.75, ZoneInfo("Australia/Lord_Howe")) == (
        "2026-10-04T02:30:00+11:00")
    assert iso_time(0.0, UTC) == "1970-01-01T00:00:00+00:00"
