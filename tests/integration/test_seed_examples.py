"""The original API's usage examples (docs/ARCHITECTURE.md), run unchanged but for the address."""

from __future__ import annotations

import contextlib
import io
import re

SEED_COMMAND = """
import requests

response = requests.post('http://localhost:10800/schedule', json={
    'action': 'create',
    'task_id': 'backup_task',
    'type': 'command',
    'interval': 'daily at 2:00',
    'command': 'tar -czf backup.tar.gz /path/to/data'
})

result = response.json()
if result['status'] == 'success':
    print(result['message'])
    print(f"Next run: {result['next_run']}")
else:
    print(f"Error: {result['message']}")
"""

SEED_TEST = """
import requests

response = requests.post('http://localhost:10800/schedule', json={
    'action': 'create',
    'task_id': 'test_runner',
    'type': 'test',
    'interval': 'every 2 hours',
    'file_path': './tests/'
})

result = response.json()
print(f"Test runner scheduled: {result['message']}")
"""

SEED_START_LIST = """
import requests

# Start the scheduler
start_response = requests.post('http://localhost:10800/schedule', json={
    'action': 'start'
})

if start_response.json()['status'] == 'success':
    # List all scheduled tasks
    list_response = requests.post('http://localhost:10800/schedule', json={
        'action': 'list'
    })
    
    tasks_data = list_response.json()
    print(f"Scheduled {tasks_data['count']} tasks:")
    for task in tasks_data['tasks']:
        print(f"  - {task['id']}: {task['details']['type']} at {task['details']['interval']}")
"""

SEED_REQUESTS = [
    ({"action": "start"}, {"status": "success", "message": "Scheduler started"}),
    ({"action": "create", "task_id": "backup_task", "type": "command", "interval": "every 1 hour",
      "command": "python backup.py"}, None),
    ({"action": "remove", "task_id": "backup_task"},
     {"status": "success", "message": "Task 'backup_task' removed"}),
]

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def run_example(code: str, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("http://localhost:10800", url), {})
    return out.getvalue()


def test_seed_usage_examples_work_unchanged(server):
    (server.workspace / "tests").mkdir()
    printed = run_example(SEED_COMMAND, server.url).splitlines()
    assert printed[0] == "Task 'backup_task' scheduled to run daily at 2:00"
    assert printed[1].startswith("Next run: ") and printed[1].endswith(" 02:00:00")

    printed = run_example(SEED_TEST, server.url)
    assert printed == "Test runner scheduled: Task 'test_runner' scheduled to run every 2 hours\n"

    printed = run_example(SEED_START_LIST, server.url)
    assert printed == ("Scheduled 2 tasks:\n"
                       "  - backup_task: command at daily at 2:00\n"
                       "  - test_runner: test at every 2 hours\n")
    assert server.post("status")["running"] is True


def test_seed_request_and_response_shapes(server):
    for body, expected in SEED_REQUESTS:
        answer = server.post(**body)
        if expected is not None:
            assert answer == expected
        else:
            assert answer["status"] == "success"
            assert answer["message"] == "Task 'backup_task' scheduled to run every 1 hour"
            assert answer["task_id"] == "backup_task"
            assert TIME.match(answer["next_run"])
    server.post("create", task_id="backup_task", type="command", interval="every 1 hour",
                command="python backup.py")
    listed = server.post("list")
    assert listed["status"] == "success" and listed["count"] == 1
    task = listed["tasks"][0]
    assert task["id"] == "backup_task"
    details = task["details"]
    for key, value in {"type": "command", "interval": "every 1 hour", "command": "python backup.py",
                       "file_path": None, "custom_script": None}.items():
        assert details[key] == value
    assert TIME.match(details["next_run"]) and TIME.match(details["created_at"])
