"""Control groups: kernel-enforced memory and process caps, an exact OOM count, a group kill.

Every run gets groups of its own, made by its worker just before the run and removed after
it: the job's namespace init joins them before it forks the job, so the job and everything
it starts are born inside, and the worker is not. That makes each counter exact for the run
(an OOM kill of any descendant at any depth shows in the group's ``oom_kill`` count) and
lets the run's end kill every member at once.

Two layouts give the ``resources`` level (see SECURITY.md):

* **cgroup v2** (the unified hierarchy of current distributions): one group per run with
  ``memory.max``, ``memory.swap.max``, ``pids.max``, ``memory.events`` and ``cgroup.kill``.
  v2 lets controllers be enabled only for a group's children, and only while the group
  itself holds no process (the "leaf" rule), so the server needs a subtree of its own: the
  cgroup it was started in (systemd ``Delegate=yes``) when it is alone there. The server
  then moves itself into the leaf ``tsched-supervisor`` and enables ``memory`` and ``pids``
  for the children; the run groups are the leaf's siblings. A server already started in such
  a leaf (systemd ``DelegateSubgroup=tsched-supervisor``) uses its parent, enabling the
  controllers there if they are not yet. docs/task-scheduler.service is a unit file.
* **cgroup v1 / hybrid**: a run group in the v1 ``memory`` and ``pids`` hierarchies
  (``memory.limit_in_bytes``, ``memory.oom_control``, ``pids.max``, ``pids.events``) and one
  in the v2 tree, when mounted beside them, for ``cgroup.kill``.

Written against the kernel's files directly: no maintained Python library manages
per-process cgroups (systemd's D-Bus API creates units, not groups inside a delegated one).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "tsched-"
SUPERVISOR_LEAF = "tsched-supervisor"
V2_CONTROLLERS = ("memory", "pids")
RMDIR_TIMEOUT = 2.0


def own_paths(text: str | None = None) -> dict[str, str]:
    """Controller name (or '' for the v2 tree) → this process's path within it, from
    ``/proc/self/cgroup`` (or ``text`` in that format)."""
    if text is None:
        try:
            text = Path("/proc/self/cgroup").read_text()
        except OSError:
            return {}
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in (controllers.split(",") if controllers else [""]):
            paths[name] = path
    return paths


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _usable_v1(base: Path, control_file: str) -> bool:
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
    """Where run groups are made on this machine (None: not available).

    In the v2 layout ``memory``, ``pids`` and ``unified`` are the same directory; in the
    v1/hybrid layout ``memory`` and ``pids`` are v1 hierarchies and ``unified`` (if any)
    is the v2 tree, used for ``cgroup.kill`` only.
    """

    memory: Path | None = None
    pids: Path | None = None
    unified: Path | None = None
    layout: str = "none"

    @property
    def v2(self) -> bool:
        return self.memory is not None and self.memory == self.unified

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

    @property
    def bases(self) -> list[Path]:
        return list(dict.fromkeys(p for p in (self.unified, self.memory, self.pids) if p))


def _unified_root(root: Path) -> Path | None:
    """The v2 tree: ``root`` itself on a v2-only machine, ``root/unified`` on a hybrid one."""
    if (root / "cgroup.controllers").exists():
        return root
    if (root / "unified" / "cgroup.controllers").exists():
        return root / "unified"
    return None


def claim_v2_subtree(own: Path, pid: int | None = None) -> Path | None:
    """The v2 group below which run groups with memory and pids controllers can be made, or
    None. ``own`` is this process's group; it is set up as the module docstring says when
    this process is alone in it."""
    pid = os.getpid() if pid is None else pid
    needed = set(V2_CONTROLLERS)
    if own.name == SUPERVISOR_LEAF:
        parent = own.parent
        if needed <= _words(parent / "cgroup.subtree_control"):
            return parent
        if needed <= _words(parent / "cgroup.controllers") and not _words(parent / "cgroup.procs"):
            return _enable_controllers(parent)
    if not set(V2_CONTROLLERS) <= _words(own / "cgroup.controllers"):
        log.info("cgroup v2: the controllers %s are not available in %s", V2_CONTROLLERS, own)
        return None
    members = _words(own / "cgroup.procs")
    if members != {str(pid)}:
        log.warning("cgroup v2: %s holds other processes besides the server (%d in all), so it "
                    "cannot be the server's own subtree; start the server in a cgroup of its "
                    "own (systemd: Delegate=yes) for memory and process caps", own, len(members))
        return None
    leaf = own / SUPERVISOR_LEAF
    try:
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        log.warning("cgroup v2: cannot move the server into %s: %s", leaf, exc)
        return None
    return _enable_controllers(own)


def _enable_controllers(subtree: Path) -> Path | None:
    try:
        (subtree / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in V2_CONTROLLERS))
    except OSError as exc:
        log.warning("cgroup v2: cannot enable %s for the children of %s: %s",
                    V2_CONTROLLERS, subtree, exc)
        return None
    return subtree


def detect(root: Path = ROOT, proc_cgroup: str | None = None) -> CgroupSupport:
    """Which layout this machine has and where this process may make run groups (as root,
    or where a service manager delegated a subtree). On v1 a probe group is made and
    removed in each hierarchy."""
    own = own_paths(proc_cgroup)
    unified_root = _unified_root(root)
    unified = None
    if unified_root is not None and "" in own:
        candidate = unified_root / own[""].lstrip("/")
        if (candidate / "cgroup.procs").exists() and os.access(candidate, os.W_OK):
            unified = candidate
    v1 = {name: root / name / own[name].lstrip("/") for name in ("memory", "pids")
          if name in own and (root / name).is_dir()}
    if unified_root == root:
        base = claim_v2_subtree(unified) if unified is not None else None
        if base is None:
            return CgroupSupport(unified=unified, layout="v2")
        return CgroupSupport(memory=base, pids=base, unified=base, layout="v2")
    memory = v1["memory"] if "memory" in v1 and _usable_v1(v1["memory"], "memory.limit_in_bytes") else None
    pids = v1["pids"] if "pids" in v1 and _usable_v1(v1["pids"], "pids.max") else None
    if unified is not None and not _usable_v1(unified, "cgroup.kill"):
        unified = None
    layout = "hybrid" if unified_root is not None else ("v1" if v1 else "none")
    return CgroupSupport(memory=memory, pids=pids, unified=unified, layout=layout)


def _counter(path: Path, key: str) -> int:
    """The value of ``key`` in a flat-keyed file such as ``memory.events``."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


class RunCgroup:
    """One run's groups: created with the run's caps, joined by the run's first process
    (:attr:`procs_files`), read for what the kernel refused, killed and removed at the end.
    Creating raises OSError; nothing else here does."""

    def __init__(self, support: CgroupSupport, name: str, *, memory_mb: int, max_processes: int):
        self.support = support
        self.dirs: list[Path] = []
        try:
            for base in support.bases:
                path = base / name
                path.mkdir()
                self.dirs.append(path)
            self._limit(memory_mb, max_processes)
        except OSError:
            self.remove()
            raise

    def _dir(self, base: Path | None) -> Path | None:
        return None if base is None else base / self.dirs[0].name

    @property
    def memory(self) -> Path | None:
        return self._dir(self.support.memory)

    @property
    def pids(self) -> Path | None:
        return self._dir(self.support.pids)

    @property
    def unified(self) -> Path | None:
        return self._dir(self.support.unified)

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the run's first process writes ``0`` to."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def _limit(self, memory_mb: int, max_processes: int) -> None:
        limit = str(memory_mb * 1048576)
        if self.memory is not None and self.support.v2:
            (self.memory / "memory.max").write_text(limit)
            _write_optional(self.memory / "memory.swap.max", "0")
        elif self.memory is not None:
            _write_optional(self.memory / "memory.swappiness", "0")
            (self.memory / "memory.limit_in_bytes").write_text(limit)
            _write_optional(self.memory / "memory.memsw.limit_in_bytes", limit)
        if self.pids is not None:
            # The run's namespace init is a member too.
            (self.pids / "pids.max").write_text(str(max_processes + 1))

    def oom_kills(self) -> int:
        """How many processes of the run the kernel killed for the memory cap."""
        if self.memory is None:
            return 0
        events = "memory.events" if self.support.v2 else "memory.oom_control"
        return _counter(self.memory / events, "oom_kill")

    def pids_refused(self) -> int:
        """How many forks of the run the process cap refused."""
        return 0 if self.pids is None else _counter(self.pids / "pids.events", "max")

    def members(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            found.update(_read_pids(d))
        return sorted(found)

    def outside(self, pids: list[int]) -> list[int]:
        """Those of ``pids`` that are not members of every one of the run's groups."""
        inside = [set(_read_pids(d)) for d in self.dirs]
        return [pid for pid in pids if not all(pid in group for group in inside)]

    def kill(self) -> None:
        """Kill every member at once (``cgroup.kill``), or one by one where there is none."""
        if self.unified is not None:
            _write_optional(self.unified / "cgroup.kill", "1")
        for pid in self.members():
            _kill(pid)

    def remove(self) -> bool:
        """Remove the groups once their members are gone; False if one would not go."""
        ok = True
        for path in reversed(self.dirs):
            ok = _rmdir(path) and ok
        return ok


def _write_optional(path: Path, value: str) -> None:
    """Write a control file that older kernels or other configurations may lack (never
    creating it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot open %s: %s", path, exc)
        return
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        log.warning("cannot write %s to %s: %s", value, path, exc)
    finally:
        os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _rmdir(path: Path) -> bool:
    """Remove a group, waiting briefly for its last members to be reaped."""
    end = time.monotonic() + RMDIR_TIMEOUT
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if time.monotonic() >= end:
                log.warning("cannot remove cgroup %s: %s", path, exc)
                return False
            time.sleep(0.01)


def sweep(support: CgroupSupport, owner_pid: int) -> int:
    """Kill and remove every group a worker with ``owner_pid`` created; return how many."""
    removed = 0
    prefix = f"{PREFIX}{owner_pid}-"
    for base in support.bases:
        for path in base.glob(prefix + "*"):
            if base == support.unified:
                _write_optional(path / "cgroup.kill", "1")
            for pid in _read_pids(path):
                _kill(pid)
            removed += _rmdir(path)
    return removed


def sweep_stale(support: CgroupSupport) -> int:
    """Sweep the groups of every worker that no longer exists (a crashed server's)."""
    owners: set[int] = set()
    for base in support.bases:
        for path in base.glob(PREFIX + "*"):
            owner = path.name[len(PREFIX):].split("-", 1)[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                owners.add(int(owner))
    return sum(sweep(support, owner) for owner in owners)


def run_group_name(worker_pid: int, run_id: int) -> str:
    return f"{PREFIX}{worker_pid}-run-{run_id}"
