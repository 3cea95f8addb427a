"""One function per tsctl subcommand: parsed arguments in, an exit code out.

Each sends one action (``run --wait`` and ``runs --follow`` poll) and prints either the
raw response (``--json``) or a table. Errors propagate as :mod:`api.tsctl.client` errors;
:mod:`api.tsctl.cli` turns them into messages and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from . import render
from .client import Client, ServerRefused
from .exitcodes import ExitCode
from .taskargs import spec_fields

MAX_WAIT_PER_REQUEST = 300  # the largest wait_seconds the server accepts
POLL_SECONDS = 0.5
CURSOR_BATCH = 1000
NEWEST_BATCH = 100  # without the cursor: runs fetched per poll


@dataclass
class Context:
    """What a command works with: the client, the output streams and how to print."""

    client: Client
    out: TextIO
    err: TextIO
    style: render.Style
    as_json: bool

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def dump(self, obj: Any, *, indent: int | None = 2) -> None:
        self.print(json.dumps(obj, indent=indent, ensure_ascii=False))

    def show(self, response: dict[str, Any], text: str) -> int:
        if self.as_json:
            self.dump(response)
        else:
            self.print(text)
        return ExitCode.OK


def _with_next_run(response: dict[str, Any]) -> str:
    message = response.get("message", "")
    if "next_run" in response:
        next_run = render.local_time(response.get("next_run"), response.get("next_run_at"))
        message += f"\nnext run: {next_run}"
    return message


def list_tasks(ctx: Context, args: argparse.Namespace) -> int:
    response = ctx.client.post("list")
    return ctx.show(response, render.tasks_table(response.get("tasks", []), ctx.style))


def get(ctx: Context, args: argparse.Namespace) -> int:
    response = ctx.client.post("get", task_id=args.task_id, limit=args.limit)
    text = (render.task_block(response.get("task", {}), ctx.style) + "\n\n"
            + render.runs_table(response.get("runs", []), ctx.style))
    return ctx.show(response, text)


def create(ctx: Context, args: argparse.Namespace) -> int:
    fields = spec_fields(args, creating=True)
    response = ctx.client.post("create", task_id=args.task_id, **fields)
    return ctx.show(response, _with_next_run(response))


def update(ctx: Context, args: argparse.Namespace) -> int:
    fields = spec_fields(args, creating=False)
    response = ctx.client.post("update", task_id=args.task_id, **fields)
    return ctx.show(response, _with_next_run(response))


def simple(action: str):
    """A command that sends ``action`` (with ``task_id`` when it has one) and prints the
    server's message: remove, pause, resume, start, stop."""
    def command(ctx: Context, args: argparse.Namespace) -> int:
        response = ctx.client.post(action, task_id=getattr(args, "task_id", None))
        return ctx.show(response, _with_next_run(response))
    return command


def status(ctx: Context, args: argparse.Namespace) -> int:
    response = ctx.client.post("status")
    return ctx.show(response, render.status_block(response, ctx.style))


def validate(ctx: Context, args: argparse.Namespace) -> int:
    response = ctx.client.post("validate", interval=" ".join(args.interval),
                               timezone=args.timezone, jitter=args.jitter)
    lines = [f"{response.get('interval')}"]
    if response.get("description"):
        lines[0] += f"  ({response['description']})"
    if response.get("timezone"):
        lines.append(f"time zone: {response['timezone']}")
    times = response.get("next_runs_at") or [None] * len(response.get("next_runs", []))
    lines += ["next runs:"] + [f"  {render.local_time(t, iso)}"
                               for t, iso in zip(response.get("next_runs", []), times)]
    return ctx.show(response, "\n".join(lines))


def output(ctx: Context, args: argparse.Namespace) -> int:
    response = ctx.client.post("output", run_id=args.run_id)
    if ctx.as_json:
        ctx.dump(response)
        return ExitCode.OK
    run = response.get("run", {})
    ctx.out.write(run.get("stdout") or "")
    ctx.out.flush()
    ctx.err.write(run.get("stderr") or "")
    if run.get("truncated"):
        ctx.err.write("\ntsctl: the output was over the policy's cap; the server kept its "
                      "head and tail\n")
    ctx.err.flush()
    return ExitCode.OK


def run(ctx: Context, args: argparse.Namespace) -> int:
    if not args.wait:
        response = ctx.client.post("run", task_id=args.task_id)
        return ctx.show(response, response.get("message", ""))
    deadline = time.monotonic() + args.wait_timeout
    response = _run_waiting(ctx.client, args.task_id, min(args.wait_timeout, MAX_WAIT_PER_REQUEST))
    record = response.get("run")
    if not _final(record):
        record = _poll_output(ctx.client, response["run_id"], deadline)
    if record is None:
        ctx.err.write(f"tsctl: run {response['run_id']} has not finished after "
                      f"{args.wait_timeout:g} s; see `tsctl output {response['run_id']}` later\n")
        return ExitCode.WAIT_TIMEOUT
    response["run"] = record
    ctx.show(response, render.runs_table([record], ctx.style))
    return ExitCode.OK if record.get("status") == "succeeded" else ExitCode.RUN_NOT_SUCCEEDED


def _final(record: dict[str, Any] | None) -> bool:
    return bool(record) and record.get("status") in render.FINAL_STATUSES


def _run_waiting(client: Client, task_id: str, wait: float) -> dict[str, Any]:
    """``run`` with ``wait_seconds``; a server that does not know the option refuses it
    before running anything, and then the run is started without it."""
    try:
        return client.post_waiting("run", wait, task_id=task_id, wait_seconds=int(wait))
    except ServerRefused as exc:
        if exc.status != 400 or exc.field != "wait_seconds":
            raise
    return client.post("run", task_id=task_id)


def _poll_output(client: Client, run_id: int, deadline: float) -> dict[str, Any] | None:
    while True:
        record = client.post("output", run_id=run_id).get("run")
        if _final(record):
            return record
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def runs(ctx: Context, args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(ctx, args)
    response = ctx.client.post("runs", task_id=args.task_id, limit=args.limit)
    return ctx.show(response, render.runs_table(response.get("runs", []), ctx.style))


class _Stream:
    """Prints each run once, when it has a final status, oldest first.

    ``cursor`` is the largest run id looked at; ids in ``pending`` were seen queued or
    running and are printed when they finish."""

    def __init__(self, ctx: Context, count: int | None):
        self.ctx, self.left = ctx, count
        self.cursor = 0
        self.pending: set[int] = set()

    def take(self, records: list[dict[str, Any]]) -> bool:
        """Handle a batch; False once ``count`` runs have been printed."""
        for record in sorted(records, key=lambda r: r["run_id"]):
            run_id = record["run_id"]
            if run_id <= self.cursor and run_id not in self.pending:
                continue
            self.cursor = max(self.cursor, run_id)
            if not _final(record):
                self.pending.add(run_id)
                continue
            self.pending.discard(run_id)
            if self.ctx.as_json:
                self.ctx.dump(record, indent=None)
            else:
                self.ctx.print(render.run_line(record, self.ctx.style))
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    return False
        return True

    def after(self) -> int:
        return min(self.pending) - 1 if self.pending else self.cursor


def _follow(ctx: Context, args: argparse.Namespace) -> int:
    """``runs --follow``: the last ``--limit`` runs, then each new one as it finishes.
    Uses the server's ``after_run_id`` cursor; a server without it is polled for its
    newest runs instead (runs still pending are then looked up one by one)."""
    client, task_id = ctx.client, args.task_id
    stream = _Stream(ctx, args.count)
    use_cursor = True
    try:
        if not stream.take(client.post("runs", task_id=task_id, limit=args.limit)["runs"]):
            return ExitCode.OK
        while True:
            time.sleep(args.poll)
            if use_cursor:
                try:
                    batch = client.post("runs", task_id=task_id, after_run_id=stream.after(),
                                        limit=CURSOR_BATCH)["runs"]
                except ServerRefused as exc:
                    if exc.status != 400 or exc.field != "after_run_id":
                        raise
                    use_cursor = False
                    continue
            else:
                batch = _newest(client, task_id, stream.pending)
            if not stream.take(batch):
                return ExitCode.OK
    except KeyboardInterrupt:
        return ExitCode.OK


def _newest(client: Client, task_id: str | None, pending: set[int]) -> list[dict[str, Any]]:
    batch = client.post("runs", task_id=task_id, limit=NEWEST_BATCH)["runs"]
    missing = pending - {r["run_id"] for r in batch}
    for run_id in sorted(missing):
        try:
            batch.append(client.post("output", run_id=run_id)["run"])
        except ServerRefused as exc:
            if exc.status != 404:
                raise
            pending.discard(run_id)  # pruned by the history bound meanwhile
    return batch
