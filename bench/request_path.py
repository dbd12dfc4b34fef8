"""The event loop's CPU per callback on the request path alone: the store's part taken out.

`bench/inproc.py` with the store's `record` answered at once (each event "applied", as the
store would say for a new message): what is left is Starlette, the middleware, the Twilio form
and signature, the log line and the answer, on one thread with nothing else running. Its
figure moves with a change to that path and little with the machine's load; it prints the best
of --rounds runs.

    .venv/bin/python bench/request_path.py --count 20000
    .venv/bin/python bench/request_path.py --count 10000 --profile /tmp/request.prof
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import receiver_env
from inproc import callbacks, drive, measured, run_quiet

from receiver.app import create_app
from receiver.engine import Outcome
from receiver.providers.base import StatusEvent
from receiver.settings import Settings
from receiver.store.base import Recorded


async def recorded_at_once(events: Sequence[StatusEvent]) -> list[Recorded]:
    """What the store answers for a new message's event, without the store; the request
    waits for the loop's next turn, as for a commit (and the turn's log lines go out)."""
    await asyncio.sleep(0)
    return [Recorded(ev, Outcome.APPLIED, None, ev.status, created=True) for ev in events]


async def main_async(args: argparse.Namespace) -> int:
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="receiver-request-") as name:
        settings = Settings.from_env(receiver_env(Path(name) / "receiver.db"))
        app = create_app(settings)
        warm, load = callbacks(args.warmup, "0"), callbacks(args.count, "1")
        async with app.router.lifespan_context(app) as state:
            state["store"].record = recorded_at_once
            await drive(app, state, warm, args.concurrency)
            for _ in range(args.rounds):
                with measured(args.profile) as took:
                    ok = await drive(app, state, load, args.concurrency)
                if ok != args.count:
                    print(f"only {ok} of {args.count} got a 2xx", file=sys.__stdout__)
                    return 1
                best = min(best, took.thread)
    print(
        f"{args.count} callbacks, {args.concurrency} at a time, store answered at once: "
        f"the loop thread's CPU per callback {best / args.count * 1e6:.1f} us "
        f"(best of {args.rounds})",
        file=sys.__stdout__,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the last round")
    return run_quiet(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
