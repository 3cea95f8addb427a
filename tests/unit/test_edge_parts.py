"""The edge's parts on their own: Host parsing, the per-client limiter, the audit log's
bound, the --allowed-host option and the policy watcher."""

from __future__ import annotations

import json
import logging
import time

import pytest
from werkzeug.datastructures import Headers

from api.audit import AuditLog
from api.clientlimit import ClientLimiter
from api.config import ServerConfig, parse_args
from api.errors import ApiError
from api.guards import EdgeGuards, split_host
from policies.source import PolicySource

from ..helpers import wait_until


@pytest.mark.parametrize("value, expected", [
    ("localhost", ("localhost", None)), ("LocalHost:80", ("localhost", 80)),
    ("127.0.0.1:10800", ("127.0.0.1", 10800)), ("[::1]:8", ("::1", 8)), ("[::1]", ("::1", None)),
    ("a.example.", ("a.example", None)),
    ("::1", None), ("[::1", None), ("[::1]x", None), ("[nope]:1", None), ("h:", ("h", None)),
    ("h:99999999", None), ("h:1a", None), ("h:\u0661", None), ("a b", None), ("", None),
    ("a/b:1", None), ("x" * 300, None),
])
def test_split_host(value, expected):
    assert split_host(value) == expected


def guards(**config) -> EdgeGuards:
    return EdgeGuards(ServerConfig(**config))


def refused(g: EdgeGuards, **headers) -> str | None:
    try:
        g.check_browser(Headers({k.replace("_", "-"): v for k, v in headers.items()}))
    except ApiError as exc:
        assert exc.status == 403
        return exc.code
    return None


def test_bound_address_and_configured_names_are_hosts():
    assert refused(guards(host="192.0.2.7"), Host="192.0.2.7:10800") is None
    assert refused(guards(host="0.0.0.0"), Host="0.0.0.0") == "host_not_allowed"
    assert refused(guards(allowed_hosts=("sched.lan",)), Host="sched.lan:1") is None
    assert refused(guards(), Host="sched.lan") == "host_not_allowed"
    assert refused(guards()) is None  # HTTP/1.0 without Host: no browser sent that


def test_origin_must_be_the_request_own_origin():
    g = guards(allowed_hosts=("sched.lan",))
    assert refused(g, Host="sched.lan", Origin="https://sched.lan") is None
    assert refused(g, Host="sched.lan", Origin="http://sched.lan:80") is None
    assert refused(g, Host="sched.lan:8080", Origin="http://sched.lan:8080") is None
    assert refused(g, Host="sched.lan:8080", Origin="http://sched.lan") == "origin_not_allowed"
    assert refused(g, Host="sched.lan", Origin="http://sched.lan:99999") == "origin_not_allowed"
    assert refused(g, Host="sched.lan", Origin="ftp://sched.lan") == "origin_not_allowed"
    assert refused(g, Origin="http://localhost") == "origin_not_allowed"  # no Host to match


def test_token_is_compared_whole():
    g = guards(token="abc")
    assert g.check_token(Headers({"Authorization": "Bearer abc"})) is True
    assert guards().check_token(Headers()) is False
    for value in ("Bearer ab", "Bearer abcd", "Bearer", "abc", "Bearer \udcff"):
        with pytest.raises(ApiError) as info:
            g.check_token(Headers({"Authorization": value}))
        assert info.value.status == 401


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_limiter_is_per_client_and_follows_the_limit():
    clock, limit = Clock(), [2]
    limiter = ClientLimiter(lambda: limit[0], clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 60]
    assert limiter.acquire("b") == 0  # another address has its own window
    clock.now += 30
    assert limiter.acquire("a") == 30
    limit[0] = 3  # a live policy change applies at the next request
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 30
    clock.now += 30.5
    assert limiter.acquire("a") == 0


def test_client_limiter_table_is_bounded():
    clock = Clock()
    limiter = ClientLimiter(lambda: 1, max_clients=3, clock=clock)
    for client in ("a", "b", "c"):
        limiter.acquire(client)
    clock.now += 61
    limiter.acquire("b")
    limiter.acquire("d")  # a and c were idle for a window: they go first
    assert len(limiter) == 2
    for client in ("e", "f", "g"):
        limiter.acquire(client)
    assert len(limiter) == 3


def test_audit_log_rotates_and_keeps_one_old_file(tmp_path):
    log = AuditLog(tmp_path / "audit.log", max_bytes=2000)
    for i in range(100):
        log.record(client="127.0.0.1", token_used=False, action="create", status=200, code=None,
                   task_id=f"t{i}\n{{\"forged\": 1}}" + "x" * 500)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 2000
        for line in (tmp_path / name).read_text().splitlines():
            entry = json.loads(line)  # one record per line, whatever the ids hold
            assert len(entry["task_id"]) == 128 and entry["action"] == "create"


def test_audit_log_failure_does_not_raise(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    log = AuditLog(tmp_path / "file" / "audit.log")  # its directory is a file
    log.record(client=None, token_used=False, action=None, status=403, code="x")
    log.record(client=None, token_used=False, action=None, status=403, code="x")
    assert len([r for r in caplog.records if "audit" in r.getMessage()]) == 1


def test_allowed_hosts_from_options_or_environment(monkeypatch):
    assert parse_args([]).allowed_hosts == ()
    monkeypatch.setenv("TASK_SCHEDULER_ALLOWED_HOSTS", " a.lan, B.lan ,,[::2]")
    assert parse_args([]).allowed_hosts == ("a.lan", "b.lan", "::2")
    # options win over the environment as a whole
    assert parse_args(["--allowed-host", "c.lan", "--allowed-host", "c.lan."]).allowed_hosts \
        == ("c.lan",)
    for bad in ("http://c.lan", "c.lan:80", "a b", ""):
        with pytest.raises(SystemExit):
            parse_args(["--allowed-host", bad])


def test_prepare_ahead_from_options_or_environment(monkeypatch):
    assert parse_args([]).prepare_ahead == 1.0 == ServerConfig().prepare_ahead
    assert parse_args(["--prepare-ahead", "0"]).prepare_ahead == 0.0
    assert parse_args(["--prepare-ahead", "2.5"]).prepare_ahead == 2.5
    monkeypatch.setenv("TASK_SCHEDULER_PREPARE_AHEAD", "0.25")
    assert parse_args([]).prepare_ahead == 0.25
    assert parse_args(["--prepare-ahead", "60"]).prepare_ahead == 60.0  # options win
    for bad in ("-0.5", "60.5", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            parse_args(["--prepare-ahead", bad])


POLICY = "version: 1\nallowed_directories: [{}]\nrate_limits: {{max_tasks: {}}}\n"


def test_policy_watcher_applies_edits_and_logs_errors_without_any_access(tmp_path, caplog):
    path = tmp_path / "allowed.yaml"
    path.write_text(POLICY.format(tmp_path, 5))
    source = PolicySource(path, check_interval=0.2)
    source.start_watching()
    try:
        caplog.set_level(logging.INFO, logger="policies.source")
        path.write_text(POLICY.format(tmp_path, 7))
        wait_until(lambda: source._policy.rate_limits.max_tasks == 7, timeout=3,
                   message="the edit applied by the watcher")
        started = time.monotonic()
        path.write_text(POLICY.format(tmp_path, 7) + "bogus: 1\n")
        wait_until(lambda: any("not applied" in r.getMessage() for r in caplog.records),
                   timeout=3, message="the bad file's error in the log")
        assert time.monotonic() - started < 2
        assert "bogus" in source.error and source._policy.rate_limits.max_tasks == 7
    finally:
        source.stop_watching()
    assert source._watcher is None
