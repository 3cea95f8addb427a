"""Streamable HTTP at ``/mcp``, in the server's own process and port, behind its edge.

The SDK's transport is an ASGI application; the server is WSGI (cheroot, a thread pool in
front of Flask). The transport is served in-process by ``a2wsgi``'s ``ASGIMiddleware``: a
request for ``/mcp`` is handed, on the cheroot thread that read it, to one asyncio event
loop that runs in a thread of its own, and that thread waits for the ASGI response. Every
other path goes to Flask exactly as before: the dispatch is one string comparison on
``PATH_INFO``, so ``/schedule`` keeps cheroot's performance (``bench/mcp_call.py`` measures
both). There is no second port, no second process, and no ASGI server to run beside cheroot.

Why this shape:

* The transport is stateless and answers JSON (no SSE): each MCP message is one HTTP
  request that ends when its answer is ready. A session's standing GET stream would hold a
  cheroot thread for as long as the client stays connected, and a few idle agents would
  take the whole pool. Without sessions there is nothing to notify on, so the tool list is
  built afresh, from the policy in force, on every ``tools/list``.
* The edge is the one ``/schedule`` has, applied here before the transport sees a byte:
  Host and Origin (403), the token (401), the body size (413) and the client's rate
  (429, each MCP request counts once). The SDK's own Host/Origin check is switched off, so
  that ``--allowed-host`` governs both paths alike.
* A tool call is posted to the Flask application in-process, with the caller's address and
  headers, so it is validated, audited (the actions that change state) and answered by
  ``/schedule`` itself. It runs on a worker thread of the event loop (the store and the
  scheduler are blocking code); the loop itself never blocks.
* A call that waits for a run (``run_task`` with ``wait_seconds``) holds its cheroot
  thread; the scheduler's bounded waits (``scheduler.waiting``) keep that to a few threads.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import anyio
from a2wsgi import ASGIMiddleware
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from werkzeug.datastructures import EnvironHeaders
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from ..edge import ADMITTED, Edge, admit_client
from ..errors import ApiError
from . import tools
from .server import build_server

PATH = "/mcp"
FORWARDED_HEADERS = ("Host", "Authorization", "User-Agent")


class InProcessBackend:
    """Tool calls posted to the Flask application (its ``wsgi_app`` before the mount)."""

    def __init__(self, wsgi_app, policy_view):
        self.wsgi_app = wsgi_app
        self.policy_view = policy_view

    async def call(self, body: dict[str, Any], request: Any) -> tuple[int, dict[str, Any]]:
        return await anyio.to_thread.run_sync(self._post, body, request)

    async def list_tools(self, request: Any):
        return tools.tool_list(self.policy_view())

    def _post(self, body: dict[str, Any], request: Any) -> tuple[int, dict[str, Any]]:
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS
                   if request is not None and name in request.headers}
        client = request.client.host if request is not None and request.client else "unknown"
        environ = EnvironBuilder(path="/schedule", method="POST", data=json.dumps(body),
                                 content_type="application/json", headers=headers,
                                 environ_base={"REMOTE_ADDR": client, ADMITTED: True}
                                 ).get_environ()
        response = Response.from_app(self.wsgi_app, environ)
        answer = response.get_json(silent=True)
        if not isinstance(answer, dict):
            answer = {"status": "error", "code": "internal_error", "field": None,
                      "message": f"The server answered HTTP {response.status_code}."}
        return response.status_code, answer


class McpMount:
    """The ``/mcp`` endpoint as WSGI middleware around the Flask application's ``wsgi_app``;
    ``policy_view`` gives the :class:`~api.mcp.tools.PolicyView` of the policy in force."""

    def __init__(self, wsgi_app, *, edge: Edge, policy_view, max_body_bytes: int):
        self.wsgi_app = wsgi_app
        self.edge = edge
        self.max_body_bytes = max_body_bytes
        server = build_server(InProcessBackend(wsgi_app, policy_view))
        self.manager = StreamableHTTPSessionManager(
            app=server, json_response=True, stateless=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=max_body_bytes)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mcp-loop",
                                        daemon=True)
        self._thread.start()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._running = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError("the MCP transport did not start")
        self.asgi = ASGIMiddleware(StreamableHTTPASGIApp(self.manager), loop=self.loop)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.manager.run():  # the task group every request runs in
            self._ready.set()
            await self._stop.wait()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path != PATH and not path.startswith(PATH + "/"):
            return self.wsgi_app(environ, start_response)
        token_used = False
        try:
            headers = EnvironHeaders(environ)
            self.edge.guards.check_browser(headers)
            token_used = self.edge.guards.check_token(headers)
            self._check_body(environ)
            if environ.get("REQUEST_METHOD") == "POST":
                admit_client(self.edge.limiter, _client(environ))
        except ApiError as exc:
            return self._refuse(exc, environ, token_used)(environ, start_response)
        return self.asgi(environ, start_response)

    def _check_body(self, environ) -> None:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise ApiError(413, "body_too_large", "The request body is larger than "
                           f"{self.max_body_bytes // 1024} KB.")

    def _refuse(self, exc: ApiError, environ, token_used: bool) -> Response:
        """The error envelope of ``/schedule``; a refused POST is audited as an attempt."""
        if environ.get("REQUEST_METHOD") == "POST":
            self.edge.audit.record(client=_client(environ), token_used=token_used,
                                   action="mcp", status=exc.status, code=exc.code)
        body = {"status": "error", "message": exc.message, "code": exc.code, "field": exc.field}
        return Response(json.dumps(body), status=exc.status, headers=exc.headers or {},
                        mimetype="application/json")

    def close(self) -> None:
        """End the transport's task group and the event loop."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._running.result(timeout=5)
        except Exception:  # the loop is going away either way; nothing is left to save
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def _client(environ) -> str:
    return environ.get("REMOTE_ADDR") or "unknown"
