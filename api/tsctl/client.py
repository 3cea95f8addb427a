"""The HTTP side of tsctl: ``POST /schedule`` with a JSON body, the answer as a dict.

Standard library only (``urllib.request``), so that the client needs nothing the server's
installation does not already have. Proxy settings of the environment are ignored: the
server is normally on loopback, and a bearer token must never be handed to a proxy.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:10800"
DEFAULT_TIMEOUT = 30.0


class ClientError(Exception):
    """Base of the errors tsctl reports instead of a result."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ServerRefused(ClientError):
    """The server answered with an error envelope (or a non-2xx status)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(str(body.get("message") or f"the server answered HTTP {status}"))
        self.status = status
        self.body = body
        self.code = body.get("code")
        self.field = body.get("field")


class Unreachable(ClientError):
    """No answer from the server: not running, wrong address, or too slow."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the Task Scheduler Server at {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class Client:
    """Sends actions to one server. ``url`` is the server's base URL (no path)."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def post(self, action: str, **fields: Any) -> dict[str, Any]:
        """The response object of ``action``; fields whose value is None are left out.
        Raises :class:`ServerRefused` for an error envelope, :class:`Unreachable` when
        nothing usable came back."""
        return self.post_waiting(action, 0.0, **fields)

    def post_waiting(self, action: str, wait: float, **fields: Any) -> dict[str, Any]:
        """Like :meth:`post`, for a request the server may hold up to ``wait`` seconds."""
        body = {"action": action, **{k: v for k, v in fields.items() if v is not None}}
        return self._request(json.dumps(body).encode(), timeout=self.timeout + wait)

    def _request(self, data: bytes, *, timeout: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url.rstrip("/") + "/schedule", data=data,
                                         headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return _decode(response.read(), response.status)
        except urllib.error.HTTPError as exc:
            with exc:
                raise ServerRefused(exc.code, _error_body(exc.read(), exc.code)) from None
        except urllib.error.URLError as exc:
            raise Unreachable(self.url, _reason(exc.reason)) from None
        except (TimeoutError, socket.timeout):
            raise Unreachable(self.url, f"no answer within {timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise Unreachable(self.url, _reason(exc)) from None


# No ProxyHandler with the environment's proxies: an empty one disables them.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _decode(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ClientError(f"the server answered HTTP {status} with something that is not "
                          "JSON: is the URL that of a Task Scheduler Server?") from None
    if not isinstance(body, dict):
        raise ClientError(f"the server answered HTTP {status} with JSON that is not an object")
    if body.get("status") == "error":
        raise ServerRefused(status, body)
    return body


def _error_body(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    text = raw.decode("utf-8", "replace").strip()[:200]
    return {"status": "error", "message": f"the server answered HTTP {status}: {text}"
            if text else f"the server answered HTTP {status}"}
