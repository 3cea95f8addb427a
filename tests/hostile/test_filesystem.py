"""The file-system layers, each shown to be what stops its attacks.

Landlock alone keeps a run out of directories that are not allowed (``/root``, ``/home``,
``/tmp``, other runs' temporary directories); the mount namespace alone hides what lies
*inside* an allowed directory or among the readable system files (the data directory,
``/etc/shadow``), makes the policy file read-only and gives the run its own ``/proc``. The
server's code and Python environment are protected by both: each alone suffices."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from ..helpers import ROOT, wait_until
from . import probes
from .conftest import Attacker, HostileServer
from .probes import OK

pytestmark = pytest.mark.slow

OUTSIDE = ("/root", "/home")
SERVER_DIRS = tuple(str(ROOT / name) for name in ("api", "scheduler", "sandbox", "policies")) \
    + (os.path.realpath(sys.prefix),)
ALL_BUT_CGROUPS = ("capabilities", "landlock", "namespaces", "seccomp")


def _reads(attacker) -> dict:
    run = attacker("reads", type="custom", custom_script=probes.READS.format(paths=OUTSIDE))
    return probes.outcome(run)


def test_directories_outside_the_policy_are_unreadable(attack):
    found = _reads(attack)
    assert found and set(found.values()) == {"EACCES"}, found


def test_without_landlock_they_are_readable(without):
    found = _reads(without("landlock"))
    assert found and set(found.values()) == {OK}, found


def _read_another_runs_tmpdir(server) -> str:
    """Start a run that keeps a secret in its temporary directory, then a second run that
    tries to read it while the first still runs; return what the second one got."""
    tag = uuid.uuid4().hex[:8]
    secret = f"secret-{uuid.uuid4().hex}"
    for task_id, script in (("holder", probes.HOLD_SECRET.format(tag=tag, secret=secret)),
                            ("reader", probes.READ_SECRET.format(tag=tag))):
        server.post("create", task_id=task_id, type="custom", interval="every 1 hour",
                    custom_script=script)
    try:
        holder = server.post("run", task_id="holder")["run_id"]
        wait_until((server.workspace / f"holder-{tag}").exists, timeout=15,
                   message="the holder's secret")
        reader = server.run_now("reader")
        assert server.wait_run(holder)["status"] == "succeeded"
    finally:
        for task_id in ("holder", "reader"):
            server.post("remove", task_id=task_id)
        for name in (f"holder-{tag}", f"reader-{tag}"):
            (server.workspace / name).unlink(missing_ok=True)
    assert reader["status"] == "succeeded", reader
    found = probes.outcome(reader)["secret"]
    return "the secret" if found == secret else found


def test_another_runs_temporary_directory_is_out_of_sight(hostile):
    # TMPDIR is a tmpfs in the holder's own mount namespace: nothing of it shows outside.
    assert _read_another_runs_tmpdir(hostile) == "ENOENT"


def test_each_of_landlock_and_the_private_tmpfs_keeps_another_runs_tmpdir_unreadable(without):
    assert _read_another_runs_tmpdir(without("landlock").server) == "ENOENT"
    assert _read_another_runs_tmpdir(without("namespaces").server) == "EACCES"
    assert _read_another_runs_tmpdir(without("landlock", "namespaces").server) == "the secret"


def test_without_landlock_a_run_writes_outside_the_allowed_directories(without):
    target = f"/tmp/escape-{uuid.uuid4().hex}"
    try:
        run = without("landlock")("outside", type="command", command=f"echo x > {target}")
        assert run["status"] == "succeeded" and os.path.exists(target), run
    finally:
        if os.path.exists(target):
            os.unlink(target)


def _plant(attacker) -> dict:
    """Try to create a file in each of the server's own directories; remove what worked."""
    name = f".planted-{uuid.uuid4().hex}"
    try:
        run = attacker("plant", type="custom",
                       custom_script=probes.PLANT.format(name=name, targets=SERVER_DIRS))
        return probes.outcome(run)
    finally:
        for directory in SERVER_DIRS:
            planted = os.path.join(directory, name)
            if os.path.exists(planted):
                os.unlink(planted)


def test_the_servers_code_and_python_are_read_only(attack):
    found = _plant(attack)
    assert set(found) == set(SERVER_DIRS) and set(found.values()) <= {"EROFS", "EACCES"}, found


def test_landlock_and_the_read_only_mounts_each_protect_the_servers_code(without):
    assert set(_plant(without("namespaces")).values()) == {"EACCES"}
    assert set(_plant(without("landlock")).values()) == {"EROFS"}
    assert set(_plant(without(*ALL_BUT_CGROUPS)).values()) == {OK}


def test_without_the_mount_namespace_system_secrets_are_readable(without):
    for attacker, readable in ((without("landlock"), False), (without("namespaces"), True)):
        run = attacker("shadow", type="command", command="head -c 5 /etc/shadow")
        assert (run["status"] == "succeeded" and run["stdout"] != "") is readable, run


def test_without_the_mount_namespace_a_data_directory_in_reach_is_refused(tmp_path_factory):
    # Nothing could hide it, so no run starts while an allowed directory holds it.
    server = HostileServer(tmp_path_factory.mktemp("data-inside"), workers=1,
                           disabled=("namespaces",), data_inside=True).start()
    try:
        run = Attacker(server)("data", type="command", command="ls data; echo x > data/planted")
    finally:
        server.stop()
    assert run["status"] == "rejected" and "isolation_unavailable" in run["reason"], run
    assert "data directory" in run["reason"]
    assert not (server.data_dir / "planted").exists()


def test_without_the_mount_namespace_the_policy_file_is_writable(without):
    attacker = without("namespaces")
    policy = attacker.server.policy_path
    before = policy.read_text()
    try:
        run = attacker("policy", type="command",
                       command="echo '# planted by a run' >> policies/allowed.yaml")
        assert run["status"] == "succeeded" and policy.read_text() != before, run
    finally:
        policy.write_text(before)


def _server_cmdline(attacker) -> dict:
    pid = attacker.server.proc.pid
    return attacker("proc", type="command", command=f"tr '\\0' ' ' < /proc/{pid}/cmdline")


def test_a_run_sees_only_its_own_processes(attack):
    run = _server_cmdline(attack)
    assert run["status"] == "failed" and "-m api" not in run["stdout"], run


def test_without_the_pid_namespace_a_run_sees_the_server(without):
    run = _server_cmdline(without("namespaces"))
    assert run["status"] == "succeeded" and "-m api" in run["stdout"], run
