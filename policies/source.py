"""The policy in force, re-read when its file changes.

:class:`PolicySource` holds the last good policy. ``current()`` is cheap and is called on
every request and every run; at most once per ``check_interval`` seconds it looks at the
file's identity (inode, size, modification time) and re-reads it when that changed. A file
that fails validation is not applied: the last good policy stays in force, and ``error``
says why until a good file is loaded.

``start_watching()`` adds a small daemon thread that makes the same check every
``check_interval`` seconds, so an edit is applied (or its error logged) within about that
time even when no request or run asks for the policy. ``stop_watching()`` ends it.

Each policy applied carries a ``revision``, counted from 1 for the first load, and
listeners (``add_listener``) are told of each one applied after that, from the thread that
reloaded it (the watcher, or whichever request or run looked). A listener is never told of
an older revision after a newer one, and its exceptions are logged, never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import PolicyFileError
from .loader import load_policy
from .model import Policy

log = logging.getLogger(__name__)


class PolicySource:
    """The operator's policy file and the last good policy read from it."""

    def __init__(self, path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None,
                 check_interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path).absolute()
        self.base_dir = base_dir
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._identity = self._stat()
        self._policy = dataclasses.replace(load_policy(self.path, base_dir=base_dir), revision=1)
        self.loaded_at = time.time()
        self._listeners: list[Callable[[Policy], None]] = []
        # Taken while listeners are told: one revision at a time, none older than the last.
        self._telling = threading.Lock()
        self._told = self._policy.revision
        self.error: str | None = None
        self.reload_errors = 0  # changes of the file that were not applied, since start
        self._next_check = clock() + check_interval
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> Policy:
        """The policy in force (re-read first if the file changed since the last look)."""
        now = self._clock()
        if now >= self._next_check:
            self.refresh(now)
        return self._policy

    def add_listener(self, listener: Callable[[Policy], None]) -> None:
        """Call ``listener(policy)`` after each new policy is applied (see the module
        docstring); it should be quick: the thread that reloaded waits for it."""
        self._listeners.append(listener)

    def refresh(self, now: float | None = None) -> bool:
        """Re-read the file if it changed; True if a new policy was applied (and the
        listeners told)."""
        policy = self._reload(now)
        if policy is None:
            return False
        self._tell(policy)
        return True

    def _reload(self, now: float | None) -> Policy | None:
        """The new policy, applied, if the file changed and is valid; else None."""
        with self._lock:
            self._next_check = (self._clock() if now is None else now) + self.check_interval
            identity = self._stat()
            if identity == self._identity:
                return None
            self._identity = identity
            try:
                policy = load_policy(self.path, base_dir=self.base_dir)
            except PolicyFileError as exc:
                self.error = exc.message
                self.reload_errors += 1
                log.error("policy %s not applied, the last good policy stays in force: %s",
                          self.path, exc.message)
                return None
            self._policy = dataclasses.replace(policy, revision=self._policy.revision + 1)
            self.loaded_at = time.time()
            self.error = None
            log.info("policy %s reloaded (revision %d)", self.path, self._policy.revision)
            return self._policy

    def _tell(self, policy: Policy) -> None:
        # Outside the reload lock, so that a listener may ask for the policy.
        with self._telling:
            if policy.revision <= self._told:
                return  # a newer one was told while this thread waited
            self._told = policy.revision
            for listener in list(self._listeners):
                try:
                    listener(policy)
                except Exception:  # a listener's bug must not undo the reload
                    log.exception("policy listener %r failed for revision %d", listener,
                                  policy.revision)

    def start_watching(self) -> None:
        """Check the file every ``check_interval`` seconds in a daemon thread (idempotent)."""
        if self._watcher is not None:
            return
        self._watch_stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="policy-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self, timeout: float = 5.0) -> None:
        if self._watcher is None:
            return
        self._watch_stop.set()
        self._watcher.join(timeout)
        self._watcher = None

    def _watch(self) -> None:
        while not self._watch_stop.wait(self.check_interval):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise; requests still check
                log.exception("policy watcher: checking %s failed", self.path)
