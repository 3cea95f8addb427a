"""The cgroup layer's logic against a fake cgroupfs (plain directories and files).

The fake cannot create control files by itself, as the kernel does, so each test lays out
the files the kernel would show; what is checked is what the code reads and writes. The
same code runs against the real kernel in tests/integration/test_cgroups_kernel.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import cgroups
from sandbox.cgroups import CgroupSupport, RunCgroup

SERVICE = "/system.slice/task-scheduler.service"


def lay_out(path: Path, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("__", ".")).write_text(text)
    return path


def v2_machine(root: Path, *, procs: str, subtree: str = "") -> Path:
    lay_out(root, cgroup__controllers="cpu io memory pids")
    return lay_out(root / SERVICE.lstrip("/"), cgroup__controllers="cpu io memory pids",
                   cgroup__procs=procs, cgroup__subtree_control=subtree)


def test_own_paths_reads_both_layouts():
    hybrid = "9:name=systemd:/\n8:pids:/a\n4:memory:/b/c\n2:cpu,cpuacct:/\n0::/d\n"
    assert cgroups.own_paths(hybrid) == {"name=systemd": "/", "pids": "/a", "memory": "/b/c",
                                         "cpu": "/", "cpuacct": "/", "": "/d"}
    assert cgroups.own_paths("0::/user.slice/x.scope\n") == {"": "/user.slice/x.scope"}


def test_v2_server_alone_in_its_cgroup_claims_it_as_its_subtree(tmp_path):
    own = v2_machine(tmp_path, procs=f"{os.getpid()}\n")
    support = cgroups.detect(root=tmp_path, proc_cgroup=f"0::{SERVICE}\n")
    assert support == CgroupSupport(memory=own, pids=own, unified=own, layout="v2")
    assert support.v2 and support.layers == ["cgroup-memory", "cgroup-pids", "cgroup-kill"]
    # The server moved itself into the leaf, then gave the controllers to the children.
    assert (own / cgroups.SUPERVISOR_LEAF / "cgroup.procs").read_text() == str(os.getpid())
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_server_sharing_its_cgroup_gets_no_controllers(tmp_path, caplog):
    own = v2_machine(tmp_path, procs=f"{os.getpid()}\n1234\n")
    support = cgroups.detect(root=tmp_path, proc_cgroup=f"0::{SERVICE}\n")
    assert support == CgroupSupport(unified=own, layout="v2")
    assert support.layers == ["cgroup-kill"]
    assert not (own / cgroups.SUPERVISOR_LEAF).exists()
    assert "Delegate=yes" in caplog.text


def test_v2_server_started_in_the_leaf_uses_the_prepared_subtree(tmp_path):
    own = v2_machine(tmp_path, procs="", subtree="memory pids")
    lay_out(own / cgroups.SUPERVISOR_LEAF, cgroup__procs=f"{os.getpid()}\n77\n")
    support = cgroups.detect(root=tmp_path,
                             proc_cgroup=f"0::{SERVICE}/{cgroups.SUPERVISOR_LEAF}\n")
    assert support == CgroupSupport(memory=own, pids=own, unified=own, layout="v2")
    assert (own / "cgroup.subtree_control").read_text() == "memory pids"


def test_v2_server_started_in_the_leaf_enables_the_controllers_of_its_subtree(tmp_path):
    own = v2_machine(tmp_path, procs="")
    lay_out(own / cgroups.SUPERVISOR_LEAF, cgroup__procs=f"{os.getpid()}\n")
    support = cgroups.detect(root=tmp_path,
                             proc_cgroup=f"0::{SERVICE}/{cgroups.SUPERVISOR_LEAF}\n")
    assert support.v2 and support.memory == own
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_without_the_controllers_gives_only_the_kill(tmp_path):
    lay_out(tmp_path, cgroup__controllers="cpu io")
    own = lay_out(tmp_path / "svc", cgroup__controllers="cpu", cgroup__procs=str(os.getpid()))
    support = cgroups.detect(root=tmp_path, proc_cgroup="0::/svc\n")
    assert support == CgroupSupport(unified=own, layout="v2")


def test_no_cgroupfs_at_all(tmp_path):
    assert cgroups.detect(root=tmp_path, proc_cgroup="") == CgroupSupport(layout="none")


def v2_run(tmp_path: Path) -> RunCgroup:
    support = CgroupSupport(memory=tmp_path, pids=tmp_path, unified=tmp_path, layout="v2")
    return RunCgroup(support, cgroups.run_group_name(42, 7), memory_mb=64, max_processes=10)


def test_v2_run_group_gets_the_caps_and_reads_the_kernels_counters(tmp_path):
    run = v2_run(tmp_path)
    group = tmp_path / "tsched-42-run-7"
    assert run.dirs == [group] and run.procs_files == [str(group / "cgroup.procs")]
    assert (group / "memory.max").read_text() == str(64 << 20)
    assert not (group / "memory.swap.max").exists()  # not made up where the kernel has none
    assert (group / "pids.max").read_text() == "11"  # the run's namespace init counts too
    assert run.oom_kills() == 0 and run.pids_refused() == 0
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
    (group / "pids.events").write_text("max 3\n")
    assert run.oom_kills() == 2 and run.pids_refused() == 3
    (group / "cgroup.kill").write_text("")
    run.kill()
    assert (group / "cgroup.kill").read_text() == "1"


def test_v1_run_groups_use_the_v1_files_and_the_v2_tree_for_the_kill(tmp_path):
    memory, pids, unified = (lay_out(tmp_path / n) for n in ("memory", "pids", "unified"))
    support = CgroupSupport(memory=memory, pids=pids, unified=unified, layout="hybrid")
    run = RunCgroup(support, "tsched-42-run-8", memory_mb=10, max_processes=3)
    assert [d.parent for d in run.dirs] == [unified, memory, pids]
    group = memory / "tsched-42-run-8"
    assert (group / "memory.limit_in_bytes").read_text() == str(10 << 20)
    assert not (group / "memory.max").exists()
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert run.oom_kills() == 1
    assert (pids / "tsched-42-run-8" / "pids.max").read_text() == "4"


def test_a_group_that_cannot_be_made_leaves_nothing_behind(tmp_path):
    memory = lay_out(tmp_path / "memory")
    missing = tmp_path / "not-mounted"
    support = CgroupSupport(memory=memory, pids=missing, layout="v1")
    with pytest.raises(OSError):
        RunCgroup(support, "tsched-1-run-1", memory_mb=10, max_processes=3)
    assert list(memory.iterdir()) == []  # the memory group was made first, then removed


def test_sweep_stale_removes_only_groups_of_dead_workers(tmp_path):
    dead = lay_out(tmp_path / "tsched-999999999-run-3")
    alive = lay_out(tmp_path / f"tsched-{os.getpid()}-run-4")
    leaf = lay_out(tmp_path / cgroups.SUPERVISOR_LEAF)
    support = CgroupSupport(memory=tmp_path, pids=tmp_path, unified=tmp_path, layout="v2")
    assert cgroups.sweep_stale(support) == 1
    assert not dead.exists() and alive.exists() and leaf.exists()
