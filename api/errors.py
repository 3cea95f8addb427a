"""Errors of the HTTP layer, and the one place where every error becomes a status code.

Handlers raise the packages' own errors (:mod:`scheduler.errors`, :mod:`policies.errors`)
or :class:`ApiError`; :func:`register` turns each into the JSON envelope
``{"status": "error", "message", "code", "field"}`` with the status code from
:data:`STATUS_BY_ERROR`. Nothing else in the package picks a status code for an error.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from policies.errors import PolicyError
from scheduler import errors as se

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error found at the HTTP edge (body, content type, auth, guards, fields)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (se.TaskNotFound, 404),
    (se.RunNotFound, 404),
    (se.TaskExists, 409),
    (se.RateLimited, 429),
    (se.InvalidRequest, 400),
    (se.StoreUnavailable, 503),
    (se.StoreError, 500),
    (PolicyError, 400),
    (se.SchedulerError, 400),
)

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
              429: "rate_limited"}


def envelope(status: int, code: str, message: str, field: str | None = None,
             headers: dict[str, str] | None = None):
    response = jsonify({"status": "error", "message": message, "code": code, "field": field})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return envelope(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.errorhandler(se.SchedulerError)
    @app.errorhandler(PolicyError)
    def _domain_error(exc):
        status = next(code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls))
        if isinstance(exc, se.StoreUnavailable):
            log.warning("request refused, the store is unavailable: %s", exc.detail)
            return envelope(503, exc.code, exc.message,
                            headers={"Retry-After": str(exc.retry_after)})
        if status >= 500:
            log.error("store failure: %s", exc.message)
            return envelope(500, exc.code, "The server could not complete the request; "
                            "the operator can find the cause in the server log.")
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, se.RateLimited) else None
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
