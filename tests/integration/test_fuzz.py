"""Property-based fuzzing of POST /schedule against the server's own OpenAPI document.

Thousands of requests: bodies generated from the document's request schemas
(hypothesis-jsonschema), the same bodies mutated (a key dropped, a value replaced by any
JSON, an unknown key, another action), arbitrary JSON, and raw requests (any bytes,
content types). For every response: never a 5xx, always JSON with a ``status``; an error
is exactly the envelope; a success matches the document's response schema and its request
matches the request schema (so the document does not refuse what the server accepts); a
schema-valid request is never refused for its shape; and after every refused request the
stored state (tasks, runs, running) is what it was.

The bodies go to the application in-process (Flask's test client, an executor that runs
nothing: the properties are about the request path, and this is several times faster);
the raw requests go to a real server, through its HTTP stack.

Deterministic (``derandomize``), no example database. The policy keeps it harmless: only
the program ``true`` may run, no schedule shorter than an hour, at most 20 tasks.
"""

from __future__ import annotations

import http.client
import json
import string
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import TASK_PARAMETERS

from ..envelope import ERROR_KEYS
from ..helpers import Server
from ..inprocess.harness import App
from .schema_tools import ANY_JSON, Validator, from_schema

pytestmark = pytest.mark.slow

READ_ONLY = {"list", "get", "runs", "output", "status", "validate"}
# Codes that say the request's shape was wrong (what the document's schemas describe);
# other 400s (bad interval, path outside the policy, ...) are about meaning.
SHAPE_CODES = {"missing_field", "unknown_field", "unused_field", "invalid_parameter",
               "invalid_task_id", "invalid_type", "invalid_action", "invalid_json", "invalid_body"}
# Times: the schema says string, the parser judges; jitter: its bound depends on the schedule.
SEMANTIC_FIELDS = {"until", "start_at", "jitter"}

POLICY = """\
version: 1
allowed_directories: [{workspace}]
task_types: [command, test, script]     # not custom: no generated text runs as Python
commands:
  shell: false
  allow: ["true"]
limits:
  timeout_seconds: 60
rate_limits:
  requests_per_minute: 1000000
  runs_per_minute: 20
  min_interval_seconds: 3600
  max_tasks: 20
"""

IDS = st.sampled_from(["t0", "t1", "t2", "t3"])
ID_CHARS = string.ascii_letters + string.digits + "_"
TIMES = ["2031-01-01 00:00:00", "2032-06-01T12:00:00+02:00"]
# Values the server accepts (given the workspace's files): bodies built from these succeed
# often enough to reach every success path and to change the state for later requests.
VALID = {
    "task_id": IDS,
    "interval": st.sampled_from(["every 1 hour", "hourly", "daily at 2:00", "monday at 9:30",
                                 "every 2 hours at 30:00", "every 3 hours"]),
    "command": st.sampled_from(["true", "true a b"]),
    "file_path": st.sampled_from(["job.py", "test_ok.py"]),
    "custom_script": st.just("print(1)"),
    "working_dir": st.just("."),
    "env": st.dictionaries(st.sampled_from(["FOO", "BAR"]), st.text(max_size=5), max_size=2),
    "timeout": st.sampled_from([1, 30, 59.5]),
    "until": st.sampled_from(TIMES), "start_at": st.sampled_from(TIMES),
    "limit": st.integers(1, 1000) | st.none(),
    "run_id": st.integers(1, 40),
    "max_runs": st.integers(1, 100),
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "america/new_york"]),
    "jitter": st.sampled_from([0, 5, 60.5]),
    "wait_seconds": st.sampled_from([0, 0.01, 300]),
    "after_run_id": st.integers(0, 41),
}
# Values of the right JSON type, mostly wrong: edge cases of every field check.
WILD = {
    "task_id": IDS | st.builds(str.__add__, st.sampled_from(ID_CHARS),
                               st.text(ID_CHARS + ".:@-", max_size=20)) | st.text(max_size=10),
    "interval": st.sampled_from(["every 0 minutes", "daily at 25:00", "every 5 minutes",
                                 "tuesday at 9", "every -1 hours"]) | st.text(max_size=20),
    "command": st.sampled_from(["echo hi", "true; true", " "]) | st.text(max_size=20),
    "file_path": st.sampled_from(["tests", "nope.py", "/etc/passwd", "../x", "\x00"])
    | st.text(max_size=20),
    "working_dir": st.sampled_from(["sub", "/tmp", "../..", ""]) | st.text(max_size=20),
    "custom_script": st.text(max_size=40),
    "until": st.sampled_from(["2001-01-01", "soon", "2031-02-30 00:00:00"]) | st.text(max_size=20),
    "start_at": st.sampled_from(["never", "2031-01-01T00:00:00+25:00"]) | st.text(max_size=20),
    "env": st.dictionaries(st.sampled_from(["FOO", "LD_PRELOAD", "PATH", "X Y", "", "PYTHONPATH"]),
                           st.text(max_size=10), max_size=2),
    "timeout": st.sampled_from([0, 61, 10**9, 1e308]) | st.floats(-10, 100, allow_nan=False),
    "limit": st.integers(-2, 1002) | st.none(),
    "run_id": st.integers(-1, 2**64),
    "max_runs": st.integers(-1, 2**70),
    "wait_seconds": st.sampled_from([-1, -0.0, 0.01, 300.5, 301, 1e308, 2**64]),
    "after_run_id": st.integers(-2, 2**64),
}
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


def _shape_error(action: str, reply: dict) -> bool:
    """True if the 400 ``reply`` says the body's shape was wrong (not its meaning)."""
    if reply["code"] not in SHAPE_CODES or reply["field"] in SEMANTIC_FIELDS:
        return False
    # update: which parameter a new type needs depends on the stored task, not the body
    return not (action == "update" and reply["field"] in TASK_PARAMETERS)


# One request: (method, path, body, content type) -> (status, content type, body).
Transport = Callable[[str, str, bytes, str], tuple[int, str, bytes]]


class HttpTransport:
    """Requests to a real server on one kept-alive connection (requests' overhead would
    double the run time)."""

    def __init__(self, server: Server):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def __call__(self, method: str, path: str, data: bytes,
                 content_type: str) -> tuple[int, str, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closed the kept-alive connection before reading the request
            self.conn.close()
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        reply = response.read()
        if response.will_close:
            self.conn.close()
        return response.status, response.getheader("Content-Type", ""), reply

    def close(self) -> None:
        self.conn.close()


def in_process(app: App) -> Transport:
    def request(method: str, path: str, data: bytes, content_type: str):
        headers = {"Content-Type": content_type} if content_type else {}
        response = app.client.open(path, method=method, data=data,
                                   headers={"Host": "127.0.0.1", **headers})
        return response.status_code, response.headers.get("Content-Type", ""), response.data
    return request


class Fuzz:
    """The application under test, its document, and the state every refusal must leave
    alone."""

    def __init__(self, request: Transport):
        self.request = request
        self.doc = json.loads(self.request("GET", "/openapi.json", b"", "")[2])
        self.validator = Validator(self.doc)
        schemas = self.doc["components"]["schemas"]
        body = self.doc["paths"]["/schedule"]["post"]["requestBody"]["content"]["application/json"]
        self.actions = sorted(body["schema"]["discriminator"]["mapping"])
        self.request_schema = {a: schemas[a.capitalize() + "Request"] for a in self.actions}
        self.response_schema = {a: schemas[a.capitalize() + "Response"] for a in self.actions}
        self.bodies = self.bodies_with(VALID)
        self.wild_bodies = self.bodies_with(WILD)
        self.known = self.state()
        self.cases = 0
        self.outcomes: Counter[tuple[str, int]] = Counter()  # (action, HTTP status): a summary

    def bodies_with(self, overrides: dict) -> st.SearchStrategy:
        return st.one_of([from_schema(self.doc, self.request_schema[a], overrides)
                          for a in self.actions])

    def post(self, body: dict) -> dict:
        return json.loads(self.request("POST", "/schedule", json.dumps(body).encode(),
                                       "application/json")[2])

    def state(self) -> tuple:
        """Tasks (less the clock-driven keys), run ids, running: what refusals must keep."""
        clock_driven = ("next_run", "next_run_at", "state")
        tasks = {t["id"]: {k: v for k, v in t["details"].items() if k not in clock_driven}
                 for t in self.post({"action": "list"})["tasks"]}
        runs = [(r["run_id"], r["task_id"], r["trigger"])
                for r in self.post({"action": "runs", "limit": 1000})["runs"]]
        return tasks, runs, self.post({"action": "status"})["running"]

    def send(self, body: object = None, *, data: bytes | None = None,
             content_type: str = "application/json") -> None:
        if data is None:
            data = json.dumps(body).encode()
        else:  # what the server will see, if it reads the bytes as JSON
            try:
                body = json.loads(data)
            except (ValueError, RecursionError):
                body = None
        status, content, raw = self.request("POST", "/schedule", data, content_type)
        self.cases += 1
        self.check(status, content, raw, body)

    def check(self, status: int, content_type: str, raw: bytes, body: object) -> None:
        assert status < 500, (status, raw, body)
        assert content_type.startswith("application/json"), (content_type, raw)
        reply = json.loads(raw)
        action = body.get("action") if isinstance(body, dict) else None
        label = action if isinstance(action, str) and len(action) < 10 else "?"
        self.outcomes[(label, status)] += 1
        assert isinstance(reply, dict) and reply.get("status") in ("success", "info", "error")
        known_action = isinstance(action, str) and action in self.request_schema
        problems = self.validator.errors(body, self.request_schema[action]) \
            if known_action else ["not an action"]
        if status >= 400:
            assert set(reply) == ERROR_KEYS and reply["status"] == "error", reply
            assert not self.validator.errors(reply, {"$ref": "#/components/schemas/Error"}), reply
            if not problems and status == 400:
                assert not _shape_error(action, reply), \
                    ("the document accepts a body the server refuses for its shape", body, reply)
            assert self.state() == self.known, f"refused request {body!r:.300} changed the state"
            return
        assert known_action, (body, reply)
        assert not problems, ("the server accepted a body the document refuses", body, problems)
        errors = self.validator.errors(reply, self.response_schema[action])
        assert not errors, (action, errors)
        if action not in READ_ONLY:
            self.known = self.state()

    def summary(self) -> str:
        return (f"fuzz: {self.cases} cases; (action, status) -> count: "
                f"{dict(sorted(self.outcomes.items(), key=lambda kv: (kv[0][0], kv[0][1])))}")


def _workspace(base):
    (base / "workspace").mkdir()
    (base / "workspace" / "job.py").write_text("print(1)\n")
    (base / "workspace" / "test_ok.py").write_text("def test_ok():\n    pass\n")
    return POLICY.format(workspace=base / "workspace")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """The bodies' target: the application in-process."""
    base = tmp_path_factory.mktemp("fuzz")
    app = App(base, policy_text=_workspace(base))
    # The executor runs nothing, so a run never ends: no request may wait for one.
    app.app.extensions["task_scheduler"].waits.capacity = 0
    try:
        fuzz = Fuzz(in_process(app))
        yield fuzz
        print("\n" + fuzz.summary())
    finally:
        app.close()


@pytest.fixture(scope="module")
def served_fuzz(tmp_path_factory):
    """The raw requests' target: a real server."""
    base = tmp_path_factory.mktemp("fuzz-http")
    server = Server(base, policy_text=_workspace(base)).start()
    transport = HttpTransport(server)
    try:
        fuzz = Fuzz(transport)
        yield fuzz
        print("\n" + fuzz.summary())
    finally:
        transport.close()
        server.stop()


MUTATIONS = ("drop", "replace", "unknown", "action", "wrap", "null")


@st.composite
def mutated(draw, fuzz: Fuzz):
    body = dict(draw(fuzz.bodies))
    kind = draw(st.sampled_from(MUTATIONS))
    keys = sorted(body)
    if kind == "drop":
        body.pop(draw(st.sampled_from(keys)))
    elif kind == "replace":
        body[draw(st.sampled_from(keys))] = draw(ANY_JSON)
    elif kind == "unknown":
        body[draw(st.text(min_size=1, max_size=12))] = draw(ANY_JSON)
    elif kind == "action":
        body["action"] = draw(st.sampled_from(fuzz.actions) | st.text(max_size=10) | ANY_JSON)
    elif kind == "null":
        body[draw(st.sampled_from(keys))] = None
    else:
        return draw(st.sampled_from([[body], {"body": body}, json.dumps(body)]))
    return body


def _cases(fuzz: Fuzz, examples: int):
    """Run the decorated property ``examples`` times; check that it really did."""
    def decorate(prop):
        def run() -> None:
            before = fuzz.cases
            settings(max_examples=examples, **SETTINGS)(prop)()
            # Hypothesis may stop early only when it has exhausted the space; ours is not.
            assert fuzz.cases - before >= examples, (fuzz.cases - before, examples)
        return run
    return decorate


def test_generated_bodies(fuzz):
    @_cases(fuzz, 1200)
    @given(st.data())
    def run(data):
        fuzz.send(data.draw(fuzz.bodies))
    run()


def test_wild_bodies(fuzz):
    @_cases(fuzz, 800)
    @given(st.data())
    def run(data):
        fuzz.send(data.draw(fuzz.wild_bodies))
    run()


def test_mutated_bodies(fuzz):
    @_cases(fuzz, 1200)
    @given(st.data())
    def run(data):
        fuzz.send(data.draw(mutated(fuzz)))
    run()


def test_arbitrary_json(fuzz):
    objects = st.dictionaries(st.text(max_size=12), ANY_JSON, max_size=5)
    with_action = st.fixed_dictionaries({"action": st.sampled_from(fuzz.actions)},
                                        optional={"task_id": ANY_JSON, "limit": ANY_JSON,
                                                  "run_id": ANY_JSON, "interval": ANY_JSON})

    @_cases(fuzz, 600)
    @given(ANY_JSON | objects | with_action)
    def run(body):
        fuzz.send(body)
    run()


def test_raw_requests(served_fuzz):
    fuzz = served_fuzz
    content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                     "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=x", "", "application/jsonx"])
    raw = st.binary(max_size=200) | st.text(max_size=200).map(str.encode) \
        | st.sampled_from([b"[" * 5000, b'{"action": "list"', b'{"action": NaN}',
                           b'{"action": "runs", "limit": 1e400}', b'{"action":"list"}\x00',
                           b'\xef\xbb\xbf{"action": "list"}', b'{"action": "list", "action": "x"}'])

    @_cases(fuzz, 400)
    @given(raw, content_types)
    def run(data, content_type):
        fuzz.send(None, data=data, content_type=content_type)
    run()
