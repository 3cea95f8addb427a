"""The diagnostic switch that turns isolation layers off: what it reads, what it reports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from policies import IsolationLevel
from sandbox import isolation
from sandbox.cgroups import CgroupSupport
from sandbox.isolation import DISABLE_VARIABLE, Isolation, disabled_layers

ALL_CGROUPS = CgroupSupport(memory=Path("/m"), pids=Path("/p"), unified=Path("/u"))
EVERYTHING = dict(cgroups=ALL_CGROUPS, landlock_abi=7, namespaces=True, is_root=True,
                  seccomp=True)


@pytest.mark.parametrize("value, expected", [
    ("", set()),
    ("seccomp", {"seccomp"}),
    (" Landlock , namespaces,,", {"landlock", "namespaces"}),
    ("cgroups,landlock,namespaces,seccomp,capabilities",
     {"cgroups", "landlock", "namespaces", "seccomp", "capabilities"}),
])
def test_the_switch_names_layers(value, expected):
    assert disabled_layers({DISABLE_VARIABLE: value}) == expected


def test_unknown_names_are_logged_and_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="sandbox.isolation"):
        assert disabled_layers({DISABLE_VARIABLE: "seccomp,selinux"}) == {"seccomp"}
    assert "selinux" in caplog.text


def test_without_the_variable_nothing_is_off():
    assert disabled_layers({}) == frozenset()


def test_capabilities_off_is_reported_and_lowers_the_level():
    full = Isolation(**EVERYTHING)
    off = Isolation(**EVERYTHING, disabled=frozenset({"capabilities"}))
    assert full.drops_capabilities and "no-capabilities" in full.layers
    assert not off.drops_capabilities and "no-capabilities" not in off.layers
    assert off.level is IsolationLevel.RESOURCES


def test_detect_reports_switched_off_layers_absent(monkeypatch):
    monkeypatch.setenv(DISABLE_VARIABLE, "cgroups,landlock,namespaces,seccomp,capabilities")
    monkeypatch.setattr(isolation.landlock, "abi_version", lambda: 7)
    monkeypatch.setattr(isolation.seccomp, "available", lambda: True)
    monkeypatch.setattr(isolation.cgroups, "detect", lambda: ALL_CGROUPS)
    monkeypatch.setattr(isolation, "_namespaces_work", lambda: True)
    found = isolation.detect()
    assert found.level is IsolationLevel.PROCESS
    assert (found.landlock_abi, found.namespaces, found.seccomp) == (0, False, False)
    assert found.cgroups == CgroupSupport() and not found.drops_capabilities
