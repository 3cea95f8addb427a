"""The options of ``tsctl create`` and ``tsctl update``, and the request fields they make.

Each option is one field of the ``create``/``update`` action under the same name (dashes
for underscores); the server validates every value, so tsctl only converts types.
``--set KEY=VALUE`` passes any other field (VALUE read as JSON when it parses as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TYPES = ("command", "test", "script", "custom")
# On create, the type follows from the one parameter given (a file is a script unless
# --type test says otherwise).
TYPE_OF_PARAMETER = {"command": "command", "custom_script": "custom", "file_path": "script"}


class UsageError(Exception):
    """A command line that parses but cannot make a request (exit code 2)."""


def number(text: str) -> int | float:
    """An int where the text is one (the server's messages then show it as written)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_task_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    when = parser.add_argument_group("schedule" + (" (one is required)" if creating else ""))
    schedule = when.add_mutually_exclusive_group(required=creating)
    schedule.add_argument("--every", nargs="+", metavar="WHEN",
                          help="an interval: --every 5 minutes, --every day at 2:00")
    schedule.add_argument("--interval", nargs="+", metavar="WHEN",
                          help="any schedule the server accepts: 'daily at 2:00', "
                               "'monday at 9:30', 'hourly' (see tsctl validate)")
    what = parser.add_argument_group("what to run")
    what.add_argument("--type", choices=TYPES,
                      help="the task type" + (" (default: follows from the option below)"
                                              if creating else ""))
    what.add_argument("--command", help="a shell command (type command)")
    what.add_argument("--file-path", "--file", dest="file_path", metavar="PATH",
                      help="a Python script (type script) or what pytest tests (type test)")
    what.add_argument("--custom-script", "--code", dest="custom_script", metavar="CODE",
                      help="inline Python (type custom); '-' reads it from standard input")
    opts = parser.add_argument_group("options (bounded by the server's policy)")
    opts.add_argument("--timeout", type=number, metavar="SECONDS", help="wall-clock limit of a run")
    opts.add_argument("--working-dir", metavar="DIR", help="inside an allowed directory")
    opts.add_argument("--env", type=key_value, action="append", metavar="NAME=VALUE",
                      help="an environment variable for the runs (repeatable)")
    opts.add_argument("--overlap", choices=("skip", "queue", "allow"),
                      help="when a run is due while the previous one still runs")
    opts.add_argument("--misfire", choices=("skip", "run_once"),
                      help="runs that fell due while the server was down")
    opts.add_argument("--until", metavar="TIME", help="no runs after 'YYYY-MM-DD HH:MM:SS'")
    opts.add_argument("--start-at", metavar="TIME", help="no runs before 'YYYY-MM-DD HH:MM:SS'")
    opts.add_argument("--max-runs", type=int, metavar="N", help="stop after N scheduled runs")
    opts.add_argument("--timezone", metavar="ZONE", help="IANA zone of a clock schedule")
    opts.add_argument("--jitter", type=number, metavar="SECONDS",
                      help="start each run up to this long after its slot (a fixed offset "
                           "per slot)")
    opts.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                      dest="extra", help="any other field of the action (VALUE as JSON if it "
                                         "parses, else as text; repeatable)")


def _interval(args: argparse.Namespace) -> str | None:
    if args.every:
        text = " ".join(args.every)
        return text if text.lower().startswith("every") else f"every {text}"
    return " ".join(args.interval) if args.interval else None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def spec_fields(args: argparse.Namespace, *, creating: bool, stdin=None) -> dict[str, Any]:
    """The request fields of a create/update command line."""
    fields: dict[str, Any] = {"interval": _interval(args)}
    for key in ("command", "file_path", "custom_script", "working_dir", "timeout", "overlap",
                "misfire", "until", "start_at", "max_runs", "timezone", "jitter"):
        fields[key] = getattr(args, key)
    if fields["custom_script"] == "-":
        fields["custom_script"] = (stdin or sys.stdin).read()
    if args.env:
        fields["env"] = dict(args.env)
    fields["type"] = args.type
    if creating and args.type is None:
        given = [p for p in TYPE_OF_PARAMETER if fields[p] is not None]
        if len(given) != 1:
            raise UsageError("say what to run with one of --command, --file-path or "
                             "--custom-script (and --type test for a pytest run)")
        fields["type"] = TYPE_OF_PARAMETER[given[0]]
    for key, value in args.extra:
        fields[key.replace("-", "_")] = _json_or_text(value)
    fields = {k: v for k, v in fields.items() if v is not None}
    if not creating and not fields:
        raise UsageError("nothing to update: give at least one option (see tsctl update -h)")
    return fields
