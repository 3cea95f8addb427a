"""tsctl's command line (argparse): the subcommands, the common options, the exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO
from urllib.parse import urlsplit

from . import commands, render
from .client import DEFAULT_URL, Client, ClientError, ServerRefused, Unreachable
from .exitcodes import ExitCode
from .taskargs import UsageError, add_task_options, number

ENV_URL = "TASK_SCHEDULER_URL"
ENV_TOKEN = "TASK_SCHEDULER_TOKEN"
START_HINT = ("Start the server with `task-scheduler` (`make run` in a checkout), or point "
              f"tsctl at it with --url or {ENV_URL}.")

EPILOG = """\
exit codes: 0 ok · 1 the server refused the request (its message is on stderr) ·
2 wrong command line · 3 server unreachable · 4 run --wait: the run did not succeed ·
5 run --wait: still running when --wait-timeout ran out
"""


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand takes, before or after its name. The subcommands'
    copies default to SUPPRESS, so that they never overwrite what came before the name."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and output")
    keep = argparse.SUPPRESS
    g.add_argument("--url", default=os.environ.get(ENV_URL) or DEFAULT_URL if defaults else keep,
                   help=f"the server's address (env {ENV_URL}; default {DEFAULT_URL})")
    g.add_argument("--token", default=os.environ.get(ENV_TOKEN) if defaults else keep,
                   help=f"the server's bearer token (env {ENV_TOKEN})")
    g.add_argument("--json", action="store_true", default=False if defaults else keep,
                   help="print the server's raw JSON response")
    g.add_argument("--no-color", action="store_true", default=False if defaults else keep,
                   help="no colour even on a terminal (so does NO_COLOR=1)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsctl", parents=[_common(True)], epilog=EPILOG,
        description="Drive a Task Scheduler Server from the command line.")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    common = [_common(False)]

    def add(name: str, handler, help_text: str, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text, **kwargs)
        p.set_defaults(handler=handler, subparser=p)
        return p

    add("list", commands.list_tasks, "list the tasks")
    p = add("get", commands.get, "show a task and its recent runs")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--limit", type=int, default=10, help="runs to show (default %(default)s)")
    p = add("create", commands.create, "schedule a new task")
    p.add_argument("task_id", metavar="ID")
    add_task_options(p, creating=True)
    p = add("update", commands.update, "change a task (only the options given)")
    p.add_argument("task_id", metavar="ID")
    add_task_options(p, creating=False)
    for name, text in (("remove", "delete a task and its runs"),
                       ("pause", "stop a task from firing (it keeps its place)"),
                       ("resume", "let a paused task fire again")):
        add(name, commands.simple(name), text).add_argument("task_id", metavar="ID")
    p = add("run", commands.run, "run a task now (also while the scheduler is stopped)")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="wait for the run to end; exit 0 only "
                                                       "if it succeeded")
    p.add_argument("--wait-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up waiting after this long (default %(default)g)")
    p = add("runs", commands.runs, "list recent runs, newest first (or follow new ones)")
    p.add_argument("task_id", metavar="ID", nargs="?", help="only this task's runs")
    p.add_argument("--limit", type=int, default=20, help="how many (default %(default)s, at "
                                                         "most 1000)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing runs as they finish (one line each) until Ctrl-C")
    p.add_argument("--count", type=int, metavar="N", help="with --follow: stop after N runs")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                   help="with --follow: how often to ask (default %(default)g)")
    p = add("output", commands.output, "print a run's stdout (to stdout) and stderr (to stderr)")
    p.add_argument("run_id", metavar="RUN_ID", type=int)
    add("status", commands.status, "the scheduler, the workers, isolation and the policy")
    p = add("validate", commands.validate, "check a schedule and show its next run times")
    p.add_argument("interval", nargs="+", metavar="SCHEDULE", help="e.g. 'daily at 2:00'")
    p.add_argument("--timezone", metavar="ZONE", help="IANA zone of a clock schedule")
    p.add_argument("--jitter", type=number, metavar="SECONDS",
                   help="check a jitter bound against the schedule")
    add("start", commands.simple("start"), "start dispatching scheduled runs")
    add("stop", commands.simple("stop"), "stop dispatching (running jobs finish)")
    return parser


def main(argv: list[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subcommand == "runs" and args.count is not None and not args.follow:
        parser.error("--count goes with --follow")
    if urlsplit(args.url).scheme not in ("http", "https") or not urlsplit(args.url).netloc:
        parser.error(f"--url must look like {DEFAULT_URL}, got {args.url!r}")
    client = Client(url=args.url, token=args.token or None)
    ctx = commands.Context(client=client, out=out, err=err, as_json=args.json,
                           style=render.Style(render.wants_colour(out, args.no_color)))
    try:
        return int(args.handler(ctx, args))
    except UsageError as exc:
        args.subparser.print_usage(err)
        err.write(f"tsctl {args.subcommand}: error: {exc}\n")
        return ExitCode.USAGE
    except Unreachable as exc:
        err.write(f"tsctl: {exc.message}\n{START_HINT}\n")
        return ExitCode.UNREACHABLE
    except ServerRefused as exc:
        code = f" ({exc.code})" if exc.code else ""
        err.write(f"tsctl: {exc.message}{code}\n")
        if exc.status == 401:
            err.write(f"tsctl: give the server's token with --token or {ENV_TOKEN}\n")
        return ExitCode.REFUSED
    except ClientError as exc:
        err.write(f"tsctl: {exc.message}\n")
        return ExitCode.REFUSED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`tsctl runs | head`): nothing left to say to it, and the
        # interpreter's final flush must not fail on the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
