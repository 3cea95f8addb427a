"""The HTTP API of the Task Scheduler Server (``python -m api`` runs it).

The server's names are loaded on first use, so that the command-line client
(:mod:`api.tsctl`, a plain HTTP client) can be imported without the scheduler, the sandbox
or the policy packages.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"create_app": ".app", "close_app": ".app", "ServerConfig": ".config"}

__all__ = ["ServerConfig", "close_app", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
