"""The request of each action of ``POST /schedule``, declared once as a pydantic model.

These models are the one source of truth for what a request may hold: :func:`parse` is the
HTTP parser, :mod:`api.openapi` generates ``/openapi.json`` from them, and
:func:`request_schema` gives any other front end an action's JSON Schema.

What clients rely on, and the models keep:

* Types are strict: a number is not a string, ``true`` is not ``1``, ``1.0`` is not an id.
* An optional field sent as ``null`` counts as absent (a required one is then missing).
  ``interval`` is the exception: any value present is handed to the schedule grammar,
  which judges it (and lists the accepted forms).
* The first refusal in the order of the model's fields is the one reported; an option the
  action does not have is refused (``unknown_field``) only once every known field passed.
* Which parameter each task type takes (``command``, ``file_path``, ``custom_script``) is
  the scheduler's check on ``create`` and ``update`` (an update's type may be the stored
  one); the document states it for ``create``.
"""

from __future__ import annotations

import reprlib
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
    WithJsonSchema, model_validator,
)
from pydantic.json_schema import GenerateJsonSchema

from policies import TASK_PARAMETERS, TaskType
from scheduler.errors import InvalidRequest
from scheduler.jitter import MAX_JITTER
from scheduler.lifecycle import MAX_CHAIN_TARGETS, MAX_RETRY_DELAY
from scheduler.models import Misfire, Notify, NotifyOn, Overlap
from scheduler.zones import resolve_zone

from .errors import ApiError

MAX_RUNS_LIMIT = 1000
MAX_ID = 2**63 - 1
MAX_WAIT_SECONDS = 300
TASK_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$"
# Not blank and no NUL character; lone surrogates, which JSON allows and no OS call takes,
# are refused by the validator.
TEXT_PATTERN = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"
TIME_FORMS = ("a time like '2030-01-31 23:59:00' (server local time) or ISO 8601 with an "
              "offset")
# Codes of a refused field that are not the generic ``invalid_parameter``.
FIELD_CODES = {"task_id": "invalid_task_id", "type": "invalid_type",
               "timezone": "invalid_timezone"}
_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60


def _usable_text(value: str) -> str:
    if not value.strip():
        raise ValueError("blank")
    if "\x00" in value:
        raise ValueError("NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not UTF-8 (a lone surrogate)") from None
    return value


def _timestamp(value: Any) -> Any:
    """'YYYY-MM-DD HH:MM:SS' (server local time) or ISO 8601 with an offset → epoch seconds."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except (ValueError, OverflowError, OSError):  # not a time, or out of the clock's range
            pass
    raise ValueError("not a time")


def _known_zone(value: str) -> str:
    try:
        resolve_zone(value)
    except InvalidRequest:
        raise ValueError("not a known time zone") from None
    return value


def _text(limit: int) -> Any:
    return Annotated[str, Field(max_length=limit, json_schema_extra={
        "minLength": 1, "pattern": TEXT_PATTERN}), AfterValidator(_usable_text)]


def _text_forms(what: str, limit: int) -> str:
    return f"{what}: non-empty UTF-8 text without NUL characters, at most {limit} characters"


def _one_of(cls: type) -> str:
    return "one of " + ", ".join(m.value for m in cls)


def _field(annotation: Any, description: str, **kwargs: Any) -> Any:
    """A field's type with what it accepts (the schema's description and the refusals')."""
    return Annotated[annotation, Field(description=description, **kwargs)]


def _enum(cls: type) -> Any:
    # Lax: a JSON string is the enum's value (strict would want the Python enum member).
    return Annotated[cls, Field(strict=False)]


INTERVAL_FORMS = ("the schedule, e.g. 'every 5 minutes', 'hourly', 'daily at 2:00', "
                  "'monday at 9:30', 'every 2 hours at 30:00', a cron expression such as "
                  "'0 2 * * mon-fri' or '@daily', or once: 'once at 2030-01-31 09:00', "
                  "'in 10 minutes'; bounded by the policy's rate_limits.min_interval_seconds")
TASK_ID_FORMS = ("a string of 1-128 letters, digits and _ . : @ - (not starting with a "
                 "punctuation mark other than _)")
TIMEZONE_FORMS = ("an IANA time zone name such as 'Europe/Berlin', 'America/New_York' or 'UTC' "
                  "(case-insensitive): the wall clock of the task's clock schedules (cron, "
                  "'daily at', weekdays, 'once at'); intervals ignore it. Default: the "
                  "server's zone")
JITTER_FORMS = (f"a number of seconds from 0 to {MAX_JITTER:g}, at most half the schedule's "
                "shortest gap: each run starts at a fixed pseudo-random offset in [0, jitter] "
                "after its slot")
LIMIT_FORMS = f"a positive integer up to {MAX_RUNS_LIMIT}: how many runs, newest first"

TaskId = Annotated[str, Field(pattern=TASK_ID_PATTERN, max_length=128)]
Interval = _field(Any, INTERVAL_FORMS, json_schema_extra={"type": "string"})
Time = Annotated[float, BeforeValidator(_timestamp), WithJsonSchema({"type": "string"})]
Limit = _field(Annotated[int, Field(ge=1, le=MAX_RUNS_LIMIT)] | None, LIMIT_FORMS)
Timezone = _field(Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$"),
                            AfterValidator(_known_zone)] | None, TIMEZONE_FORMS)
Jitter = _field(Annotated[float, Field(ge=0, le=MAX_JITTER, allow_inf_nan=False)] | None,
                JITTER_FORMS)


class Request(BaseModel):
    """The body of one action. Subclasses declare ``action`` and the action's fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    action: str

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = {f.alias or name for name, f in cls.model_fields.items()} - {"interval"}
        return {k: v for k, v in data.items() if v is not None or k not in names}

    def given(self) -> set[str]:
        """The fields the client sent (after ``null`` was dropped)."""
        return self.model_fields_set - {"action"}


class StartRequest(Request):
    action: Literal["start"]


class StopRequest(Request):
    action: Literal["stop"]


class ListRequest(Request):
    action: Literal["list"]


class StatusRequest(Request):
    action: Literal["status"]


def _type_rules(schema: dict[str, Any]) -> None:
    """Each type takes its own parameter (required but for test) and no other's."""
    rules = []
    for kind in TaskType:
        others = {p: {"type": "null"} for p in TASK_PARAMETERS if p != kind.parameter}
        then: dict[str, Any] = {"properties": others}
        if kind.parameter_required:
            then = {"required": [kind.parameter],
                    "properties": {kind.parameter: {"type": "string"}, **others}}
        rules.append({"if": {"properties": {"type": {"const": kind.value}}, "required": ["type"]},
                      "then": then})
    schema["allOf"] = rules


class NotifyOption(BaseModel):
    """Where a task's run notifications go and which run endings send one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: _field(Annotated[str, Field(min_length=1, max_length=2048)],
                "an http:// or https:// URL under the policy's notifications.allowed_urls")
    on: _field(Annotated[list[_enum(NotifyOn)], Field(min_length=1, max_length=3)],
               "a non-empty list of " + _one_of(NotifyOn)) = [NotifyOn.FAILURE]


ChainTargets = Annotated[list[TaskId], Field(max_length=MAX_CHAIN_TARGETS)]


class CreateRequest(Request):
    """A new task: its id, type, schedule, the type's parameter, and options."""

    model_config = ConfigDict(json_schema_extra=_type_rules)

    action: Literal["create"]
    task_id: _field(TaskId, TASK_ID_FORMS)
    task_type: _field(_enum(TaskType), _one_of(TaskType), alias="type")
    interval: Interval
    command: _field(_text(65536) | None, _text_forms(
        "a command task's command line", 65536)) = None
    file_path: _field(_text(4096) | None, _text_forms(
        "a script task's file, or what a test task tests (default: its working directory)",
        4096)) = None
    custom_script: _field(_text(262144) | None, _text_forms(
        "a custom task's Python source", 262144)) = None
    working_dir: _field(_text(4096) | None, _text_forms(
        "where the run starts (default: the policy's first allowed directory)", 4096)) = None
    env: _field(dict[str, str] | None, "an object mapping variable names to string values; "
                "names the policy refuses (LD_*, PYTHON*, ...) are a 400") = None
    timeout: _field(Annotated[float, Field(gt=0, allow_inf_nan=False)] | None,
                    "a positive number of seconds, at most the policy's "
                    "limits.timeout_seconds") = None
    overlap: _field(_enum(Overlap) | None, _one_of(Overlap) + " (when a run falls due while "
                    "the previous one still runs)") = None
    misfire: _field(_enum(Misfire) | None, _one_of(Misfire) + " (slots missed while the "
                    "server was down)") = None
    until: _field(Time | None, TIME_FORMS + "; the task no longer fires after it") = None
    start_at: _field(Time | None, TIME_FORMS + "; the first interval slot") = None
    max_runs: _field(Annotated[int, Field(ge=1)] | None, "a positive integer: the task stops "
                     "firing after that many scheduled runs") = None
    timezone: Timezone = None
    jitter: Jitter = None
    # Run lifecycle: retries, notifications, chaining.
    retries: _field(Annotated[int, Field(ge=0, le=100)] | None, "an integer from 0 to the "
                    "policy's limits.max_retries: how often a failed run is tried again") = None
    retry_delay: _field(Annotated[float, Field(gt=0, le=MAX_RETRY_DELAY, allow_inf_nan=False)]
                        | None, "seconds before the first retry (default 10), doubling for "
                        f"each further one, at most {MAX_RETRY_DELAY:g}") = None
    notify: _field(NotifyOption | None, "an object {url, on}: POST a signed notice of a run's "
                   "end to url for the endings in on (failure, success, change)") = None
    on_success: _field(ChainTargets | None, "a list of task ids, each started when a run of "
                       "this task succeeds; a chain may not loop") = None
    on_failure: _field(ChainTargets | None, "a list of task ids, each started when a run of "
                       "this task fails (after its last retry); a chain may not loop") = None

    def spec_fields(self) -> dict[str, Any]:
        """The task fields the client sent, by their :class:`~scheduler.models.TaskSpec` names."""
        given = self.given() - {"task_id"}
        fields = {name: getattr(self, name) for name in type(self).model_fields if name in given}
        if fields.get("notify") is not None:
            fields["notify"] = Notify(url=self.notify.url, on=tuple(dict.fromkeys(self.notify.on)))
        for name in ("on_success", "on_failure"):
            if name in fields:
                fields[name] = tuple(dict.fromkeys(fields[name]))
        return fields


class UpdateRequest(CreateRequest):
    """Any of the create fields; only those sent change."""

    model_config = ConfigDict(json_schema_extra=None)

    action: Literal["update"]
    task_type: _field(_enum(TaskType) | None, _one_of(TaskType), alias="type") = None
    interval: Interval = None


class TaskRequest(Request):
    """An action on one task."""

    task_id: _field(TaskId, TASK_ID_FORMS)


class RemoveRequest(TaskRequest):
    action: Literal["remove"]


class GetRequest(TaskRequest):
    action: Literal["get"]
    limit: Limit = 20


class PauseRequest(TaskRequest):
    action: Literal["pause"]


class ResumeRequest(TaskRequest):
    action: Literal["resume"]


class RunRequest(TaskRequest):
    action: Literal["run"]
    wait_seconds: _field(Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)],
                         f"a number of seconds from 0 to {MAX_WAIT_SECONDS}: how long "
                         "to wait for the run to end before answering (default 0: answer at "
                         "once); the answer holds the run's record as of then") = 0


class RunsRequest(Request):
    action: Literal["runs"]
    task_id: _field(TaskId | None, TASK_ID_FORMS + "; only this task's runs") = None
    limit: Limit = 20
    after_run_id: _field(Annotated[int, Field(ge=0, le=MAX_ID)] | None,
                         "a run id, 0 or more: only runs with a larger id, oldest first (an "
                         "inbox cursor: pass the last run_id seen)") = None


class OutputRequest(Request):
    action: Literal["output"]
    run_id: _field(Annotated[int, Field(ge=1, le=MAX_ID)], "a run's id, a positive integer")


class ValidateRequest(Request):
    action: Literal["validate"]
    interval: Interval
    timezone: Timezone = None
    jitter: Jitter = None


REQUESTS: dict[str, type[Request]] = {
    model.model_fields["action"].annotation.__args__[0]: model for model in (
        StartRequest, StopRequest, CreateRequest, ListRequest, RemoveRequest, GetRequest,
        UpdateRequest, PauseRequest, ResumeRequest, RunRequest, RunsRequest, OutputRequest,
        ValidateRequest, StatusRequest)
}


class SchemaGenerator(GenerateJsonSchema):
    """pydantic's generator without the ``title`` it derives from every field's Python name."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def request_schema(action: str, *, with_action: bool = True) -> dict[str, Any]:
    """The JSON Schema of ``action``'s body (self-contained, with ``$defs``); without the
    ``action`` key for a front end that names the action otherwise (a tool's arguments)."""
    schema = REQUESTS[action].model_json_schema(schema_generator=SchemaGenerator)
    if not with_action:
        del schema["properties"]["action"]
        schema["required"] = [key for key in schema["required"] if key != "action"]
    return schema


def parse(action: str, data: dict[str, Any]) -> Request:
    """``data`` as ``action``'s request, or the :class:`ApiError` (400) of its first fault."""
    model = REQUESTS[action]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _refusal(model, action, exc.errors(include_url=False)[0], data) from None


def _refusal(model: type[Request], action: str, error: dict[str, Any],
             data: dict[str, Any]) -> ApiError:
    """The product's error for pydantic's first ``error``: code, field (a top-level key, as
    clients know them) and a message that says what is accepted."""
    field = str(error["loc"][0]) if error["loc"] else "action"
    accepted = {f.alias or name: f.description for name, f in model.model_fields.items()
                if name != "action"}
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return ApiError(400, "unknown_field", f"'{field}' is not an option of the '{action}' "
                        f"action. Accepted: {', '.join(sorted(accepted)) or 'no options'}.",
                        field=field)
    if error["type"] == "missing":
        return ApiError(400, "missing_field", f"'{field}' is required for this action: "
                        f"{accepted.get(field) or 'see /openapi.json'}.", field=field)
    return ApiError(400, FIELD_CODES.get(field, "invalid_parameter"),
                    f"'{field}' must be {accepted.get(field) or 'as /openapi.json says'}; "
                    f"got {_shown.repr(data.get(field))}.", field=field)
