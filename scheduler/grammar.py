"""Parse a task's human-readable ``interval`` text into a :class:`Schedule`.

A schedule turns a task's *anchor* (its creation/update time) into a deterministic series of
due times ("slots"). Slots depend only on the anchor, never on when earlier runs happened, so a
late or skipped run never shifts later ones. Nothing here reads the clock: callers pass the
anchor and the instant to look after, both as POSIX epoch seconds.

Calendar forms ("daily at 02:00", "every monday at 09:30", "every hour at 30:00") follow the
local wall clock of ``tz`` (the server's local zone when ``tz`` is None). A clock time that does
not exist on some day (spring-forward gap) is mapped as with ``fold=0``, i.e. with the UTC offset
in force before the transition, so 02:30 in a 02:00->03:00 gap fires at 03:30; a clock time that
occurs twice (fall-back) fires once, at its first occurrence (``fold=0``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import NoReturn

from scheduler.errors import InvalidInterval

ACCEPTED_FORMS = (
    "Accepted interval forms (case-insensitive, N a positive whole number written in digits): "
    "'every N seconds|minutes|hours|days|weeks' (singular or plural; sec/secs, min/mins and "
    "hr/hrs also work), 'every second|minute|hour|day|week', 'hourly', 'daily', 'weekly' "
    "(intervals count from when the task is created or updated), "
    "'daily at T', 'every day at T', 'every N days at T', '<weekday> at T' or "
    "'every <weekday> at T' (monday ... sunday), 'every <weekday>' (at 00:00), "
    "'every N minutes at :SS', 'every N hours at MM:SS' or 'every N hours at :MM' (SS a second, "
    "MM a minute of the local clock). T is a 24-hour local time H:MM, HH:MM or HH:MM:SS. "
    "The longest period is 10 years; the text is ASCII, at most 100 characters. "
    "Examples: 'every 5 minutes', 'daily at 2:00', 'every friday at 17:30'."
)

_MAX_LENGTH = 100
_MAX_PERIOD = 315_360_000  # 10 years of 365 days, in seconds
_MAX_DIGITS = 9  # the cap fits in 9 digits; stops int() from ever seeing huge numbers
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_ABBREVIATIONS = {"sec": "second", "min": "minute", "hr": "hour"}
# Words that may stand alone after "every" (meaning N = 1); "sec"/"min"/"hr" read as singular.
_SINGLE_UNITS = {**{unit: unit for unit in _UNIT_SECONDS}, **_ABBREVIATIONS}
_UNITS = {**_SINGLE_UNITS, **{word + "s": unit for word, unit in _SINGLE_UNITS.items()}}
_WORD_UNITS = {"hourly": "hour", "daily": "day", "weekly": "week"}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_SECOND_RE = re.compile(r":([0-9]{2})")
_MINUTE_SECOND_RE = re.compile(r"([0-9]{2})?:([0-9]{2})")


class Schedule(ABC):
    """A parsed interval: a rule that maps an anchor to an infinite, increasing series of slots."""

    @property
    @abstractmethod
    def canonical(self) -> str:
        """The canonical text; parsing it again yields an equal schedule."""

    @property
    @abstractmethod
    def period_seconds(self) -> int:
        """Nominal shortest gap between two consecutive slots (for min-interval policies)."""

    def next_slot(self, anchor: float, after: float) -> float:
        """First due time strictly greater than `after` (epoch seconds).

        Slots depend only on `anchor` (the task's creation/update time, epoch seconds), never
        on when previous runs happened. Raises ValueError for non-finite times.
        """
        if not (math.isfinite(anchor) and math.isfinite(after)):
            raise ValueError("anchor and after must be finite epoch seconds")
        return float(self._next(anchor, after))

    def next_slots(self, anchor: float, after: float, count: int) -> list[float]:
        """The next `count` slots strictly after `after`, in increasing order."""
        if count < 0:
            raise ValueError("count must not be negative")
        slots: list[float] = []
        for _ in range(count):
            after = self.next_slot(anchor, after)
            slots.append(after)
        return slots

    @abstractmethod
    def _next(self, anchor: float, after: float) -> float:
        """next_slot without argument checks."""


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """Every `count` `unit`s: slots are anchor + k * period for k >= 1 (not clock-aligned)."""

    count: int
    unit: str  # a key of _UNIT_SECONDS

    @property
    def canonical(self) -> str:
        return f"every {_quantity(self.count, self.unit)}"

    @property
    def period_seconds(self) -> int:
        return self.count * _UNIT_SECONDS[self.unit]

    def _next(self, anchor: float, after: float) -> float:
        return _arithmetic_next(anchor, self.period_seconds, after, k_min=1)


@dataclass(frozen=True)
class AlignedSchedule(Schedule):
    """Every `count` minutes at second `second`, or every `count` hours at `minute`:`second`.

    The first slot is the first instant strictly after the anchor whose local clock shows that
    second of the minute (minute:second of the hour); later slots are that + k * period. The UTC
    offset in force at the anchor fixes the alignment, which whole-hour DST shifts never break.
    """

    count: int
    unit: str  # "minute" or "hour"
    minute: int  # always 0 when unit is "minute"
    second: int
    tz: tzinfo | None = None

    @property
    def canonical(self) -> str:
        at = f":{self.second:02d}" if self.unit == "minute" else f"{self.minute:02d}:{self.second:02d}"
        return f"every {_quantity(self.count, self.unit)} at {at}"

    @property
    def period_seconds(self) -> int:
        return self.count * _UNIT_SECONDS[self.unit]

    def _next(self, anchor: float, after: float) -> float:
        size = _UNIT_SECONDS[self.unit]
        offset = _local(anchor, self.tz).utcoffset() or timedelta(0)
        shift = offset.total_seconds()
        # Start of the anchor's local minute/hour, back in epoch seconds, plus the wanted offset.
        first = math.floor((anchor + shift) / size) * size - shift + self.minute * 60 + self.second
        if first <= anchor:
            first += size
        return _arithmetic_next(first, self.period_seconds, after, k_min=0)


class _CalendarSchedule(Schedule):
    """Slots at local clock time `at` on every `_step_days`-th local date from `_first_date`."""

    at: time
    tz: tzinfo | None

    @abstractmethod
    def _first_date(self, anchor_date: date) -> date:
        """The first candidate date, given the anchor's local date."""

    def _candidate(self, first: date, days: int) -> float:
        # A naive datetime (tz None) is read as server-local time by .timestamp(); fold=0 either way.
        return datetime.combine(first + timedelta(days=days), self.at, tzinfo=self.tz).timestamp()

    def _next(self, anchor: float, after: float) -> float:
        # Slots are the candidates strictly after the anchor, so we want the first candidate
        # strictly after both. Candidates grow with k, so estimate k from the local date and
        # step to the exact one; each loop runs at most a couple of times (DST, rounding).
        first = self._first_date(_local(anchor, self.tz).date())
        step = self.period_seconds // 86400
        bound = max(anchor, after)
        k = max(0, (_local(bound, self.tz).date() - first).days // step)
        while k > 0 and self._candidate(first, (k - 1) * step) > bound:
            k -= 1
        while (slot := self._candidate(first, k * step)) <= bound:
            k += 1
        return slot


@dataclass(frozen=True)
class DailySchedule(_CalendarSchedule):
    """Every `days` local calendar days at local time `at`, counted from the anchor's date.

    The first slot is the first of (anchor date + k * days) at `at`, k >= 0, that is strictly
    after the anchor: "every 2 days at 23:59" created at 10:00 fires the same day at 23:59.
    """

    days: int
    at: time
    tz: tzinfo | None = None

    @property
    def canonical(self) -> str:
        return f"every {_quantity(self.days, 'day')} at {_clock(self.at)}"

    @property
    def period_seconds(self) -> int:
        return self.days * 86400

    def _first_date(self, anchor_date: date) -> date:
        return anchor_date


@dataclass(frozen=True)
class WeekdaySchedule(_CalendarSchedule):
    """Weekly on `weekday` (0 = Monday) at local time `at`; the first one strictly after the anchor."""

    weekday: int
    at: time
    tz: tzinfo | None = None

    @property
    def canonical(self) -> str:
        return f"every {_WEEKDAYS[self.weekday]} at {_clock(self.at)}"

    @property
    def period_seconds(self) -> int:
        return 604800

    def _first_date(self, anchor_date: date) -> date:
        return anchor_date + timedelta(days=(self.weekday - anchor_date.weekday()) % 7)


def parse_interval(text: object, *, tz: tzinfo | None = None) -> Schedule:
    """Parse `text` (see ACCEPTED_FORMS) into a Schedule; raise InvalidInterval if not accepted.

    `tz` is the zone whose wall clock calendar forms follow; None means the server's local zone.
    """
    if tz is not None and not isinstance(tz, tzinfo):  # a programming error, not bad input
        raise TypeError(f"tz must be a datetime.tzinfo or None, not {type(tz).__name__}")
    if not isinstance(text, str):
        _invalid(f"the interval must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        _invalid(f"the interval is longer than {_MAX_LENGTH} characters")
    if not text.isascii():  # also keeps str.isdigit() and lower() to plain ASCII meanings
        _invalid("the interval may contain only ASCII characters")
    words = text.lower().split()
    if not words:
        _invalid("the interval is empty")
    try:
        return _parse(words, tz)
    except _Bad as bad:
        _invalid(f"{' '.join(words)!r} is not accepted: {bad}")


class _Bad(ValueError):
    """Why the words were rejected; parse_interval adds the text and the accepted forms."""


def _invalid(reason: str) -> NoReturn:
    raise InvalidInterval(f"Invalid interval: {reason}. {ACCEPTED_FORMS}")


def _parse(words: list[str], tz: tzinfo | None) -> Schedule:
    head, rest = words[0], words[1:]
    if head in _WORD_UNITS:
        if not rest:
            return IntervalSchedule(1, _WORD_UNITS[head])
        if head == "daily":
            return DailySchedule(1, _clock_time(_at_spec(rest, head)), tz)
        raise _Bad(f"unexpected {' '.join(rest)!r} after {head!r}")
    every = head == "every"
    if every:
        if not rest:
            raise _Bad("'every' must be followed by a number, a unit or a weekday")
        head, rest = rest[0], rest[1:]
    if head in _WEEKDAYS:
        at = time(0) if every and not rest else _clock_time(_at_spec(rest, head))
        return WeekdaySchedule(_WEEKDAYS.index(head), at, tz)
    if not every:
        raise _Bad(f"it must start with 'every', a weekday, 'hourly', 'daily' or 'weekly', not {head!r}")
    if head in _SINGLE_UNITS:
        count, unit = 1, _SINGLE_UNITS[head]
    elif head in _UNITS:
        raise _Bad(f"the number is missing before {head!r}")
    else:
        count = _count(head)
        if not rest:
            raise _Bad(f"the unit is missing after {head!r}")
        if rest[0] not in _UNITS:
            raise _Bad(f"unknown unit {rest[0]!r}; use seconds, minutes, hours, days or weeks")
        unit, rest = _UNITS[rest[0]], rest[1:]
    if count * _UNIT_SECONDS[unit] > _MAX_PERIOD:
        raise _Bad("the period is longer than 10 years")
    if not rest:
        return IntervalSchedule(count, unit)
    spec = _at_spec(rest, unit)
    if unit == "day":
        return DailySchedule(count, _clock_time(spec), tz)
    if unit == "minute" and (m := _SECOND_RE.fullmatch(spec)):
        return AlignedSchedule(count, unit, 0, _ranged("second", m[1], 59), tz)
    if unit == "hour" and (m := _MINUTE_SECOND_RE.fullmatch(spec)):
        if m[1] is None:  # ":MM" names the minute of the hour
            return AlignedSchedule(count, unit, _ranged("minute", m[2], 59), 0, tz)
        return AlignedSchedule(count, unit, _ranged("minute", m[1], 59), _ranged("second", m[2], 59), tz)
    hints = {"minute": "':SS'", "hour": "'MM:SS' or ':MM'"}
    if unit in hints:
        raise _Bad(f"with {unit}s, 'at' takes {hints[unit]}, not {spec!r}")
    raise _Bad(f"'at' cannot be used with {unit}s")


def _count(word: str) -> int:
    """N of 'every N units': digits only (leading zeros fine), at least 1, at most 9 digits."""
    if not word.isdigit():
        if any(c.isdigit() for c in word):
            raise _Bad(f"N must be a positive whole number written with digits only, not {word!r}")
        raise _Bad(f"expected a number, a unit or a weekday after 'every', not {word!r}")
    digits = word.lstrip("0")
    if not digits:
        raise _Bad("N must be at least 1")
    if len(digits) > _MAX_DIGITS:
        raise _Bad("the period is longer than 10 years")
    return int(digits)


def _at_spec(rest: list[str], after: str) -> str:
    """The single word following 'at', which must be all that is left."""
    if not rest:
        raise _Bad(f"expected 'at <time>' after {after!r}")
    if rest[0] != "at":
        raise _Bad(f"unexpected {' '.join(rest)!r}")
    if len(rest) == 1:
        raise _Bad("the time after 'at' is missing")
    if len(rest) > 2:
        raise _Bad(f"unexpected {' '.join(rest[2:])!r} after {rest[1]!r}")
    return rest[1]


def _clock_time(spec: str) -> time:
    m = _TIME_RE.fullmatch(spec)
    if not m:
        raise _Bad(f"the time {spec!r} must be H:MM, HH:MM or HH:MM:SS")
    return time(_ranged("hour", m[1], 23), _ranged("minute", m[2], 59), _ranged("second", m[3] or "0", 59))


def _ranged(name: str, digits: str, top: int) -> int:
    value = int(digits)
    if value > top:
        raise _Bad(f"the {name} {value} is out of range 0-{top}")
    return value


def _quantity(count: int, unit: str) -> str:
    return unit if count == 1 else f"{count} {unit}s"


def _clock(at: time) -> str:
    return f"{at.hour:02d}:{at.minute:02d}" + (f":{at.second:02d}" if at.second else "")


def _local(t: float, tz: tzinfo | None) -> datetime:
    """Aware local time of instant `t` in `tz` (astimezone(None) picks the server's zone)."""
    return datetime.fromtimestamp(t, timezone.utc).astimezone(tz)


def _arithmetic_next(base: float, period: int, after: float, k_min: int) -> float:
    """base + k * period for the smallest k >= k_min that is strictly greater than `after`."""
    k = max(k_min, math.floor((after - base) / period) + 1)
    # The division can be off by one either way through float rounding; settle on the exact k
    # by comparing the very values we return (each loop runs at most once or twice).
    while k > k_min and base + (k - 1) * period > after:
        k -= 1
    while base + k * period <= after:
        k += 1
    return base + k * period
