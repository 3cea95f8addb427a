"""Run notifications: a signed JSON POST to the task's ``notify`` URL when a run ends.

Delivery never touches the run path: :meth:`Notifier.submit` only puts the notice on a
bounded queue (a full queue, or a task with ``per_task`` notices waiting already, records
the notice as failed at once) and a few delivery
threads send it. Each notice is tried up to ``tries`` times, with a back-off that doubles
from ``backoff`` seconds, each try with a ``timeout``; a slow or dead receiver holds up
only a delivery thread. The URL is checked against the policy in force before every try
(it may have changed since the task was created), and a redirect is never followed: a 3xx
answer is a failed try, so a receiver cannot bounce the server to a URL the policy does not
allow. The outcome, ``{status: delivered|failed, attempts, http_status}``, is recorded in
the run.

The body is ``{"event", "task_id", "run", "sent_at"}`` (the run as ``render`` shows it;
``sent_at`` in epoch seconds, so a receiver can refuse a replayed body). It is signed
with HMAC-SHA256 keyed by the value of the server's environment variable that the policy's
``notifications.secret_env`` names: ``X-Task-Scheduler-Signature: sha256=<hex digest>``.
Without a secret the header is left out (and a warning logged), so receivers that verify
refuse the body.

Lifecycle: ``open()`` starts the threads, ``close()`` ends them; notices still queued then
are recorded as failed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policies import Policy

from .models import Run
from .store import Store

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Task-Scheduler-Signature"
USER_AGENT = "task-scheduler-notify/1"


@dataclass(frozen=True)
class NotifierConfig:
    """Tunables of delivery; the defaults keep a dead receiver's cost to a few seconds of
    one thread per notice."""

    threads: int = 2
    queue_size: int = 1000
    per_task: int = 20  # waiting at once for one task, so one task cannot crowd out others
    tries: int = 3
    timeout: float = 5.0
    backoff: float = 1.0


@dataclass(frozen=True)
class Notice:
    """One notification to deliver."""

    run_id: int
    task_id: str
    event: str
    url: str


def signature(secret: bytes, body: bytes) -> str:
    """The header value that signs ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def default_render(run: Run) -> dict[str, Any]:
    """A run as plain JSON data, for a notifier used without the API's view of runs."""
    return {"run_id": run.run_id, "task_id": run.task_id, "trigger": run.trigger.value,
            "status": run.status.value, "reason": run.reason, "exit_code": run.exit_code,
            "attempt": run.attempt, "retry_of": run.retry_of,
            "parent_run_id": run.parent_run_id}


class Notifier:
    """The delivery queue and its threads (see the module docstring)."""

    def __init__(self, store: Store, policy: Callable[[], Policy], *,
                 render: Callable[[Run], dict[str, Any]] = default_render,
                 config: NotifierConfig = NotifierConfig(),
                 environ: Mapping[str, str] = os.environ):
        self._store = store
        self._policy = policy
        self._render = render
        self.config = config
        self._environ = environ
        self._queue: queue.Queue[Notice | None] = queue.Queue(config.queue_size)
        self._waiting: dict[str, int] = {}
        self._waiting_lock = threading.Lock()
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"notify-{i}", daemon=True)
                         for i in range(config.threads)]

    def open(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """End the threads; a try in progress is waited for ``timeout`` seconds in all
        (the threads are daemons: one stuck on a dead receiver does not hold up the exit)."""
        self._closing.set()
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                notice = self._queue.get_nowait()
            except queue.Empty:
                return
            if notice is not None:
                self._record(notice, "failed", 0, None)

    def submit(self, notice: Notice) -> bool:
        """Queue ``notice`` without blocking; False (and recorded as failed) when the queue,
        or the task's share of it (``per_task``), is full."""
        with self._waiting_lock:
            waiting = self._waiting.get(notice.task_id, 0)
            full = waiting >= self.config.per_task
            if not full:
                try:
                    self._queue.put_nowait(notice)
                    self._waiting[notice.task_id] = waiting + 1
                except queue.Full:
                    full = True
        if full:
            log.error("notification of run %d not sent: too many notices are waiting "
                      "(%d of this task, %d in all at most)", notice.run_id,
                      self.config.per_task, self.config.queue_size,
                      extra={"run_id": notice.run_id, "task_id": notice.task_id})
            self._record(notice, "failed", 0, None)
            return False
        return True

    def _taken(self, notice: Notice) -> None:
        with self._waiting_lock:
            left = self._waiting.get(notice.task_id, 1) - 1
            if left > 0:
                self._waiting[notice.task_id] = left
            else:
                self._waiting.pop(notice.task_id, None)

    # -- the delivery threads -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing.is_set():
            notice = self._queue.get()
            if notice is None:
                return
            self._taken(notice)
            try:
                self.deliver(notice)
            except Exception:  # one notice's failure must not end the thread
                log.exception("notification of run %d failed", notice.run_id)
                self._record(notice, "failed", 0, None)

    def deliver(self, notice: Notice) -> dict[str, Any]:
        """Send ``notice`` (up to ``tries`` times) and record the outcome; returns it."""
        run = self._store.get_run(notice.run_id)
        if run is None:
            return {}
        # sent_at lets a receiver refuse an old body replayed to it (it is signed too).
        body = json.dumps({"event": notice.event, "task_id": notice.task_id,
                           "run": self._render(run), "sent_at": round(time.time(), 3)},
                          default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        rules = self._policy().notifications
        secret = self._environ.get(rules.secret_env) if rules.secret_env else None
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret.encode(), body)
        else:
            log.warning("notification of run %d is sent unsigned: the policy's "
                        "notifications.secret_env names no variable that is set", notice.run_id)
        attempts, http_status = 0, None
        for attempt in range(1, self.config.tries + 1):
            if not self._policy().notifications.allows(notice.url):
                log.warning("notification of run %d not sent: %s is no longer allowed by the "
                            "policy", notice.run_id, notice.url,
                            extra={"run_id": notice.run_id, "task_id": notice.task_id})
                break
            attempts = attempt
            http_status = self._post(notice.url, body, headers)
            if http_status is not None and 200 <= http_status < 300:
                return self._record(notice, "delivered", attempts, http_status)
            if attempt < self.config.tries and self._closing.wait(
                    self.config.backoff * 2 ** (attempt - 1)):
                break
        log.warning("notification of run %d to %s failed after %d tries (last answer: %s)",
                    notice.run_id, notice.url, attempts, http_status,
                    extra={"run_id": notice.run_id, "task_id": notice.task_id})
        return self._record(notice, "failed", attempts, http_status)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        """POST once; the answer's status, or None if there was none (refused, timed out).
        http.client follows no redirects, which is the point."""
        parts = urllib.parse.urlsplit(url)
        kind = (http.client.HTTPSConnection if parts.scheme == "https"
                else http.client.HTTPConnection)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = kind(parts.hostname, parts.port, timeout=self.config.timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            log.info("notification POST to %s failed: %s", url, exc)
            return None
        finally:
            conn.close()

    def _record(self, notice: Notice, status: str, attempts: int,
                http_status: int | None) -> dict[str, Any]:
        outcome = {"status": status, "attempts": attempts, "http_status": http_status}
        try:
            self._store.set_notification(notice.run_id, outcome)
        except Exception:  # a closed store at shutdown: the outcome is only logged
            log.warning("outcome of the notification of run %d not recorded: %s",
                        notice.run_id, outcome)
        return outcome
