r"""Confining one run: the set-up done in the job's child between fork and exec.

A :class:`Confiner` lives in a worker for its whole life: it knows what the machine offers
(:class:`~sandbox.isolation.Isolation`), which paths are the server's own ground, which
system files are secrets (not world-readable), and holds the prebuilt seccomp filters.
For each run it makes a :class:`Confinement`, whose :meth:`~Confinement.confine` runs in
the job's child after the fork (:mod:`sandbox.spawn`), before it waits for its release and
``exec``\ s, in this order:

1. join the run's own cgroups (made by the worker with the run's caps), so the job and
   everything it starts are born in them; the CPU and file-size rlimits; make the job the
   OOM killer's first choice;
2. new mount, IPC and (with ``network: false``) network namespaces; a fresh ``/proc`` for
   the run's own PID namespace (the worker puts each job in a new one), a private
   ``/dev/shm`` and a size-capped temporary directory; the data directory, ``.git`` and
   secret system files hidden; the server's whole installation (its code root, with the
   policy file and its Python environment) made read-only, except the shipped
   ``workspace/`` where the policy allows it;
3. change to the working directory;
4. empty the capability bounding set (unless that layer is switched off), set no_new_privs;
5. Landlock: system directories read-only, the allowed directories and the run's private
   temporary directory read-write, nothing else; no TCP with ``network: false``; no signals
   to processes outside the run;
6. the seccomp filter; finally drop every capability.

A failure in the child is reported through the started pipe (:mod:`sandbox.spawn`) so the
run's record says what failed; the error pipe carries the job's exit status from the run's
namespace init.
"""

from __future__ import annotations

import logging
import os
import resource
import stat
import sys
from pathlib import Path

from policies import Limits

from . import kernel, landlock
from .cgroups import RunCgroup, run_group_name
from .isolation import Isolation
from .launch import LaunchPlan
from .seccomp import Filter
from .types import ProtectedPaths

log = logging.getLogger(__name__)

SYSTEM_READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
                    "/opt", "/proc", "/sys/devices/system/cpu")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
SECRET_ROOTS = ("/etc",)
CGROUP_FS = "/sys/fs/cgroup"
STATUS_PREFIX = "status:"
MAX_FD = 65536


def find_secrets(roots: tuple[str, ...] = SECRET_ROOTS) -> list[str]:
    """The topmost entries below ``roots`` that other users may not read: these are the
    system's secrets (/etc/shadow, SSH host keys, ...), hidden from every run."""
    found: list[str] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in list(dirnames):
                path = os.path.join(dirpath, name)
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode) and (mode & 0o005) != 0o005:
                    found.append(path)
                    dirnames.remove(name)
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                    found.append(path)
    return found


class Confiner:
    """Per-worker state for confining runs (see the module docstring)."""

    def __init__(self, isolation: Isolation, protected: ProtectedPaths):
        self.isolation = isolation
        self.protected = protected
        self.secrets = find_secrets() if isolation.namespaces else []
        self.filters: dict[bool, Filter] = {}
        if isolation.seccomp:
            self.filters = {deny: Filter(deny_network=deny) for deny in (False, True)}
        self.pid_ns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) \
            if isolation.namespaces else None
        interpreter = (sys.prefix, sys.base_prefix,
                       os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
        device_rights = landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV
        # (path, rights, is_dir) for the rules every run gets, resolved once per worker.
        self.static_rules = [(p, landlock.READ_ONLY, True) for p in
                             dict.fromkeys((*SYSTEM_READ_ONLY, *map(os.path.realpath, interpreter)))
                             if os.path.isdir(p)]
        self.static_rules += [(p, device_rights, False) for p in DEVICES if os.path.exists(p)]

    @property
    def confines(self) -> bool:
        """Whether runs get any confinement step in their child at all."""
        iso = self.isolation
        return bool(iso.namespaces or iso.landlock_abi or iso.seccomp or iso.cgroups.layers)

    def prepare(self, run_id: int, plan: LaunchPlan, allowed: tuple[Path, ...],
                network: bool) -> "Confinement":
        """The run's confinement, with its cgroups made; raises OSError if they cannot be."""
        cgroup = None
        if self.isolation.cgroups.bases:
            cgroup = RunCgroup(self.isolation.cgroups, run_group_name(os.getpid(), run_id),
                               memory_mb=plan.limits.memory_mb,
                               max_processes=plan.limits.max_processes)
        return Confinement(self, plan, allowed, network, cgroup)


class Confinement:
    """One run's confinement: its cgroups, what its child does before ``exec``, and how the
    job's exit status comes back from the run's namespace init."""

    def __init__(self, confiner: Confiner, plan: LaunchPlan, allowed: tuple[Path, ...],
                 network: bool, cgroup: RunCgroup | None = None):
        self.confiner = confiner
        self.plan = plan
        self.network = network
        self.cgroups = cgroup
        self.read_write = tuple(str(p) for p in allowed) + (str(plan.tmpdir), "/dev/shm")
        self.report_file = str(plan.report_path) if plan.report_path else None
        self.writable_in_installation = tuple(
            str(p) for p in allowed if confiner.protected.in_workspace(p))
        self.error_r, self.error_w = os.pipe()

    @property
    def cgroups_reachable(self) -> bool:
        """Whether the run could write the cgroup file system (move itself out of its
        groups): neither a mount namespace hides it nor Landlock denies it."""
        iso = self.confiner.isolation
        return not (iso.namespaces or iso.landlock_abi)

    @property
    def has_init(self) -> bool:
        """Whether the process the worker forks is the run's namespace init, not the job."""
        return self.confiner.isolation.namespaces

    def forked(self) -> None:
        """In the worker, once the child is forked: only the child keeps the error pipe's
        write end, so that its end of file means the run's init is gone."""
        if self.error_w >= 0:
            os.close(self.error_w)
            self.error_w = -1

    def _report(self) -> str:
        os.set_blocking(self.error_r, False)
        try:
            return os.read(self.error_r, 4096).decode("utf-8", "replace")
        except BlockingIOError:
            return ""

    def job_returncode(self, fallback: int) -> int:
        """The job's return code as its namespace init saw it (the worker only sees the
        init's); ``fallback`` when the init did not report (it was killed)."""
        text = self._report()
        if text.startswith(STATUS_PREFIX):
            return os.waitstatus_to_exitcode(int(text[len(STATUS_PREFIX):]))
        return fallback

    def end(self) -> None:
        """Kill whatever is left in the run's cgroups (``cgroup.kill``)."""
        if self.cgroups is not None:
            self.cgroups.kill()

    def close(self) -> None:
        self.forked()
        os.close(self.error_r)
        if self.cgroups is not None:
            self.end()
            self.cgroups.remove()

    # -- in the child, between fork and its release ---------------------------------------------

    def confine(self) -> None:
        """Confine the calling process, the job's child (raises on any failure)."""
        iso = self.confiner.isolation
        if self.cgroups is not None:
            for procs_file in self.cgroups.procs_files:
                _write_file(procs_file, "0")
            _write_file("/proc/self/oom_score_adj", "1000")
        set_rlimits(self.plan.limits)
        if iso.namespaces:
            self._namespaces()
            self._become_init()
        os.chdir(self.plan.cwd)
        if iso.drops_capabilities:
            kernel.drop_bounding_set(kernel.last_capability())
        kernel.set_no_new_privs()
        if iso.landlock_abi:
            self._landlock(iso.landlock_abi)
        if self.confiner.filters:
            self.confiner.filters[not self.network].load()
        if iso.drops_capabilities:
            kernel.clear_capabilities()

    def _namespaces(self) -> None:
        flags = kernel.CLONE_NEWNS | kernel.CLONE_NEWIPC
        if not self.network:
            flags |= kernel.CLONE_NEWNET
        kernel.unshare(flags)
        kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        nosuid = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
        kernel.mount("proc", "/proc", "proc", nosuid)
        if os.path.isdir("/dev/shm"):
            kernel.mount("tmpfs", "/dev/shm", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                         "size=64m,mode=1777")
        # Its pages count against the run's memory cap too, like /dev/shm's.
        kernel.mount("tmpfs", str(self.plan.tmpdir), "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                     f"size={self.plan.limits.tmp_mb}m,mode=1777")
        protected = self.confiner.protected
        # The run has joined its cgroups by now; the cgroup file system is hidden so that it
        # cannot move itself out of them (out of its caps and its group kill).
        for path in (*self.confiner.secrets, *protected.hidden, CGROUP_FS):
            _hide(path)
        for path in protected.readonly:
            _bind(path, read_only=True)
        for path in self.writable_in_installation:
            _bind(path, read_only=False)

    def _become_init(self) -> None:
        """Fork: the child goes on to become the job; this process stays as the PID
        namespace's init. A job that is PID 1 would ignore its own ``kill $$``; an init
        also reaps orphans, and when it exits the kernel kills whatever is left in the
        namespace. It reports the job's exact wait status through the error pipe."""
        job = os.fork()
        if job == 0:
            return
        # Hold no copy of the job's pipes (or of the launcher's exec-status pipe), so the
        # worker sees them close when the job and its children are done with them.
        os.closerange(0, self.error_w)
        os.closerange(self.error_w + 1, MAX_FD)
        status = None
        while True:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == job:
                status = wait_status
                break
        if status is not None:
            os.write(self.error_w, f"{STATUS_PREFIX}{status}".encode())
        os._exit(0)

    def _landlock(self, abi: int) -> None:
        ruleset = landlock.Ruleset(abi, deny_tcp=not self.network)
        for path, rights, is_dir in self.confiner.static_rules:
            ruleset.allow(path, rights, is_dir=is_dir)
        for path in self.read_write:
            ruleset.allow(path, ruleset.fs)
        if self.report_file:
            # The job writes pytest's report, created by the worker beside (not inside) its
            # temporary directory, which the worker cannot see into.
            ruleset.allow(self.report_file, landlock.READ_FILE | landlock.WRITE_FILE
                          | landlock.TRUNCATE, is_dir=False)
        ruleset.restrict_self()


def set_rlimits(limits: Limits) -> None:
    """The run's CPU and file-size caps, on the calling process (the job's child)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    file_size = limits.file_size_mb * 1048576
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))


def _hide(path: str) -> None:
    """Cover ``path`` with something empty and read-only (a file with /dev/null)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    ro = kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
    if stat.S_ISDIR(mode):
        kernel.mount("tmpfs", path, "tmpfs", ro, "size=4k,mode=000")
    else:
        kernel.mount("/dev/null", path, None, kernel.MS_BIND)
        kernel.mount(None, path, None, kernel.MS_REMOUNT | kernel.MS_BIND | ro)


def _bind(path: str, *, read_only: bool) -> None:
    """Bind ``path`` onto itself (with what is mounted below it), read-only or writable."""
    if not os.path.exists(path):
        return
    kernel.mount(path, path, None, kernel.MS_BIND | kernel.MS_REC)
    flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_NOSUID | kernel.MS_NODEV
    kernel.mount(None, path, None, flags | (kernel.MS_RDONLY if read_only else 0))


def _write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
