"""The seccomp filter and the capability drop, each shown to be what stops its attacks:
the same probes on a server with that layer switched off get through (or fail differently).

Where both layers refuse a call (``mount`` and ``bpf`` need a capability the run no longer
has, and the filter refuses them too), each alone is shown to suffice: with either one off
the call still fails, with both off it works."""

from __future__ import annotations

import platform

import pytest

from . import probes
from .probes import OK

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.machine() != "x86_64",
                       reason="the probes use x86_64 system call numbers"),
]

# What the filter answers each probe with (see sandbox/seccomp.py).
FILTERED = {
    "unshare_user": "EPERM", "mount": "EPERM", "ptrace_sibling": "EPERM",
    "io_uring_setup": "EPERM", "keyctl": "EPERM", "bpf": "EPERM", "perf_event_open": "EPERM",
    "tiocsti": "EPERM", "socket_inet": "EACCES",
}
# Calls that also need a capability: without the filter they still fail for want of it.
NEED_A_CAPABILITY = {"mount", "bpf"}
# Without the filter, TIOCSTI on a descriptor that is no terminal gets the kernel's answer.
UNFILTERED = {"tiocsti": "ENOTTY"}
ALL_BUT_CGROUPS = ("capabilities", "landlock", "namespaces", "seccomp")


@pytest.fixture(scope="module")
def syscall_outcomes():
    """Probe results per server, each server probed once."""
    return {}


def _probe(attacker, cache) -> dict:
    key = attacker.server.disabled
    if key not in cache:
        run = attacker("syscalls", type="custom", custom_script=probes.SYSCALLS)
        assert run["status"] == "succeeded", run
        cache[key] = probes.outcome(run)
    return cache[key]


@pytest.mark.parametrize("call", sorted(FILTERED))
def test_the_filter_refuses_the_call(attack, syscall_outcomes, call):
    assert _probe(attack, syscall_outcomes)[call] == FILTERED[call]


@pytest.mark.parametrize("call", sorted(set(FILTERED) - NEED_A_CAPABILITY))
def test_without_the_filter_the_call_is_no_longer_refused(without, syscall_outcomes, call):
    got = _probe(without("seccomp"), syscall_outcomes)[call]
    assert got == UNFILTERED.get(call, OK), got


@pytest.mark.parametrize("call", sorted(NEED_A_CAPABILITY))
def test_filter_and_capability_drop_each_suffice(without, syscall_outcomes, call):
    assert _probe(without("seccomp"), syscall_outcomes)[call] == "EPERM"
    assert _probe(without("capabilities"), syscall_outcomes)[call] == "EPERM"
    assert _probe(without(*ALL_BUT_CGROUPS), syscall_outcomes)[call] == OK


def test_a_run_has_no_capability_at_all(attack):
    found = probes.outcome(attack("caps", type="custom", custom_script=probes.CAPABILITIES))
    assert (found["CapEff"], found["CapPrm"], found["CapBnd"]) == (0, 0, 0), found
    assert (found["chown"], found["mknod"]) == ("EPERM", "EPERM"), found


def test_without_the_capability_drop_a_run_keeps_roots_power(without):
    found = probes.outcome(without("capabilities")("caps", type="custom",
                                                   custom_script=probes.CAPABILITIES))
    assert found["CapEff"] and found["CapPrm"] and found["CapBnd"], found
    assert (found["chown"], found["mknod"]) == (OK, OK), found


def test_the_unshare_tool_cannot_make_a_user_namespace(attack, without):
    command = "unshare --user id -u"
    refused = attack("unshare", type="command", command=command)
    assert refused["status"] == "failed" and "not permitted" in refused["stderr"], refused
    unfiltered = without("seccomp")("unshare", type="command", command=command)
    # In a user namespace without a uid map, the run's uid 0 shows as the overflow uid.
    assert unfiltered["status"] == "succeeded", unfiltered
    assert unfiltered["stdout"].strip() == "65534", unfiltered
