"""Read pytest's own JUnit XML report for a test run's counts.

The report lies in the run's private temporary directory, which the job could write to:
it is opened without following symlinks and read only up to a size cap, so a job cannot
make the worker read another file or exhaust its memory.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from xml.etree import ElementTree

from .types import TestCounts

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 16 * 1024 * 1024


def read_junit_counts(path: Path) -> TestCounts | None:
    """pytest's passed/failed/errors/skipped counts, or None if there is no usable report."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = fh.read(MAX_REPORT_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_REPORT_BYTES:
        log.warning("pytest report %s is larger than %d bytes; ignored", path, MAX_REPORT_BYTES)
        return None
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        return None
    total = failed = errors = skipped = 0
    for suite in suites:
        try:
            total += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
        except ValueError:
            return None
    passed = max(total - failed - errors - skipped, 0)
    return TestCounts(passed=passed, failed=failed, errors=errors, skipped=skipped)
