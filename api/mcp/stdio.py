"""``python -m api.mcp``: the MCP tools over stdio, as a thin client of a running server.

An agent host starts this as its MCP server process. It reads ``TASK_SCHEDULER_URL``
(default ``http://127.0.0.1:10800``) and ``TASK_SCHEDULER_TOKEN`` and forwards every tool
call to that server's ``POST /schedule``; it never opens the store, the policy or the pool,
so it may run as any user and in any directory. The tool list (whose descriptions carry
the policy in force) is the server's own, read from its ``/mcp`` on each listing; a client
listening for changes (``subscriptions/listen``) is told when the server's policy is
reloaded. When the server cannot be reached, the tools are still listed and every call
answers a tool error (``server_unreachable``) that says how to start the server.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.subscriptions import ToolsListChanged

from ..tsctl.client import DEFAULT_TIMEOUT, DEFAULT_URL, ClientError, ServerRefused, Unreachable
from ..tsctl.client import Client as HttpClient
from . import tools
from .server import build_server

log = logging.getLogger(__name__)
LIST_TIMEOUT = 10.0
POLICY_POLL_SECONDS = 2.0  # one `status` request: cheap enough to ask often


def start_hint(url: str) -> str:
    return (f"The Task Scheduler Server at {url} is not reachable. Start it with "
            "'python -m api' (or 'make run') in its installation, or point "
            "TASK_SCHEDULER_URL at the server (and TASK_SCHEDULER_TOKEN at its token).")


class HttpBackend:
    """Tool calls as ``POST /schedule`` requests to the server at ``url``."""

    def __init__(self, url: str, token: str | None):
        self.url = url.rstrip("/")
        self.token = token

    async def call(self, body: dict[str, Any], request: Any) -> tuple[int, dict[str, Any]]:
        return await anyio.to_thread.run_sync(self._post, body)

    def _post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        fields = {k: v for k, v in body.items() if k != "action"}
        wait = fields.get("wait_seconds")
        wait = float(wait) if isinstance(wait, (int, float)) and wait > 0 else 0.0
        client = HttpClient(self.url, self.token, DEFAULT_TIMEOUT)
        try:
            return 200, client.post_waiting(body["action"], wait, **fields)
        except ServerRefused as exc:
            return exc.status, {"status": "error", "message": exc.message,
                                "code": exc.code or "http_error", "field": exc.field}
        except Unreachable as exc:
            return 503, {"status": "error", "code": "server_unreachable", "field": None,
                         "message": f"{start_hint(self.url)} ({exc.reason})"}
        except ClientError as exc:
            return 502, {"status": "error", "code": "bad_answer", "field": None,
                         "message": exc.message}

    async def list_tools(self, request: Any) -> list[types.Tool]:
        """The server's tools (its descriptions carry its policy); ours without the policy
        when it cannot be asked."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with anyio.fail_after(LIST_TIMEOUT):
                async with httpx2.AsyncClient(headers=headers, trust_env=False) as http:
                    transport = streamable_http_client(self.url + "/mcp", http_client=http)
                    async with Client(transport, cache=None) as client:
                        return (await client.list_tools()).tools
        except Exception as exc:  # unreachable, refused, too slow: list what we know
            log.warning("cannot read the tool list from %s: %s", self.url, exc)
            return tools.tool_list(None, unavailable=start_hint(self.url))


    async def policy_state(self) -> tuple[bool, Any]:
        """Whether the server answers, and when its policy was loaded."""
        status, body = await self.call({"action": "status"}, None)
        return status < 500, (body.get("policy") or {}).get("loaded_at")


async def watch_policy(backend: HttpBackend, bus: InMemorySubscriptionBus,
                       every: float = POLICY_POLL_SECONDS) -> None:
    """Tell listening clients that the tools changed when the server's policy is reloaded
    (their descriptions carry it) or the server becomes reachable or unreachable."""
    last = await backend.policy_state()
    while True:
        await anyio.sleep(every)
        state = await backend.policy_state()
        if state != last:
            await bus.publish(ToolsListChanged())
        last = state


async def serve(url: str, token: str | None) -> None:
    backend = HttpBackend(url, token)
    bus = InMemorySubscriptionBus()
    # Change notifications reach clients of protocol versions that have subscriptions/listen;
    # older ones see the policy in force at each listing.
    server = build_server(backend, listen=ListenHandler(bus))
    async with anyio.create_task_group() as group:
        group.start_soon(watch_policy, backend, bus)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
        group.cancel_scope.cancel()


def main() -> None:
    # stdout carries the protocol: log to stderr only.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    anyio.run(serve, os.environ.get("TASK_SCHEDULER_URL") or DEFAULT_URL,
              os.environ.get("TASK_SCHEDULER_TOKEN") or None)
