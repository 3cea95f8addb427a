"""Resource caps the kernel enforces per run: memory kills anywhere in the run's tree, the
file-size and temporary-directory caps, and each run's own cgroups removed when it ends.

The hostile policy caps memory at 128 MB; every script here is bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import HostileServer

pytestmark = pytest.mark.slow

KERNEL_MEMORY = "memory: killed by the kernel's memory cap"

# The parent forks 4 children of 120 MB each under the 128 MB cap; the kernel kills
# children, the parent waits for them and exits 0 whatever happened to them.
CHILDREN_OOM_PARENT_EXITS_0 = """
import os
pids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        data = bytearray(120 * 1024 * 1024)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print('parent done')
"""

GRANDCHILD_OOM_PARENT_EXITS_0 = """
import os
child = os.fork()
if child == 0:
    grandchild = os.fork()
    if grandchild == 0:
        data = bytearray(200 * 1024 * 1024)
        os._exit(0)
    os.waitpid(grandchild, 0)
    os._exit(0)
os.waitpid(child, 0)
print('parent done')
"""


def test_children_killed_by_the_memory_cap_make_the_run_killed(attack):
    run = attack("oomkids", type="custom", custom_script=CHILDREN_OOM_PARENT_EXITS_0)
    assert run["status"] == "killed", run
    assert run["reason"].startswith(KERNEL_MEMORY), run["reason"]
    assert run["exit_code"] == 0, run
    assert "parent done" in run["stdout"]


def test_a_grandchild_killed_by_the_memory_cap_makes_the_run_killed(attack):
    run = attack("oomgrand", type="custom", custom_script=GRANDCHILD_OOM_PARENT_EXITS_0)
    assert run["status"] == "killed", run
    assert run["reason"].startswith(KERNEL_MEMORY), run["reason"]
    assert "parent done" in run["stdout"]


def test_a_balloon_is_killed_by_the_kernel_not_the_sampler(attack):
    run = attack("kballoon", type="custom",
                 custom_script="x = [bytearray(10 << 20) for _ in range(40)]\n")
    assert run["status"] == "killed", run
    assert run["reason"].startswith(KERNEL_MEMORY), run["reason"]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A server with small file-size and temporary-directory caps."""
    server = HostileServer(tmp_path_factory.mktemp("capped"), workers=1)
    server.policy_path.write_text(server.policy_path.read_text().replace(
        "\nlimits:\n", "\nlimits:\n  file_size_mb: 2\n  tmp_mb: 16\n"))
    server.start()
    yield server
    server.stop()


def run_once(server, task_id: str, **fields) -> dict:
    server.post("create", task_id=task_id, interval="every 1 hour", **fields)
    try:
        return server.run_now(task_id, timeout=60)
    finally:
        server.post("remove", task_id=task_id)


def test_a_file_larger_than_the_file_size_cap_is_cut(capped):
    shell = run_once(capped, "bigfile", type="command", command="exec head -c 8M /dev/zero > big.bin")
    assert shell["status"] == "killed", shell
    assert shell["reason"] == "file size: wrote a file larger than 2 MB", shell
    python = run_once(capped, "pybigfile", type="custom",
                      custom_script="open('big2.bin', 'wb').write(bytes(8 << 20))\n")
    assert python["status"] == "failed" and "File too large" in python["stderr"], python
    for name in ("big.bin", "big2.bin"):
        assert (capped.workspace / name).stat().st_size <= 2 << 20
        (capped.workspace / name).unlink()


def test_the_private_temporary_directory_is_capped(capped):
    run = run_once(capped, "tmpfill", type="command",
                   command='df -m "$TMPDIR" | tail -1; head -c 1M /dev/zero > "$TMPDIR/a"; '
                           'head -c 1M /dev/zero > "$TMPDIR/b"; for i in $(seq 20); do '
                           'head -c 1M /dev/zero > "$TMPDIR/f$i" || break; done; '
                           'du -sm "$TMPDIR"')
    size = run["stdout"].splitlines()[0].split()
    assert size[0] == "tmpfs" and size[1] == "16", run["stdout"]
    assert "No space left on device" in run["stderr"], run
    assert int(run["stdout"].splitlines()[-1].split()[0]) <= 16


def test_every_run_gets_its_own_cgroups_and_they_are_removed(attack):
    run = attack("cgself", type="command", command="cat /proc/self/cgroup")
    assert run["status"] == "succeeded", run
    lines = dict(line.split(":", 2)[1:] for line in run["stdout"].splitlines())
    for controller, mount in (("memory", "memory"), ("pids", "pids"), ("", "unified")):
        group = lines[controller]
        assert "/tsched-" in group and "-run-" in group, lines
        assert not (Path("/sys/fs/cgroup") / mount / group.lstrip("/")).exists(), \
            f"run group {group} left behind"


CGROUP_ESCAPE = r"""
import glob, os, time
moved = []
for procs in ["/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs",
              "/sys/fs/cgroup/unified/cgroup.procs", "/sys/fs/cgroup/cgroup.procs"]:
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
        moved.append(procs)
    except OSError as exc:
        print("refused", procs, exc.strerror, flush=True)
print("moved", moved, flush=True)
print(open("/proc/self/cgroup").read(), flush=True)
time.sleep(5)                             # bounded: the watch has 50 samples to notice
"""


def test_a_run_cannot_leave_its_cgroups(attack):
    run = attack("cgescape", type="custom", custom_script=CGROUP_ESCAPE)
    assert run["status"] == "succeeded", run
    assert "moved []" in run["stdout"], run["stdout"]
    assert "-run-" in run["stdout"].split("moved []", 1)[1]


def test_a_run_that_reaches_the_cgroup_files_and_leaves_is_killed(without):
    run = without("landlock", "namespaces")("cgescape", type="custom",
                                            custom_script=CGROUP_ESCAPE)
    assert "moved ['/sys/fs/cgroup/memory/cgroup.procs'" in run["stdout"], run
    assert run["status"] == "killed", run
    assert run["reason"] == "cgroup: a process of the run left its cgroups", run
