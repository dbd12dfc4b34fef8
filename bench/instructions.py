"""Instructions per request, counted by valgrind: a figure that no load on the machine moves.

Timings on a shared or loaded machine move by tens of percent from one run to the next; the
instructions a request executes do not. This runs one of the in-process benches twice under
`valgrind --tool=callgrind` (valgrind must be installed: `apt-get install valgrind`), with
the same start-up and N, then 2N requests, and prints the difference over N: the app's own
instructions per request (the Python interpreter, SQLite and the C libraries; not the
kernel's). Run it before and after a change, on the same machine.

    .venv/bin/python bench/instructions.py callback   # a signed Twilio callback, new message
    .venv/bin/python bench/instructions.py request    # the same, the store answering at once
    .venv/bin/python bench/instructions.py get        # GET /v1/messages/{id}, 20,000 stored

Each target is an in-process bench of this folder (inproc.py, request_path_count.py,
inproc_get.py): no socket and no HTTP parsing, which are uvicorn's, not the app's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def targets(n: int, db: str) -> dict[str, tuple[list[str], list[str]]]:
    """Each target's command lines for N and for 2N requests (after the script's path)."""
    pool = ["--pool", str(2 * n), "--warmup", "200"]
    get = ["--db", db, "--messages", "20000", "--warmup", "200"]
    return {
        "callback": (
            ["inproc.py", "--count", str(n), *pool],
            ["inproc.py", "--count", str(2 * n), *pool],
        ),
        "request": (
            ["request_path_count.py", "--count", str(n)],
            ["request_path_count.py", "--count", str(2 * n)],
        ),
        "get": (
            ["inproc_get.py", "--count", str(n), *get],
            ["inproc_get.py", "--count", str(2 * n), *get],
        ),
    }


def instructions(args: list[str]) -> int:
    """The instructions valgrind counted for one run of a bench script."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    run = subprocess.run(
        [*valgrind, sys.executable, str(BENCH / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"bench/{args[0]} failed under valgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["callback", "request", "get"])
    parser.add_argument("--count", type=int, default=1000, help="N (default 1,000)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian/Ubuntu: apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory(prefix="receiver-instructions-") as name:
        once, twice = targets(args.count, str(Path(name) / "get.db"))[args.target]
        if args.target == "get":
            instructions(once)  # fills the file first, so both counted runs only read it
        base, more = instructions(once), instructions(twice)
    print(
        f"{args.target}: {(more - base) / args.count / 1000:,.1f}k instructions per request "
        f"({args.count:,} more requests: {more - base:,} more instructions)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
