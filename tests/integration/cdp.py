"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads commands from its fd 3 and writes replies and events to its fd 4, one JSON
message per NUL-terminated chunk: no port, no websocket library. :class:`Page` opens one
tab, navigates, evaluates JavaScript and waits for conditions in it; every chromium process
is killed (its own process group) when the ``with`` block ends.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--remote-debugging-pipe"]


class CdpError(AssertionError):
    pass


class Page:
    """One headless chromium with one tab, driven over the DevTools pipe."""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 900,
                 timeout: float = 30.0):
        assert os.access(CHROMIUM, os.X_OK), (
            f"chromium is not installed ({CHROMIUM}); this test needs it: "
            "apt-get update && apt-get install -y chromium")
        self.timeout = timeout
        self.console: list[str] = []
        self.csp_violations: list[dict] = []
        self._replies: dict[int, queue.Queue] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        # Chromium's singleton socket goes to a directory of its own under TMPDIR, which a
        # killed chromium leaves behind; a short one of ours (a socket's path is at most
        # 107 bytes, so not the test's tmp dir) is removed on close.
        self._tmp = tempfile.mkdtemp(prefix="cdp-")
        env = {**os.environ, "TMPDIR": self._tmp}
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True, pass_fds=(3, 4),
            preexec_fn=lambda: _as_fds_3_and_4(to_child, from_child))
        os.close(to_child)
        os.close(from_child)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.session: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "Page":
        try:
            targets = self.send("Target.getTargets", session=False)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.send("Target.attachToTarget", targetId=page["targetId"],
                                     flatten=True, session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- protocol -----------------------------------------------------------------------

    def send(self, method: str, *, session: bool = True, **params: Any) -> dict:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            self._replies[message_id] = reply = queue.Queue(maxsize=1)
        message = {"id": message_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=self.timeout)
        except queue.Empty:
            raise CdpError(f"chromium did not answer {method} within {self.timeout} s") from None
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict) -> None:
        if "id" in message:
            with self._lock:
                reply = self._replies.pop(message["id"], None)
            if reply is not None:
                reply.put(message)
            return
        params = message.get("params", {})
        if message.get("method") == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description")))
                                         for a in params.get("args", [])))
        elif message.get("method") == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"[{entry.get('source')}] {entry.get('text')}")

    # -- what the tests use ---------------------------------------------------------------

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def eval(self, expression: str) -> Any:
        """The value of ``expression`` in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """The first truthy value of ``expression``; fails after ``timeout`` seconds."""
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise CdpError(f"timed out waiting for {expression!r}; console: {self.console}")
            time.sleep(0.05)

    def text(self, selector: str = "body") -> str:
        return self.eval(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


def _as_fds_3_and_4(read_fd: int, write_fd: int) -> None:
    """In the child, before exec: the pipe ends chromium expects at fds 3 and 4."""
    read_copy, write_copy = os.dup(read_fd), os.dup(write_fd)
    os.dup2(read_copy, 3)
    os.dup2(write_copy, 4)
