"""Which isolation layers this machine provides, and the level they add up to.

Detected once per process (a worker detects at start-up and tells the server, which
reports it in ``status``). The layers:

* always: own session and process group, subreaper kill, rlimits, process-tree watch,
  an environment built from the policy only (level ``process``);
* cgroups: per-run memory and pids caps and a group kill (``resources``);
* Landlock, a mount namespace, and dropping every capability (``filesystem``): the run
  reads system directories, reads and writes only the allowed directories and a private
  temporary directory, and cannot see the server's data or change its policy or code;
* PID and network namespaces and a seccomp filter (``full``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from policies import IsolationLevel

from . import cgroups, kernel, landlock, seccomp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isolation:
    """What this machine offers a run (see the module docstring)."""

    is_root: bool = False
    landlock_abi: int = 0
    namespaces: bool = False
    seccomp: bool = False
    cgroups: cgroups.CgroupSupport = field(default_factory=cgroups.CgroupSupport)

    @property
    def layers(self) -> list[str]:
        names = ["process-group", "subreaper-kill", "rlimits", "tree-watch", "clean-environment"]
        names += self.cgroups.layers
        if self.landlock_abi:
            names.append(f"landlock-abi{self.landlock_abi}")
        if self.namespaces:
            names += ["mount-namespace", "pid-namespace", "network-namespace"]
        if self.is_root:
            names.append("no-capabilities")
        if self.seccomp:
            names.append("seccomp")
        return names

    @property
    def level(self) -> IsolationLevel:
        cg = self.cgroups
        if not (cg.memory and cg.pids and cg.unified):
            return IsolationLevel.PROCESS
        if not (self.landlock_abi and self.namespaces):
            return IsolationLevel.RESOURCES
        if not self.seccomp:
            return IsolationLevel.FILESYSTEM
        return IsolationLevel.FULL

    def to_dict(self) -> dict:
        return {"level": self.level.value, "layers": self.layers,
                "cgroup_layout": self.cgroups.layout}


def _namespaces_work() -> bool:
    """Can this process make mount, PID and network namespaces? Tried in a throwaway child
    (a worker is single-threaded, so forking here is safe)."""
    pid = os.fork()
    if pid == 0:
        try:
            kernel.unshare(kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWNET
                           | kernel.CLONE_NEWIPC)
            kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def detect() -> Isolation:
    """Probe the machine. Namespaces are only used as root (no user namespaces: as root
    they would map root to root and give nothing)."""
    is_root = os.geteuid() == 0
    found = Isolation(
        is_root=is_root,
        landlock_abi=landlock.abi_version(),
        namespaces=is_root and _namespaces_work(),
        seccomp=seccomp.available(),
        cgroups=cgroups.detect(),
    )
    log.info("isolation: %s (%s)", found.level.value, ", ".join(found.layers))
    return found
