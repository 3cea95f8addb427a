"""Output capture (head and tail kept) and the pytest report reader (no symlinks followed)."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from sandbox.capture import OutputCapture
from sandbox.report import MAX_REPORT_BYTES, read_junit_counts
from sandbox.types import TestCounts


def test_output_under_the_limit_is_kept_whole():
    capture = OutputCapture(100)
    for chunk in (b"hello ", b"world"):
        capture.feed(chunk)
    assert capture.text() == "hello world" and not capture.truncated and capture.total == 11


def test_output_over_the_limit_keeps_head_and_tail():
    capture = OutputCapture(10)
    capture.feed(b"0123456789" * 3 + b"END!!")
    text = capture.text()
    assert capture.truncated and capture.total == 35
    assert text.startswith("01234") and text.endswith("END!!")
    assert "[... 25 bytes omitted ...]" in text


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=0, max_value=64))
def test_capture_keeps_exactly_the_head_and_the_tail(chunks, limit):
    capture = OutputCapture(limit)
    for chunk in chunks:
        capture.feed(chunk)
    data = b"".join(chunks)
    assert capture.total == len(data)
    if len(data) <= limit:
        assert capture.text() == data.decode("utf-8", "replace")
    else:
        head, tail = data[: limit // 2], data[len(data) - (limit - limit // 2):] if limit - limit // 2 else b""
        text = capture.text()
        assert text.startswith(head.decode("utf-8", "replace"))
        assert text.endswith(tail.decode("utf-8", "replace"))


REPORT = ('<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="1" failures="2" '
          'skipped="3" tests="10"/></testsuites>')


def test_report_counts_come_from_pytests_own_xml(tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(REPORT)
    assert read_junit_counts(path) == TestCounts(passed=4, failed=2, errors=1, skipped=3)


def test_a_symlinked_report_is_not_followed(tmp_path):
    secret = tmp_path / "secret.xml"
    secret.write_text(REPORT)
    link = tmp_path / "report.xml"
    link.symlink_to(secret)
    assert read_junit_counts(link) is None


def test_a_fifo_report_does_not_block(tmp_path):
    path = tmp_path / "report.xml"
    os.mkfifo(path)
    assert read_junit_counts(path) is None


def test_oversized_malformed_and_missing_reports_are_ignored(tmp_path):
    big = tmp_path / "big.xml"
    big.write_bytes(b"<a>" + b"x" * (MAX_REPORT_BYTES + 10) + b"</a>")
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuite tests='many'/>")
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuite")
    for path in (big, bad, broken, tmp_path / "missing.xml"):
        assert read_junit_counts(path) is None
