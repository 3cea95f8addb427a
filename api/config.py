"""Server configuration: command-line options, each also read from ``TASK_SCHEDULER_<NAME>``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import InvalidRequest
from scheduler.zones import resolve_zone, zone_name

from .logformat import LogFormat

ENV_PREFIX = "TASK_SCHEDULER_"
LOOPBACK_NAMES = ("localhost",)
# A prepared run holds a forked, confined process while it waits for its slot: a minute
# of that is plenty for any machine, and more would only hold memory for nothing.
MAX_PREPARE_AHEAD = 60.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``create_app`` needs; defaults are the embedded single-machine setup."""

    host: str = "127.0.0.1"
    port: int = 10800
    policy: Path = Path("policies/allowed.yaml")
    data_dir: Path = Path("data")
    workers: int = max(2, os.cpu_count() or 2)
    token: str | None = None
    autostart: bool = False
    threads: int = 8
    max_body_kb: int = 512
    shutdown_grace: float = 10.0
    # Seconds before its start that a scheduled run is handed to a worker to be prepared.
    prepare_ahead: float = 1.0
    history_per_task: int = 100
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # Host names (or addresses) besides the loopback ones that clients may use in ``Host``.
    allowed_hosts: tuple[str, ...] = ()
    audit_max_bytes: int = 5 * 1024 * 1024
    # Kept-alive client connections held open at once (idle ones beyond are closed).
    connection_limit: int = 1000
    # IANA name of the default zone of tasks without a ``timezone``; None: the machine's.
    timezone: str | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "scheduler.db"


def is_wildcard(host: str) -> bool:
    """True for the "every interface" addresses (0.0.0.0, ::), which no client sends as Host."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def normalize_host_name(name: str) -> str | None:
    """An --allowed-host entry in the form Host headers are compared in (lower case, no
    brackets, no trailing dot), or None if it is not a bare host name or address."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or len(name) > 253 or not all(c.isalnum() or c in "-._" for c in name):
        return None
    return name


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env(name: str, default):
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def _flag(name: str) -> bool:
    return _env(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """Build a :class:`ServerConfig` from ``argv`` and the environment (options win)."""
    d = ServerConfig()
    # The same options whether started as `task-scheduler` or as `python -m api`.
    prog = os.path.basename(sys.argv[0])
    if prog in ("__main__.py", ""):
        prog = "python -m api"
    p = argparse.ArgumentParser(prog=prog, description="Task Scheduler Server")
    p.add_argument("--host", default=_env("host", d.host), help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=int(_env("port", d.port)), help="port (default %(default)s)")
    p.add_argument("--policy", type=Path, default=Path(_env("policy", d.policy)),
                   help="policy file (default %(default)s)")
    p.add_argument("--data-dir", type=Path, default=Path(_env("data_dir", d.data_dir)),
                   help="where the SQLite store lives (default %(default)s)")
    p.add_argument("--workers", type=int, default=int(_env("workers", d.workers)),
                   help="worker processes (default %(default)s)")
    p.add_argument("--token", default=_env("token", None),
                   help="require 'Authorization: Bearer <token>' on every API request")
    p.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                   help="a host name clients may use besides the loopback ones (repeatable; "
                        "env: comma-separated). Other Host headers are refused (DNS rebinding)")
    p.add_argument("--autostart", action="store_true", default=_flag("autostart"),
                   help="start dispatching at start-up even on a fresh data directory")
    p.add_argument("--threads", type=int, default=int(_env("threads", d.threads)),
                   help="HTTP server threads (default %(default)s)")
    p.add_argument("--shutdown-grace", type=float, default=float(_env("shutdown_grace", d.shutdown_grace)),
                   help="seconds running jobs get at shutdown before they are killed")
    p.add_argument("--prepare-ahead", type=float, metavar="SECONDS",
                   default=float(_env("prepare_ahead", d.prepare_ahead)),
                   help="how long before its start a scheduled run is handed to a worker, "
                        "which prepares its confined process then (0 to "
                        f"{MAX_PREPARE_AHEAD:g}; default %(default)s; 0: not ahead)")
    p.add_argument("--log-level", default=_env("log_level", d.log_level),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", type=LogFormat, default=_env("log_format", d.log_format.value),
                   choices=list(LogFormat), metavar="{text,json}",
                   help="text (default) or json: one JSON object per line, for log collectors")
    p.add_argument("--timezone", default=_env("timezone", None) or None, metavar="ZONE",
                   help="IANA time zone of tasks that name none, e.g. Europe/Berlin "
                        "(default: this machine's zone)")
    a = p.parse_args(argv)
    if a.workers < 1 or a.threads < 1:
        p.error("--workers and --threads must be at least 1")
    if not 0 < a.port < 65536:
        p.error("--port must be between 1 and 65535")
    if not 0 <= a.prepare_ahead <= MAX_PREPARE_AHEAD:  # NaN fails too
        p.error(f"--prepare-ahead must be between 0 and {MAX_PREPARE_AHEAD:g} seconds")
    # Options win over the environment as a whole (argparse would append to the default).
    raw_hosts = a.allowed_host if a.allowed_host is not None else \
        [h for h in _env("allowed_hosts", "").split(",") if h.strip()]
    hosts = []
    for raw in raw_hosts:
        name = normalize_host_name(raw)
        if name is None:
            p.error(f"--allowed-host {raw!r} is not a host name or address "
                    "(give the name alone, without scheme or port)")
        hosts.append(name)
    timezone = None
    if a.timezone is not None:
        try:
            timezone = zone_name(resolve_zone(a.timezone, field="--timezone"))
        except InvalidRequest as exc:
            p.error(exc.message)
    return ServerConfig(host=a.host, port=a.port, policy=a.policy, data_dir=a.data_dir,
                        workers=a.workers, token=a.token or None, autostart=a.autostart,
                        threads=a.threads, shutdown_grace=a.shutdown_grace,
                        prepare_ahead=a.prepare_ahead, log_level=a.log_level,
                        log_format=a.log_format,
                        allowed_hosts=tuple(dict.fromkeys(hosts)), timezone=timezone)
