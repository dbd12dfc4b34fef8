"""The event loop's CPU per callback with no HTTP server: the app called in-process.

A figure a busy machine moves little: it drives `create_app()` as uvicorn would (the ASGI
scope, receive and send of a signed Twilio callback), --concurrency requests at a time so
group commit batches as under load, on a fresh SQLite file, and prints CPU microseconds per
callback of the loop's thread (and of the whole process). No socket, no HTTP parsing: what
it measures is the app's own work, the part a change to the app moves. `--profile FILE`
writes a cProfile of the measured part (read it with `python -m pstats FILE`).

    .venv/bin/python bench/inproc.py --count 20000
    .venv/bin/python bench/inproc.py --count 5000 --profile /tmp/inproc.prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from harness import PATH, STATUSES, receiver_env, sign, twilio_params

from receiver.app import create_app
from receiver.logging import configure_logging
from receiver.settings import Settings

HOST = "127.0.0.1:8000"


def callbacks(count: int, tag: str) -> list[tuple[list[tuple[bytes, bytes]], bytes]]:
    """Each callback's headers and body, as bench/callbacks.lua sends them."""
    url = f"http://{HOST}{PATH}"
    found = []
    for i in range(count):
        sid = f"SM{tag}{i:031d}"
        params = twilio_params(sid, STATUSES[i % len(STATUSES)], f"+1555{i % 10_000_000:07d}")
        body = urlencode(params).encode()
        headers = [
            (b"host", HOST.encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"user-agent", b"TwilioProxy/1.1"),
            (b"i-twilio-idempotency-token", f"tok{tag}{i:029d}".encode()),
            (b"x-twilio-signature", sign(url, params).encode()),
            (b"x-request-id", sid.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        found.append((headers, body))
    return found


@dataclass
class Measured:
    """CPU and wall seconds of a measured part (filled in when its block ends)."""

    process: float = 0.0
    thread: float = 0.0
    wall: float = 0.0


@contextlib.contextmanager
def measured(profile_path: str | None) -> Iterator[Measured]:
    """Time the block (the process's and this thread's CPU, and the wall clock), with a
    cProfile of it written to `profile_path` if given."""
    found = Measured()
    profile = cProfile.Profile() if profile_path else None
    cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        yield found
    finally:
        if profile is not None:
            profile.disable()
        found.process = time.process_time() - cpu
        found.thread = time.thread_time() - thread
        found.wall = time.perf_counter() - wall
        if profile is not None and profile_path:
            profile.dump_stats(profile_path)


async def drive(app: Any, state: dict[str, Any], load: list[Any], concurrency: int) -> int:
    """Send every callback of `load`, `concurrency` at a time; the count of 2xx."""
    ok = 0
    queue = iter(load)

    async def worker() -> None:
        nonlocal ok
        for headers, body in queue:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 40000),
                "scheme": "http",
                "method": "POST",
                "root_path": "",
                "path": PATH,
                "raw_path": PATH.encode(),
                "query_string": b"",
                "headers": headers,
                "state": state.copy(),
            }
            sent = False

            async def receive(body: bytes = body) -> dict[str, Any]:
                nonlocal sent
                if sent:
                    await asyncio.Future()  # a disconnect never comes here
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            status = 0

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await app(scope, receive, send)
            if 200 <= status < 300:
                ok += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="receiver-inproc-") as name:
        env = receiver_env(Path(name) / "receiver.db")
        settings = Settings.from_env(env)
        app = create_app(settings)
        # --pool builds more callbacks than are sent, so two runs of different --count share
        # the same start-up (bench/instructions.py counts their difference).
        warm = callbacks(args.warmup, "0")
        load = callbacks(max(args.count, args.pool), "1")[: args.count]
        async with app.router.lifespan_context(app) as state:
            await drive(app, state, warm, args.concurrency)
            batches = state["store"].write_stats
            with measured(args.profile) as took:
                ok = await drive(app, state, load, args.concurrency)
            batches = [b - a for a, b in zip(batches, state["store"].write_stats, strict=True)]
    print(
        f"{args.count} callbacks ({ok} 2xx), {args.concurrency} at a time: "
        f"{args.count / took.wall:,.0f}/s; "
        f"loop thread {took.thread / args.count * 1e6:.0f} us, "
        f"process {took.process / args.count * 1e6:.0f} us of CPU per callback; "
        f"{batches[1] / max(batches[0], 1):.1f} jobs per commit",
        file=sys.__stdout__,
    )
    return 0 if ok == args.count else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool", type=int, default=0, help="callbacks built (at least --count)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured part")
    return run_quiet(main_async(parser.parse_args()))


def run_quiet(main: Coroutine[Any, Any, int]) -> int:
    """Run an in-process bench's `main` as the service runs: on uvloop where it installs, with
    the JSON log lines written, as in production, but to nowhere."""
    sys.stdout = io.TextIOWrapper(open(os.devnull, "wb"), write_through=True)  # noqa: SIM115
    configure_logging("info", "json")
    try:
        import uvloop

        return uvloop.run(main)
    except ImportError:
        return asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())
