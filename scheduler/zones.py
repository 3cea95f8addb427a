"""Time zones and wall-clock times: naming a zone, turning a wall time into an instant.

Clock schedules (cron, ``daily at``, weekdays, ``once at``) are wall times in a task's zone.
Daylight saving makes some wall times ambiguous and others nonexistent; the rules here are
Debian cron's, the ones users of cron expect:

* a wall time that happens twice (autumn) means its first occurrence;
* a wall time that does not exist (the hour skipped in spring) means the first instant after
  the gap (02:30 in a 02:00 -> 03:00 gap is 03:00).

The server's default zone is the local zone as an IANA name (``tzlocal``), so that a task
created without a ``timezone`` can still show which zone it follows.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import tzlocal

from .errors import InvalidRequest

_NAME_RE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
_MAX_NAME = 64


def local_zone() -> tzinfo:
    """The server machine's zone (an IANA zone when the machine names one, else UTC)."""
    return tzlocal.get_localzone()


def zone_name(tz: tzinfo) -> str:
    """The IANA name of ``tz`` (``key`` of a ZoneInfo), else what ``tzname`` says."""
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return key
    return str(tz.tzname(None) or tz)


def resolve_zone(name: object, *, field: str = "timezone") -> ZoneInfo:
    """The zone an IANA name (``Europe/Berlin``, case-insensitive) stands for.

    Raises InvalidRequest with code ``invalid_timezone`` for anything else; the name is
    checked against the zone database's list first, so no text ever reaches the file system.
    """
    if not isinstance(name, str):
        raise InvalidRequest(f"'{field}' must be an IANA time zone name such as 'Europe/Berlin' "
                             f"or 'UTC', not {type(name).__name__}", field=field,
                             code="invalid_timezone")
    canonical = _known_zones().get(name.strip().lower()) if _is_name(name.strip()) else None
    if canonical is None:
        raise InvalidRequest(f"'{field}' {name[:_MAX_NAME]!r} is not a known time zone; give an "
                             "IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
                             field=field, code="invalid_timezone")
    try:
        return ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # listed, but its file is broken
        raise InvalidRequest(f"the time zone {canonical!r} cannot be loaded ({exc})", field=field,
                             code="invalid_timezone") from exc


def _is_name(text: str) -> bool:
    return len(text) <= _MAX_NAME and _NAME_RE.fullmatch(text) is not None


@functools.lru_cache(maxsize=1)
def _known_zones() -> dict[str, str]:
    """Lower-cased name → the database's spelling, for every zone the machine can load."""
    return {name.lower(): name for name in available_timezones()}


def wall_to_epoch(wall: datetime, tz: tzinfo) -> float:
    """The instant (epoch seconds) of the naive wall time ``wall`` in ``tz`` (rules above)."""
    first = wall.replace(tzinfo=tz, fold=0).timestamp()
    if _wall(first, tz) == wall:
        return first
    # In a gap, fold=1 reads the wall time with the offset after the transition and lands
    # before it; fold=0 with the offset before it and lands after. The transition lies
    # between: the first whole second whose wall time is past ``wall``.
    lo = math.floor(wall.replace(tzinfo=tz, fold=1).timestamp())
    hi = math.ceil(first)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) > wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _wall(t: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(t, tz).replace(tzinfo=None)


def local_datetime(t: float, tz: tzinfo) -> datetime:
    """The aware time of instant ``t`` in ``tz``."""
    return datetime.fromtimestamp(t, timezone.utc).astimezone(tz)


def iso_time(t: float, tz: tzinfo) -> str:
    """ISO 8601 with the UTC offset, in ``tz``, to the second (``2026-03-29T03:00:00+02:00``)."""
    return local_datetime(math.floor(t), tz).isoformat()
