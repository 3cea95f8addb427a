"""The dashboard's files over the edge, in-process: public (they hold no data) but behind
the Host and Origin guards, with a strict CSP, and free of inline script and style.
What the page does in a browser is tested in tests/integration/test_dashboard.py."""

from __future__ import annotations

import re

import pytest

from api.app import close_app
from api.dashboard import FILES

from .test_metrics import make_app

TOKEN = "page-token"


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path, token=TOKEN)
    yield app.test_client()
    close_app(app, grace=0)


@pytest.mark.parametrize("path", sorted(FILES))
def test_the_files_need_no_token_and_carry_the_strict_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self';") and "'unsafe-" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", sorted(FILES))
def test_the_files_are_behind_the_browser_guards(client, path):
    assert client.get(path, headers={"Host": "rebound.example"}).status_code == 403
    assert client.get(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_only_the_page_and_its_assets_are_public(client):
    assert client.post("/schedule", json={"action": "list"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/static/other.js").status_code == 401
    assert client.post("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_the_page_has_no_inline_script_or_style(client):
    html = client.get("/").get_data(as_text=True)
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/dashboard.js" defer>']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert "http://" not in html and "https://" not in html  # no assets from elsewhere
