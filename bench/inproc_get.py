"""The event loop's CPU per `GET /v1/messages/{id}` with no HTTP server: the app called in-process.

The read-path twin of bench/inproc.py: it fills a SQLite file with --messages messages
(bench/fill.py, two 250-byte events each, as `bench/run.py --get-messages` does), drives
`create_app()` as uvicorn would (the ASGI scope, receive and send of a GET for a random stored
message), --concurrency requests at a time, and prints CPU microseconds per GET of the loop's
thread (and of the whole process). No socket, no HTTP parsing: the app's own work, the part a
change to the read path moves. `--db FILE` keeps the filled file to reuse (it is filled only
if missing); `--profile FILE` writes a cProfile of the measured part.

    .venv/bin/python bench/inproc_get.py --messages 100000 --db /tmp/get-100k.db
    .venv/bin/python bench/inproc_get.py --db /tmp/get-100k.db --profile /tmp/get.prof
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fill
from harness import receiver_env
from inproc import measured, run_quiet
from scale import BACKLOG_AGE

from receiver.app import create_app
from receiver.settings import Settings


def scope(path: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
        "state": state.copy(),
    }


async def drive(
    app: Any, state: dict[str, Any], sids: list[str], concurrency: int, bodies: list[bytes]
) -> int:
    """GET each of `sids`, `concurrency` at a time; the count of 200s. The first few bodies
    are kept in `bodies` for a check."""
    ok = 0
    queue = iter(sids)

    async def worker() -> None:
        nonlocal ok
        for sid in queue:
            status = 0

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif len(bodies) < 3 and message.get("body"):
                    bodies.append(message["body"])

            await app(scope(f"/v1/messages/{sid}", state), receive, send)
            if status == 200:
                ok += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def main_async(args: argparse.Namespace, path: Path) -> int:
    app = create_app(Settings.from_env(receiver_env(path, RECEIVER_RETENTION_DAYS="0")))
    rng = random.Random(args.seed)
    n = args.messages

    def sids(count: int) -> list[str]:
        return [fill.sid_for(rng.randrange(n)) for _ in range(count)]

    warm, load = sids(args.warmup), sids(args.count)
    bodies: list[bytes] = []
    async with app.router.lifespan_context(app) as state:
        await drive(app, state, warm, args.concurrency, bodies)
        with measured(args.profile) as took:
            ok = await drive(app, state, load, args.concurrency, [])
    if json.loads(bodies[0]).get("message_id") not in warm:
        print(f"unexpected answer: {bodies[0]!r}", file=sys.__stdout__)
        return 1
    print(
        f"{args.count} GETs ({ok} 200) at {n:,} messages, {args.concurrency} at a time: "
        f"{args.count / took.wall:,.0f}/s; "
        f"loop thread {took.thread / args.count * 1e6:.0f} us, "
        f"process {took.process / args.count * 1e6:.0f} us of CPU per GET",
        file=sys.__stdout__,
    )
    return 0 if ok == args.count else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages to fill")
    parser.add_argument("--db", metavar="FILE", help="the filled file, kept (filled if missing)")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="receiver-inproc-get-") as name:
        path = Path(args.db) if args.db else Path(name) / "get.db"
        if not path.exists():
            tpl = fill.template(Path(name))
            seconds = fill.fill(path, args.messages, datetime.now(UTC) - BACKLOG_AGE, tpl)
            print(f"filled {args.messages:,} messages in {seconds:.1f} s")
        return run_quiet(main_async(args, path))


if __name__ == "__main__":
    sys.exit(main())
