"""The API baseline: a bare Flask endpoint on the same WSGI server as ours, cheroot (``python -m bench.bare_app``).

``POST /schedule`` parses the JSON body and answers with a response of the same shape as
ours, built in memory: for ``list``, ``--tasks`` task dicts shaped like the server's
``task_view`` (pre-built; serialised on every request, as ours are); for anything else one
task dict. With ``--tiny`` it answers ``{"status": "success"}`` whatever was asked.
"""

from __future__ import annotations

import argparse

from flask import Flask, jsonify, request
from api.httpserver import make_server


def task_dict(i: int) -> dict:
    return {"id": f"task-{i:06d}", "details": {
        "type": "command", "interval": "every 1 hour", "command": "true", "file_path": None,
        "custom_script": None, "next_run": "2026-11-26 14:00:00", "created_at": "2026-11-26 13:00:00",
        "schedule": "every 1 hour", "updated_at": "2026-11-26 13:00:00", "working_dir": None,
        "env": {}, "timeout": None, "overlap": "skip", "misfire": "skip", "until": None,
        "start_at": None, "max_runs": None, "paused": False, "state": "scheduled", "runs_fired": 0}}


def make_app(tasks: int, tiny: bool) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False
    listing = [task_dict(i) for i in range(tasks)]

    @app.post("/schedule")
    def schedule():
        body = request.get_json()
        if tiny:
            return jsonify({"status": "success"})
        if body.get("action") == "list":
            return jsonify({"status": "success", "tasks": listing, "count": len(listing)})
        task = task_dict(0)
        task["id"] = str(body.get("task_id"))
        return jsonify({"status": "success", "message": f"Task '{task['id']}' scheduled",
                        "task_id": task["id"], "next_run": "2026-11-26 14:00:00",
                        "schedule": "every 1 hour", "task": task})

    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--tasks", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    server = make_server(make_app(a.tasks, a.tiny), host="127.0.0.1", port=a.port,
                         threads=a.threads, max_body_bytes=512 * 1024, name="bare")
    try:
        server.serve()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
