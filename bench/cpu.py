"""CPU per callback: the server process's CPU time (all its threads) per request served.

A figure that a busy shared machine moves far less than req/s: run it before and after a
change. Starts one server (`receiver` by default, or `ceiling`), loads it with wrk and
bench/callbacks.lua for --duration seconds after a warm-up, and prints req/s, p50/p99 and
microseconds of CPU (user + system, read from /proc) per request. With --py-spy FILE it
also records a py-spy profile of the measured run (py-spy must be on PATH or in the venv).

    .venv/bin/python bench/cpu.py --duration 8
    .venv/bin/python bench/cpu.py --py-spy /tmp/profile.txt
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    BENCH,
    Load,
    describe,
    find_wrk,
    free_port,
    generate,
    receiver_command,
    receiver_env,
    run_callbacks,
    start,
    stop,
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread: "main" (the event loop's), the others by thread id (Python
    does not name its threads to the system)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = "main" if task.name == str(pid) else f"tid {task.name}"
        found[name] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("receiver", "ceiling"), default="receiver")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate-cap", type=int, default=8000)
    parser.add_argument("--py-spy", metavar="FILE", help="record a py-spy profile (raw format)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    wrk = find_wrk()
    with tempfile.TemporaryDirectory(prefix="receiver-cpu-") as name:
        tmp = Path(name)
        port = free_port()
        host = f"127.0.0.1:{port}"
        url = f"http://{host}/v1/webhook/twilio/sms-status"
        warm, load_file = tmp / "warm.tsv", tmp / "load.tsv"
        generate(warm, args.warmup * args.rate_cap, url, "0")
        generate(load_file, args.duration * args.rate_cap, url, "1")
        database = tmp / "receiver.db"
        env = receiver_env(database, **dict(kv.split("=", 1) for kv in args.env))
        if args.server == "ceiling":
            command = [sys.executable, str(BENCH / "ceiling.py"), "--port", str(port)]
        else:
            command = receiver_command(port)
        proc = start(command, env, port, tmp / "server.log")
        load = Load(args.connections, 1)
        spy = None
        try:
            run_callbacks(wrk, "warm", port, warm, host, load, args.warmup)
            if args.py_spy:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen(
                    [
                        exe,
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--format",
                        "raw",
                        "--threads",
                        "--rate",
                        "200",
                        "--output",
                        args.py_spy,
                        "--duration",
                        str(args.duration),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            before, wall = cpu_seconds(proc.pid), time.monotonic()
            threads_before = thread_cpu(proc.pid)
            result = run_callbacks(wrk, args.server, port, load_file, host, load, args.duration)
            used, wall = cpu_seconds(proc.pid) - before, time.monotonic() - wall
            threads = {
                name: seconds - threads_before.get(name, 0.0)
                for name, seconds in thread_cpu(proc.pid).items()
            }
        finally:
            if spy is not None:
                spy.wait(timeout=60)
            stop(proc)
        print(describe(result))
        print(
            f"cpu: {used:.2f} s in {wall:.1f} s ({used / wall:.0%} of one core); "
            f"{used / result.requests * 1e6:.0f} us per request"
        )
        print(
            "per thread (us per request): "
            + ", ".join(
                f"{name} {seconds / result.requests * 1e6:.0f}"
                for name, seconds in sorted(threads.items(), key=lambda kv: -kv[1])
                if seconds > 0
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
