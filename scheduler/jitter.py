"""Jitter: a deterministic start offset per task and slot, to spread tasks due together.

The offset depends only on the task id, the slot and the task's ``jitter`` bound, so every
process that computes it (after a restart, or a replica sharing the store) starts the slot
at the same instant. The slot itself (``scheduled_for``) does not move.
"""

from __future__ import annotations

import hashlib

from .errors import InvalidRequest

MAX_JITTER = 3600.0
_SCALE = 2 ** 64 - 1


def jitter_offset(task_id: str, slot: float, jitter: float | None) -> float:
    """Seconds after ``slot`` at which the task's run starts: uniform in ``[0, jitter]``,
    whole milliseconds."""
    if not jitter:
        return 0.0
    # The slot's identity is its time in whole milliseconds, as in the store.
    key = f"{task_id}\0{round(slot * 1000)}".encode("utf-8", "surrogatepass")
    fraction = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / _SCALE
    return round(fraction * jitter * 1000) / 1000


def check_jitter(jitter: object, shortest_gap: float, *, field: str = "jitter") -> float | None:
    """``jitter`` as a number of seconds, or InvalidRequest if it is not in
    ``[0, min(3600, shortest_gap / 2)]``; None and 0 mean no jitter."""
    if jitter is None:
        return None
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter != jitter:
        raise InvalidRequest(f"'{field}' must be a number of seconds", field=field)
    bound = min(MAX_JITTER, shortest_gap / 2)
    if not 0 <= jitter <= bound:
        raise InvalidRequest(
            f"'{field}' must be between 0 and {bound:g} seconds: at most half the schedule's "
            f"shortest gap between runs and at most {MAX_JITTER:g}", field=field)
    return float(jitter) or None
