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

For tests and diagnostics the operator can switch layers off with the environment variable
``TASK_SCHEDULER_DISABLE_LAYERS`` (comma-separated names from :data:`SWITCHABLE`), read
from the server's own environment when a worker detects its layers. A switched-off layer
is reported absent, so ``status`` and the level tell the truth and a policy's
``isolation.minimum`` still fails closed. The switch can only take layers away.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from policies import IsolationLevel

from . import cgroups, kernel, landlock, seccomp

log = logging.getLogger(__name__)

DISABLE_VARIABLE = "TASK_SCHEDULER_DISABLE_LAYERS"
SWITCHABLE = ("cgroups", "landlock", "namespaces", "seccomp", "capabilities")


@dataclass(frozen=True)
class Isolation:
    """What this machine offers a run (see the module docstring)."""

    is_root: bool = False
    landlock_abi: int = 0
    namespaces: bool = False
    seccomp: bool = False
    cgroups: cgroups.CgroupSupport = field(default_factory=cgroups.CgroupSupport)
    # Layers the operator switched off (see the module docstring).
    disabled: frozenset[str] = frozenset()

    @property
    def drops_capabilities(self) -> bool:
        """Whether a run loses every capability (only root has any to lose)."""
        return self.is_root and "capabilities" not in self.disabled

    @property
    def layers(self) -> list[str]:
        names = ["process-group", "subreaper-kill", "rlimits", "tree-watch", "clean-environment"]
        names += self.cgroups.layers
        if self.landlock_abi:
            names.append(f"landlock-abi{self.landlock_abi}")
        if self.namespaces:
            names += ["mount-namespace", "pid-namespace", "network-namespace"]
        if self.drops_capabilities:
            names.append("no-capabilities")
        if self.seccomp:
            names.append("seccomp")
        return names

    @property
    def level(self) -> IsolationLevel:
        cg = self.cgroups
        if not (cg.memory and cg.pids and cg.unified):
            return IsolationLevel.PROCESS
        if not (self.landlock_abi and self.namespaces and self.drops_capabilities):
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


def disabled_layers(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The layers named in ``TASK_SCHEDULER_DISABLE_LAYERS``; unknown names are logged and
    ignored (a typo must not stop the server, and ignoring it can only keep a layer on)."""
    names = {name.strip().lower() for name in environ.get(DISABLE_VARIABLE, "").split(",")}
    names.discard("")
    unknown = names.difference(SWITCHABLE)
    if unknown:
        log.warning("%s: ignoring unknown layer names %s (known: %s)", DISABLE_VARIABLE,
                    ", ".join(sorted(unknown)), ", ".join(SWITCHABLE))
    return frozenset(names.intersection(SWITCHABLE))


def detect() -> Isolation:
    """Probe the machine, leaving out the layers the operator switched off. Namespaces are
    only used as root (no user namespaces: as root they would map root to root and give
    nothing)."""
    off = disabled_layers()
    is_root = os.geteuid() == 0
    found = Isolation(
        is_root=is_root,
        landlock_abi=0 if "landlock" in off else landlock.abi_version(),
        namespaces="namespaces" not in off and is_root and _namespaces_work(),
        seccomp="seccomp" not in off and seccomp.available(),
        cgroups=cgroups.CgroupSupport() if "cgroups" in off else cgroups.detect(),
        disabled=off,
    )
    if off:
        log.warning("isolation layers switched off by %s: %s", DISABLE_VARIABLE,
                    ", ".join(sorted(off)))
    log.info("isolation: %s (%s)", found.level.value, ", ".join(found.layers))
    return found
