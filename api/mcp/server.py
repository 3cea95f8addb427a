"""The MCP server object both transports serve: tools listed and called through a backend.

A :class:`Backend` is how a tool call reaches ``POST /schedule``: in the server process it is
the Flask application called in-process (:mod:`api.mcp.http`), in ``python -m api.mcp`` it is
an HTTP request to a running server (:mod:`api.mcp.stdio`). Either way the action is
validated, rate limited and audited by ``/schedule`` itself, so the tools cannot drift from
the HTTP API.
"""

from __future__ import annotations

from typing import Any, Protocol

import mcp_types as types
from mcp.server.lowlevel import Server

from . import tools

NAME = "task-scheduler"
INSTRUCTIONS = (
    "A cron-like scheduler that runs shell commands, pytest runs, Python scripts and inline "
    "Python inside the operator's sandbox policy. Create tasks with create_task (its "
    "description lists the schedule forms and the policy in force), run one now with "
    "run_task and wait_seconds to get its output in the answer, and poll list_runs with "
    "after_run_id for the results of scheduled runs. Refusals carry a stable 'code'.")


class Backend(Protocol):
    """Where tool calls go. ``request`` is the transport's request object, if any."""

    async def call(self, body: dict[str, Any], request: Any) -> tuple[int, dict[str, Any]]:
        """The HTTP status and response object of ``body`` posted to ``/schedule``."""

    async def list_tools(self, request: Any) -> list[types.Tool]:
        """The tools with their descriptions as of now."""


def build_server(backend: Backend, *, version: str = "", listen: Any = None) -> Server:
    """A low-level MCP server whose 14 tools call ``backend``; ``listen`` serves
    ``subscriptions/listen`` (change notifications) where the transport can carry them."""

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await backend.list_tools(ctx.request))

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = tools.BY_NAME.get(params.name)
        if tool is None:
            return tools.unknown_tool(params.name)
        status, body = await backend.call(tools.request_body(tool, params.arguments), ctx.request)
        return tools.result(body, error=status >= 400 or body.get("status") == "error")

    # get_tool_input_schema: the transport checks a call's parameter headers against the
    # tool's schema; without it the SDK would build the whole tool list for every call.
    return Server(NAME, version=version, instructions=INSTRUCTIONS,
                  get_tool_input_schema=tools.input_schema,
                  on_list_tools=list_tools, on_call_tool=call_tool,
                  on_subscriptions_listen=listen)
