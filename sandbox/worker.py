"""The worker process: receives run requests over a pipe and runs one job at a time.

A worker is started with the ``spawn`` context, so it begins single-threaded and with none
of the server's threads or locks. It makes itself a child subreaper so that every process
its jobs leave behind is re-parented to it and can be killed. When the server goes away
(the pipe reaches end of file), the worker kills its job and exits: no job outlives the
server, even one killed with SIGKILL.

Messages in:  ("run", RunRequest) · ("cancel", reason) · ("stop",)
Messages out: ("hello", isolation) · ("started", run_id, started_at, pid) · ("done", RunResult)
"""

from __future__ import annotations

import logging
import resource
import signal
from multiprocessing.connection import Connection

from . import procs, runner
from .confine import Confiner
from .isolation import detect
from .types import ProtectedPaths

log = logging.getLogger(__name__)


def _ignore(signum, frame) -> None:
    """Deliberately nothing (see worker_main)."""


def worker_main(conn: Connection, protected: ProtectedPaths = ProtectedPaths(),
                log_level: int = logging.WARNING,
                log_formatter: logging.Formatter | None = None) -> None:
    """Entry point of a worker process; returns when told to stop or the server is gone.
    Its log lines go to stderr, shaped by ``log_formatter`` when the server gives one
    (so that they match the server's own lines)."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter or logging.Formatter(
        "%(asctime)s worker %(process)d %(levelname)s %(message)s"))
    logging.basicConfig(level=log_level, handlers=[handler])
    # Ctrl-C, or a service manager's SIGTERM to the whole group, must not end a worker
    # in the middle of a run: the server decides what stops (and a worker whose server is
    # gone stops by itself). A handler rather than SIG_IGN: an ignored signal would stay
    # ignored in every job, a handled one is reset to its default on exec.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    procs.become_subreaper()
    # Inherited by every job: no core dumps (they could hold secrets and fill the disk).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    isolation = detect()
    confiner = Confiner(isolation, protected)
    try:
        conn.send(("hello", isolation.to_dict()))
    except OSError:
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind != "run":
            continue
        result = runner.execute(message[1], conn, confiner)
        try:
            conn.send(("done", result))
        except OSError:
            return
