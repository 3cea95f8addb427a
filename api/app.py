"""The Flask application factory: builds the store, the pool, the scheduler and the routes.

Nothing is created at import. ``create_app(config)`` wires everything and starts the
scheduler's threads, the worker pool and the policy watcher; ``close_app(app)`` shuts them
down gracefully. Long-lived objects hang on ``app.extensions["task_scheduler"]`` (and the
edge's on ``app.extensions["task_scheduler_edge"]``, see :mod:`api.edge`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from policies.source import PolicySource
from sandbox.pool import WorkerPool
from sandbox.types import ProtectedPaths
from scheduler.executor import Executor
from scheduler.service import Scheduler, SchedulerConfig
from scheduler.store import Store
from scheduler.waiting import RunWaits
from scheduler.zones import resolve_zone

from . import dashboard, edge, errors, logformat, metrics
from .actions import ACTIONS, Context
from .audit import AuditLog
from .clientlimit import ClientLimiter
from .config import ServerConfig
from .errors import ApiError
from .guards import EdgeGuards
from .mcp.http import McpMount
from .mcp.tools import PolicyView
from .openapi import document
from .requests import parse
from .views import run_view

EXTENSION = "task_scheduler"
MCP = "task_scheduler_mcp"

bp = Blueprint("schedule", __name__)


def context() -> Context:
    return current_app.extensions[EXTENSION]


def _read_body(config: ServerConfig) -> dict[str, Any]:
    """The body as a JSON object: 413, then 415, then 400 (the documented order)."""
    limit = config.max_body_kb * 1024
    too_large = ApiError(413, "body_too_large",
                         f"The request body is larger than {config.max_body_kb} KB.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # Read (at most the cap) before judging the content type, so that a chunked body
    # without Content-Length is a 413 too when it is over the cap, whatever its type.
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise too_large
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "POST /schedule takes a JSON body with 'Content-Type: application/json'.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "The request body must be a JSON object with an 'action'.")
    return data


# No automatic OPTIONS answers: the server never takes part in CORS, and an OPTIONS
# request is a 405 envelope like any other wrong method.
@bp.get("/health", provide_automatic_options=False)
def health():
    return jsonify({"status": "ok"})


@bp.get("/openapi.json", provide_automatic_options=False)
def openapi():
    return jsonify(document())


@bp.post("/schedule", provide_automatic_options=False)
def schedule():
    config: ServerConfig = current_app.config["SERVER"]
    body = _read_body(config)
    action = body.get("action")
    edge.note_request(action, body.get("task_id"))
    if action is None:
        raise ApiError(400, "missing_field", "'action' is required: one of "
                       f"{', '.join(ACTIONS)}.", field="action")
    handler = ACTIONS.get(action) if isinstance(action, str) else None
    if handler is None:
        raise ApiError(400, "invalid_action", f"Unknown action {action!r}; accepted: "
                       f"{', '.join(ACTIONS)}.", field="action")
    request = parse(action, body)
    edge.admit()  # after the fields: a malformed request is a 400 even when over the rate
    result = handler(context(), request)
    edge.note_result(result)
    return jsonify(result)


def create_app(config: ServerConfig | None = None, *, executor: Executor | None = None) -> Flask:
    """Build the application and start its scheduler (see the module docstring)."""
    config = config or ServerConfig()
    # Before anything is opened: an unknown zone stops the start with nothing to undo.
    zone = resolve_zone(config.timezone, field="--timezone") if config.timezone else None
    # No implicit /static route: the dashboard serves its few files itself, with its headers.
    app = Flask(__name__, static_folder=None)
    app.config["SERVER"] = config
    # One byte over the cap, so that a chunked body (no Content-Length), which werkzeug
    # cuts at this length rather than refusing, still shows it was too large.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_kb * 1024 + 1
    app.json.sort_keys = False
    policy = PolicySource(config.policy, base_dir=Path.cwd())
    store = Store(config.db_path)
    protected = ProtectedPaths.for_server(data_dir=config.data_dir, policy_file=config.policy)
    pool = executor or WorkerPool(config.workers, protected=protected,
                                  log_level=logging.getLogger().level,
                                  log_formatter=logformat.worker_formatter(config.log_format))
    scheduler = Scheduler(store, pool, policy.current,
                          config=SchedulerConfig(history_per_task=config.history_per_task,
                                                 shutdown_grace=config.shutdown_grace,
                                                 autostart=config.autostart,
                                                 prepare_ahead=config.prepare_ahead),
                          render_run=run_view, tz=zone)
    # Runs the pool prepared ahead of their slot are checked again against a new policy.
    policy.add_listener(scheduler.policy_changed)
    # Before the scheduler opens: runs it launches at once (missed slots) are counted too.
    metrics.install(app, scheduler, policy)
    scheduler.open()
    policy.start_watching()
    # Half the HTTP threads at most may wait for runs: the others stay free for everyone else.
    waits = RunWaits(scheduler, capacity=max(1, config.threads // 2))
    app.extensions[EXTENSION] = Context(scheduler=scheduler, policy=policy, waits=waits)
    limiter = ClientLimiter(lambda: policy.current().rate_limits.requests_per_minute)
    the_edge = edge.Edge(guards=EdgeGuards(config), limiter=limiter,
                         audit=AuditLog(config.data_dir / "audit.log",
                                        max_bytes=config.audit_max_bytes),
                         public_paths=edge.PUBLIC_PATHS | dashboard.PUBLIC_PATHS)
    edge.install(app, the_edge)
    app.register_blueprint(bp)
    app.register_blueprint(dashboard.bp)
    errors.register(app)
    # /mcp in front of Flask (Flask's own middleware pattern); see api.mcp.http.
    app.wsgi_app = app.extensions[MCP] = McpMount(
        app.wsgi_app, edge=the_edge, max_body_bytes=config.max_body_kb * 1024,
        policy_view=lambda: PolicyView.of(policy.current()))
    return app


def close_app(app: Flask, grace: float | None = None) -> None:
    """Stop dispatching, give running jobs their grace period, stop the pool."""
    ctx: Context = app.extensions[EXTENSION]
    app.extensions[MCP].close()
    ctx.policy.stop_watching()
    ctx.scheduler.close(grace)
    app.extensions[edge.EDGE].audit.close()
