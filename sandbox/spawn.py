"""Fork a job's process ahead of its start, confine it, and park it just before ``exec``.

A run's expensive part (fork, cgroups, namespaces, mounts, Landlock, seccomp: about 20 ms)
does not depend on the instant it starts, so the worker pays it before the slot: the child
does all of it and then blocks reading its *go* pipe. At the slot the worker writes one
byte (:data:`GO`) and the child ``exec``\\ s at once; closing the pipe without the byte
discards the child instead, which then exits having run nothing of the job.

Hand-written rather than :class:`subprocess.Popen`: ``Popen`` returns only once its child
has ``exec``\\ d (it waits on its exec-status pipe), so its child cannot be held between its
set-up and ``exec``. What ``Popen`` does for us is done here the same way: the job's
standard streams (stdin ``/dev/null``, stdout and stderr pipes), a new session, every other
descriptor closed, the signal dispositions Python changed (SIGPIPE, SIGXFSZ) reset, the
command looked up on the job's own ``PATH``.

The *started* pipe tells the worker how it went: its write end is close-on-exec, so end of
file means the job ``exec``\\ d. Just before ``exec`` the child writes the instant it was
released (``@`` and the epoch time), the run's ``started_at``; text after it, or without
it, says why the job did not start.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import kernel
from .confine import MAX_FD, Confinement, set_rlimits
from .launch import LaunchPlan

GO = b"g"
SETUP_FAILED = "isolation set-up failed: "
EXEC_FAILED = "could not start the job: "
STAMP = b"@"


@dataclass
class Parked:
    """A forked child waiting for its release; the worker's ends of its pipes.

    ``pid`` is the process the worker forked: the job itself, or the init of the run's PID
    namespace when the run has one (the job is then its child)."""

    pid: int
    stdout: int
    stderr: int
    go: int
    started: int

    def release(self) -> None:
        """Let the job ``exec``."""
        try:
            os.write(self.go, GO)
        except BrokenPipeError:
            pass  # the child is gone already: the started pipe and its exit will say so
        self.close_go()

    def close_go(self) -> None:
        """Close the go pipe; before a release this discards the job (it exits unstarted)."""
        if self.go >= 0:
            os.close(self.go)
            self.go = -1

    def close(self) -> None:
        """Close every descriptor the worker holds for this child."""
        self.close_go()
        for fd in (self.stdout, self.stderr, self.started):
            try:
                os.close(fd)
            except OSError:
                pass


def read_started(text: bytes) -> tuple[float | None, str | None]:
    """What the started pipe said by its end: the release instant (None if the child never
    got that far) and the reason the job did not start (None if it ``exec``\\ d)."""
    stamp = None
    if text.startswith(STAMP):
        line, _, text = text.partition(b"\n")
        try:
            stamp = float(line[len(STAMP):])
        except ValueError:
            pass
    error = text.decode("utf-8", "replace").strip() or None
    return stamp, error


def park(plan: LaunchPlan, confinement: Confinement | None) -> Parked:
    """Fork the job's child, confined as ``confinement`` says (or with just its rlimits),
    and leave it waiting for :meth:`Parked.release`. Raises OSError if the fork fails."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    started_r, started_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    new_pid_ns = confinement is not None and confinement.confiner.pid_ns_fd is not None
    child_ends = (out_w, err_w, go_r, started_w, null)
    try:
        if new_pid_ns:
            kernel.unshare(kernel.CLONE_NEWPID)
        try:
            pid = os.fork()
        except OSError:
            if new_pid_ns:
                _restore_pid_ns(confinement)
            raise
    except OSError:
        for fd in (out_r, err_r, go_w, started_r, *child_ends):
            os.close(fd)
        raise
    if pid == 0:
        _child(plan, confinement, null=null, stdout=out_w, stderr=err_w, go=go_r,
               started=started_w)
    if new_pid_ns:
        _restore_pid_ns(confinement)
    for fd in child_ends:
        os.close(fd)
    if confinement is not None:
        confinement.forked()
    return Parked(pid=pid, stdout=out_r, stderr=err_r, go=go_w, started=started_r)


def _restore_pid_ns(confinement: Confinement) -> None:
    """Undo the worker's ``unshare`` so that its own later forks are not in the new
    namespace (in the worker only: the child must stay in it)."""
    kernel.setns(confinement.confiner.pid_ns_fd, kernel.CLONE_NEWPID)


def _child(plan: LaunchPlan, confinement: Confinement | None, *, null: int, stdout: int,
           stderr: int, go: int, started: int) -> None:
    """In the forked child: set up, wait for the release, exec. Never returns."""
    gc.disable()
    try:
        os.dup2(null, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        keep = {0, 1, 2, go, started}
        if confinement is not None:
            keep.add(confinement.error_w)
        _close_all_but(keep)
        os.setsid()
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            if confinement is not None:
                confinement.confine()
            else:
                set_rlimits(plan.limits)
                os.chdir(plan.cwd)
        except BaseException as exc:
            _fail(started, SETUP_FAILED + str(exc))
        if os.read(go, 1) != GO:
            os._exit(0)
        os.close(go)
        os.write(started, STAMP + repr(time.time()).encode() + b"\n")
        try:
            os.execvpe(plan.argv[0], list(plan.argv), plan.env)
        except OSError as exc:
            _fail(started, EXEC_FAILED + (exc.strerror or str(exc)))
    except BaseException as exc:
        _fail(started, SETUP_FAILED + str(exc))
    os._exit(127)


def _fail(started: int, message: str) -> None:
    try:
        os.write(started, message.encode("utf-8", "replace")[:4096])
    finally:
        os._exit(127)


def _close_all_but(keep: Sequence[int] | set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, MAX_FD)
