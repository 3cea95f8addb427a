"""Hostile tasks: each is bounded, and each must end contained, recorded with the right
status and reason, leave no process behind, and never make /health slow."""

from __future__ import annotations

import os
import signal
import uuid

import psutil
import pytest

from ..helpers import wait_until
from . import probes

pytestmark = pytest.mark.slow

# The hostile policy's caps, and the reasons of a kill the kernel decided (from the run's
# cgroup counters); the psutil sampler's reasons end in SAMPLED instead.
MEMORY_MB, MAX_PROCESSES = 128, 32
KERNEL_MEMORY = f"memory: killed by the kernel's memory cap of {MEMORY_MB} MB"
KERNEL_FORKS = f"processes: the kernel refused a fork beyond {MAX_PROCESSES} processes"
SAMPLED = "(sampled)"
# What a machine gives a server that does not run as root: Landlock and seccomp, but no
# cgroups and no namespaces; the process layer alone must contain escapees and balloons.
WITHOUT_ROOT = ("cgroups", "namespaces")

pytestmark = pytest.mark.slow

FORK_BOMB = """
import os, time
children = 0
for _ in range(200):                      # bounded: at most 200 forks
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    except OSError:
        time.sleep(0.05)
print('forked', children)
time.sleep(30)
"""

BALLOON = """
chunks = []
for _ in range(40):                       # bounded: at most 400 MB
    chunks.append(bytearray(10 * 1024 * 1024))
print('allocated', len(chunks) * 10, 'MB')
"""

SPREAD_BALLOON = """
import os, time
for _ in range(4):                        # 4 children x 60 MB: each under the 128 MB cap
    if os.fork() == 0:
        data = bytearray(60 * 1024 * 1024)
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"""

HOLDER = """
import time
data = bytearray(200 * 1024 * 1024)       # twice the cap, held for 3 s: long enough to sample
for page in range(0, len(data), 4096):
    data[page] = 1
time.sleep(3)
print('held 200 MB')
"""

ESCAPEE = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:                    # the escapee: outlives its parents
        open("escapee-{marker}", "w").close()
        os.execve("/bin/sleep", ["escapee-{marker}", "60"], {{"ESCAPEE": "{marker}"}})
    os._exit(0)
end = time.monotonic() + 5
while not os.path.exists("escapee-{marker}") and time.monotonic() < end:
    time.sleep(0.01)
print('escapee started')
"""


def _resource(reason: str) -> str:
    return reason.split(":", 1)[0]


CAPPED = [("forkbomb", FORK_BOMB, KERNEL_FORKS), ("balloon", BALLOON, KERNEL_MEMORY),
          ("spread", SPREAD_BALLOON, KERNEL_MEMORY)]


@pytest.mark.parametrize("task_id, script, reason", CAPPED, ids=[c[0] for c in CAPPED])
def test_the_kernel_enforces_the_cap(attack, task_id, script, reason):
    run = attack(task_id, type="custom", custom_script=script)
    assert run["status"] == "killed" and _resource(run["reason"]) == _resource(reason), run
    assert "allocated" not in run["stdout"]
    assert run["reason"].startswith(reason), run


@pytest.mark.parametrize("task_id, script, reason", CAPPED, ids=[c[0] for c in CAPPED])
def test_without_cgroups_the_cap_is_only_sampled(without, task_id, script, reason):
    run = without("cgroups")(task_id, type="custom", custom_script=script)
    if run["status"] != "killed":
        return  # the sampler missed it: a fast balloon can overshoot between two samples
    assert _resource(run["reason"]) == _resource(reason), run
    assert run["reason"].endswith(SAMPLED), run


def test_the_sampler_alone_stops_a_process_holding_too_much_memory(without):
    run = without(*WITHOUT_ROOT)("holder", type="custom", custom_script=HOLDER)
    assert run["status"] == "killed" and _resource(run["reason"]) == "memory", run


def test_cpu_spin_hits_the_cpu_limit(attack):
    run = attack("spin", type="custom", custom_script="while True:\n    pass\n")
    assert run["status"] == "killed", run
    assert run["reason"].startswith("cpu"), run["reason"]


def test_sleep_forever_times_out(attack):
    run = attack("sleeper", type="command", command="sleep 1000", timeout=1)
    assert run["status"] == "timed_out" and run["reason"].startswith("timeout"), run


def test_endless_output_is_cut_at_the_cap(attack):
    run = attack("yes", type="command", command="yes hostile")
    assert run["status"] == "killed" and run["reason"].startswith("output"), run
    assert run["truncated"] is True
    assert run["stdout"].startswith("hostile\n") and "bytes omitted" in run["stdout"]


def host_processes_with(marker: str) -> list[tuple[int, list[str]]]:
    """Every process on the machine (not only the server's descendants: an escapee could
    have been re-parented anywhere) whose command line or environment holds ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmdline = proc.info["cmdline"] or []
        environ = proc.info["environ"] or {}
        if any(marker in part for part in (*cmdline, *environ.values())):
            found.append((proc.pid, cmdline))
    return found


def _no_trace_of_an_escapee(attacker) -> None:
    """Run a setsid double-fork escapee carrying a unique marker in its command line and
    environment; afterwards no process anywhere on the machine may carry the marker."""
    marker = uuid.uuid4().hex
    started = attacker.server.workspace / f"escapee-{marker}"
    try:
        run = attacker("escapee", type="custom", custom_script=ESCAPEE.format(marker=marker))
        assert run["status"] == "succeeded" and "escapee started" in run["stdout"], run
        assert attacker.cleanup_seconds < 1.0
        try:
            wait_until(lambda: not host_processes_with(marker), timeout=1.0)
        except AssertionError:
            raise AssertionError(f"escaped: {host_processes_with(marker)}") from None
    finally:
        for pid, _ in host_processes_with(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        started.unlink(missing_ok=True)


def test_setsid_double_fork_escapee_is_gone_from_the_whole_machine(attack):
    _no_trace_of_an_escapee(attack)


def test_the_process_layer_alone_leaves_no_escapee(without):
    _no_trace_of_an_escapee(without(*WITHOUT_ROOT))


def test_a_process_ignoring_sigterm_is_killed(attack):
    run = attack("stubborn", type="command", command="trap '' TERM; sleep 1000", timeout=1)
    assert run["status"] == "timed_out", run


def test_server_environment_secrets_are_invisible(hostile, attack):
    canary = hostile.canary
    probe = ("env; cat /proc/1/environ; cat /proc/$PPID/environ; "
             f"cat /proc/{hostile.proc.pid}/environ; cat /proc/{hostile.proc.pid}/cmdline; true")
    run = attack("canary", type="command", command=probe)
    assert run["status"] == "succeeded", run
    assert canary not in run["stdout"] + run["stderr"]


def test_root_only_file_is_unreadable(attack):
    run = attack("shadow", type="command", command="cat /etc/shadow")
    assert run["status"] == "failed", run
    assert "root:" not in run["stdout"]


def test_writing_outside_the_allowed_directories_fails(hostile, attack):
    target = f"/tmp/escape-{uuid.uuid4().hex}"
    run = attack("outside", type="command", command=f"echo x > {target}")
    assert run["status"] == "failed", run
    assert not os.path.exists(target)
    inside = attack("inside", type="command", command="echo x > inside.txt")
    assert inside["status"] == "succeeded" and (hostile.workspace / "inside.txt").exists()


def test_no_network_at_all(hostile, attack):
    run = attack("net", type="custom", custom_script=probes.NETWORK.format(port=hostile.port))
    assert run["status"] == "failed" and run["exit_code"] == 7, run
    assert "connected" not in run["stdout"]


def test_a_directory_swapped_for_a_symlink_after_create_is_rejected(hostile, attack):
    sub = hostile.workspace / "swapme"
    sub.mkdir()
    hostile.post("create", task_id="swap", type="command", interval="every 1 hour",
                 command="cat shadow", working_dir="swapme")
    sub.rmdir()
    sub.symlink_to("/etc")
    try:
        run = hostile.run_now("swap")
    finally:
        sub.unlink()
        hostile.post("remove", task_id="swap")
    assert run["status"] == "rejected" and "path_not_allowed" in run["reason"], run


@pytest.mark.parametrize("working_dir", ["../", "../../etc", "/etc", "{workspace}-evil"])
def test_traversal_and_prefix_tricks_are_refused_at_create(hostile, working_dir):
    working_dir = working_dir.format(workspace=hostile.workspace)
    os.makedirs(f"{hostile.workspace}-evil", exist_ok=True)
    answer = hostile.post("create", expect=400, task_id="trick", type="command",
                          interval="every 1 hour", command="true", working_dir=working_dir)
    assert answer["code"] == "path_not_allowed" and answer["field"] == "working_dir"


def test_a_run_cannot_rewrite_the_policy_file(hostile, attack):
    before = hostile.policy_path.read_text()
    run = attack("policy", type="command",
                 command="echo 'allowed_directories: [/]' >> policies/allowed.yaml; "
                         "mv policies/allowed.yaml x.yaml; rm -f policies/allowed.yaml; "
                         "echo rc=$?")
    assert hostile.policy_path.read_text() == before
    assert not (hostile.workspace / "x.yaml").exists()


def test_a_run_cannot_read_or_write_the_data_directory(hostile, attack):
    run = attack("data", type="command",
                 command="ls data; cat data/scheduler.db | head -c 100; echo x > data/planted; "
                         "true")
    assert "SQLite" not in run["stdout"] and "scheduler.db" not in run["stdout"]
    assert not (hostile.data_dir / "planted").exists()
    refused = hostile.post("create", task_id="datawd", type="command", interval="every 1 hour",
                           command="ls", working_dir="data")
    try:
        record = hostile.run_now("datawd")
    finally:
        hostile.post("remove", task_id="datawd")
    assert refused["status"] == "success"
    assert record["status"] == "rejected" and "data directory" in record["reason"], record


def test_a_run_cannot_signal_its_parent_or_the_server(hostile, attack):
    workers = [p.pid for p in hostile.descendants() if p.ppid() == hostile.proc.pid]
    targets = " ".join(str(pid) for pid in [hostile.proc.pid, *workers])
    run = attack("signals", type="command",
                 command=f"kill -9 $PPID; kill -9 {targets}; kill -TERM {targets}; true")
    assert run["status"] == "succeeded", run
    assert hostile.proc.poll() is None
    status = hostile.post("status")
    assert status["workers"]["alive"] == status["workers"]["configured"]
    assert set(workers) <= {p.pid for p in hostile.descendants()}


def test_the_isolation_in_force_is_reported(hostile):
    status = hostile.post("status")
    assert status["isolation_level"] == "full"
    for layer in ("cgroup-memory", "cgroup-pids", "cgroup-kill", "mount-namespace",
                  "pid-namespace", "network-namespace", "no-capabilities", "seccomp"):
        assert layer in status["isolation"]
    assert any(layer.startswith("landlock") for layer in status["isolation"])
