"""Parse a task's human-readable ``interval`` text into a :class:`Schedule`.

A schedule turns a task's *anchor* (its creation/update time) into a deterministic series of
due times ("slots"). Slots depend only on the anchor, never on when earlier runs happened, so a
late or skipped run never shifts later ones. Nothing here reads the clock: callers pass the
anchor and the instant to look after, both as POSIX epoch seconds. A one-shot schedule has a
single slot; once it has passed, ``next_slot`` answers None.

Interval forms ("every 5 minutes", "hourly") are elapsed time and ignore time zones. Clock
forms ("daily at 02:00", "every monday at 09:30", cron expressions, "once at ...") follow the
wall clock of ``tz`` (the server's local zone when ``tz`` is None), with Debian cron's
daylight-saving rules (see :mod:`scheduler.zones`): a wall time skipped in spring fires once,
at the first instant after the gap; a wall time that happens twice fires once, at its first
occurrence. Cron expressions whose minute or hour field starts with ``*`` (sub-hourly and
hourly ones) follow real time instead, through both occurrences of a repeated hour.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import NoReturn

from cronsim import CronSim, CronSimError

from scheduler.errors import InvalidInterval

from .zones import local_datetime, local_zone, wall_to_epoch

ACCEPTED_FORMS = (
    "Accepted interval forms (case-insensitive, N a positive whole number written in digits): "
    "'every N seconds|minutes|hours|days|weeks' (singular or plural; sec/secs, min/mins and "
    "hr/hrs also work), 'every second|minute|hour|day|week', 'hourly', 'daily', 'weekly' "
    "(intervals count from when the task is created or updated), "
    "'daily at T', 'every day at T', 'every N days at T', '<weekday> at T' or "
    "'every <weekday> at T' (monday ... sunday), 'every <weekday>' (at 00:00), "
    "'every N minutes at :SS', 'every N hours at MM:SS' or 'every N hours at :MM' (SS a second, "
    "MM a minute of the local clock). T is a 24-hour local time H:MM, HH:MM or HH:MM:SS. "
    "Cron: five fields 'minute hour day-of-month month day-of-week' (*, lists, ranges, steps, "
    "month and weekday names; the task runs when either day field matches if both are "
    "restricted) or @hourly, @daily, @weekly, @monthly, @yearly (on the clock). "
    "One-shot: 'once at YYYY-MM-DD T' or 'in N seconds|minutes|hours|days'. "
    "Clock times are in the task's time zone. "
    "The longest period is 10 years; the text is ASCII, at most 100 characters. "
    "Examples: 'every 5 minutes', 'daily at 2:00', 'every friday at 17:30', "
    "'0 2 * * mon-fri', 'once at 2030-01-31 09:00'."
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
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# A cron expression: five fields, the first (the minute) made of digits, '*', ',', '-', '/'.
_CRON_MINUTE_RE = re.compile(r"[0-9*,/\-]+")
_CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_CRON_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
                "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *"}
_CRON_ALIASES = {"@annually": "@yearly", "@midnight": "@daily"}
# Cron's shortest gap is measured over this many slots from a fixed date (enough to meet the
# rare short gaps of day-of-month/day-of-week unions), or this many years, whichever is first.
_GAP_SAMPLE_SLOTS = 600
_GAP_SAMPLE_YEARS = 9
_GAP_REFERENCE = datetime(2001, 1, 1)
_RECENT_ANSWERS = 64
_UNKNOWN = object()
_WEEKDAY_NAMES = tuple(day.capitalize() for day in ("monday", "tuesday", "wednesday", "thursday",
                                                    "friday", "saturday", "sunday"))


class Schedule(ABC):
    """A parsed interval: a rule that maps an anchor to an infinite, increasing series of slots."""

    @property
    @abstractmethod
    def canonical(self) -> str:
        """The canonical text; parsing it again yields an equal schedule."""

    @property
    @abstractmethod
    def period_seconds(self) -> int:
        """Nominal shortest gap between two consecutive slots (for min-interval policies and
        the jitter bound); a one-shot schedule, which never repeats, answers the 10-year cap."""

    @property
    @abstractmethod
    def description(self) -> str:
        """The schedule in plain English ("at 02:00 on Monday through Friday")."""

    @property
    def one_shot(self) -> bool:
        """True if the schedule has a single slot."""
        return False

    def next_slot(self, anchor: float, after: float) -> float | None:
        """First due time strictly greater than `after` (epoch seconds); None if there is
        none (a one-shot whose slot has passed, a cron expression that never fires again).

        Slots depend only on `anchor` (the task's creation/update time, epoch seconds), never
        on when previous runs happened. Raises ValueError for non-finite times.
        """
        if not (math.isfinite(anchor) and math.isfinite(after)):
            raise ValueError("anchor and after must be finite epoch seconds")
        slot = self._next(anchor, after)
        return None if slot is None else float(slot)

    def next_slots(self, anchor: float, after: float, count: int) -> list[float]:
        """The next `count` slots strictly after `after`, in increasing order (fewer if the
        schedule ends)."""
        if count < 0:
            raise ValueError("count must not be negative")
        slots: list[float] = []
        for _ in range(count):
            slot = self.next_slot(anchor, after)
            if slot is None:
                break
            slots.append(slot)
            after = slot
        return slots

    @abstractmethod
    def _next(self, anchor: float, after: float) -> float | None:
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

    @property
    def description(self) -> str:
        return f"every {_quantity(self.count, self.unit)}, counted from when the task was created or updated"

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

    @property
    def description(self) -> str:
        if self.unit == "minute":
            return f"every {_quantity(self.count, 'minute')}, at second {self.second} of the minute"
        return (f"every {_quantity(self.count, 'hour')}, at {self.minute:02d}:{self.second:02d} "
                "past the hour")

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
        return wall_to_epoch(datetime.combine(first + timedelta(days=days), self.at), _zone(self.tz))

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

    @property
    def description(self) -> str:
        return f"at {_clock(self.at)} every {_quantity(self.days, 'day')}"

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

    @property
    def description(self) -> str:
        return f"at {_clock(self.at)} on {_WEEKDAY_NAMES[self.weekday]}"

    def _first_date(self, anchor_date: date) -> date:
        return anchor_date + timedelta(days=(self.weekday - anchor_date.weekday()) % 7)


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A five-field cron expression (or a macro) on the wall clock of `tz`, by ``cronsim``.

    `text` is the canonical form (the macro, or the five fields lower-cased and single-spaced);
    `expression` the five fields cronsim evaluates. The anchor does not matter beyond "strictly
    after it": cron slots are wall-clock instants. The expression is parsed when first
    needed (a server restoring many stored tasks pays for it task by task as it plans
    them); :meth:`check` parses it at once and raises ``cronsim.CronSimError`` if it is bad.
    """

    text: str
    expression: str
    tz: tzinfo | None = None
    # Recent answers by whole second: tasks sharing this schedule ask for the same instant
    # when a server starts (a thousand tasks on "@daily" walk the calendar once).
    _recent: dict[int, float | None] = field(init=False, compare=False, repr=False,
                                             default_factory=dict)

    @functools.cached_property
    def _parsed(self) -> CronSim:
        # The parsed expression in the zone: parsing is most of what building a CronSim
        # costs, so each walk starts from a shallow copy of this one (its field sets are
        # only read).
        return CronSim(self.expression, _GAP_REFERENCE.replace(tzinfo=_zone(self.tz)))

    def check(self) -> "CronSchedule":
        """The schedule itself once its expression has been parsed (CronSimError if bad)."""
        self._parsed
        return self

    @property
    def canonical(self) -> str:
        return self.text

    @functools.cached_property
    def period_seconds(self) -> int:  # type: ignore[override]
        # Measured in a zone without DST (nominal gaps), lazily: only create and validate ask.
        it = CronSim(self.expression, _GAP_REFERENCE)
        end = _GAP_REFERENCE.replace(year=_GAP_REFERENCE.year + _GAP_SAMPLE_YEARS)
        previous, gap = next(it, None), _MAX_PERIOD
        for _ in range(_GAP_SAMPLE_SLOTS if previous is not None else 0):
            current = next(it, None)
            if current is None or current > end:
                break
            gap = min(gap, int((current - previous).total_seconds()))
            previous = current
        return gap

    @property
    def description(self) -> str:
        text = CronSim(self.expression, _GAP_REFERENCE).explain()
        return text[:1].lower() + text[1:]

    def _next(self, anchor: float, after: float) -> float | None:
        # Cron slots are whole seconds: the first one after max(anchor, after) is the first
        # one after its whole second (which must not be rounded up into the next one).
        second = math.floor(max(anchor, after))
        known = self._recent.get(second, _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        if len(self._recent) >= _RECENT_ANSWERS:
            self._recent.clear()
        slot = self._walk(second)
        self._recent[second] = slot
        return slot

    def _walk(self, second: int) -> float | None:
        try:
            parsed = self._parsed
        except CronSimError as exc:  # a stored expression this version of cronsim refuses
            _invalid(_cron_fault(self.expression.split(), str(exc)))
        start = local_datetime(second, _zone(self.tz))
        it = copy.copy(parsed)
        # What CronSim.__init__ does with its start: a fixed-time expression in a zone with
        # DST walks the naive wall clock (Debian cron's rules), anything else aware time.
        it.dt = start.replace(tzinfo=None) if it.fixup_tz else start
        # Debian cron's wall-clock walk can land on the first occurrence of a repeated hour
        # while `second` is in the second one: such a slot is already behind us.
        for found in it:
            slot = found.timestamp()
            if slot > second:
                return slot
        return None


@dataclass(frozen=True)
class OnceAtSchedule(Schedule):
    """One slot, at the wall time `at` (naive) in `tz`; the anchor plays no part."""

    at: datetime
    tz: tzinfo | None = None

    @property
    def canonical(self) -> str:
        return f"once at {self.at.date().isoformat()} {_clock(self.at.time())}"

    @property
    def period_seconds(self) -> int:
        return _MAX_PERIOD

    @property
    def description(self) -> str:
        return f"once, at {self.at.date().isoformat()} {_clock(self.at.time())}"

    @property
    def one_shot(self) -> bool:
        return True

    def _next(self, anchor: float, after: float) -> float | None:
        slot = wall_to_epoch(self.at, _zone(self.tz))
        return slot if slot > after else None


@dataclass(frozen=True)
class OnceInSchedule(Schedule):
    """One slot, `count` `unit`s after the anchor (elapsed time: no zone)."""

    count: int
    unit: str  # a key of _UNIT_SECONDS

    @property
    def canonical(self) -> str:
        return f"in {self.count} {self.unit}s" if self.count != 1 else f"in 1 {self.unit}"

    @property
    def period_seconds(self) -> int:
        return _MAX_PERIOD

    @property
    def description(self) -> str:
        return f"once, {_quantity_n(self.count, self.unit)} after the task was created or updated"

    @property
    def one_shot(self) -> bool:
        return True

    def _next(self, anchor: float, after: float) -> float | None:
        slot = anchor + self.count * _UNIT_SECONDS[self.unit]
        return slot if slot > after else None


def parse_interval(text: object, *, tz: tzinfo | None = None, stored: bool = False) -> Schedule:
    """Parse `text` (see ACCEPTED_FORMS) into a Schedule; raise InvalidInterval if not accepted.

    `tz` is the zone whose wall clock calendar forms follow; None means the server's local zone.
    A `stored` interval was accepted when it was saved: a cron expression's fields are then
    parsed when the schedule is first evaluated (where a bad one raises InvalidInterval),
    which keeps a start-up with many distinct expressions short.
    """
    if tz is not None and not isinstance(tz, tzinfo):  # a programming error, not bad input
        raise TypeError(f"tz must be a datetime.tzinfo or None, not {type(tz).__name__}")
    if not isinstance(text, str):
        _invalid(f"the interval must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        _invalid(f"the interval is longer than {_MAX_LENGTH} characters")
    if not text.isascii():  # also keeps str.isdigit() and lower() to plain ASCII meanings
        _invalid("the interval may contain only ASCII characters")
    schedule = _parse_text(text, tz)
    if isinstance(schedule, CronSchedule) and not stored:
        try:
            schedule.check()
        except CronSimError as exc:
            _invalid(f"{' '.join(text.lower().split())!r} is not accepted: "
                     f"{_cron_fault(schedule.expression.split(), str(exc))}")
    return schedule


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str, tz: tzinfo | None) -> Schedule:
    # Schedules are immutable, so tasks with the same text and zone share one (start-up).
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
    if head.startswith("@") or (len(words) == 5 and _CRON_MINUTE_RE.fullmatch(head)):
        return _cron(words, tz)
    if head == "once":
        return _once_at(rest, tz)
    if head == "in":
        return _once_in(rest)
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
        raise _Bad(f"it must start with 'every', a weekday, 'hourly', 'daily', 'weekly', 'once' "
                   f"or 'in', or be a cron expression of five fields, not {head!r}")
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


def _cron(words: list[str], tz: tzinfo | None) -> CronSchedule:
    if words[0].startswith("@"):
        if len(words) > 1:
            raise _Bad(f"unexpected {' '.join(words[1:])!r} after {words[0]!r}")
        macro = _CRON_ALIASES.get(words[0], words[0])
        if macro not in _CRON_MACROS:
            raise _Bad(f"unknown macro {words[0]!r}; use {', '.join(_CRON_MACROS)}")
        return CronSchedule(macro, _CRON_MACROS[macro], tz)
    expression = " ".join(words)
    return CronSchedule(expression, expression, tz)


def _cron_fault(words: list[str], message: str) -> str:
    """Name the field cronsim refused ("Bad day-of-month") and what it accepts."""
    name = message.removeprefix("Bad ")
    accepts = {"minute": "0-59", "hour": "0-23", "day-of-month": "1-31, a day the months have",
               "month": "1-12 or jan-dec", "day-of-week": "0-7 or sun-sat"}
    if name in _CRON_FIELDS:
        value = words[_CRON_FIELDS.index(name)]
        return (f"the cron {name} field {value!r} is not valid (it takes {accepts[name]}, "
                "'*', lists a,b, ranges a-b and steps */n or a-b/n)")
    return f"the cron expression is not valid ({message})"


def _once_at(rest: list[str], tz: tzinfo | None) -> OnceAtSchedule:
    if len(rest) != 3 or rest[0] != "at":
        raise _Bad("a one-shot time is written 'once at YYYY-MM-DD HH:MM' or with ':SS'")
    m = _DATE_RE.fullmatch(rest[1])
    if not m:
        raise _Bad(f"the date {rest[1]!r} must be YYYY-MM-DD")
    try:
        day = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise _Bad(f"the date {rest[1]!r} does not exist ({exc})") from None
    return OnceAtSchedule(datetime.combine(day, _clock_time(rest[2])), tz)


def _once_in(rest: list[str]) -> OnceInSchedule:
    if len(rest) != 2:
        raise _Bad("a delay is written 'in N seconds|minutes|hours|days'")
    count = _count(rest[0])
    if rest[1] not in _UNITS:
        raise _Bad(f"unknown unit {rest[1]!r}; use seconds, minutes, hours or days")
    unit = _UNITS[rest[1]]
    if count * _UNIT_SECONDS[unit] > _MAX_PERIOD:
        raise _Bad("the delay is longer than 10 years")
    return OnceInSchedule(count, unit)


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


def _quantity_n(count: int, unit: str) -> str:
    return f"1 {unit}" if count == 1 else f"{count} {unit}s"


def _clock(at: time) -> str:
    return f"{at.hour:02d}:{at.minute:02d}" + (f":{at.second:02d}" if at.second else "")


def _zone(tz: tzinfo | None) -> tzinfo:
    return local_zone() if tz is None else tz


def _local(t: float, tz: tzinfo | None) -> datetime:
    """Aware local time of instant `t` in `tz` (None: the server's zone)."""
    return local_datetime(t, _zone(tz))


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
