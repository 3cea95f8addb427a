"""tsctl: the command-line client of the Task Scheduler Server.

A thin HTTP client of ``POST /schedule`` (standard library only, plus tabulate for its
tables): it imports nothing of the server. Run it as ``tsctl`` once the project is
installed, or as ``python -m api.tsctl``.
"""

from .cli import main

__all__ = ["main"]
