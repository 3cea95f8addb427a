"""``python -m api``: run the Task Scheduler Server (on cheroot) until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading


from policies.errors import PolicyError
from scheduler.errors import InvalidRequest, StoreError

from .app import close_app, create_app
from .httpserver import make_server
from .config import ServerConfig, is_loopback, is_wildcard, parse_args
from .logformat import configure as configure_logging

log = logging.getLogger("api")


def serve(config: ServerConfig) -> int:
    if not is_loopback(config.host) and not config.token:
        log.error("refusing to listen on %s without a token: anyone who can reach that address "
                  "could run commands. Set --token (or TASK_SCHEDULER_TOKEN), or listen on "
                  "127.0.0.1.", config.host)
        return 2
    try:
        app = create_app(config)
    except (PolicyError, StoreError, InvalidRequest) as exc:
        log.error("cannot start: %s", exc.message)
        return 2
    try:
        server = make_server(app, host=config.host, port=config.port, threads=config.threads,
                             max_body_bytes=config.max_body_kb * 1024,
                             connections=config.connection_limit)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        close_app(app, grace=0)
        return 2
    if is_wildcard(config.host) and not config.allowed_hosts:
        log.warning("listening on every interface, but only loopback Host names are accepted: "
                    "add the names clients use with --allowed-host")
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve, name="http", daemon=True)
    thread.start()
    log.info("listening on http://%s:%d (policy %s, data %s, %d workers)", config.host,
             config.port, config.policy, config.data_dir, config.workers)
    stop.wait()
    log.info("shutting down: no new runs; running jobs get %.0f s", config.shutdown_grace)
    server.stop()
    close_app(app)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    configure_logging(config.log_level, config.log_format)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
