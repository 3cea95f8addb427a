"""``GET /metrics`` of a real server after real runs of each outcome, read back with
prometheus-client's own parser."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import Server, wait_until

TOKEN = "metrics-http-token"


def scrape(server: Server, token: str | None = TOKEN) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(server.url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def run_counts(families: dict) -> dict[tuple[str, str], float]:
    return {(s.labels["task_id"], s.labels["status"]): s.value
            for s in families["task_scheduler_runs"].samples}


@pytest.mark.slow
def test_every_outcome_is_counted_behind_the_token(make_server):
    server = make_server(extra_args=("--token", TOKEN), max_output_kb=4)
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401

    def create(task_id: str, command: str, **options) -> None:
        server.post("create", task_id=task_id, type="command", interval="hourly",
                    command=command, **options)

    create("ok", "true")
    create("bad", "exit 3")
    create("slow", "sleep 30", timeout=1)
    create("loud", "yes | head -c 1000000")
    create("refused", "true")
    expected = {"ok": "succeeded", "bad": "failed", "slow": "timed_out", "loud": "killed"}
    for task_id, status in expected.items():
        assert server.run_now(task_id)["status"] == status, task_id
    # A policy change between create and run: the run is refused at run time.
    server.policy_path.write_text(server.policy_path.read_text()
                                  + "commands:\n  deny: ['^true$']\n")
    wait_until(lambda: server.run_now("refused")["status"] == "rejected", timeout=20,
               message="the new policy to reject the run")
    expected["refused"] = "rejected"
    # Overlap: a slot due while the previous run is still active is recorded skipped.
    server.post("create", task_id="busy", type="command", interval="every 1 second",
                command="sleep 3")
    server.post("start")
    wait_until(lambda: any(r["status"] == "skipped"
                           for r in server.post("runs", task_id="busy")["runs"]),
               timeout=20, message="a skipped slot")

    families = scrape(server)
    counts = run_counts(families)
    for task_id, status in expected.items():
        assert counts.get((task_id, status), 0) >= 1, (task_id, status, counts)
    assert counts[("busy", "skipped")] >= 1
    assert families["task_scheduler_run_duration_seconds"].samples
    lateness = {s.name: s.value for s in families["task_scheduler_run_lateness_seconds"].samples}
    assert lateness["task_scheduler_run_lateness_seconds_count"] >= 5
    last_success = {s.labels["task_id"] for s in
                    families["task_scheduler_task_last_success_timestamp_seconds"].samples}
    assert "ok" in last_success and "bad" not in last_success
    workers = {s.labels["state"]: s.value for s in families["task_scheduler_workers"].samples}
    assert workers == {"alive": 2, "configured": 2}
    codes = {s.labels["code"]: s.value for s in families["task_scheduler_http_requests"].samples
             if s.name.endswith("_total")}
    assert codes["401"] >= 1 and codes["200"] >= 1

    server.post("remove", task_id="ok")
    assert 'task_id="ok"' not in requests.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
