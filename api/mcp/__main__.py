"""``python -m api.mcp``: see :mod:`api.mcp.stdio`."""

from .stdio import main

main()
