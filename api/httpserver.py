"""The production WSGI server: cheroot, with settings for many kept-alive clients.

cheroot keeps idle keep-alive connections in an epoll selector and hands ready requests to
a thread pool, so 200 concurrent clients cost no more per request than two (waitress,
tried first, walks every connection on each loop turn: 200 kept-alive clients made it
spend 90 % of its time there, about 12 ms of CPU per request).
"""

from __future__ import annotations

from cheroot import wsgi

# The app answers bodies over its own cap (max_body_kb) with the JSON 413; this larger
# bound stops a giant upload at the headers, before it is read at all.
HARD_BODY_FACTOR = 16
MAX_HEADER_BYTES = 256 * 1024


def make_server(app, *, host: str, port: int, threads: int, max_body_bytes: int,
                connections: int = 1000, name: str = "task-scheduler") -> wsgi.Server:
    """A bound (``prepare``d) server; ``serve()`` runs it, ``stop()`` ends it.
    Raises OSError when the address cannot be bound."""
    server = wsgi.Server((host, port), _terminated_input(app), numthreads=threads,
                         request_queue_size=1024,
                         server_name=name)
    server.max_request_body_size = HARD_BODY_FACTOR * max_body_bytes
    server.max_request_header_size = MAX_HEADER_BYTES
    # cheroot closes idle keep-alive connections beyond this many (its default is 10).
    server.keep_alive_conn_limit = connections
    server.prepare()
    return server


def _terminated_input(app):
    """cheroot de-chunks a chunked body and ends its input stream at the last chunk, but
    does not say so; without ``wsgi.input_terminated`` Flask would read such a body as
    empty (and a body over the cap would be judged by its type instead of its size)."""
    def wrapped(environ, start_response):
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)
    return wrapped
