"""What an MCP tool call costs beside the same HTTP action, and what MCP load costs ``/schedule``.

    python -m bench.mcp_call [--quick]

Two tables, both against one real server on loopback:

* Latency of one call, sequential, kept-alive: ``POST /schedule`` ``list`` and ``get``
  against the MCP tools ``list_tasks`` and ``get_task`` over Streamable HTTP at ``/mcp``
  (one connected SDK client). The MCP call carries JSON-RPC framing, the SDK's dispatch and
  the hop through the ASGI adapter's event loop, then the same action in-process.
* ``/schedule`` throughput (``list``) with HTTP clients alone, and with as many MCP clients
  calling tools at the same time; no answer may be a 5xx.

It has the ``run(tmp, quick) -> str`` entry point of the other benchmarks, so adding
``"mcp": mcp_call`` to ``bench.run.BENCHMARKS`` makes it part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

if __package__ in (None, ""):  # `python bench/mcp_call.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common  # noqa: E402

THREADS = 32


def http_latencies(url: str, body: dict, calls: int) -> list[float]:
    session = requests.Session()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        response = session.post(url + "/schedule", json=body, timeout=30)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return out


async def mcp_latencies(url: str, tool: str, arguments: dict, calls: int) -> list[float]:
    out = []
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        async with Client(streamable_http_client(url + "/mcp", http_client=http),
                          cache=None) as client:
            for _ in range(calls):
                started = time.perf_counter()
                result = await client.call_tool(tool, arguments)
                out.append((time.perf_counter() - started) * 1000)
                assert not result.is_error, result.structured_content
    return out


def load(url: str, *, http_clients: int, mcp_clients: int, calls: int) -> dict:
    """``http_clients`` threads posting ``list`` and ``mcp_clients`` SDK clients calling
    ``list_tasks``, ``calls`` each, all at once. Returns the HTTP side's requests per second,
    every status seen, and the MCP calls that failed."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    mcp_failures: list[str] = []

    def http_worker():
        session = requests.Session()
        for _ in range(calls):
            code = session.post(url + "/schedule", json={"action": "list"}, timeout=60).status_code
            with lock:
                statuses[code] = statuses.get(code, 0) + 1

    async def mcp_worker():
        try:
            async with httpx2.AsyncClient(trust_env=False, timeout=60) as http:
                async with Client(streamable_http_client(url + "/mcp", http_client=http),
                                  cache=None) as client:
                    for _ in range(calls):
                        result = await client.call_tool("list_tasks", {})
                        if result.is_error:
                            mcp_failures.append(str(result.structured_content))
        except Exception as exc:  # reported, and the caller judges
            mcp_failures.append(repr(exc))

    async def mcp_all():
        await asyncio.gather(*(mcp_worker() for _ in range(mcp_clients)))

    mcp_thread = threading.Thread(target=lambda: asyncio.run(mcp_all()))
    workers = [threading.Thread(target=http_worker) for _ in range(http_clients)]
    started = time.perf_counter()
    if mcp_clients:
        mcp_thread.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    http_seconds = time.perf_counter() - started
    if mcp_clients:
        mcp_thread.join()
    return {"http_rps": http_clients * calls / http_seconds, "statuses": statuses,
            "mcp_failures": mcp_failures}


def run(tmp: Path, quick: bool) -> str:
    calls, clients, load_calls = (50, 10, 10) if quick else (500, 20, 100)
    with common.server(tmp / "server", args=("--threads", str(THREADS))) as srv:
        url = srv.url
        srv.post("create", task_id="bench", type="command", interval="every 1 hour",
                 command="true")
        rows = []
        for action, tool, fields in (("list", "list_tasks", {}),
                                     ("get", "get_task", {"task_id": "bench"})):
            http = http_latencies(url, {"action": action, **fields}, calls)
            mcp = asyncio.run(mcp_latencies(url, tool, fields, calls))
            rows.append((f"`{tool}` vs `{action}`: p50 ms (lower is better)",
                         common.median(mcp), common.median(http)))
            rows.append((f"`{tool}` vs `{action}`: p99 ms (lower is better)",
                         common.pct(mcp, 99), common.pct(http, 99)))
        alone = load(url, http_clients=clients, mcp_clients=0, calls=load_calls)
        mixed = load(url, http_clients=clients, mcp_clients=clients, calls=load_calls)
    latency = common.table("MCP tool call vs the same HTTP action (one client, sequential)",
                           ["HTTP /schedule"], rows,
                           [f"{calls} calls each; MCP over Streamable HTTP at /mcp, SDK client."])
    throughput = common.table(
        "/schedule `list` throughput under MCP load", ["without MCP load"],
        [("req/s with MCP load (higher is better)", mixed["http_rps"], alone["http_rps"])],
        [f"{clients} HTTP clients x {load_calls} calls; with {clients} MCP clients calling "
         "list_tasks as often at the same time.",
         f"Statuses: {alone['statuses']} alone, {mixed['statuses']} with MCP load; MCP "
         f"failures: {len(mixed['mcp_failures'])}."])
    return latency + "\n\n" + throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_call",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        print(run(Path(tmp), args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
