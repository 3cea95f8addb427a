"""Switching isolation layers off: what the server then reports, that a policy asking for
more still fails closed, and the attacks that several layers stop at once (each alone
suffices: with any one of them off the attack still fails, with all of them off it works).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from sandbox.isolation import SWITCHABLE

from ..helpers import wait_until
from . import probes

pytestmark = pytest.mark.slow

ALL_BUT_CGROUPS = ("capabilities", "landlock", "namespaces", "seccomp")
# Layer switched off → (prefixes of the reported layer names that must be gone, level left).
REPORTED = {
    "cgroups": (("cgroup",), "process"),
    "landlock": (("landlock",), "resources"),
    "namespaces": (("mount-namespace", "pid-namespace", "network-namespace"), "resources"),
    "capabilities": (("no-capabilities",), "resources"),
    "seccomp": (("seccomp",), "filesystem"),
}


def test_every_switchable_layer_has_its_case():
    assert set(REPORTED) == set(SWITCHABLE)


@pytest.mark.parametrize("layer", sorted(REPORTED))
def test_a_switched_off_layer_is_reported_absent(hostile, without, layer):
    gone, level = REPORTED[layer]
    full = hostile.status()["isolation"]
    status = without(layer).server.status()
    assert status["isolation_level"] == level
    for prefix in gone:
        assert any(name.startswith(prefix) for name in full)
        assert not any(name.startswith(prefix) for name in status["isolation"]), status
    assert set(status["isolation"]) < set(full)


def _set_minimum(server, minimum: str) -> None:
    before = server.status()["policy"]["loaded_at"]
    # The status shows whole seconds: a second reload within the same second would look
    # like none.
    last = time.mktime(time.strptime(before, "%Y-%m-%d %H:%M:%S"))
    wait_until(lambda: time.time() >= last + 1, timeout=2, interval=0.05,
               message="the second of the last reload to pass")
    text = server.policy_path.read_text()
    head, _, _ = text.rpartition("minimum:")
    server.policy_path.write_text(f"{head}minimum: {minimum}\n")
    wait_until(lambda: server.status()["policy"]["loaded_at"] != before, timeout=10,
               message="the policy to be reloaded")


def test_a_policy_asking_for_a_switched_off_layer_rejects_runs(without):
    attacker = without("seccomp")
    _set_minimum(attacker.server, "full")
    try:
        run = attacker("wants-full", type="command", command="true")
    finally:
        _set_minimum(attacker.server, "process")
    assert run["status"] == "rejected" and "isolation" in run["reason"], run


def test_network_namespace_landlock_and_seccomp_each_keep_a_run_offline(without):
    for layer in ("namespaces", "landlock", "seccomp"):
        attacker = without(layer)
        run = attacker("net", type="custom",
                       custom_script=probes.NETWORK.format(port=attacker.server.port))
        assert run["status"] == "failed" and run["exit_code"] == 7, (layer, run)
    attacker = without(*ALL_BUT_CGROUPS)
    run = attacker("net", type="custom",
                   custom_script=probes.NETWORK.format(port=attacker.server.port))
    assert run["status"] == "succeeded" and "connected" in run["stdout"], run


def _landlock_abi(layers: list[str]) -> int:
    prefix = "landlock-abi"
    return max((int(name[len(prefix):]) for name in layers if name.startswith(prefix)),
               default=0)


def _signal_a_bystander(attacker) -> bool:
    """Whether a run could kill a process of the machine that is not its own."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        attacker("bystander", type="command", command=f"kill -9 {bystander.pid}; true")
        time.sleep(0.1)
        return bystander.poll() is not None
    finally:
        bystander.kill()
        bystander.wait()


def test_pid_namespace_and_landlock_each_keep_a_run_from_signalling_others(hostile, attack,
                                                                           without):
    assert not _signal_a_bystander(attack)
    assert not _signal_a_bystander(without("landlock"))
    if _landlock_abi(hostile.status()["isolation"]) < 6:
        pytest.skip("Landlock scopes signals from ABI 6 (Linux 6.12) on")
    assert not _signal_a_bystander(without("namespaces"))
    assert _signal_a_bystander(without(*ALL_BUT_CGROUPS))


def _read_server_environment(attacker) -> str:
    server = attacker.server
    run = attacker("canary", type="command",
                   command=f"cat /proc/{server.proc.pid}/environ; true")
    return run["stdout"] + run["stderr"]


def test_pid_namespace_capability_drop_and_landlock_each_hide_the_servers_environment(without):
    for layer in ("namespaces", "capabilities", "landlock"):
        attacker = without(layer)
        assert attacker.server.canary not in _read_server_environment(attacker), layer
    attacker = without(*ALL_BUT_CGROUPS)
    assert attacker.server.canary in _read_server_environment(attacker)
