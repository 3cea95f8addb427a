"""Retries, chained runs and signed notifications on a real server, with webhook receivers
on 127.0.0.1 (one that answers, one that fails first, one that never answers)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..helpers import POLICY_TEMPLATE, wait_until

SECRET_ENV = "WEBHOOK_TEST_SECRET"
SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST, answers with the next of
    ``statuses`` (the last one repeats)."""

    def __init__(self, statuses=(204,)):
        self.statuses = list(statuses)
        self.received: list[tuple[dict, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((dict(self.headers), body))
                status = owner.statuses.pop(0) if len(owner.statuses) > 1 else owner.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hooks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def policy(tmp_path, *prefixes: str, max_retries: int = 3) -> str:
    text = POLICY_TEMPLATE.format(workspace=tmp_path, timeout=60, max_output_kb=1024,
                                  runs_per_minute=100000, max_tasks=1000,
                                  requests_per_minute=1000000)
    text = text.replace("  max_output_kb: 1024\n",
                        f"  max_output_kb: 1024\n  max_retries: {max_retries}\n")
    urls = ", ".join(prefixes)
    return text + f"notifications:\n  allowed_urls: [{urls}]\n  secret_env: {SECRET_ENV}\n"


def runs_of(server, task_id: str) -> list[dict]:
    return server.post("runs", task_id=task_id, limit=100)["runs"][::-1]


def final_runs(server, task_id: str, count: int, timeout: float = 30.0) -> list[dict]:
    def done():
        runs = runs_of(server, task_id)
        finished = [r for r in runs if r["status"] not in ("queued", "running")]
        return finished if len(finished) >= count else None
    return wait_until(done, timeout=timeout, message=f"{count} finished runs of {task_id}")


def test_a_failing_command_is_retried_after_doubling_delays(make_server, tmp_path):
    server = make_server(autostart=True, policy_text=policy(tmp_path))
    server.post("create", task_id="flaky", type="command", interval="every 1 hour",
                command="exit 3", retries=2, retry_delay=1)
    first = server.post("run", task_id="flaky")["run_id"]
    runs = final_runs(server, "flaky", 3, timeout=40)
    assert [(r["trigger"], r["attempt"], r["retry_of"], r["status"]) for r in runs] == [
        ("manual", 1, None, "failed"), ("retry", 2, first, "failed"),
        ("retry", 3, first, "failed")]
    time.sleep(1.5)
    assert len(runs_of(server, "flaky")) == 3  # given up after two retries

    def start(run):
        return time.mktime(time.strptime(run["started_at"], "%Y-%m-%d %H:%M:%S"))

    def end(run):
        return time.mktime(time.strptime(run["finished_at"], "%Y-%m-%d %H:%M:%S"))
    # Times have whole seconds: each delay is its nominal value, give or take a second.
    assert 0 <= start(runs[1]) - end(runs[0]) <= 3
    assert 1 <= start(runs[2]) - end(runs[1]) <= 4


def test_a_pending_retry_survives_a_restart(make_server, tmp_path):
    server = make_server(autostart=True, policy_text=policy(tmp_path))
    server.post("create", task_id="later", type="command", interval="every 1 hour",
                command="exit 1", retries=1, retry_delay=4)
    first = server.post("run", task_id="later")["run_id"]
    server.wait_run(first)
    server.stop()
    server.start()
    runs = final_runs(server, "later", 2, timeout=30)
    assert [(r["trigger"], r["attempt"], r["retry_of"]) for r in runs] == [
        ("manual", 1, None), ("retry", 2, first)]


def test_a_chain_a_b_c_and_a_refused_loop(server):
    server.post("create", task_id="c", type="command", interval="every 1 hour", command="echo c")
    server.post("create", task_id="b", type="command", interval="every 1 hour",
                command="echo b", on_success=["c"])
    server.post("create", task_id="a", type="command", interval="every 1 hour",
                command="exit 2", on_failure=["b"])
    a = server.run_now("a")
    [b] = final_runs(server, "b", 1)
    [c] = final_runs(server, "c", 1)
    assert (b["trigger"], b["parent_run_id"], b["status"]) == ("chain", a["run_id"], "succeeded")
    assert (c["trigger"], c["parent_run_id"], c["stdout"]) == ("chain", b["run_id"], "c\n")

    loop = server.post("update", task_id="c", on_failure=["a"], expect=400)
    assert (loop["code"], loop["field"]) == ("chain_cycle", "on_failure")
    assert "c → a → b → c" in loop["message"]
    unknown = server.post("update", task_id="c", on_success=["nobody"], expect=400)
    assert (unknown["code"], unknown["field"]) == ("task_not_found", "on_success")
    refused = server.post("remove", task_id="b", expect=409)
    assert refused["code"] == "task_in_chain"
    details = server.post("get", task_id="a")["task"]["details"]
    assert (details["on_failure"], details["on_success"]) == (["b"], [])


def test_a_notification_is_signed_and_retried_after_a_500(make_server, tmp_path,
                                                          monkeypatch, receivers):
    receiver = receivers(statuses=(500, 204))
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = make_server(policy_text=policy(tmp_path, receiver.url))
    server.post("create", task_id="n", type="command", interval="every 1 hour",
                command="echo out; exit 1", notify={"url": receiver.url + "/n",
                                                    "on": ["failure"]})
    run = server.run_now("n")
    notified = wait_until(lambda: server.post("output", run_id=run["run_id"])["run"]
                          ["notification"], timeout=20, message="the notification's outcome")
    assert notified == {"status": "delivered", "attempts": 2, "http_status": 204}
    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Task-Scheduler-Signature"], "sha256=" + expected)
    payload = json.loads(body)
    assert (payload["event"], payload["task_id"]) == ("failure", "n")
    assert (payload["run"]["run_id"], payload["run"]["status"]) == (run["run_id"], "failed")
    assert payload["run"]["stdout"] == "out\n"


def test_a_notify_url_outside_the_policy_is_refused_and_nothing_is_sent(make_server, tmp_path,
                                                                        receivers):
    allowed, other = receivers(), receivers()
    server = make_server(policy_text=policy(tmp_path, allowed.url))
    for url in (other.url, allowed.url + "x", "http://169.254.169.254/latest/meta-data",
                "http://" + allowed.url[len("http://"):].split("/")[0] + "@evil.example/hooks"):
        refused = server.post("create", task_id="h", type="command", interval="every 1 hour",
                              command="exit 1", notify={"url": url}, expect=400)
        assert (refused["code"], refused["field"]) == ("url_not_allowed", "notify"), url
    assert server.post("list")["count"] == 0
    assert other.received == [] and allowed.received == []


def test_a_receiver_that_never_answers_slows_neither_runs_nor_the_api(make_server, tmp_path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)  # connections complete in the backlog; nothing ever answers
    url = f"http://127.0.0.1:{dead.getsockname()[1]}/hooks"
    try:
        server = make_server(policy_text=policy(tmp_path, url), workers=2)
        for task_id, notify in (("quiet", None), ("loud", {"url": url, "on": ["success"]})):
            fields = {"notify": notify} if notify else {}
            server.post("create", task_id=task_id, type="command", interval="every 1 hour",
                        command="true", overlap="allow", **fields)

        def timed_runs(task_id: str, count: int = 6) -> float:
            began = time.monotonic()
            for _ in range(count):
                server.run_now(task_id)
            return (time.monotonic() - began) / count
        quiet = timed_runs("quiet")
        loud = timed_runs("loud")  # more notices than delivery threads: the queue holds them
        assert loud < quiet * 2 + 0.5, (quiet, loud)
        began = time.monotonic()
        for i in range(10):
            server.post("create", task_id=f"x{i}", type="command", interval="every 1 hour",
                        command="true")
        assert (time.monotonic() - began) / 10 < 0.5
        pending = [r for r in runs_of(server, "loud") if r["notification"] is None]
        assert pending, "the dead receiver cannot have answered any notice"
    finally:
        dead.close()
