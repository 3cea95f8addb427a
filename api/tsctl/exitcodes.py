"""tsctl's exit codes, for scripts (the README has the same table)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1              # the server answered with an error; its message is on stderr
    USAGE = 2                # the command line was wrong (argparse's own code)
    UNREACHABLE = 3          # no answer from the server (not running, wrong URL, too slow)
    RUN_NOT_SUCCEEDED = 4    # run --wait: the run ended, but not with status succeeded
    WAIT_TIMEOUT = 5         # run --wait: the run was still going when --wait-timeout ran out
