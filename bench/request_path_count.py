"""The request path's instructions per callback, for valgrind: a fixed start-up, then N callbacks.

`bench/request_path.py` builds a new signed callback per request, so the cost of building
them grows with N as the app's does. Here a fixed pool of `--pool` callbacks is built at
start and sent over and over (the store is answered at once, so a repeated message is no
different), so the difference between a run of N and one of 2N is the app's cost of N:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/request_path_count.py --count 2000 2>&1 >/dev/null | grep Collected
    (the same with --count 4000; the difference over 2000 is the instructions per callback)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from itertools import cycle, islice
from pathlib import Path

from harness import receiver_env
from inproc import callbacks, drive, run_quiet
from request_path import recorded_at_once

from receiver.app import create_app
from receiver.settings import Settings


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="receiver-request-") as name:
        settings = Settings.from_env(receiver_env(Path(name) / "receiver.db"))
        app = create_app(settings)
        pool = callbacks(args.pool, "1")
        async with app.router.lifespan_context(app) as state:
            state["store"].record = recorded_at_once
            await drive(app, state, pool, args.concurrency)
            load = list(islice(cycle(pool), args.count))
            ok = await drive(app, state, load, args.concurrency)
    print(f"{ok} of {args.count} callbacks got a 2xx", file=sys.__stdout__)
    return 0 if ok == args.count else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    return run_quiet(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
