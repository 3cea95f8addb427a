"""Where a ``test`` run's pytest takes its configuration from, searched no higher than the
allowed directory that holds the tests.

pytest looks for its configuration (and ``conftest.py`` files) in every parent directory
up to the file system root. A run can read only its allowed directories, so a file above
them -- the server's own ``pytest.ini`` above the shipped ``workspace/``, or one in a
parent of an operator's project -- is unreadable to it and would make pytest fail before
collecting anything, or, were it readable, would impose someone else's settings on the
run's tests. The launcher therefore does pytest's search itself, bounded by the allowed
directory, and passes the result explicitly (``-c``, ``--rootdir``, ``--confcutdir``).
The names and their order are pytest's own.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20


def _always(text: bytes) -> bool:
    return True


def _ini_section(name: str):
    pattern = re.compile(rb"^\s*\[" + re.escape(name.encode()) + rb"\]\s*$", re.MULTILINE)
    return lambda text: pattern.search(text) is not None


def _pyproject(text: bytes) -> bool:
    try:
        tool = tomllib.loads(text.decode("utf-8")).get("tool", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    table = tool.get("pytest") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        return False
    return "ini_options" in table or bool(table)


#: pytest's own names, in its order, each with what makes it a pytest configuration.
CONFIG_FILES = (("pytest.toml", _always), (".pytest.toml", _always), ("pytest.ini", _always),
                (".pytest.ini", _always), ("pyproject.toml", _pyproject),
                ("tox.ini", _ini_section("pytest")), ("setup.cfg", _ini_section("tool:pytest")))


def _declares(path: Path, is_config) -> bool:
    """Whether ``path`` is a regular file (not a link a run could plant) that pytest would
    take as its configuration. Only that one fact leaves this function, never the file's
    contents."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return is_config(os.read(fd, MAX_CONFIG_BYTES))
    except OSError:
        return False
    finally:
        os.close(fd)


def find_config(start: Path, boundary: Path) -> Path | None:
    """The configuration file pytest would use for tests below ``start``, looking in
    ``start`` and its parents up to ``boundary`` (inclusive) only."""
    for directory in (start, *start.parents):
        for name, is_config in CONFIG_FILES:
            if _declares(directory / name, is_config):
                return directory / name
        if directory == boundary or boundary not in directory.parents:
            return None
    return None


def pytest_args(target: Path, allowed: tuple[Path, ...]) -> tuple[str, ...]:
    """The options that pin pytest's configuration search for ``target`` (a directory or
    a file of tests, resolved) to the allowed directory that holds it."""
    start = target if target.is_dir() else target.parent
    boundary = next((d for d in allowed if d == start or d in start.parents), start)
    config = find_config(start, boundary)
    if config is None:
        return ("-c", os.devnull, f"--rootdir={start}", f"--confcutdir={boundary}")
    return ("-c", str(config), f"--confcutdir={boundary}")
