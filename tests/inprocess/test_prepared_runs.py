"""The wiring of prepared runs in ``create_app``: ``--prepare-ahead`` reaches the
dispatcher as its lead, and every policy applied from the file reaches the executor, so
that the runs it prepared are checked against it."""

from __future__ import annotations

import pytest

from ..helpers import wait_until
from .harness import App


@pytest.fixture
def app(tmp_path):
    made = App(tmp_path, config={"prepare_ahead": 0.25})
    yield made
    made.close()


def test_prepare_ahead_is_the_dispatchers_lead(app):
    scheduler = app.app.extensions["task_scheduler"].scheduler
    assert scheduler.config.prepare_ahead == 0.25
    assert scheduler._dispatcher._lead == 0.25


def test_a_policy_applied_from_the_file_reaches_the_executor(app):
    source = app.app.extensions["task_scheduler"].policy
    assert app.executor.revisions == []  # the first policy is the one runs are built with
    app.policy_path.write_text(app.policy_path.read_text() + "network: false\n")
    source.refresh()  # or the watcher thread does: either tells the executor
    wait_until(lambda: app.executor.revisions, timeout=5, message="the executor to be told")
    [policy] = app.executor.revisions
    assert policy is source.current()
    assert policy.revision == 2 and policy.network is False
    app.policy_path.write_text(app.policy_path.read_text() + "bogus: 1\n")
    source.refresh()
    wait_until(lambda: source.error, timeout=5, message="the bad file to be refused")
    assert app.executor.revisions == [policy]  # a file refused is no new policy
