"""Campaign scale (issue 22): a million-recipient me-sms send, and a million registrations.

    python bench/campaign.py send [--recipients 1000000] [--rate 20]
        A `receiver serve` (SQLite file, polling on) tracks a send registered by its uuid alone
        against a fake recipients endpoint (tests/mesms_fake.py, paged by `after` and
        `nextCursor`, every recipient delivered). Quoted: the time from registration to the
        last recipient's final status, the page requests (one per 1,000 recipients is the
        target, within 5%), the server's peak RSS (sampled from /proc every 0.5 s; the target
        is under 150 MB), and GET /v1/sends/{uuid} latency at the end (target: under 50 ms).

    python bench/campaign.py register [--messages 1000000] [--clients 4]
        Registers Twilio messages in batches of 1,000 (POST /v1/messages) from `--clients`
        threads while one more thread posts signed status callbacks for messages already
        registered. Quoted: the time for all of them (target: under 2 minutes), µs per
        registration, and how many callbacks were answered 200 meanwhile.

Both exit non-zero when a target is missed. Numbers depend on the machine: say what else ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid as uuids
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import (  # noqa: E402
    free_port,
    receiver_command,
    receiver_env,
    sign,
    start,
    stop,
    twilio_params,
)
from mesms_fake import API_KEY, FakeMeSms, FakeSend  # noqa: E402

MAX_RSS_MB = 150.0
MAX_SUMMARY_MS = 50.0
MAX_REGISTER_S = 120.0
PAGE = 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve_fake(fake: FakeMeSms) -> tuple[uvicorn.Server, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), port=port, log_level="warning", access_log=False)
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            sys.exit("the fake recipients endpoint did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def bench_send(args: argparse.Namespace, tmp: Path) -> list[str]:
    fake = FakeMeSms()
    uuid = str(uuids.uuid4())
    fake.sends[uuid] = FakeSend(args.recipients)
    fake_server, api_base = serve_fake(fake)
    port = free_port()
    env = receiver_env(
        tmp / "campaign.db",
        RECEIVER_LOG_LEVEL="warning",
        RECEIVER_POLLING="1",
        RECEIVER_DLR_GRACE="0.1s",
        RECEIVER_POLL_INTERVAL="0.5s",
        MESMS_API_BASE=api_base,
        MESMS_API_KEY=API_KEY,
        MESMS_POLL_RATE=str(args.rate),
    )
    proc = start(receiver_command(port), env, port, tmp / "send.log")
    base = f"http://127.0.0.1:{port}"
    peak, found = rss_mb(proc.pid), {}
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            started = time.monotonic()
            answer = client.post("/v1/messages", json={"provider": "mesms", "message_id": uuid})
            assert answer.status_code == 201, answer.text
            deadline = started + args.timeout
            last_report = started
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(proc.pid))
                found = client.get(f"/v1/sends/{uuid}").json()
                if found.get("state") == "settled":
                    break
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    print(
                        f"  {time.monotonic() - started:5.0f} s: {found['final']:,} final, "
                        f"{fake.pages(uuid)} pages, RSS {peak:.0f} MB",
                        flush=True,
                    )
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            latencies = []
            for _ in range(21):
                t = time.perf_counter()
                client.get(f"/v1/sends/{uuid}").raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
            peak = max(peak, rss_mb(proc.pid))
    finally:
        stop(proc)
        fake_server.should_exit = True
    size = sum(f.stat().st_size for f in tmp.glob("campaign.db*"))
    pages = fake.pages(uuid)
    expected = args.recipients / PAGE
    final = found.get("final", 0)
    median = statistics.median(latencies)
    floor = args.recipients / PAGE / args.rate
    return [
        f"send of {args.recipients:,} recipients at MESMS_POLL_RATE={args.rate}/s "
        f"(the rate alone allows {floor:.0f} s): settled in {elapsed:.0f} s",
        verdict(final == args.recipients, f"{final:,} of {args.recipients:,} recipients final"),
        f"database: {size / 1e6:.0f} MB ({size / max(final, 1):.0f} bytes per recipient)",
        verdict(
            abs(pages - expected) <= 0.05 * expected,
            f"{pages} page requests (one per {PAGE:,}: {expected:.0f}; cursor 0 asked "
            f"{fake.requests[(uuid, 0)]} time(s))",
        ),
        verdict(peak < MAX_RSS_MB, f"server peak RSS {peak:.0f} MB (target < {MAX_RSS_MB:.0f})"),
        verdict(
            median < MAX_SUMMARY_MS,
            f"GET /v1/sends/{{uuid}}: median {median:.1f} ms, max {max(latencies):.1f} ms "
            f"(target < {MAX_SUMMARY_MS:.0f} ms)",
        ),
    ]


def bench_register(args: argparse.Namespace, tmp: Path) -> list[str]:
    port = free_port()
    env = receiver_env(tmp / "register.db", RECEIVER_LOG_LEVEL="warning")
    proc = start(receiver_command(port), env, port, tmp / "register.log")
    base = f"http://127.0.0.1:{port}"
    batches = args.messages // PAGE
    next_batch = iter(range(batches))
    lock = threading.Lock()
    registered: list[str] = []  # a sid of each batch done, for the callbacks
    stop_callbacks = threading.Event()
    callbacks = {"ok": 0, "other": 0}
    failures: list[str] = []

    def register() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                with lock:
                    b = next(next_batch, None)
                if b is None:
                    return
                batch = [
                    {"provider": "twilio", "message_id": f"SM{b:08x}{i:024x}", "to": "+15558675310"}
                    for i in range(PAGE)
                ]
                response = client.post("/v1/messages", json={"messages": batch})
                if response.status_code != 200:
                    failures.append(f"batch {b}: {response.status_code} {response.text[:200]}")
                    return
                with lock:
                    registered.append(batch[0]["message_id"])

    def callback_flow() -> None:
        url = f"{base}/v1/webhook/twilio/sms-status"
        with httpx.Client(timeout=60) as client:
            while not stop_callbacks.is_set():
                with lock:
                    sid = registered[-1] if registered else None
                if sid is None:
                    time.sleep(0.05)
                    continue
                params = twilio_params(sid, "delivered", "+15558675310")
                response = client.post(
                    url,
                    data=params,
                    headers={"X-Twilio-Signature": sign(url, params)},
                )
                callbacks["ok" if response.is_success else "other"] += 1
                if not response.is_success and not failures:
                    failures.append(f"callback: {response.status_code} {response.text[:200]}")

    try:
        flow = threading.Thread(target=callback_flow, daemon=True)
        flow.start()
        started = time.monotonic()
        workers = [threading.Thread(target=register) for _ in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - started
        stop_callbacks.set()
        flow.join(timeout=60)
    finally:
        stop(proc)
    done = len(registered) * PAGE
    return [
        verdict(not failures, f"{done:,} of {args.messages:,} registered" + "".join(failures[:1])),
        verdict(
            elapsed < MAX_REGISTER_S,
            f"{done:,} Twilio messages in batches of {PAGE:,} from {args.clients} clients: "
            f"{elapsed:.0f} s ({elapsed / max(done, 1) * 1e6:.0f} µs per registration; "
            f"target < {MAX_REGISTER_S:.0f} s)",
        ),
        verdict(
            callbacks["ok"] > 0 and callbacks["other"] == 0,
            f"callbacks meanwhile: {callbacks['ok']:,} answered 2xx, {callbacks['other']} not",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    send = sub.add_parser("send", help="a million-recipient send, registration to final")
    send.add_argument("--recipients", type=int, default=1_000_000)
    send.add_argument("--rate", type=float, default=20.0, help="MESMS_POLL_RATE (pages/s)")
    send.add_argument("--timeout", type=float, default=3600.0)
    register = sub.add_parser("register", help="bulk registration while callbacks flow")
    register.add_argument("--messages", type=int, default=1_000_000)
    register.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="receiver-campaign-") as tmp:
        lines = (bench_send if args.mode == "send" else bench_register)(args, Path(tmp))
    for line in lines:
        print(line)
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
