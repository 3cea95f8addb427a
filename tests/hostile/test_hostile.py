"""Hostile tasks: each is bounded, and each must end contained, recorded with the right
status and reason, leave no process behind, and never make /health slow."""

from __future__ import annotations

import os
import uuid

import pytest

from ..helpers import wait_until

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

ESCAPEE = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)                    # the escapee: outlives its parents
    os._exit(0)
print('parent done')
"""

NETWORK = """
import socket, sys
results = []
for host, port in (('127.0.0.1', {port}), ('::1', {port}), ('localhost', {port})):
    try:
        socket.create_connection((host, port), timeout=2).close()
        results.append('connected')
    except OSError as exc:
        results.append(type(exc).__name__)
print(results)
sys.exit(0 if 'connected' in results else 7)
"""


def test_fork_bomb_hits_the_process_cap(attack):
    run = attack("forkbomb", type="custom", custom_script=FORK_BOMB)
    assert run["status"] == "killed", run
    assert run["reason"].startswith("processes"), run["reason"]


def test_memory_balloon_in_one_process_is_killed(attack):
    run = attack("balloon", type="custom", custom_script=BALLOON)
    assert run["status"] == "killed", run
    assert run["reason"].startswith("memory"), run["reason"]
    assert "allocated" not in run["stdout"]


def test_memory_spread_over_children_each_under_the_cap_is_killed(attack):
    run = attack("spread", type="custom", custom_script=SPREAD_BALLOON)
    assert run["status"] == "killed", run
    assert run["reason"].startswith("memory"), run["reason"]


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


def test_setsid_double_fork_escapee_is_gone_when_the_run_ends(attack):
    run = attack("escapee", type="custom", custom_script=ESCAPEE)
    assert run["status"] == "succeeded", run
    assert attack.cleanup_seconds < 1.0


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
    run = attack("net", type="custom", custom_script=NETWORK.format(port=hostile.port))
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
