"""One error root for every package, statuses along the MRO, ordered isolation levels, and
the task-type parameter table."""

from __future__ import annotations

import itertools

import pytest

from api.errors import STATUS_BY_ERROR, ApiError, retry_after_header, status_for
from policies import TASK_PARAMETERS, IsolationLevel, TaskType
from policies import errors as pe
from policies.errors import TaskSchedulerError
from sandbox import errors as sbe
from scheduler import errors as se


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_package_base_derives_from_the_one_root():
    for base in (pe.PolicyError, se.SchedulerError, sbe.SandboxError, ApiError):
        assert issubclass(base, TaskSchedulerError)
    error = se.InvalidRequest("bad", field="limit", code="invalid_parameter")
    assert (error.code, error.message, error.field) == ("invalid_parameter", "bad", "limit")
    assert sbe.PoolClosed("closing").field is None


def test_every_error_class_has_a_status_through_its_mro():
    for cls in _subclasses(TaskSchedulerError):
        if cls is not ApiError:
            assert status_for(cls.__new__(cls)) in (400, 404, 409, 429, 500, 503), cls


@pytest.mark.parametrize("error, status", [
    (se.TaskNotFound("t"), 404), (se.RunNotFound(5), 404), (se.TaskExists("t"), 409),
    (se.RateLimited("slow down", retry_after=0.2), 429), (se.StoreError("disk"), 500),
    (se.InvalidInterval("no"), 400), (se.QuotaExceeded("full"), 400),
    (pe.PathNotAllowed("outside"), 400), (pe.IsolationUnavailable("weak"), 400),
    (sbe.PoolClosed("closing"), 500), (ApiError(415, "unsupported_media_type", "json"), 415),
])
def test_status_of_each_error(error, status):
    assert status_for(error) == status


def test_a_new_subclass_inherits_its_parents_status():
    class Gone(se.TaskNotFound):
        pass
    assert Gone not in STATUS_BY_ERROR and status_for(Gone("t")) == 404


def test_retry_after_header_is_whole_seconds_never_zero():
    assert [retry_after_header(s) for s in (0.001, 1, 1.2, 30.0)] == [1, 1, 2, 30]


def test_isolation_levels_compare_with_all_four_operators():
    order = list(IsolationLevel)
    for (i, a), (j, b) in itertools.product(enumerate(order), repeat=2):
        assert (a < b, a <= b, a > b, a >= b) == (i < j, i <= j, i > j, i >= j), (a, b)
    assert IsolationLevel.FULL > IsolationLevel.PROCESS
    assert max(order) is IsolationLevel.FULL and sorted(reversed(order)) == order


def test_each_task_type_names_its_parameter():
    assert {t: t.parameter for t in TaskType} == {
        TaskType.COMMAND: "command", TaskType.TEST: "file_path",
        TaskType.SCRIPT: "file_path", TaskType.CUSTOM: "custom_script"}
    assert [t for t in TaskType if not t.parameter_required] == [TaskType.TEST]
    assert TASK_PARAMETERS == ("command", "file_path", "custom_script")
