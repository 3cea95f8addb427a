"""Shared fixtures. Integration tests talk real HTTP to a real server process; the tests in
``tests/inprocess`` drive the application in-process (:mod:`tests.inprocess.harness`).

Tiers: tests marked ``slow`` (fuzzing, hostile tasks, load, the browser, long timings) are
left out by ``make test-fast``; ``make test`` runs everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
import pytest

from .helpers import Server, wait_until


def _leftovers(pids: set[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def make_server(tmp_path_factory):
    """Factory for servers; every one is stopped and checked for stray processes after."""
    servers: list[Server] = []

    def make(**kwargs) -> Server:
        server = Server(tmp_path_factory.mktemp("server"), **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        family = {p.pid for p in server.descendants()}
        server.stop()
        try:
            wait_until(lambda: not _leftovers(family), timeout=5, message="no stray processes")
        except AssertionError:
            stray = _leftovers(family)
            for pid in stray:
                psutil.Process(pid).kill()
            pytest.fail(f"processes outlived the server: {stray}")


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture
def require() -> Callable[[object, str, str], None]:
    """``require(available, what, how)``: a test that needs something this machine lacks
    (Chromium, root, cgroups) is skipped with a reason that says ``how`` to get ``what``.
    Under ``CI=true`` it fails instead: CI is where every test must really run."""

    def check(available: object, what: str, how: str) -> None:
        if available:
            return
        reason = f"needs {what}, which this machine lacks; to run it: {how}"
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: a missing requirement fails the run)")
        pytest.skip(reason)
    return check
