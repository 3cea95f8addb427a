"""The HTTP edge over real HTTP: browser guards, the token, the order of the checks, the
per-client rate limit and the audit log (README, "The HTTP edge"; SECURITY.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from ..helpers import ROOT, Server, free_port, wait_until

TOKEN = "s3cret-token-value"
ERROR_KEYS = {"status", "message", "code", "field"}
LIST = b'{"action": "list"}'


def send(server, method: str = "POST", path: str = "/schedule", *, token: str | None = TOKEN,
         data: bytes | None = LIST, content_type: str | None = "application/json",
         **headers: str) -> requests.Response:
    """One request with exactly the given headers (underscores in names become dashes)."""
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        h["Content-Type"] = content_type
    return requests.request(method, server.url + path, data=data, headers=h, timeout=30)


def error(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS and body["status"] == "error", body
    if code is not None:
        assert body["code"] == code, body
    assert not any(h.lower().startswith("access-control-") for h in response.headers)
    return body


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """A server with a token and an extra allowed host name."""
    server = Server(tmp_path_factory.mktemp("edge"),
                    extra_args=("--token", TOKEN, "--allowed-host", "scheduler.internal")).start()
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    yield server
    server.stop()


def tasks(server) -> list:
    return server.post("list")["tasks"]


# --------------------------------------------------------------------------- Host / Origin

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}",
                                  "LOCALHOST", "localhost.:{port}", "127.1.2.3:{port}",
                                  "[::1]:{port}", "scheduler.internal", "Scheduler.Internal:80"])
def test_loopback_and_configured_hosts_are_served(edge, host):
    response = send(edge, Host=host.format(port=edge.port))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "10.0.0.1", "[::2]:{port}", "::1",
                                  "127.0.0.1:{port}:1", "127.0.0.1:x", "", "local host",
                                  "scheduler.internal.evil", "127.0.0.1, evil.example"])
def test_foreign_or_malformed_host_is_403_on_every_path(edge, host):
    """DNS rebinding: the attacker's name resolves to us, but Host still says its name."""
    before = tasks(edge)
    for method, path in (("POST", "/schedule"), ("GET", "/health"), ("GET", "/openapi.json"),
                         ("GET", "/nope")):
        body = error(send(edge, method, path, Host=host.format(port=edge.port)), 403,
                     "host_not_allowed")
        assert "--allowed-host" in body["message"]
    assert tasks(edge) == before


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}"])
def test_same_origin_is_served(edge, origin):
    host = origin.format(port=edge.port).split("//")[1]
    assert send(edge, Host=host, Origin=origin.format(port=edge.port),
                Sec_Fetch_Site="same-origin").status_code == 200


@pytest.mark.parametrize("origin", ["http://127.0.0.1:1", "http://localhost:{port}",
                                    "http://127.0.0.2:{port}", "http://evil.example", "null",
                                    "file://", "http://127.0.0.1:{port}/path", "garbage", ""])
def test_foreign_origin_is_403(edge, origin):
    create = json.dumps({"action": "create", "task_id": "o", "type": "command",
                         "interval": "hourly", "command": "true"}).encode()
    error(send(edge, data=create, Host=f"127.0.0.1:{edge.port}",
               Origin=origin.format(port=edge.port)), 403, "origin_not_allowed")
    error(send(edge, "GET", "/health", Origin=origin.format(port=edge.port)), 403)
    assert all(t["id"] != "o" for t in tasks(edge))


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_fetch_metadata_is_403_even_without_origin(edge, site):
    """<img>/<script> GETs carry no Origin, but the browser says where they come from."""
    error(send(edge, "GET", "/openapi.json", Sec_Fetch_Site=site), 403, "cross_site_request")
    error(send(edge, Sec_Fetch_Site=site), 403, "cross_site_request")
    assert send(edge, Sec_Fetch_Site="none").status_code == 200


def test_the_server_never_answers_cors(edge):
    preflight = send(edge, "OPTIONS", data=None, content_type=None,
                     Origin="http://127.0.0.1:1", Access_Control_Request_Method="POST",
                     Access_Control_Request_Headers="content-type")
    error(preflight, 403, "origin_not_allowed")
    # even a same-origin OPTIONS is just a wrong method
    error(send(edge, "OPTIONS", data=None, content_type=None), 405, "method_not_allowed")


# --------------------------------------------------------------------------- token

@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer wrong",
                                           f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                                           f"Bearer {TOKEN[:-1]}", f"{TOKEN}", "Bearer \u00e9"])
def test_every_api_request_needs_the_token(edge, authorization):
    headers = {} if authorization is None else {"Authorization": authorization.encode("utf-8")}
    for method, path in (("POST", "/schedule"), ("GET", "/openapi.json"), ("GET", "/schedule"),
                         ("GET", "/nope"), ("OPTIONS", "/schedule")):
        response = requests.request(method, edge.url + path, data=LIST, timeout=30,
                                    headers={"Content-Type": "application/json", **headers})
        body = error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in body["message"]


def test_health_needs_no_token_and_reveals_only_liveness(edge):
    response = requests.get(edge.url + "/health", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert send(edge, "GET", "/openapi.json", data=None).json()["openapi"].startswith("3.1")
    assert send(edge, "GET", "/openapi.json", data=None, token="wrong").status_code == 401
    assert requests.post(edge.url + "/schedule", json={"action": "list"}, timeout=10,
                         headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_non_loopback_bind_without_token_refuses_to_start(tmp_path, host):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
    proc = subprocess.run([sys.executable, "-m", "api", "--host", host, "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert "without a token" in proc.stderr and "--token" in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


# --------------------------------------------------------------------------- order of checks

def test_checks_come_in_the_documented_order(make_server):
    """Host/Origin (403) → token (401) → size (413) → content type (415) → JSON and
    fields (400) → rate limit (429): each request fails only the first check it meets."""
    server = make_server(extra_args=("--token", TOKEN), requests_per_minute=2)
    big = b'{"action": "list", "x": "' + b"x" * (600 * 1024) + b'"}'
    bad = dict(data=big, content_type="text/plain", token="wrong")
    error(send(server, Host="evil.example", **bad), 403, "host_not_allowed")
    error(send(server, Origin="http://evil.example", **bad), 403, "origin_not_allowed")
    error(send(server, **bad), 401, "unauthorized")
    error(send(server, data=big, content_type="text/plain"), 413, "body_too_large")
    error(send(server, data=b"{nope", content_type="text/plain"), 415)
    error(send(server, data=b"{nope"), 400, "invalid_json")
    error(send(server, data=b'{"action": "list", "bogus": 1}'), 400, "unknown_field")
    # none of those counted against the rate: two requests pass, the third is limited
    assert send(server).status_code == 200 and send(server).status_code == 200
    limited = error(send(server), 429, "rate_limited")
    assert "requests_per_minute" in limited["message"]
    # over the rate, every earlier check still wins
    error(send(server, data=b'{"action": "list", "bogus": 1}'), 400, "unknown_field")
    error(send(server, data=b"[]"), 400, "invalid_body")
    error(send(server, content_type="text/plain"), 415)
    error(send(server, token=None), 401)
    error(send(server, Host="evil.example"), 403)


# --------------------------------------------------------------------------- rate limit

VALID_BODIES = [
    {"action": "start"}, {"action": "stop"}, {"action": "list"}, {"action": "status"},
    {"action": "create", "task_id": "r", "type": "command", "interval": "hourly",
     "command": "true"},
    {"action": "update", "task_id": "r", "command": "true"}, {"action": "remove", "task_id": "r"},
    {"action": "get", "task_id": "r"}, {"action": "pause", "task_id": "r"},
    {"action": "resume", "task_id": "r"}, {"action": "run", "task_id": "r"},
    {"action": "runs"}, {"action": "output", "run_id": 1},
    {"action": "validate", "interval": "hourly"},
]


def test_requests_per_minute_covers_every_action_and_follows_the_live_policy(make_server):
    server = make_server(requests_per_minute=1)
    assert server.raw("POST", json={"action": "list"}).status_code == 200
    for body in VALID_BODIES:
        response = server.raw("POST", json=body)
        error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 60, body
    assert server.raw("GET", "/health").status_code == 200  # liveness is never limited
    # raise the limit in the policy file: in force within seconds, no restart
    text = server.policy_path.read_text().replace("requests_per_minute: 1\n",
                                                  "requests_per_minute: 1000\n")
    server.policy_path.write_text(text)
    wait_until(lambda: server.raw("POST", json={"action": "list"}).status_code == 200,
               timeout=5, interval=0.2, message="the raised requests_per_minute")
    assert server.raw("POST", json=VALID_BODIES[4]).status_code == 200


# --------------------------------------------------------------------------- audit log

def audit_lines(server) -> list[dict]:
    path = server.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_audit_log_records_state_changes_not_reads_nor_secrets(edge):
    start = len(audit_lines(edge))
    secret = "hunter2-env-secret"
    edge.post("create", task_id="aud", type="command", interval="hourly", command="true",
              env={"FOO": secret})
    edge.post("list")
    edge.post("status")
    run_id = edge.post("run", task_id="aud")["run_id"]
    edge.post("create", expect=409, task_id="aud", type="command", interval="hourly",
              command="true")
    edge.wait_run(run_id)
    send(edge, token=None)  # refused: logged even though the action is unknown
    send(edge, Origin="http://evil.example")
    edge.post("remove", task_id="aud")
    lines = audit_lines(edge)[start:]
    summary = [(e["action"], e["task_id"], e["status"], e["code"], e["token_used"]) for e in lines]
    assert summary == [("create", "aud", 200, None, True), ("run", "aud", 200, None, True),
                       ("create", "aud", 409, "task_exists", True),
                       (None, None, 401, "unauthorized", False),
                       (None, None, 403, "origin_not_allowed", False),
                       ("remove", "aud", 200, None, True)], summary
    assert lines[1]["run_id"] == run_id
    assert all(e["client"] == "127.0.0.1" and e["time"] for e in lines)
    text = (edge.data_dir / "audit.log").read_text()
    assert secret not in text and TOKEN not in text
    assert os.stat(edge.data_dir / "audit.log").st_mode & 0o077 == 0


def test_a_chunked_body_over_the_cap_is_413_whatever_its_type(edge):
    chunks = (b"x" * 65536 for _ in range(10))  # 640 KB, no Content-Length
    response = requests.post(edge.url + "/schedule", data=chunks, timeout=30,
                             headers={"Content-Type": "text/plain",
                                      "Authorization": f"Bearer {TOKEN}"})
    error(response, 413, "body_too_large")
