"""Isolation levels: how strongly the machine can contain a run, in increasing order.

Each level includes the ones below it. The sandbox detects which level this machine
provides; the policy's ``isolation.minimum`` says which level runs require (runs are
rejected, failing closed, when the machine provides less).
"""

from __future__ import annotations

import enum


class IsolationLevel(str, enum.Enum):
    """``process``: own session, process-tree kill, rlimits, tree watch, fresh environment.
    ``resources``: + kernel-enforced memory and process caps and a group kill (cgroups).
    ``filesystem``: + file-system confinement to the allowed directories, the server's own
    files carved out, no capabilities (Landlock, mount namespace, capability drop).
    ``full``: + private PID and network namespaces and a system-call filter (seccomp)."""

    PROCESS = "process"
    RESOURCES = "resources"
    FILESYSTEM = "filesystem"
    FULL = "full"

    @property
    def rank(self) -> int:
        return list(IsolationLevel).index(self)

    # All four: as a str subclass the enum would otherwise compare the names alphabetically
    # wherever one is missing (``FULL > PROCESS`` was False).
    def __ge__(self, other: "IsolationLevel") -> bool:  # type: ignore[override]
        return self.rank >= IsolationLevel(other).rank

    def __gt__(self, other: "IsolationLevel") -> bool:  # type: ignore[override]
        return self.rank > IsolationLevel(other).rank

    def __le__(self, other: "IsolationLevel") -> bool:  # type: ignore[override]
        return self.rank <= IsolationLevel(other).rank

    def __lt__(self, other: "IsolationLevel") -> bool:  # type: ignore[override]
        return self.rank < IsolationLevel(other).rank
