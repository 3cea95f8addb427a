"""The Model Context Protocol interface: the scheduler's actions as 14 MCP tools.

* :mod:`api.mcp.tools`: the tools, their input schemas (the request models), descriptions
  and results.
* :mod:`api.mcp.server`: the MCP server object over a backend that posts to ``/schedule``.
* :mod:`api.mcp.http`: Streamable HTTP at ``/mcp`` inside the server process.
* ``python -m api.mcp`` (:mod:`api.mcp.stdio`): stdio, a thin client of a running server.
"""
