"""The application in the test's own process: ``create_app`` with Flask's test client and
an executor that runs nothing. For envelope and validation cases (fast: no server process,
no workers, no sockets); real runs need the real server of :mod:`tests.helpers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api.app import close_app, create_app
from api.config import ServerConfig
from sandbox.types import RunRequest, RunResult

from ..helpers import POLICY_TEMPLATE


class FakeExecutor:
    """Implements scheduler.executor.Executor: records what it is given, runs nothing;
    :meth:`finish` reports a run's result as a worker would."""

    size = 2

    def __init__(self):
        self.submitted: list[RunRequest] = []
        self.on_started = None
        self.on_result = None

    def start(self, on_started, on_result) -> None:
        self.on_started, self.on_result = on_started, on_result

    def submit(self, request: RunRequest) -> None:
        self.submitted.append(request)

    def alive(self) -> int:
        return self.size

    def busy(self) -> int:
        return 0

    def queued(self) -> int:
        return 0

    def isolation(self) -> dict | None:
        return {"level": "process", "layers": ["process-group"]}

    def stop(self, grace: float = 10.0) -> None:
        pass

    def join(self, timeout: float = 10.0) -> None:
        pass

    def finish(self, result: RunResult) -> None:
        self.on_result(result)


class Response:
    """What the tests read of an answer: ``status_code``, ``headers``, ``json()``, ``text``."""

    def __init__(self, flask_response):
        self.status_code = flask_response.status_code
        self.headers = flask_response.headers
        self.text = flask_response.get_data(as_text=True)

    def json(self) -> Any:
        return json.loads(self.text)


class App:
    """``create_app`` on a data directory, policy and workspace of its own, driven like
    :class:`tests.helpers.Server` (``post``, ``raw``)."""

    def __init__(self, base: Path, *, policy_text: str | None = None,
                 config: dict[str, Any] | None = None, **policy: Any):
        self.workspace = base / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.policy_path = base / "allowed.yaml"
        settings = dict(workspace=self.workspace, timeout=60, max_output_kb=1024,
                        runs_per_minute=100000, max_tasks=100000, requests_per_minute=1000000)
        settings.update(policy)
        self.policy_path.write_text(policy_text or POLICY_TEMPLATE.format(**settings))
        self.executor = FakeExecutor()
        self.config = ServerConfig(policy=self.policy_path, data_dir=base / "data",
                                   shutdown_grace=1, **(config or {}))
        self.app = create_app(self.config, executor=self.executor)
        self.client = self.app.test_client()

    def close(self) -> None:
        close_app(self.app, grace=0)

    def raw(self, method: str, path: str = "/schedule", *, data: Any = None, json: Any = None,
            headers: dict[str, str] | None = None) -> Response:
        headers = {"Host": "127.0.0.1", **(headers or {})}
        return Response(self.client.open(path, method=method, data=data, json=json,
                                         headers=headers))

    def post(self, action: str | None = None, *, expect: int | None = 200, **fields: Any) -> dict:
        body = dict(fields)
        if action is not None:
            body["action"] = action
        response = self.raw("POST", json=body)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.text)
        return response.json()
