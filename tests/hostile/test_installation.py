"""No task can change the server's installation, whatever the policy allows.

The project is copied (a clone of the repository with the working tree's files on top, and
its virtual environment), started exactly as the README says (``make run``), and hostile
tasks try to plant code where the operator would later run it unconfined: the Makefile, the
requirements, CI scripts, tests, git hooks, the packages' bytecode caches and the virtual
environment. Every file, directory and link of the installation must be unchanged after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from ..helpers import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

if os.geteuid() != 0 and os.environ.get("CI") != "true":
    pytest.skip("needs root (mount namespaces make the installation read-only); "
                "run the suite as root", allow_module_level=True)

SHELL_ATTACK = r"""
R={root}
for f in Makefile requirements.txt .ci/run README.md pytest.ini; do echo 'echo planted' >> "$R/$f"; done
echo 'import os' > "$R/tests/conftest_planted.py"
mkdir -p "$R/.git/hooks"; printf '#!/bin/sh\necho planted\n' > "$R/.git/hooks/post-checkout"
chmod +x "$R/.git/hooks/post-checkout"
echo x > "$R/api/__pycache__/planted.pyc"
for sp in "$R"/.venv/lib/python*/site-packages; do echo 'print(1)' > "$sp/sitecustomize.py"; done
echo 'echo planted' >> "$R/.venv/bin/activate"
mv "$R/Makefile" "$R/Makefile.moved"; rm -f "$R/SECURITY.md"; rm -rf "$R/tests/unit"
touch "$R/planted"; ln -s /etc "$R/planted-link"; chmod 777 "$R/Makefile"
truncate -s 0 "$R/README.md"; mkdir "$R/planted-dir"
true
"""

PYTHON_ATTACK = r"""
import glob, os
root = {root!r}
errors = []
def attempt(what, fn):
    try:
        fn()
        errors.append(what + ': done')
    except OSError as exc:
        errors.append(what + ': ' + exc.strerror)
attempt('hook', lambda: open(os.path.join(root, '.git/hooks/pre-commit'), 'w').write('x'))
attempt('conftest', lambda: open(os.path.join(root, 'conftest.py'), 'w').write('x'))
attempt('package', lambda: open(os.path.join(root, 'sandbox/__init__.py'), 'a').write('x'))
attempt('rename', lambda: os.rename(os.path.join(root, 'api'), os.path.join(root, 'api2')))
attempt('chmod', lambda: os.chmod(os.path.join(root, '.ci/run'), 0o777))
for sp in glob.glob(os.path.join(root, '.venv/lib/python*/site-packages')):
    attempt('pth', lambda: open(os.path.join(sp, 'planted.pth'), 'w').write('import os'))
print('\n'.join(errors))
"""


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry of the installation (not its workspace nor data) with its content."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in ("workspace", "data")]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("dir", info.st_mode)
            else:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                found[rel] = ("file", info.st_mode, digest)
    return found


def copy_project(target: Path) -> Path:
    """A clone of the repository with the working tree's tracked files and the venv."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(target)], check=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        source = ROOT / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    shutil.copytree(ROOT / ".venv", target / ".venv", symlinks=True)
    # Compiled now, so that the server's own imports write nothing into the tree later.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "api", "scheduler", "sandbox",
                    "policies"], cwd=target, check=True)
    return target


class MadeServer:
    """The copy started with ``make run``, as the README says."""

    def __init__(self, root: Path, port: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_SCHEDULER_")}
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = root.parent / "server.log"
        self.log = open(self.log_path, "ab")
        self.make = subprocess.Popen(["make", "run", f"ARGS=--port {port} --autostart"],
                                     cwd=root, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.healthy, timeout=60, message=f"make run on port {port}")

    def healthy(self) -> bool:
        assert self.make.poll() is None, f"make run exited: {self.log_path.read_text()}"
        try:
            return requests.get(self.url + "/health", timeout=1).ok
        except requests.ConnectionError:
            return False

    def post(self, action: str, **fields) -> dict:
        return requests.post(self.url + "/schedule", json=dict(fields, action=action),
                             timeout=30).json()

    def run_now(self, task_id: str, **fields) -> dict:
        created = self.post("create", task_id=task_id, interval="every 1 hour", **fields)
        assert created["status"] == "success", created
        run_id = self.post("run", task_id=task_id)["run_id"]

        def done():
            run = self.post("output", run_id=run_id)["run"]
            return run if run["status"] not in ("queued", "running") else None
        return wait_until(done, timeout=60, message=f"run of {task_id}")

    def stop(self) -> None:
        for child in psutil.Process(self.make.pid).children():
            child.send_signal(signal.SIGTERM)
        try:
            self.make.wait(30)
        finally:
            if self.make.poll() is None:
                os.killpg(self.make.pid, signal.SIGKILL)
                self.make.wait()
            self.log.close()


@pytest.mark.parametrize("allowed", ["workspace", "."])
def test_no_task_changes_the_installation(tmp_path, allowed):
    root = copy_project(tmp_path / "install")
    if allowed != "workspace":
        policy = root / "policies" / "allowed.yaml"
        policy.write_text(policy.read_text().replace(
            "allowed_directories: [workspace]", f"allowed_directories: [{allowed}]"))
    before = snapshot(root)
    server = MadeServer(root, free_port())
    try:
        status = wait_until(lambda: (s := server.post("status"))["isolation"] and s,
                            message="the workers' isolation report")
        assert status["isolation_level"] == "full", status
        outputs = []
        for n, target in enumerate((str(root), "..")):
            run = server.run_now(f"shell{n}", type="command",
                                 command=SHELL_ATTACK.format(root=target))
            outputs.append(run["stderr"])
        run = server.run_now("python", type="custom",
                             custom_script=PYTHON_ATTACK.format(root=str(root)))
        outputs.append(run["stdout"])
        if allowed == "workspace":
            # pytest in the workspace must not reach for the server's own pytest.ini above it.
            (root / "workspace" / "test_ok.py").write_text("def test_ok():\n    pass\n")
            tests = server.run_now("tests", type="test")
            assert tests["status"] == "succeeded" and tests["tests"]["passed"] == 1, tests
    finally:
        server.stop()
    assert "Read-only file system" in outputs[0], outputs[0]
    assert ": done" not in outputs[-1], outputs[-1]
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the installation changed: {changed}"
