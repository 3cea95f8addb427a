"""The HTTP edge as Flask hooks: guards before every request, the audit after it.

The order of the checks is fixed (docs/ARCHITECTURE.md, "Decisions clients rely on"):
Host/Origin (403) → token (401) → body size (413) → content type (415) → JSON and fields
(400) → rate limit (429). The first two run here, before routing, on every path (so an
unknown path or a wrong method reveals nothing without the token); ``GET /health`` and
the paths an :class:`Edge` names public (the dashboard's page and assets, which hold no
data) need no token. Body, content type and fields are read by the ``/schedule`` view;
the rate limit is :func:`admit`, which the view calls once the action's request has been
validated, so a malformed request gets its 400 (and is not counted) even when the client
is over its rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request

from .audit import READ_ONLY_ACTIONS, AuditLog
from .clientlimit import ClientLimiter
from .errors import ApiError
from .guards import EdgeGuards

EDGE = "task_scheduler_edge"
# Set on the environ of an MCP tool call's inner /schedule request: the MCP request that
# carried it was admitted already (a call counts once). Keys from the network reach the
# environ only as HTTP_*, so no client can set it.
ADMITTED = "task_scheduler.admitted"
PUBLIC_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class Edge:
    """The edge's long-lived parts, hung on ``app.extensions[EDGE]``."""

    guards: EdgeGuards
    limiter: ClientLimiter
    audit: AuditLog
    public_paths: frozenset[str] = PUBLIC_PATHS


def _edge() -> Edge:
    return current_app.extensions[EDGE]


def client_address() -> str:
    return request.remote_addr or "unknown"


def _guard() -> None:
    edge = _edge()
    g.token_used = False
    edge.guards.check_browser(request.headers)
    if request.path not in edge.public_paths:
        g.token_used = edge.guards.check_token(request.headers)


def admit() -> None:
    """The policy's requests_per_minute for this client (429 with Retry-After)."""
    if request.environ.get(ADMITTED):  # a tool call of an MCP request, counted already
        return
    admit_client(_edge().limiter, client_address())


def admit_client(limiter, client: str) -> None:
    """Count one request of ``client`` against ``limiter``; 429 with Retry-After when over."""
    wait = limiter.acquire(client)
    if wait:
        raise ApiError(429, "rate_limited",
                       f"Too many requests from {client}: the policy allows "
                       f"{limiter.current_limit()} per minute per client "
                       f"(rate_limits.requests_per_minute). Retry after {wait} s.",
                       headers={"Retry-After": str(wait)})


def note_request(action: object, task_id: object = None) -> None:
    """What the audit line of this request names (set by the view once it knows)."""
    g.audit_action, g.audit_task_id = action, task_id


def note_result(result: dict) -> None:
    g.audit_run_id = result.get("run_id")


def _audit(response: Response) -> Response:
    if request.method != "POST" or request.path != "/schedule":
        return response
    action = g.get("audit_action")
    if isinstance(action, str) and action in READ_ONLY_ACTIONS:
        return response
    code = None
    if response.status_code >= 400:
        body = response.get_json(silent=True)
        code = body.get("code") if isinstance(body, dict) else None
    _edge().audit.record(client=client_address(), token_used=bool(g.get("token_used")),
                         action=action, task_id=g.get("audit_task_id"),
                         run_id=g.get("audit_run_id"), status=response.status_code, code=code)
    return response


def install(app: Flask, edge: Edge) -> None:
    """Hang ``edge`` on ``app`` and register its hooks (call before the blueprints)."""
    app.extensions[EDGE] = edge
    app.before_request(_guard)
    app.after_request(_audit)
