"""The dashboard (``GET /``) in headless Chromium, driven over the DevTools pipe
(:mod:`tests.integration.cdp`): it shows tasks, runs and a run's output, inserts every
value as text, runs under a CSP that blocks inline script, and shows nothing without the
token when the server has one."""

from __future__ import annotations

import json
import os

import pytest
import requests

from ..helpers import Server
from .cdp import CHROMIUM, Page

pytestmark = pytest.mark.slow

TOKEN = "dashboard-token"
HTML_OUTPUT = '<img src=x onerror="window.__xss=1"><b class="injected">bold</b>'
HTML_SCRIPT = "print('<script>window.__xss=2</script>')"


@pytest.fixture
def page(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        reason = ("chromium is not installed; these tests need it: "
                  "apt-get update && apt-get install -y chromium")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with Page(tmp_path / "profile") as page:
        yield page


def rows(page: Page, table: str) -> int:
    return page.eval(f"document.querySelectorAll('#{table} tbody tr').length")


def test_the_page_shows_tasks_runs_and_output_as_text(make_server, page):
    server: Server = make_server()
    server.post("create", task_id="html-out", type="command", interval="every 5 minutes",
                command=f"printf '%s' '{HTML_OUTPUT}'")
    server.post("create", task_id="fails@night", type="command", interval="daily at 2:00",
                command="echo oops >&2; exit 3")
    server.post("create", task_id="html-script", type="custom", interval="hourly",
                custom_script=HTML_SCRIPT)
    server.post("pause", task_id="html-script")
    html_run = server.run_now("html-out")
    assert html_run["status"] == "succeeded" and html_run["stdout"] == HTML_OUTPUT
    assert server.run_now("fails@night")["status"] == "failed"
    assert server.run_now("html-script")["status"] == "succeeded"

    page.goto(server.url + "/")
    page.wait_for("document.querySelectorAll('#tasks tbody tr').length === 3")
    tasks = page.text("#tasks")
    for text in ("html-out", "fails@night", "html-script", "every 5 minutes", "daily at 2:00",
                 "paused", "scheduled", HTML_OUTPUT, HTML_SCRIPT):
        assert text in tasks, (text, tasks)
    runs = page.text("#runs")
    assert rows(page, "runs") == 3 and "failed" in runs and "succeeded" in runs
    assert page.text("#fact-state") == "stopped"
    assert page.text("#fact-workers") == "2 / 2 alive"
    assert page.text("#fact-isolation") not in ("", "unknown")

    page.eval(f"document.querySelector('tr[data-run=\"{html_run['run_id']}\"]').click()")
    stdout = page.wait_for("document.getElementById('output-stdout').textContent")
    assert stdout == HTML_OUTPUT
    assert "html-out" in page.text("#output-meta")
    # Nothing the server sent became markup or ran.
    assert page.eval("document.querySelectorAll('#data img, #data b, #data script').length") == 0
    assert page.eval("window.__xss === undefined")

    # The address names the run: a reload shows its output again.
    page.goto(f"{server.url}/#run-{html_run['run_id']}")
    assert page.wait_for("document.getElementById('output-stdout').textContent") == HTML_OUTPUT

    # A policy file that fails validation raises the banner at the next refresh.
    server.policy_path.write_text("version: 1\nunknown_key: true\n")
    page.wait_for("!document.getElementById('policy-banner').hidden", timeout=30)
    assert "unknown_key" in page.text("#policy-banner")


def test_strict_csp_blocks_injected_inline_script(make_server, page):
    server: Server = make_server()
    for path in ("/", "/static/dashboard.js", "/static/dashboard.css"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in requests.get(server.url + "/", timeout=10).text  # no inline script

    page.goto(server.url + "/")
    page.wait_for("!document.getElementById('data').hidden")
    page.eval("""
        window.__violations = [];
        document.addEventListener('securitypolicyviolation',
                                  (e) => window.__violations.push(e.violatedDirective));
        const script = document.createElement('script');
        script.textContent = 'window.__inline = 1';
        document.body.append(script);
        const button = document.createElement('button');
        button.setAttribute('onclick', 'window.__handler = 1');
        document.body.append(button);
        button.click();
    """)
    violations = page.wait_for("window.__violations.length >= 2 && window.__violations")
    assert all(v.startswith("script-src") for v in violations), violations
    assert page.eval("window.__inline === undefined && window.__handler === undefined")


def test_without_the_token_the_page_shows_no_data(make_server, page):
    server: Server = make_server(extra_args=("--token", TOKEN))
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    server.post("create", task_id="secret-task", type="command", interval="hourly",
                command="echo secret-output")
    server.run_now("secret-task")

    page.goto(server.url + "/")
    page.wait_for("!document.getElementById('token-form').hidden")
    assert "secret" not in page.eval("document.body.innerText")
    assert page.eval("document.getElementById('data').hidden")
    assert rows(page, "tasks") == 0 and rows(page, "runs") == 0

    def submit(token: str) -> None:
        page.eval(f"""
            document.getElementById('token-input').value = {json.dumps(token)};
            document.getElementById('token-form').requestSubmit();
        """)

    submit("wrong")
    page.wait_for("document.getElementById('token-hint').textContent.includes('refused')")
    assert "secret" not in page.eval("document.body.innerText")
    assert page.eval("sessionStorage.length") == 0

    submit(TOKEN)
    page.wait_for("document.querySelectorAll('#tasks tbody tr').length === 1")
    assert "secret-task" in page.text("#tasks")

    # Asked once: the tab keeps the token across reloads.
    page.goto(server.url + "/")
    page.wait_for("document.querySelectorAll('#runs tbody tr').length === 1")
    assert page.eval("document.getElementById('token-form').hidden")
