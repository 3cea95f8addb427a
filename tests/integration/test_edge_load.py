"""Rate limits and quotas under load: 200 concurrent clients on loopback.

Each client has its own loopback address (127.0.0.2 ... 127.0.0.201: Linux routes all of
127/8 to lo), so each is a client of its own for ``requests_per_minute``. The totals are
exact: a sliding window admits precisely ``limit`` requests per client, and everything
else is a 429 with ``Retry-After``; no other status, no connection error, and /health
stays quick throughout. Bounded: a fixed number of requests per client, per-request
timeouts, threads joined with a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from ..helpers import Server

pytestmark = pytest.mark.slow

CLIENTS = 200
PER_CLIENT = 25
RPM = 5
RUNS_PER_MINUTE = 10


class Client:
    """One client: ``bodies`` in order on one kept-alive connection from ``address``.

    All clients run as coroutines in one thread: 200 client *threads* in one Python
    process spend their time fighting over the GIL (and, being 200 runnable tasks, take
    the machine's CPU from the server), which measures the test, not the server.
    """

    def __init__(self, port: int, address: str, bodies: list[dict]):
        self.port, self.address, self.bodies = port, address, bodies
        self.results: list[tuple[int, float, str | None]] = []  # status, seconds, Retry-After
        self.failure: BaseException | None = None

    async def run(self, start: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                           local_addr=(self.address, 0))
        except OSError as exc:
            self.failure = exc
            return
        try:
            await start.wait()
            for body in self.bodies:
                began = time.perf_counter()
                data = json.dumps(body).encode()
                writer.write(b"POST /schedule HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % (self.port, len(data)) + data)
                status, headers, reply = await asyncio.wait_for(_response(reader), 30)
                assert isinstance(reply, dict) and "status" in reply, reply
                self.results.append((status, time.perf_counter() - began,
                                     headers.get("retry-after")))
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.failure = exc
        finally:
            writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], object]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, json.loads(body)


def hammer(port: int, addresses: list[str], bodies_of) -> tuple[list[Client], float]:
    clients = [Client(port, a, bodies_of(i)) for i, a in enumerate(addresses)]

    async def main() -> float:
        start = asyncio.Event()
        tasks = [asyncio.create_task(c.run(start)) for c in clients]
        await asyncio.sleep(0.2)  # let every client connect first
        began = time.perf_counter()
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return time.perf_counter() - began

    took = asyncio.run(main())
    failures = [c.failure for c in clients if c.failure]
    assert not failures, failures[:5]
    return clients, took


PROBE = """
import http.client, json, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30,
                                  source_address=("127.0.0.250", 0))
latencies = []
while not sys.stdin.closed:
    began = time.perf_counter()
    conn.request("GET", "/health")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    latencies.append(time.perf_counter() - began)
    if len(latencies) >= 2000 or time.sleep(0.05) or _stop():
        break
"""


class HealthProbe:
    """GET /health every 50 ms while the load runs, from a process of its own: in the test's
    process the probe would wait for the GIL behind 200 client threads and measure that."""

    SCRIPT = (PROBE.replace("_stop()", "select.select([sys.stdin], [], [], 0)[0]")
              .replace("import http.client", "import select, http.client")
              + "print(json.dumps(latencies))\n")

    def __init__(self, port: int):
        self.port = port
        self.latencies: list[float] = []

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def finish(self) -> None:
        try:
            out, _ = self.proc.communicate("stop\n", timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.latencies = json.loads(out)


_fresh = (f"127.0.{a}.{b}" for a, b in itertools.product(range(2, 255), range(1, 255)))


def ask(server: Server, body: dict) -> dict:
    """One request from an address not used before (so the test's own checks do not eat
    into any client's requests_per_minute)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30,
                                      source_address=(next(_fresh), 0))
    try:
        conn.request("POST", "/schedule", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, (response.status, response.read())
        return json.loads(response.read())
    finally:
        conn.close()


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 \
        else values[0]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("load"), requests_per_minute=RPM,
                    runs_per_minute=RUNS_PER_MINUTE).start()
    yield server
    server.stop()


def test_200_concurrent_clients_get_exactly_their_rate(loaded):
    def bodies(i: int) -> list[dict]:
        task = f"c{i}"
        return [{"action": "create", "task_id": task, "type": "command", "interval": "hourly",
                 "command": "true"}] + [{"action": "get", "task_id": task}] * (PER_CLIENT - 1)

    probe = HealthProbe(loaded.port)
    probe.start()
    try:
        clients, took = hammer(loaded.port, [f"127.0.0.{2 + i}" for i in range(CLIENTS)], bodies)
    finally:
        probe.finish()
    results = [r for c in clients for r in c.results]
    statuses = Counter(status for status, _, _ in results)
    latencies = [seconds for _, seconds, _ in results]
    figures = {"requests": len(results), "statuses": dict(statuses), "seconds": round(took, 2),
               "requests_per_second": round(len(results) / took),
               "p50_ms": round(percentile(latencies, 50) * 1000, 1),
               "p99_ms": round(percentile(latencies, 99) * 1000, 1),
               "health_checks": len(probe.latencies),
               "health_p99_ms": round(percentile(probe.latencies, 99) * 1000, 1),
               "health_max_ms": round(max(probe.latencies) * 1000, 1)}
    print(f"\nload: {figures}")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] == CLIENTS * RPM and statuses[429] == CLIENTS * (PER_CLIENT - RPM)
    for client in clients:  # each client: its first RPM requests pass (its create among them)
        assert [s for s, _, _ in client.results] == [200] * RPM + [429] * (PER_CLIENT - RPM)
        assert all(1 <= int(after) <= 60 for s, _, after in client.results if s == 429)
    assert ask(loaded, {"action": "status"})["tasks"] == CLIENTS
    assert probe.latencies and max(probe.latencies) < 2.0, figures


def test_clients_sharing_an_address_share_its_limit(loaded):
    clients, _ = hammer(loaded.port, ["127.0.0.251"] * 50,
                        lambda i: [{"action": "validate", "interval": "hourly"}] * 2)
    statuses = Counter(status for c in clients for status, _, _ in c.results)
    assert statuses == {200: RPM, 429: 100 - RPM}, statuses


def test_runs_per_minute_holds_under_concurrency(loaded):
    # the task c0 exists (first test) or is created here; 40 clients try to run it at once
    addresses = [f"127.0.1.{i}" for i in range(1, 41)]
    clients, _ = hammer(loaded.port, addresses, lambda i: [
        {"action": "create", "task_id": "c0", "type": "command", "interval": "hourly",
         "command": "true"}, {"action": "run", "task_id": "c0"}])
    runs = Counter(c.results[1][0] for c in clients)
    assert runs == {200: RUNS_PER_MINUTE, 429: 40 - RUNS_PER_MINUTE}, runs
    # a scheduled fire over runs_per_minute is recorded as skipped, with the reason
    ask(loaded, {"action": "create", "task_id": "tick", "type": "command",
                 "interval": "every 1 second", "command": "true"})
    ask(loaded, {"action": "start"})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline \
                and not ask(loaded, {"action": "runs", "task_id": "tick"})["runs"]:
            time.sleep(0.2)
    finally:
        ask(loaded, {"action": "stop"})
    fired = ask(loaded, {"action": "runs", "task_id": "tick"})["runs"]
    assert fired and all(r["status"] == "skipped" and "runs_per_minute" in r["reason"]
                         for r in fired), fired
