"""What happens after a run ends: when it is retried, which tasks it starts, what it reports.

Pure rules, used by :class:`scheduler.service.Scheduler` (which holds the state):

* :func:`retry_delay`: the k-th retry of a run is due ``retry_delay × 2^(k−1)`` seconds after
  the failed try ended, at most :data:`MAX_RETRY_DELAY`.
* :func:`check_chains`: ``on_success``/``on_failure`` name existing tasks and close no loop.
* :func:`notify_event`: whether a run's end is worth a notification, and under which name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .errors import ChainCycle, ChainTargetNotFound
from .models import NotifyOn, RunStatus, TaskSpec

MAX_RETRY_DELAY = 3600.0
MAX_CHAIN_TARGETS = 32


def retry_delay(base: float, retry: int) -> float:
    """Seconds from the end of a failed try to the ``retry``-th retry (1 for the first)."""
    return min(base * 2.0 ** (retry - 1), MAX_RETRY_DELAY) if retry < 64 else MAX_RETRY_DELAY


def check_chains(task_id: str, spec: TaskSpec, edges: Mapping[str, Iterable[str]]) -> None:
    """Refuse ``spec``'s chain targets for ``task_id`` if one is unknown
    (:class:`ChainTargetNotFound`) or if a run of ``task_id`` could, through the tasks'
    ``on_success``/``on_failure``, start ``task_id`` again (:class:`ChainCycle`).

    ``edges`` maps every other existing task to the tasks it chains to; the graph without
    ``task_id`` has no loop (every change was checked), so a loop must pass through it."""
    for field in ("on_success", "on_failure"):
        for target in getattr(spec, field):
            if target == task_id:
                raise ChainCycle(f"task '{task_id}' cannot chain to itself ({field})",
                                 field=field)
            if target not in edges:
                raise ChainTargetNotFound(f"{field} names task '{target}', which does not "
                                          "exist; create it first", field=field)
    for field in ("on_success", "on_failure"):
        for target in getattr(spec, field):
            path = _path_to(target, task_id, lambda t: edges.get(t, ()))
            if path is not None:
                loop = " → ".join([task_id, *path])
                raise ChainCycle(f"{field} would make a chain that loops: {loop}", field=field)


def _path_to(start: str, goal: str, next_of: Callable[[str], Iterable[str]]) -> list[str] | None:
    """A path of task ids from ``start`` to ``goal`` (both included), or None."""
    came_from: dict[str, str | None] = {start: None}
    stack = [start]
    while stack:
        node = stack.pop()
        if node == goal:
            path = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = came_from[step]
            return path[::-1]
        for nxt in next_of(node):
            if nxt not in came_from:
                came_from[nxt] = node
                stack.append(nxt)
    return None


def notify_event(on: Iterable[NotifyOn], status: RunStatus,
                 previous: RunStatus | None) -> str | None:
    """The event to notify for a run that ended in ``status`` (the task's previous finished
    run ended in ``previous``), or None if ``on`` does not ask for it. ``success`` and
    ``failure`` are named before ``change`` when both apply."""
    wanted = set(on)
    if status is RunStatus.SUCCEEDED and NotifyOn.SUCCESS in wanted:
        return NotifyOn.SUCCESS.value
    if status.is_failure and NotifyOn.FAILURE in wanted:
        return NotifyOn.FAILURE.value
    if (NotifyOn.CHANGE in wanted and status is not RunStatus.SKIPPED and previous is not None
            and previous is not status):
        return NotifyOn.CHANGE.value
    return None
