"""Isolation levels from detected layers, and failing closed when a policy wants more."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policies import IsolationLevel, TaskType, default_policy
from policies.errors import IsolationUnavailable, PathNotAllowed
from sandbox.cgroups import CgroupSupport
from sandbox.confine import find_secrets
from sandbox.isolation import Isolation
from sandbox.launch import plan_run
from sandbox.runner import _check_confinable
from sandbox.types import ProtectedPaths, RunRequest

ALL_CGROUPS = CgroupSupport(memory=Path("/m"), pids=Path("/p"), unified=Path("/u"))


@pytest.mark.parametrize("isolation, level", [
    (Isolation(), IsolationLevel.PROCESS),
    (Isolation(cgroups=CgroupSupport(memory=Path("/m"))), IsolationLevel.PROCESS),
    (Isolation(cgroups=ALL_CGROUPS), IsolationLevel.RESOURCES),
    (Isolation(cgroups=ALL_CGROUPS, landlock_abi=7), IsolationLevel.RESOURCES),
    (Isolation(cgroups=ALL_CGROUPS, landlock_abi=7, namespaces=True, is_root=True),
     IsolationLevel.FILESYSTEM),
    (Isolation(cgroups=ALL_CGROUPS, landlock_abi=1, namespaces=True, is_root=True, seccomp=True),
     IsolationLevel.FULL),
])
def test_level_is_the_highest_whose_layers_are_all_there(isolation, level):
    assert isolation.level is level
    assert isolation.to_dict()["level"] == level.value
    assert "process-group" in isolation.layers


def test_levels_are_ordered():
    order = list(IsolationLevel)
    assert all(a < b for a, b in zip(order, order[1:]))
    assert IsolationLevel.FULL >= IsolationLevel.PROCESS


class FakeConfiner:
    def __init__(self, isolation: Isolation, hidden: tuple[str, ...] = ()):
        self.isolation = isolation
        self.protected = ProtectedPaths(hidden=hidden)


def _request(tmp_path, minimum: IsolationLevel, working_dir: str | None = None) -> RunRequest:
    policy = dataclasses.replace(default_policy(base_dir=tmp_path), isolation_minimum=minimum)
    return RunRequest(run_id=1, task_id="t", task_type=TaskType.COMMAND, policy=policy,
                      command="true", working_dir=working_dir)


def test_a_policy_minimum_above_the_machine_rejects_the_run(tmp_path):
    request = _request(tmp_path, IsolationLevel.FULL)
    plan = plan_run(request, tmp_path)
    with pytest.raises(IsolationUnavailable) as caught:
        _check_confinable(request, plan, FakeConfiner(Isolation(cgroups=ALL_CGROUPS)))
    assert "requires isolation 'full'" in caught.value.message
    assert "'resources'" in caught.value.message
    assert caught.value.code == "isolation_unavailable"


def test_a_policy_minimum_the_machine_meets_is_accepted(tmp_path):
    request = _request(tmp_path, IsolationLevel.RESOURCES)
    _check_confinable(request, plan_run(request, tmp_path), FakeConfiner(Isolation(cgroups=ALL_CGROUPS)))


def test_a_working_directory_in_the_data_directory_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    request = _request(tmp_path, IsolationLevel.PROCESS, working_dir="data")
    plan = plan_run(request, tmp_path)
    with pytest.raises(PathNotAllowed):
        _check_confinable(request, plan, FakeConfiner(Isolation(), hidden=(str(tmp_path / "data"),)))


def test_secrets_are_the_topmost_entries_others_cannot_read(tmp_path):
    (tmp_path / "public").write_text("x")
    (tmp_path / "secret").write_text("x")
    (tmp_path / "secret").chmod(0o600)
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    (private / "inner").write_text("x")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    (open_dir / "key").write_text("x")
    (open_dir / "key").chmod(0o640)
    found = set(find_secrets((str(tmp_path),)))
    assert found == {str(tmp_path / "secret"), str(private), str(open_dir / "key")}
