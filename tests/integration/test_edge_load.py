"""Rate limits and quotas under load: 200 concurrent clients on loopback.

Each client has its own loopback address (127.0.0.2 ... 127.0.0.201: Linux routes all of
127/8 to lo), so each is a client of its own for ``requests_per_minute``. The totals are
exact: a sliding window admits precisely ``limit`` requests per client, and everything
else is a 429 with ``Retry-After``; no other status, no connection error, and /health
stays quick throughout. Bounded: a fixed number of requests per client, per-request
timeouts, threads joined with a deadline.
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import threading
import time
from collections import Counter

import pytest

from ..helpers import Server

CLIENTS = 200
PER_CLIENT = 25
RPM = 5
RUNS_PER_MINUTE = 10


class Client(threading.Thread):
    """One client: ``bodies`` in order on one kept-alive connection from ``address``."""

    def __init__(self, port: int, address: str, bodies: list[dict], start: threading.Barrier):
        super().__init__(daemon=True)
        self.port, self.address, self.bodies, self.start_line = port, address, bodies, start
        self.results: list[tuple[int, float, str | None]] = []  # status, seconds, Retry-After
        self.failure: BaseException | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                          source_address=(self.address, 0))
        try:
            self.start_line.wait(30)
            for body in self.bodies:
                began = time.perf_counter()
                conn.request("POST", "/schedule", json.dumps(body),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                reply = json.loads(response.read())
                assert isinstance(reply, dict) and "status" in reply, reply
                self.results.append((response.status, time.perf_counter() - began,
                                     response.getheader("Retry-After")))
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.failure = exc
        finally:
            conn.close()


def hammer(port: int, addresses: list[str], bodies_of) -> tuple[list[Client], float]:
    start = threading.Barrier(len(addresses))
    clients = [Client(port, a, bodies_of(i), start) for i, a in enumerate(addresses)]
    began = time.perf_counter()
    for client in clients:
        client.start()
    deadline = time.monotonic() + 120
    for client in clients:
        client.join(max(0.1, deadline - time.monotonic()))
    assert not any(c.is_alive() for c in clients), "clients still running after 120 s"
    failures = [c.failure for c in clients if c.failure]
    assert not failures, failures[:5]
    return clients, time.perf_counter() - began


class HealthProbe(threading.Thread):
    """GET /health every 50 ms while the load runs; its latencies."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.stop, self.latencies = port, threading.Event(), []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                          source_address=("127.0.0.250", 0))
        while not self.stop.wait(0.05):
            began = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            self.latencies.append(time.perf_counter() - began)
        conn.close()


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
        probe.stop.set()
        probe.join(10)
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
