"""Errors of the HTTP layer, and the one place where every error becomes a status code.

Handlers raise the packages' own errors (every one a
:class:`~policies.errors.TaskSchedulerError`) or :class:`ApiError`; :func:`register` turns
each into the JSON envelope ``{"status": "error", "message", "code", "field"}``. An
:class:`ApiError` names its status itself (it is found at the edge); any other error gets the
status of the nearest class in its MRO that :data:`STATUS_BY_ERROR` lists, so a new subclass
inherits its parent's status and the order of the table does not matter. Nothing else in
the package picks a status code for an error.
"""

from __future__ import annotations

import logging
import math

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from policies.errors import PolicyError, TaskSchedulerError
from sandbox.errors import SandboxError
from scheduler import errors as se

log = logging.getLogger(__name__)


class ApiError(TaskSchedulerError):
    """An error found at the HTTP edge (body, content type, auth, guards, fields)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, field=field, code=code)
        self.status = status
        self.headers = headers or {}


STATUS_BY_ERROR: dict[type[TaskSchedulerError], int] = {
    TaskSchedulerError: 500,
    PolicyError: 400,
    SandboxError: 500,
    se.SchedulerError: 400,
    se.InvalidRequest: 400,
    se.TaskNotFound: 404,
    se.RunNotFound: 404,
    se.TaskExists: 409,
    se.TaskInChain: 409,
    se.RateLimited: 429,
    se.StoreError: 500,
    se.StoreUnavailable: 503,
}

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
              429: "rate_limited"}


def status_for(exc: TaskSchedulerError) -> int:
    """The HTTP status of ``exc``: its own (ApiError), else its nearest listed class's."""
    if isinstance(exc, ApiError):
        return exc.status
    return next(STATUS_BY_ERROR[cls] for cls in type(exc).__mro__ if cls in STATUS_BY_ERROR)


def retry_after_header(seconds: float) -> int:
    """Whole seconds for an HTTP ``Retry-After`` header (never 0)."""
    return max(1, math.ceil(seconds))


def envelope(status: int, code: str, message: str, field: str | None = None,
             headers: dict[str, str] | None = None):
    response = jsonify({"status": "error", "message": message, "code": code, "field": field})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""

    @app.errorhandler(TaskSchedulerError)
    def _error(exc: TaskSchedulerError):
        status = status_for(exc)
        if isinstance(exc, se.StoreUnavailable):
            log.warning("request refused, the store is unavailable: %s", exc.detail)
            return envelope(status, exc.code, exc.message,
                            headers={"Retry-After": str(exc.retry_after)})
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
            return envelope(500, exc.code, "The server could not complete the request; "
                            "the operator can find the cause in the server log.")
        headers = dict(getattr(exc, "headers", None) or {})
        if isinstance(exc, se.RateLimited):
            headers["Retry-After"] = str(retry_after_header(exc.retry_after))
        return envelope(status, exc.code, exc.message, exc.field, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        headers = None
        if status == 405:
            allowed = ", ".join(exc.valid_methods or [])
            message = f"{exc.name}: this endpoint accepts {allowed}."
            headers = {"Allow": allowed}
        elif status == 404:
            message = "No such endpoint. The API is POST /schedule (and GET /health)."
        return envelope(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error while handling a request")
        return envelope(500, "internal_error", "An unexpected server error occurred; "
                        "it has been logged for the operator.")
