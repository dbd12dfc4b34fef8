"""Measure the service's memory while it streams GET /v1/messages/export of many rows.

Seeds a fresh database with N messages, starts `receiver serve` as its own process, downloads
the whole export, and samples the server's resident memory (/proc/<pid>/status: VmRSS, and
VmHWM, the peak) before, during and after. Linux only.

    .venv/bin/python scripts/export_memory.py            # 1,000,000 rows
    .venv/bin/python scripts/export_memory.py --rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "receiver"


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def seed(database: Path, rows: int) -> None:
    """Messages shaped like real ones (Twilio SIDs, numbers, a little metadata), final."""
    subprocess.run(
        [str(BIN), "migrate"],
        env={**os.environ, "RECEIVER_DATABASE": str(database)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    now = "2026-11-25T10:00:00.000Z"
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "INSERT INTO messages (provider, message_id, account, status, provider_status, "
            "to_number, from_number, metadata, registered, is_final, final_via, created_at, "
            "updated_at, sent_at, final_at) VALUES ('twilio', ?, ?, 'delivered', 'delivered', ?, "
            "'+15017122661', ?, 1, 1, 'callback', ?, ?, ?, ?)",
            (
                (
                    f"SM{n:032x}",
                    "AC0123456789abcdef0123456789abcdef",
                    f"+1555{n % 10_000_000:07d}",
                    f'{{"order":{n}}}',
                    now,
                    now,
                    now,
                    now,
                )
                for n in range(rows)
            ),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(rows: int, samples: int = 20) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "receiver.db"
        started = time.perf_counter()
        seed(database, rows)
        seeded_s = time.perf_counter() - started
        port = free_port()
        env = {
            **os.environ,
            "RECEIVER_DATABASE": str(database),
            "PORT": str(port),
            "RECEIVER_LOG_LEVEL": "warning",
            "RECEIVER_RETENTION_DAYS": "0",
        }
        server = subprocess.Popen([str(BIN), "serve"], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(base + "/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            # Warm up the code paths (imports, first connections) with a small export.
            httpx.get(base + "/v1/messages/export", params={"status": "queued"}, timeout=30)
            before = memory_kib(server.pid)
            during: list[int] = []
            received = lines = 0
            every = max(1, rows // samples)
            next_sample = every
            started = time.perf_counter()
            with httpx.stream("GET", base + "/v1/messages/export", timeout=120) as response:
                response.raise_for_status()
                limit = response.headers["x-export-limit"]
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    lines += chunk.count(b"\n")  # "\r\n" may be split across chunks
                    if lines >= next_sample:
                        during.append(memory_kib(server.pid)["VmRSS"])
                        next_sample += every
            elapsed = time.perf_counter() - started
            after = memory_kib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return {
        "rows": lines - 1,  # less the header line
        "x_export_limit": int(limit),
        "bytes": received,
        "seconds": round(elapsed, 2),
        "rows_per_second": round((lines - 1) / elapsed),
        "seed_seconds": round(seeded_s, 1),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "rss_during_mib": [round(kib / 1024, 1) for kib in during],
        "rss_after_mib": round(after["VmRSS"] / 1024, 1),
        "peak_mib": round(after["VmHWM"] / 1024, 1),
        "growth_mib": round((max([*during, after["VmRSS"]]) - before["VmRSS"]) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.rows), indent=2))


if __name__ == "__main__":
    main()
