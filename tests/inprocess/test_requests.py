"""POST /schedule's refusals, in-process: the envelope of every HTTP-level error, every
field error of every action, and the policy's checks at create time. Every refused request
is checked to leave the stored state alone (``list`` and ``runs`` before == after).

One application for the module, never started (so its hourly tasks never fire and ``list``
is stable), with one baseline task.
"""

from __future__ import annotations

import pytest

from ..envelope import DROP, check_error, command_task, reject, reject_raw, state, task_in_list
from .harness import App


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """The shared, never-started application with one baseline task."""
    app = App(tmp_path_factory.mktemp("api"))
    app.post("create", task_id="baseline", type="command", interval="every 1 hour",
             command="echo baseline")
    yield app
    app.close()


@pytest.fixture
def server(tmp_path_factory):
    """An application of the test's own (for tests that start the scheduler)."""
    app = App(tmp_path_factory.mktemp("app"))
    yield app
    app.close()


# --------------------------------------------------------------------------- HTTP-level errors

@pytest.mark.parametrize("method, path", [("GET", "/schedule"), ("PUT", "/schedule"),
                                          ("DELETE", "/schedule"), ("PATCH", "/schedule"),
                                          ("POST", "/health")])
def test_wrong_method_is_405_json(srv, method, path):
    error = check_error(srv.raw(method, path), 405, None, None)
    assert ("POST" if path == "/schedule" else "GET") in error["message"]


def test_wrong_method_405_carries_allow_header(srv):
    assert "POST" in srv.raw("GET", "/schedule").headers.get("Allow", "")


@pytest.mark.parametrize("method, path", [("GET", "/static/nope.js"), ("GET", "/nope"), ("POST", "/schedules"),
                                          ("POST", "/schedule/list")])
def test_unknown_path_is_404_json(srv, method, path):
    check_error(srv.raw(method, path, json={"action": "list"}), 404, None, None)


@pytest.mark.parametrize("headers, data", [
    ({"Content-Type": "text/plain"}, '{"action": "list"}'),
    ({"Content-Type": "text/plain"}, "{not json"),  # content type is checked before the JSON
    ({"Content-Type": "application/jsonp"}, '{"action": "list"}'),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "action=list"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, "--x--"),
    ({}, b'{"action": "list"}'),
])
def test_non_json_content_type_is_415(srv, headers, data):
    reject_raw(srv, 415, None, method="POST", path="/schedule", headers=headers, data=data)


def test_json_content_type_with_charset_is_accepted(srv):
    response = srv.raw("POST", data=b'{"action": "list"}',
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200 and response.json()["status"] == "success"


@pytest.mark.parametrize("data", [
    b"{bad", b"", b'{"action": "list"', b"{'action': 'list'}", b"\xff\xfe\x00",
    b'{"action": "list",}', b"[" * 100000 + b"]" * 100000,
], ids=["bad", "empty", "truncated", "single-quotes", "not-utf8", "trailing-comma", "deep"])
def test_malformed_json_is_400(srv, data):
    reject_raw(srv, 400, None, method="POST", path="/schedule", data=data,
               headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("data", [b"[]", b'[{"action": "list"}]', b'"list"', b"5", b"null", b"true"])
def test_non_object_json_body_is_400(srv, data):
    reject_raw(srv, 400, None, method="POST", path="/schedule", data=data,
               headers={"Content-Type": "application/json"})


def _big_create(size: int) -> bytes:
    return (b'{"action": "create", "task_id": "big", "type": "command", "interval": "hourly", '
            b'"command": "' + b"x" * size + b'"}')


def test_body_just_under_512_kb_is_read(srv):
    # under the cap, the body is parsed: the over-long command is refused by its field check
    reject_raw(srv, 400, None, "command", method="POST", path="/schedule",
               data=_big_create(500 * 1024), headers={"Content-Type": "application/json"})




# --------------------------------------------------------------------------- unknown options

def test_start_refuses_an_unknown_option(server):
    response = server.raw("POST", json={"action": "start", "force": True})
    check_error(response, 400, "unknown_field", "force")
    assert server.post("status")["running"] is False


def test_stop_refuses_an_unknown_option(server):
    server.post("start")
    response = server.raw("POST", json={"action": "stop", "grace": 5})
    check_error(response, 400, "unknown_field", "grace")
    assert server.post("status")["running"] is True



@pytest.mark.parametrize("fields, status, code, field", [
    ({"interval": "every 0 minutes"}, 400, "invalid_interval", "interval"),
    ({"interval": 5}, 400, "invalid_interval", "interval"),
    ({"type": "script"}, 400, "missing_field", "file_path"),
    ({"type": "bogus"}, 400, None, "type"),
    ({"timeout": -1}, 400, None, "timeout"),
    ({"timeout": 61}, 400, "limit_exceeded", "timeout"),
    ({"working_dir": "/"}, 400, "path_not_allowed", "working_dir"),
    ({"env": {"LD_PRELOAD": "/x.so"}}, 400, "env_not_allowed", "env.LD_PRELOAD"),
    ({"command": ""}, 400, None, "command"),
    ({"file_path": "x.py"}, 400, None, "file_path"),
    ({"colour": "red"}, 400, "unknown_field", "colour"),
    ({"until": "2001-01-01 00:00:00"}, 400, None, "until"),
])
def test_rejected_update_changes_nothing(srv, fields, status, code, field):
    if task_in_list(srv, "stable") is None:
        srv.post("create", task_id="stable", type="command", interval="every 1 hour", command="echo s")
    reject(srv, status, code, field, {"action": "update", "task_id": "stable", **fields})


# --------------------------------------------------------------------------- field errors

@pytest.mark.parametrize("body, status, code, field", [
    # the action itself
    ({}, 400, "missing_field", "action"),
    ({"action": None}, 400, "missing_field", "action"),
    ({"action": "bogus"}, 400, None, "action"),
    ({"action": "LIST"}, 400, None, "action"),
    ({"action": 5}, 400, None, "action"),
    ({"action": ["list"]}, 400, None, "action"),
    # unknown options
    ({"action": "list", "verbose": True}, 400, "unknown_field", "verbose"),
    ({"action": "status", "x": 1}, 400, "unknown_field", "x"),
    ({"action": "validate", "interval": "hourly", "task_id": "a"}, 400, "unknown_field", "task_id"),
    ({"action": "remove", "task_id": "baseline", "force": True}, 400, "unknown_field", "force"),
    ({"action": "get", "task_id": "baseline", "details": 1}, 400, "unknown_field", "details"),
    ({"action": "runs", "offset": 5}, 400, "unknown_field", "offset"),
    ({"action": "pause", "task_id": "baseline", "until": "2099-01-01 00:00:00"}, 400, "unknown_field", "until"),
    ({"action": "run", "task_id": "baseline", "command": "id"}, 400, "unknown_field", "command"),
    ({"action": "output", "run_id": 1, "tail": 5}, 400, "unknown_field", "tail"),
    (command_task("x", schedule="every 1 hour"), 400, "unknown_field", "schedule"),
    # task_id
    (command_task("x", task_id=DROP), 400, "missing_field", "task_id"),
    (command_task("x", task_id=None), 400, "missing_field", "task_id"),
    (command_task("x", task_id=5), 400, None, "task_id"),
    (command_task("x", task_id=""), 400, None, "task_id"),
    (command_task("x", task_id="../etc"), 400, None, "task_id"),
    (command_task("x", task_id="a b"), 400, None, "task_id"),
    (command_task("x", task_id="a" * 129), 400, None, "task_id"),
    (command_task("x", task_id=["baseline"]), 400, None, "task_id"),
    # type
    (command_task("x", type=DROP), 400, "missing_field", "type"),
    (command_task("x", type="bogus"), 400, None, "type"),
    (command_task("x", type=5), 400, None, "type"),
    (command_task("x", type="COMMAND"), 400, None, "type"),
    # interval
    (command_task("x", interval=DROP), 400, "missing_field", "interval"),
    (command_task("x", interval=5), 400, "invalid_interval", "interval"),
    (command_task("x", interval="every 0 minutes"), 400, "invalid_interval", "interval"),
    # the type's parameter
    (command_task("x", command=DROP), 400, "missing_field", "command"),
    (command_task("x", command=[]), 400, None, "command"),
    (command_task("x", command=5), 400, None, "command"),
    (command_task("x", command=""), 400, None, "command"),
    (command_task("x", command="   "), 400, None, "command"),
    (command_task("x", command="echo \x00"), 400, None, "command"),
    (command_task("x", command={"sh": "ls"}), 400, None, "command"),
    (command_task("x", type="script", command=DROP), 400, "missing_field", "file_path"),
    (command_task("x", type="script", command=DROP, file_path=5), 400, None, "file_path"),
    (command_task("x", type="custom", command=DROP), 400, "missing_field", "custom_script"),
    (command_task("x", type="custom", command=DROP, custom_script=["print(1)"]), 400, None, "custom_script"),
    (command_task("x", file_path="a.py"), 400, None, "file_path"),
    (command_task("x", custom_script="print(1)"), 400, None, "custom_script"),
    (command_task("x", type="test", command="pytest"), 400, None, "command"),
    # options
    (command_task("x", working_dir=5), 400, None, "working_dir"),
    (command_task("x", working_dir=""), 400, None, "working_dir"),
    (command_task("x", timeout="x"), 400, None, "timeout"),
    (command_task("x", timeout=-1), 400, None, "timeout"),
    (command_task("x", timeout=0), 400, None, "timeout"),
    (command_task("x", timeout=True), 400, None, "timeout"),
    (command_task("x", timeout=[5]), 400, None, "timeout"),
    (command_task("x", env="x"), 400, None, "env"),
    (command_task("x", env={"A": 1}), 400, None, "env"),
    (command_task("x", env=["A=1"]), 400, None, "env"),
    (command_task("x", env={"A": None}), 400, None, "env"),
    (command_task("x", overlap="x"), 400, None, "overlap"),
    (command_task("x", overlap=1), 400, None, "overlap"),
    (command_task("x", misfire="x"), 400, None, "misfire"),
    (command_task("x", max_runs=0), 400, None, "max_runs"),
    (command_task("x", max_runs=1.5), 400, None, "max_runs"),
    (command_task("x", max_runs=-1), 400, None, "max_runs"),
    (command_task("x", max_runs=True), 400, None, "max_runs"),
    (command_task("x", max_runs="3"), 400, None, "max_runs"),
    (command_task("x", until="yesterday"), 400, None, "until"),
    (command_task("x", until=5), 400, None, "until"),
    (command_task("x", until="2001-01-01 00:00:00"), 400, None, "until"),
    # other actions' fields
    ({"action": "runs", "limit": 0}, 400, None, "limit"),
    ({"action": "runs", "limit": 5000}, 400, None, "limit"),
    ({"action": "runs", "limit": 1001}, 400, None, "limit"),
    ({"action": "runs", "limit": "5"}, 400, None, "limit"),
    ({"action": "runs", "limit": True}, 400, None, "limit"),
    ({"action": "runs", "limit": 2.5}, 400, None, "limit"),
    ({"action": "runs", "task_id": 5}, 400, None, "task_id"),
    ({"action": "get", "task_id": "baseline", "limit": 0}, 400, None, "limit"),
    ({"action": "get", "task_id": "baseline", "limit": 5000}, 400, None, "limit"),
    ({"action": "output"}, 400, "missing_field", "run_id"),
    ({"action": "output", "run_id": "abc"}, 400, None, "run_id"),
    ({"action": "output", "run_id": "1"}, 400, None, "run_id"),
    ({"action": "output", "run_id": 0}, 400, None, "run_id"),
    ({"action": "output", "run_id": -1}, 400, None, "run_id"),
    ({"action": "output", "run_id": 1.5}, 400, None, "run_id"),
    ({"action": "output", "run_id": True}, 400, None, "run_id"),
    ({"action": "validate"}, 400, "missing_field", "interval"),
    ({"action": "validate", "interval": 5}, 400, "invalid_interval", "interval"),
    ({"action": "remove"}, 400, "missing_field", "task_id"),
    ({"action": "get"}, 400, "missing_field", "task_id"),
    ({"action": "pause"}, 400, "missing_field", "task_id"),
    ({"action": "resume"}, 400, "missing_field", "task_id"),
    ({"action": "run"}, 400, "missing_field", "task_id"),
    ({"action": "update"}, 400, "missing_field", "task_id"),
    ({"action": "remove", "task_id": 5}, 400, None, "task_id"),
    ({"action": "run", "task_id": ["baseline"]}, 400, None, "task_id"),
    # unknown task / run
    ({"action": "get", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "remove", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "update", "task_id": "nope", "command": "ls"}, 404, "task_not_found", "task_id"),
    ({"action": "pause", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "resume", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "run", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "runs", "task_id": "nope"}, 404, "task_not_found", "task_id"),
    ({"action": "output", "run_id": 987654}, 404, "run_not_found", "run_id"),
    # duplicate
    (command_task("baseline", command="rm -rf ."), 409, "task_exists", "task_id"),
])
def test_rejected_request(srv, body, status, code, field):
    reject(srv, status, code, field, body)


@pytest.mark.parametrize("run_id", [2 ** 63, 10 ** 30])
def test_huge_run_id_is_not_a_500(srv, run_id):
    before = state(srv)
    response = srv.raw("POST", json={"action": "output", "run_id": run_id})
    assert response.status_code in (400, 404), (response.status_code, response.text)
    check_error(response, response.status_code, None, "run_id")
    assert state(srv) == before


@pytest.mark.parametrize("over, field", [
    ({"command": "echo \ud800"}, "command"),
    ({"type": "custom", "command": DROP, "custom_script": "print('\ud800')"}, "custom_script"),
    ({"env": {"A": "\ud800"}}, "env.A"),
], ids=["command", "custom_script", "env"])
def test_unencodable_text_is_refused_at_create(srv, over, field):
    task_id = f"surrogate-{field}"
    try:
        reject(srv, 400, None, field, command_task(task_id, **over))
    finally:  # while the bug lasts, the task is created: do not leave it to other tests
        if task_in_list(srv, task_id) is not None:
            srv.post("remove", task_id=task_id)


def test_task_exists_keeps_the_original(srv):
    original = task_in_list(srv, "baseline")
    reject(srv, 409, "task_exists", "task_id", command_task("baseline", interval="daily",
                                                             command="echo replaced"))
    assert task_in_list(srv, "baseline") == original


# --------------------------------------------------------------------------- policy at create

@pytest.fixture(scope="module")
def layout(srv):
    """Directories around the workspace: a sub dir, an '-evil' sibling, symlinks, a file."""
    ws = srv.workspace
    (ws / "sub").mkdir(exist_ok=True)
    evil = ws.parent / (ws.name + "-evil")
    evil.mkdir(exist_ok=True)
    (evil / "run.py").write_text("print('evil')\n")
    outside = ws.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.py").write_text("print('secret')\n")
    if not (ws / "escape").exists():
        (ws / "escape").symlink_to(outside, target_is_directory=True)
        (ws / "escape.py").symlink_to(outside / "secret.py")
        (ws / "inner").symlink_to(ws / "sub", target_is_directory=True)
    (ws / "plain.txt").write_text("not a directory\n")
    (ws / "job.py").write_text("print('job')\n")
    return ws, evil, outside


@pytest.mark.parametrize("make, field", [
    pytest.param(lambda ws, evil, out: {"working_dir": "/"}, "working_dir", id="root"),
    pytest.param(lambda ws, evil, out: {"working_dir": "/tmp"}, "working_dir", id="tmp"),
    pytest.param(lambda ws, evil, out: {"working_dir": str(ws.parent)}, "working_dir", id="workspace-parent"),
    pytest.param(lambda ws, evil, out: {"working_dir": str(out)}, "working_dir", id="outside-abs"),
    pytest.param(lambda ws, evil, out: {"working_dir": ".."}, "working_dir", id="dotdot"),
    pytest.param(lambda ws, evil, out: {"working_dir": "../"}, "working_dir", id="dotdot-slash"),
    pytest.param(lambda ws, evil, out: {"working_dir": "sub/../../outside"}, "working_dir", id="sub-dotdot-dotdot"),
    pytest.param(lambda ws, evil, out: {"working_dir": f"{ws}/../outside"}, "working_dir", id="abs-dotdot"),
    pytest.param(lambda ws, evil, out: {"working_dir": str(evil)}, "working_dir", id="evil-sibling-abs"),
    pytest.param(lambda ws, evil, out: {"working_dir": f"../{evil.name}"}, "working_dir", id="evil-sibling-rel"),
    pytest.param(lambda ws, evil, out: {"working_dir": "escape"}, "working_dir", id="symlink-out"),
    pytest.param(lambda ws, evil, out: {"working_dir": "missing-dir"}, "working_dir", id="missing-dir"),
    pytest.param(lambda ws, evil, out: {"working_dir": "plain.txt"}, "working_dir", id="is-a-file"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "nope.py"}, "file_path", id="script-missing"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "../outside/secret.py"}, "file_path", id="script-outside-rel"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": str(evil / "run.py")}, "file_path", id="script-evil-abs"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": f"../{evil.name}/run.py"}, "file_path", id="script-evil-rel"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "escape.py"}, "file_path", id="script-symlink-out"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "escape/secret.py"}, "file_path", id="script-via-symlinked-dir"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "/etc/passwd"}, "file_path", id="script-etc-passwd"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "sub"}, "file_path", id="script-is-dir"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "job.py", "working_dir": "sub"}, "file_path", id="script-relative-to-working-dir"),
    pytest.param(lambda ws, evil, out: {"type": "test", "file_path": "no_tests_here.py"}, "file_path", id="test-missing"),
    pytest.param(lambda ws, evil, out: {"type": "test", "file_path": str(out)}, "file_path", id="test-outside-dir"),
])
def test_path_outside_the_workspace_is_refused(srv, layout, make, field):
    over = make(*layout)
    if over.get("type") in ("script", "test"):
        over["command"] = DROP
    error = reject(srv, 400, "path_not_allowed", field, command_task("pathy", **over))
    assert field in error["message"]


@pytest.mark.parametrize("make", [
    pytest.param(lambda ws, evil, out: {"working_dir": str(ws)}, id="ws-abs"),
    pytest.param(lambda ws, evil, out: {"working_dir": "sub"}, id="sub"),
    pytest.param(lambda ws, evil, out: {"working_dir": "./sub/../sub"}, id="sub-dotdot-sub"),
    pytest.param(lambda ws, evil, out: {"working_dir": "inner"}, id="symlink-in"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "job.py"}, id="script"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": str(ws / "job.py")}, id="script-abs"),
    pytest.param(lambda ws, evil, out: {"type": "script", "file_path": "../job.py", "working_dir": "sub"}, id="script-dotdot-from-sub"),
])
def test_path_inside_the_workspace_is_accepted(srv, layout, make):
    over = make(*layout)
    if over.get("type") == "script":
        over["command"] = DROP
    body = command_task("inside", **over)
    body.pop("action")
    assert srv.post("create", **body)["status"] == "success"
    srv.post("remove", task_id="inside")


def test_timeout_above_the_policy_ceiling_is_refused(srv):
    error = reject(srv, 400, "limit_exceeded", "timeout", command_task("slow", timeout=61))
    assert "60" in error["message"]
    reject(srv, 400, "limit_exceeded", "timeout", command_task("slow", timeout=60.5))
    body = command_task("slow", timeout=60)
    body.pop("action")
    assert srv.post("create", **body)["status"] == "success"  # the ceiling itself is fine
    srv.post("remove", task_id="slow")


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP",
                                  "BASH_ENV", "IFS"])
def test_dangerous_env_is_refused_naming_the_variable(srv, name):
    error = reject(srv, 400, "env_not_allowed", f"env.{name}",
                   command_task("envy", env={"OK": "1", name: "/tmp/x"}))
    assert name in error["message"]


