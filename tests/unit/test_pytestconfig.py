"""pytest's configuration search, bounded by the allowed directory (sandbox.pytestconfig)."""

from __future__ import annotations

import os

from sandbox.pytestconfig import find_config, pytest_args


def test_the_search_stops_at_the_allowed_directory(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    allowed = tmp_path / "workspace"
    tests = allowed / "proj" / "tests"
    tests.mkdir(parents=True)
    assert find_config(tests, allowed) is None
    assert pytest_args(tests, (allowed,)) == (
        "-c", os.devnull, f"--rootdir={tests}", f"--confcutdir={allowed}")


def test_the_nearest_configuration_inside_is_used_in_pytests_order(tmp_path):
    proj = tmp_path / "proj"
    (proj / "tests").mkdir(parents=True)
    (proj / "setup.cfg").write_text("[metadata]\nname = x\n")         # no pytest section
    (proj / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (proj / "tox.ini").write_text("[pytest]\n")
    assert find_config(proj / "tests", tmp_path) == proj / "pyproject.toml"
    (proj / "pytest.ini").write_text("")                               # empty still counts
    assert find_config(proj / "tests", tmp_path) == proj / "pytest.ini"
    test_file = proj / "tests" / "test_a.py"
    test_file.write_text("")
    assert pytest_args(test_file, (tmp_path,)) == (
        "-c", str(proj / "pytest.ini"), f"--confcutdir={tmp_path}")


def test_a_planted_link_is_not_followed(tmp_path):
    secret = tmp_path / "outside.ini"
    secret.write_text("[pytest]\n")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "tox.ini").symlink_to(secret)
    (allowed / "pytest.ini").symlink_to(secret)
    assert find_config(allowed, allowed) is None


def test_pytest_toml_comes_first_and_a_comment_is_not_a_section(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text("# [tool.pytest.ini_options] in a comment\n[project]\n")
    (proj / "setup.cfg").write_text("[metadata]\n# [tool:pytest]\n")
    assert find_config(proj, tmp_path) is None
    (proj / "pytest.ini").write_text("[pytest]\n")
    (proj / "pytest.toml").write_text("[pytest]\n")
    assert find_config(proj, tmp_path) == proj / "pytest.toml"
