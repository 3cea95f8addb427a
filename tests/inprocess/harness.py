"""The application in the test's own process: ``create_app`` with Flask's test client and
an executor that runs nothing. For envelope and validation cases (fast: no server process,
no workers, no sockets); real runs need the real server of :mod:`tests.helpers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api.app import close_app, create_app
from api.config import ServerConfig

from ..fakes import FakeExecutor
from ..helpers import POLICY_TEMPLATE


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
