"""Process-level helpers: subreaping, killing whole process trees, readable exit reasons.

A job may fork, call ``setsid`` after a double fork, or ignore SIGTERM. The process that
launches jobs is made a *child subreaper*, so every orphan of its jobs is re-parented to it
and stays visible as one of its descendants; killing "all my descendants" therefore reaches
escapees that a process-group kill would miss. "No such process" is never an error here.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import psutil

from . import kernel

log = logging.getLogger(__name__)


def become_subreaper() -> bool:
    """Make this process adopt the orphans of its descendants (Linux ≥ 3.4)."""
    try:
        kernel.set_child_subreaper()
    except OSError as exc:
        log.warning("cannot become a child subreaper: %s", exc)
        return False
    return True


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def describe_exit(returncode: int) -> str:
    """Turn a ``Popen.returncode`` into a sentence: 'exited with code 3', 'killed by SIGKILL'."""
    if returncode < 0:
        return f"terminated by {signal_name(-returncode)}"
    return f"exited with code {returncode}"


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not permitted to send %s to pid %d", signal_name(sig), pid)


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group; a group that no longer exists is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not permitted to send %s to process group %d", signal_name(sig), pgid)


def has_children() -> bool:
    """Whether this (single-threaded) process has any child, in one small read.

    For a subreaper, no children means no descendants at all: every orphan below it is
    re-parented to it. Falls back to a process-table scan where the kernel lacks the file.
    """
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as fh:
            return bool(fh.read().strip())
    except OSError:
        return bool(descendants())


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """All live descendants of ``pid`` (default: this process)."""
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def reap_children() -> int:
    """Reap every exited child; return how many were reaped. Call it only once the job's
    own ``Popen`` has waited for its child, whose exit status must not be stolen."""
    reaped = 0
    for child in descendants():
        try:
            done, _ = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            continue
        reaped += done != 0
    return reaped


def kill_descendants(*, deadline: float = 2.0) -> int:
    """SIGKILL every descendant of this process until none is left.

    A fork bomb can create processes while we kill, so sweep until a sweep finds nothing
    or ``deadline`` seconds have passed. Processes are stopped first (SIGSTOP) so that a
    sweep's victims cannot fork in between being listed and being killed. Returns the
    number of processes that were signalled.
    """
    signalled = 0
    end = time.monotonic() + deadline
    while True:
        live = [p for p in descendants() if _status(p) != psutil.STATUS_ZOMBIE]
        for proc in live:
            _send(proc.pid, signal.SIGSTOP)
        for proc in live:
            _send(proc.pid, signal.SIGKILL)
        signalled += len(live)
        reap_children()
        if not live or time.monotonic() > end:
            if live:
                log.error("%d processes still alive after %.1f s of killing", len(live), deadline)
            return signalled
        time.sleep(0.005)


def _status(proc: psutil.Process) -> str:
    try:
        return proc.status()
    except psutil.NoSuchProcess:
        return psutil.STATUS_ZOMBIE
