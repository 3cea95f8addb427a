"""``GET /``: the read-only dashboard, a static page whose script reads ``POST /schedule``.

The page and its two assets hold no data, so they are served without the token (the edge's
public paths); the script asks for the token once when the API answers 401 and keeps it in
the tab's ``sessionStorage``. Every response here carries a strict Content-Security-Policy
(only this origin's script, style and requests; no inline script or style; no framing).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).with_name("static")

#: URL path → file in ``api/static``: the whole of what the dashboard serves.
FILES = {
    "/": "index.html",
    "/static/dashboard.js": "dashboard.js",
    "/static/dashboard.css": "dashboard.css",
    "/static/favicon.svg": "favicon.svg",
}
PUBLIC_PATHS = frozenset(FILES)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Small files: always revalidated, so an upgraded server never runs an old script.
    "Cache-Control": "no-cache",
}

bp = Blueprint("dashboard", __name__)


def _serve(name: str) -> Response:
    response = send_from_directory(STATIC, name, max_age=0)
    response.headers.update(HEADERS)
    return response


for _path, _name in FILES.items():
    bp.add_url_rule(_path, f"file_{_name.replace('.', '_')}",
                    lambda _name=_name: _serve(_name), methods=["GET"],
                    provide_automatic_options=False)
