"""Control groups: kernel-enforced memory and process caps, and a group kill.

Works with cgroup v1 controllers (``memory``, ``pids``) and with the cgroup v2 tree, whose
``cgroup.kill`` kills every member at once (setsid escapees included). Each worker has its
own groups, created below the cgroup the server belongs to and named after the worker;
:func:`sweep` kills and removes what a dead worker left.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "tsched-"


def _own_paths() -> dict[str, str]:
    """Controller name (or '' for the v2 tree) → this process's path within it."""
    paths = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in (controllers.split(",") if controllers else [""]):
            paths[name] = path
    return paths


def _usable(base: Path, control_file: str) -> bool:
    """Can a child group be made below ``base``, and does it have ``control_file``?"""
    probe = base / f"{PREFIX}probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        return (probe / control_file).exists()
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass


@dataclass(frozen=True)
class CgroupSupport:
    """Where per-run groups can be made on this machine (None: not available)."""

    memory: Path | None = None
    pids: Path | None = None
    unified: Path | None = None

    @property
    def layers(self) -> list[str]:
        names = []
        if self.memory:
            names.append("cgroup-memory")
        if self.pids:
            names.append("cgroup-pids")
        if self.unified:
            names.append("cgroup-kill")
        return names


def detect() -> CgroupSupport:
    """Which hierarchies let this process make child groups (as root, or where a service
    manager delegated them); a probe group is made and removed in each."""
    own = _own_paths()
    found: dict[str, Path | None] = {}
    for key, control_file in (("memory", "memory.limit_in_bytes"), ("pids", "pids.max")):
        base = ROOT / key / own.get(key, "/").lstrip("/")
        found[key] = base if _usable(base, control_file) else None
    unified_root = ROOT / "unified" if (ROOT / "unified").is_dir() else ROOT
    base = unified_root / own.get("", "/").lstrip("/")
    found["unified"] = base if _usable(base, "cgroup.kill") else None
    return CgroupSupport(**found)


class WorkerCgroups:
    """A worker's own groups, which its jobs inherit when they fork.

    Moving a process into a cgroup waits for an RCU grace period (measured here: 0.2 ms
    typical, 10-20 ms on a busy machine), so the worker joins its groups once at start-up
    and each job is simply born in them. Before each run :meth:`arm` sets the caps to the
    run's limits on top of what the worker itself uses, and snapshots the event counters
    that :meth:`oom_killed` and :meth:`pids_refused` compare against. A job marks itself
    the OOM killer's first choice, so the worker is not the one to go.
    """

    def __init__(self, support: CgroupSupport, name: str):
        self.dirs: list[Path] = []
        self.memory = self.pids = self.unified = None
        for attr in ("memory", "pids", "unified"):
            base = getattr(support, attr)
            if base is None:
                continue
            path = base / name
            try:
                path.mkdir(exist_ok=True)
                (path / "cgroup.procs").write_text("0")
            except OSError as exc:
                log.warning("cannot create or join cgroup %s: %s", path, exc)
                continue
            setattr(self, attr, path)
            self.dirs.append(path)
        if self.memory:
            _write(self.memory / "memory.swappiness", "0", missing_ok=True)
        self._oom_kills = self._pids_refused = 0

    def arm(self, *, memory_mb: int, max_processes: int) -> None:
        """Set the caps for the next run (the worker's own usage comes on top)."""
        if self.memory:
            limit = str(_read_int(self.memory / "memory.usage_in_bytes") + memory_mb * 1048576)
            _write(self.memory / "memory.memsw.limit_in_bytes", "-1", missing_ok=True)
            _write(self.memory / "memory.limit_in_bytes", limit)
            _write(self.memory / "memory.memsw.limit_in_bytes", limit, missing_ok=True)
            self._oom_kills = self._counter(self.memory / "memory.oom_control", "oom_kill")
        if self.pids:
            # The worker itself and the job's namespace init are in the group too.
            _write(self.pids / "pids.max", str(max_processes + 2))
            self._pids_refused = self._counter(self.pids / "pids.events", "max")

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of the group since :meth:`arm`."""
        return bool(self.memory) and \
            self._counter(self.memory / "memory.oom_control", "oom_kill") > self._oom_kills

    def pids_refused(self) -> int:
        """How many forks the pids cap refused since :meth:`arm`."""
        if not self.pids:
            return 0
        return self._counter(self.pids / "pids.events", "max") - self._pids_refused

    @staticmethod
    def _counter(path: Path, key: str) -> int:
        try:
            text = path.read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
        return 0


def sweep(support: CgroupSupport, owner_pid: int) -> int:
    """Kill and remove every group a worker with ``owner_pid`` created; return how many."""
    removed = 0
    prefix = f"{PREFIX}{owner_pid}-"
    for base in (support.unified, support.memory, support.pids):
        if base is None:
            continue
        for path in base.glob(prefix + "*"):
            if base is support.unified:
                _write(path / "cgroup.kill", "1", missing_ok=True)
            for pid in _read_pids(path):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 2
            while time.monotonic() < end:
                try:
                    path.rmdir()
                    removed += 1
                    break
                except OSError:
                    time.sleep(0.01)
    return removed


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _write(path: Path, value: str, *, missing_ok: bool = False) -> None:
    try:
        path.write_text(value)
    except FileNotFoundError:
        if not missing_ok:
            log.warning("cgroup file %s is missing", path)
    except OSError as exc:
        log.warning("cannot write %s to %s: %s", value, path, exc)


def sweep_stale(support: CgroupSupport) -> int:
    """Sweep the groups of every worker that no longer exists (a crashed server's)."""
    owners: set[int] = set()
    for base in (support.unified, support.memory, support.pids):
        if base is None:
            continue
        for path in base.glob(PREFIX + "*-worker"):
            owner = path.name[len(PREFIX):].split("-", 1)[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                owners.add(int(owner))
    return sum(sweep(support, owner) for owner in owners)
