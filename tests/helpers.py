"""Test helpers: a real server process on a free loopback port, and waiting with deadlines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


POLICY_TEMPLATE = """\
version: 1
allowed_directories: [{workspace}]
limits:
  timeout_seconds: {timeout}
  max_output_kb: {max_output_kb}
rate_limits:
  requests_per_minute: {requests_per_minute}
  runs_per_minute: {runs_per_minute}
  max_tasks: {max_tasks}
"""


class Server:
    """A ``python -m api`` process with its own data directory, policy and workspace."""

    def __init__(self, base: Path, *, workers: int = 2, autostart: bool = False,
                 extra_args: tuple[str, ...] = (), policy_text: str | None = None, **policy: Any):
        self.base = base
        self.workspace = base / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.data_dir = base / "data"
        self.policy_path = base / "allowed.yaml"
        settings = dict(workspace=self.workspace, timeout=60, max_output_kb=1024,
                        runs_per_minute=100000, max_tasks=100000, requests_per_minute=1000000)
        settings.update(policy)
        if not self.policy_path.exists() or policy_text or policy:
            self.policy_path.write_text(policy_text or POLICY_TEMPLATE.format(**settings))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "api", "--port", str(self.port), "--policy",
                     str(self.policy_path), "--data-dir", str(self.data_dir), "--workers",
                     str(workers), "--shutdown-grace", "3", *extra_args]
        if autostart:
            self.args.append("--autostart")
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()

    def start(self) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        wait_until(self._healthy, timeout=30, message=f"server on port {self.port} (log {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}: {self.read_log()}")
        try:
            return requests.get(self.url + "/health", timeout=1).ok
        except (requests.ConnectionError, requests.Timeout):
            # Listening but not answering yet (a busy machine, the app still loading):
            # not healthy yet; wait_until's deadline bounds the wait.
            return False

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, action: str | None = None, *, expect: int | None = 200, **fields: Any) -> dict:
        body = dict(fields)
        if action is not None:
            body["action"] = action
        response = self.session.post(self.url + "/schedule", json=body, timeout=30)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        return response.json()

    def raw(self, method: str, path: str = "/schedule", **kwargs) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)

    def wait_run(self, run_id: int, timeout: float = 30.0) -> dict:
        """The run record once it has a final status."""
        def done():
            run = self.post("output", run_id=run_id)["run"]
            return run if run["status"] not in ("queued", "running") else None
        return wait_until(done, timeout=timeout, message=f"run {run_id} to finish")

    def run_now(self, task_id: str, timeout: float = 30.0) -> dict:
        return self.wait_run(self.post("run", task_id=task_id)["run_id"], timeout)

    def processes_with(self, marker: str, count: int = 1, timeout: float = 15.0) -> list[int]:
        """Host pids of the server's descendants whose command line contains ``marker``,
        once there are at least ``count`` (a job in its own PID namespace cannot tell us
        its host pid itself)."""
        def found():
            pids = []
            for proc in self.descendants():
                try:
                    if marker in " ".join(proc.cmdline()):
                        pids.append(proc.pid)
                except psutil.Error:
                    continue
            return pids if len(pids) >= count else None
        return wait_until(found, timeout=timeout, message=f"{count} processes with {marker!r}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop the server; return its exit code (negative: killed by a signal)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout} s: {self.read_log()}")
        finally:
            self.log.close()


def require_root(why: str) -> None:
    """Skip the calling test unless it runs as root; under ``CI=true`` fail instead (CI runs
    as root, so a skip there would hide a broken test)."""
    if os.geteuid() == 0:
        return
    message = f"needs root to {why}: run the suite as root (sudo make test)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Tmpfs:
    """A tmpfs of ``size_kb`` mounted on ``path`` (as root); :meth:`unmount` always runs
    from the fixture that made it, whatever the test left mounted or open."""

    def __init__(self, path: Path, size_kb: int):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs",
                        str(path)], check=True, capture_output=True)

    def remount(self, mode: str) -> subprocess.CompletedProcess:
        """``mount -o remount,<mode>``; the result says whether the kernel agreed."""
        return subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)],
                              capture_output=True, text=True)

    def fill(self, name: str = "filler") -> Path:
        """Write a file until the file system is full."""
        filler = self.path / name
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
        finally:
            os.close(fd)
        return filler

    def unmount(self) -> None:
        self.remount("rw")
        done = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:  # still busy (a process of a failed test): detach it
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
