"""Run the benchmarks and print one table per benchmark (``make bench``, ``make bench-quick``).

    python -m bench.run [--quick] [--only lateness,throughput,api,idle,runpath,ontime] [--keep]

``--quick`` is the smoke test CI runs: small sizes, short windows, about a minute and a half; it
checks that every benchmark still works and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import api_load, common, idle, lateness, ontime, runpath, throughput  # noqa: E402

BENCHMARKS = {"lateness": lateness, "throughput": throughput, "api": api_load, "idle": idle,
              "runpath": runpath, "ontime": ontime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke mode: small and fast")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated subset of: %(default)s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    print(f"# Benchmarks{' (quick mode: smoke test, figures not meaningful)' if args.quick else ''}\n")
    print(f"Machine: {common.machine()}\n", flush=True)
    print(f"Code: {common.revision()}\n", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    failures, began = [], time.monotonic()
    try:
        for name in chosen:
            started = time.monotonic()
            print(f"running {name}...", flush=True)
            try:
                text = BENCHMARKS[name].run(tmp / name, args.quick)
            except Exception:  # one broken benchmark must not hide the others' tables
                traceback.print_exc()
                failures.append(name)
                continue
            print(f"\n{text}\n({name}: {time.monotonic() - started:.0f} s)\n", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"total: {time.monotonic() - began:.0f} s")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
