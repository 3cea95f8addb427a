"""MCP clients of a test server, with the SDK's own client: over Streamable HTTP (with or
without a token) and over stdio (``python -m api.mcp`` spawned as the agent host would)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 60


@asynccontextmanager
async def http_client(url: str, token: str | None = None, headers: dict[str, str] | None = None):
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(headers=sent, trust_env=False, timeout=CALL_TIMEOUT) as http:
        async with Client(streamable_http_client(url + "/mcp", http_client=http), cache=None,
                          read_timeout_seconds=CALL_TIMEOUT) as client:
            yield client


def stdio_client(url: str, token: str | None = None) -> Client:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
    env["TASK_SCHEDULER_URL"] = url
    if token:
        env["TASK_SCHEDULER_TOKEN"] = token
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "api.mcp"],
                                        env=env, cwd=str(ROOT)),
                  cache=None, read_timeout_seconds=CALL_TIMEOUT)


async def call(client: Client, name: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
    """(is_error, structured content) of one tool call; the JSON text says the same."""
    result = await client.call_tool(name, arguments)
    assert json.loads(result.content[0].text) == result.structured_content
    return result.is_error, result.structured_content
