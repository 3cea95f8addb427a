"""The server's own ground (sandbox.types.ProtectedPaths): what is hidden, what is read-only,
and which allowed directories could reach the installation without a mount namespace."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.types import ProtectedPaths

CODE_ROOT = Path(__file__).resolve().parents[2]


def test_the_whole_installation_is_read_only_and_git_hidden(tmp_path):
    protected = ProtectedPaths.for_server(data_dir=tmp_path / "data",
                                          policy_file=CODE_ROOT / "policies" / "allowed.yaml")
    assert str(CODE_ROOT) in protected.readonly
    assert os.path.realpath(tmp_path / "data") in protected.hidden
    assert str(CODE_ROOT / ".git") in protected.hidden
    assert protected.workspace == str(CODE_ROOT / "workspace")


def test_allowed_directories_holding_part_of_the_installation_are_unprotectable(tmp_path):
    protected = ProtectedPaths(code_root=str(CODE_ROOT), workspace=str(CODE_ROOT / "workspace"))
    assert protected.unprotectable(CODE_ROOT)                    # the code root itself
    assert protected.unprotectable(CODE_ROOT.parent)             # a directory holding it
    assert protected.unprotectable(CODE_ROOT / "tests")          # a part of it
    assert not protected.unprotectable(CODE_ROOT / "workspace")  # the shipped workspace
    assert not protected.unprotectable(CODE_ROOT / "workspace" / "proj")
    assert not protected.unprotectable(tmp_path)                 # elsewhere
    assert not ProtectedPaths().unprotectable(CODE_ROOT)         # nothing to protect


def test_an_allowed_directory_holding_the_data_directory_is_unprotectable(tmp_path):
    protected = ProtectedPaths(hidden=(str(tmp_path / "srv" / "data"),))
    assert protected.unprotectable(tmp_path / "srv")
    assert protected.unprotectable(tmp_path / "srv" / "data")
    assert not protected.unprotectable(tmp_path / "srv" / "work")
