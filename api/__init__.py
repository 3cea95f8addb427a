"""The HTTP API of the Task Scheduler Server (``python -m api`` runs it)."""

from .app import close_app, create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "close_app", "create_app"]
