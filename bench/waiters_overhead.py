"""Callbacks per second with 1,000 long polls waiting, against the same without (issue 18:
"within 10%"). Runs wrk's callback load on one `receiver serve` (SQLite): a warm-up, then
without and with waiters in turn, ending without; the means of the runs with and without are
compared, in callbacks per second and in the server's CPU time per callback (the steadier
measure on a shared machine).

    python bench/waiters_overhead.py [--seconds 8] [--waiters 1000]

Not part of bench/run.py; it reuses bench/harness.py's server, signing and wrk plumbing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness  # bench/harness.py: this script's directory is on sys.path when run
import httpx


def hold_waiters(base_url: str, count: int, ready: threading.Event, stop: threading.Event) -> None:
    """`count` long polls (wait=60s) on registered messages that never change, each made
    again when it ends, until `stop`."""

    async def main() -> None:
        sids = [f"SMwait{i:026d}" for i in range(count)]
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
        async with httpx.AsyncClient(base_url=base_url, timeout=90, limits=limits) as client:
            for start in range(0, count, 1000):
                batch = [
                    {"provider": "twilio", "message_id": s} for s in sids[start : start + 1000]
                ]
                (await client.post("/v1/messages", json={"messages": batch})).raise_for_status()

            async def wait_on(sid: str) -> None:
                while not stop.is_set():
                    await client.get(f"/v1/messages/{sid}", params={"wait": "60s"})

            tasks = [asyncio.create_task(wait_on(sid)) for sid in sids]
            for _ in range(600):  # until the server's gauge says they all wait (bounded)
                metrics = (await client.get("/metrics")).text
                if f"receiver_waiting_requests {float(count)}" in metrics:
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("the waiters did not all get in line")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (Linux /proc), user and system: what a callback costs the
    server, which the load of other processes on a shared machine hardly changes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="runs with waiters")
    args = parser.parse_args()
    wrk = harness.find_wrk()
    load = harness.Load(connections=args.connections)
    with tempfile.TemporaryDirectory(prefix="waiters-bench-") as tmp:
        work = Path(tmp)
        port = harness.free_port()
        host = f"127.0.0.1:{port}"
        url = f"http://{host}{harness.PATH}"
        env = harness.receiver_env(
            work / "receiver.db", RECEIVER_LOG_LEVEL="warning", RECEIVER_POLLING="off"
        )
        proc = harness.start(harness.receiver_command(port), env, port, work / "serve.log")
        try:
            results: dict[str, list[float]] = {"without": [], "with": []}
            cpu: dict[str, list[float]] = {"without": [], "with": []}
            # A warm-up first (not counted), then without and with in turn, so a machine
            # whose load drifts (a shared one) weighs on both alike.
            modes = ["warm-up"] + ["without", "with"] * args.rounds + ["without"]
            for n, mode in enumerate(modes):
                callbacks = work / f"callbacks-{n}.tsv"
                # More than a run can send: each callback is sent once.
                harness.generate(callbacks, 6000 * args.seconds, url, tag=f"b{n}")
                stop, ready = threading.Event(), threading.Event()
                holder = None
                if mode == "with":
                    holder = threading.Thread(
                        target=hold_waiters,
                        args=(f"http://{host}", args.waiters, ready, stop),
                        daemon=True,
                    )
                    holder.start()
                    if not ready.wait(120):
                        sys.exit("waiters not ready within 120 s")
                used = cpu_seconds(proc.pid)
                result = harness.run_callbacks(
                    wrk, f"{mode}-{n}", port, callbacks, host, load, args.seconds
                )
                per_callback = (cpu_seconds(proc.pid) - used) / max(result.requests, 1) * 1e6
                stop.set()
                if holder is not None:
                    holder.join(timeout=120)
                print(
                    f"{mode:8} waiters: {per_callback:5.0f} µs CPU/callback  "
                    f"{harness.describe(result)}",
                    flush=True,
                )
                if mode != "warm-up":
                    results[mode].append(result.rps)
                    cpu[mode].append(per_callback)
                time.sleep(1)
        finally:
            harness.stop(proc)
    without = statistics.mean(results["without"])
    with_ = statistics.mean(results["with"])
    change = (with_ - without) / without * 100
    print(
        f"with {args.waiters} waiters: {with_:,.0f} callbacks/s; without: {without:,.0f} "
        f"(means of {len(results['with'])} and {len(results['without'])} runs); {change:+.1f}%"
    )
    cpu_with, cpu_without = statistics.mean(cpu["with"]), statistics.mean(cpu["without"])
    cpu_change = (cpu_with - cpu_without) / cpu_without * 100
    print(
        f"server CPU per callback: {cpu_with:.0f} µs with waiters, {cpu_without:.0f} µs "
        f"without; {cpu_change:+.1f}%"
    )
    print(harness.verdict(change > -10, "within 10% of the callback rate without waiters"))
    print(harness.verdict(cpu_change < 10, "within 10% of the CPU per callback without waiters"))


if __name__ == "__main__":
    main()
