"""Per-run control groups: kernel-enforced memory and process caps and a group kill.

Works with cgroup v1 controllers (``memory``, ``pids``) and with the cgroup v2 tree, whose
``cgroup.kill`` kills every member at once (setsid escapees included). Groups are created
below the cgroup this process already belongs to, named after the worker and the run, and
removed when the run ends; :func:`sweep` removes what a dead worker left.
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
    own = _own_paths()
    found: dict[str, Path | None] = {}
    for key, control_file in (("memory", "memory.limit_in_bytes"), ("pids", "pids.max")):
        base = ROOT / key / own.get(key, "/").lstrip("/")
        found[key] = base if _usable(base, control_file) else None
    unified_root = ROOT / "unified" if (ROOT / "unified").is_dir() else ROOT
    base = unified_root / own.get("", "/").lstrip("/")
    found["unified"] = base if _usable(base, "cgroup.kill") else None
    return CgroupSupport(**found)


class RunCgroups:
    """The groups of one run. ``join_paths`` are the files the job's child writes its pid to."""

    def __init__(self, support: CgroupSupport, name: str, *, memory_mb: int, max_processes: int):
        self.dirs: list[Path] = []
        self.memory = self.pids = self.unified = None
        for attr in ("memory", "pids", "unified"):
            base = getattr(support, attr)
            if base is None:
                continue
            path = base / name
            try:
                path.mkdir(exist_ok=True)
            except OSError as exc:
                log.warning("cannot create cgroup %s: %s", path, exc)
                continue
            setattr(self, attr, path)
            self.dirs.append(path)
        if self.memory:
            limit = str(memory_mb * 1024 * 1024)
            _write(self.memory / "memory.limit_in_bytes", limit)
            _write(self.memory / "memory.memsw.limit_in_bytes", limit, missing_ok=True)
            _write(self.memory / "memory.swappiness", "0", missing_ok=True)
        if self.pids:
            _write(self.pids / "pids.max", str(max_processes))

    @property
    def join_paths(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        if not self.memory:
            return False
        try:
            text = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def pids_refused(self) -> int:
        """How many forks the pids cap refused so far."""
        if not self.pids:
            return 0
        try:
            text = (self.pids / "pids.events").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value or 0)
        return 0

    def kill(self) -> None:
        if self.unified:
            _write(self.unified / "cgroup.kill", "1", missing_ok=True)

    def members(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs:
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(pids)

    def remove(self, timeout: float = 2.0) -> None:
        end = time.monotonic() + timeout
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > end:
                        log.warning("cannot remove cgroup %s: %s", d, exc)
                        break
                    time.sleep(0.005)


def sweep(support: CgroupSupport, owner_pid: int) -> int:
    """Kill and remove every group a worker with ``owner_pid`` created; return how many."""
    removed = 0
    prefix = f"{PREFIX}{owner_pid}-"
    for base in (support.unified, support.memory, support.pids):
        if base is None:
            continue
        for path in base.glob(prefix + "*"):
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
        for path in base.glob(PREFIX + "*-run-*"):
            owner = path.name[len(PREFIX):].split("-", 1)[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                owners.add(int(owner))
    return sum(sweep(support, owner) for owner in owners)
