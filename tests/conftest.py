"""Shared fixtures. Integration tests talk real HTTP to a real server process."""

from __future__ import annotations

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
