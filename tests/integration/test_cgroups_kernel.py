"""The cgroup layer against this machine's kernel: real groups, real members, real kills.

On a v1/hybrid machine the v1 memory and pids hierarchies give the caps and the v2 tree
beside them gives ``cgroup.kill``; on a v2-only machine all three come from the v2 group
the server may use. Each test's processes are bounded and its groups removed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from sandbox import cgroups
from sandbox.cgroups import RunCgroup

from ..helpers import wait_until

SUPPORT = cgroups.detect() if os.geteuid() == 0 else cgroups.CgroupSupport()
if not SUPPORT.layers and os.environ.get("CI") != "true":
    pytest.skip("needs root and a cgroup file system (/sys/fs/cgroup); run the suite as root",
                allow_module_level=True)


@pytest.fixture
def group(request):
    made: list[RunCgroup] = []

    def make(**caps) -> RunCgroup:
        caps = {"memory_mb": 64, "max_processes": 16, **caps}
        run = RunCgroup(SUPPORT, cgroups.run_group_name(os.getpid(), len(made) + 1000), **caps)
        made.append(run)
        return run
    yield make
    for run in made:
        run.kill()
        assert run.remove(), "a test group could not be removed"


def start_member(run: RunCgroup, body) -> int:
    """Fork a child that joins ``run``'s groups, as a run's init does, then runs ``body``."""
    pid = os.fork()
    if pid == 0:
        try:
            for procs_file in run.procs_files:
                with open(procs_file, "w") as f:
                    f.write("0")
            body()
        finally:
            os._exit(0)
    return pid


def sleep_with_setsid_escapee() -> None:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(30)
        os._exit(0)
    time.sleep(30)


def test_the_layout_is_reported():
    assert SUPPORT.layout in ("v2", "hybrid")
    assert "cgroup-kill" in SUPPORT.layers


def test_cgroup_kill_ends_every_member_including_a_setsid_escapee(group):
    run = group()
    pid = start_member(run, sleep_with_setsid_escapee)
    wait_until(lambda: len(run.members()) >= 2, message="the member and the escapee")
    members = run.members()
    run.kill()
    os.waitpid(pid, 0)
    wait_until(lambda: not run.members(), timeout=5, message="the group to empty")
    for member in members:
        try:
            os.kill(member, 0)
        except ProcessLookupError:
            continue
        # A zombie whose parent (the escapee's) is gone waits for init; it runs no more.
        with open(f"/proc/{member}/stat") as f:
            assert f.read().split(") ")[1][0] == "Z", member


def test_an_oom_kill_of_a_grandchild_shows_in_the_groups_counter(group):
    if SUPPORT.memory is None:
        pytest.skip("no memory controller here")
    run = group(memory_mb=32)

    def balloon_in_grandchild():
        child = os.fork()
        if child == 0:
            data = bytearray(96 * 1024 * 1024)  # bounded: 96 MB, 3x the cap
            os._exit(len(data) and 0)
        os.waitpid(child, 0)

    pid = start_member(run, balloon_in_grandchild)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the member itself was not killed
    assert run.oom_kills() == 1


def test_the_process_cap_refuses_forks_and_counts_them(group):
    if SUPPORT.pids is None:
        pytest.skip("no pids controller here")
    run = group(max_processes=4)

    def fork_ten():
        children = []
        for _ in range(10):                  # bounded: at most 10 forks
            try:
                pid = os.fork()
            except BlockingIOError:
                continue
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)

    pid = start_member(run, fork_ten)
    os.waitpid(pid, 0)
    assert run.pids_refused() >= 5
