"""`receiver demo`: the provider simulator and the receiver together on loopback, a few hundred
messages with untidy callbacks, and a live summary until the receiver knows every final status.

Nothing here is special to the demo on the receiver's side: it runs as `receiver serve` would,
with polling timings in seconds instead of minutes, and the demo talks to it over its HTTP API
as an app would. The simulator's own record of each message is the yardstick at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from receiver.engine import Status, fold_parts, format_time
from receiver.settings import Settings
from receiver.simulator.client import SimulatorClient
from receiver.simulator.model import Realism, Timing

MAX_COUNT = 2000
PROVIDERS = ("twilio", "telecom23", "mesms")
# The endpoint the receiver polls for each provider, as the simulator counts its requests.
POLL_ENDPOINTS = {
    "twilio": "twilio.status",
    "telecom23": "telecom23.status",
    "mesms": "mesms.recipients",
}
# How untidy the callbacks are (per message; duplicate is per callback); delay is the seconds
# from a status change to its callback.
REALISM = Realism(
    drop_all=0.15,
    drop_final=0.15,
    late_sent=0.2,
    duplicate=0.1,
    reorder=0.2,
    delivered=0.85,
    delay=(0.0, 1.0),
)
# Seconds from sending to the carrier's 'sent', and from there to the final status (the
# simulator runs at real speed): some finals come later than the receiver's grace, so it asks
# before their callback arrives.
TIMING = Timing(sent_after=(0.2, 1.5), final_after=(0.5, 4.0))
# The receiver's polling, in seconds rather than production's minutes.
DLR_GRACE, BACKOFF, BACKOFF_MAX, MAX_AGE = 4, 1, 2, 60
WAVES, WAVE_GAP = 10, 0.2  # messages go out in waves, as an app's traffic would
# A quarter of 23 Telecom's messages are long texts sent as this many segments, each with its
# own id and its own fate; the app registers each as one multipart message (its parts).
MULTIPART_SHARE, SEGMENTS = 4, 3
TICK = 1.0  # seconds between summary lines


class DemoError(Exception):
    """The demo cannot go on; the message says why."""

    exit_code = 1


class DemoUsageError(DemoError):
    """An option the demo cannot run with (exit 2, as argparse's own errors)."""

    exit_code = 2


@dataclass(frozen=True)
class Options:
    count: int = 300
    seed: int = 0
    timeout: float = 120.0
    database: Path | None = None  # kept after the run; else a temporary file
    keep: bool = False  # after the run, serve on until interrupted (to open the dashboard)


Key = tuple[str, str]  # (provider, message id)
Rows = dict[Key, dict[str, Any]]  # the receiver's messages, as GET /v1/messages gives them


@dataclass
class Sent:
    """The messages sent so far, as the app knows them, of the `total` it will send."""

    total: int
    keys: list[Key] = field(default_factory=list)
    parts: dict[Key, list[str]] = field(default_factory=dict)  # a multipart message's parts


def run(options: Options) -> int:
    """Run the demo; 0 when every message ends final and as the simulator says."""
    if options.database is not None and options.database.exists():
        raise DemoUsageError(
            f"--database: {options.database} already exists; give a new path (the demo's "
            "messages would mix with the ones there)"
        )
    with tempfile.TemporaryDirectory(prefix="receiver-demo-") as tmp:
        database = options.database or Path(tmp) / "receiver.db"
        return _run(options, database)


def _run(options: Options, database: Path) -> int:
    from receiver.app import create_app
    from receiver.logging import configure_logging
    from receiver.simulator import SimConfig, create_simulator
    from receiver.store import StoreUnavailable, open_store

    sim_sock, receiver_sock = _listen(), _listen()
    sim_url, receiver_url = _url(sim_sock), _url(receiver_sock)
    api_token = secrets.token_urlsafe(24)
    settings = Settings.from_env(_receiver_env(receiver_sock, database, sim_url, api_token))
    configure_logging(settings.log_level, settings.log_format)
    try:
        open_store(settings).migrate()
    except StoreUnavailable as exc:
        raise DemoError(f"cannot open the database: {exc}") from None
    simulator = create_simulator(SimConfig(seed=options.seed, realism=REALISM, timing=TIMING))
    shares = _shares(options.count)
    _intro(options, shares, (sim_url, receiver_url), database)
    with (
        _serving([(simulator, sim_sock), (create_app(settings), receiver_sock)]),
        SimulatorClient(sim_url) as sim,
        httpx.Client(
            base_url=receiver_url, headers={"Authorization": f"Bearer {api_token}"}, timeout=30
        ) as receiver,
    ):
        sim.point_at_receiver(receiver_url, providers=PROVIDERS, api_token=api_token)
        code = _drive(options, shares, sim, receiver)
        if options.keep:
            _keep_serving(receiver_url, api_token)
        return code


def _keep_serving(receiver_url: str, api_token: str) -> None:
    """Serve on, the demo's data in place, until Ctrl-C or SIGTERM: a newcomer opens the
    dashboard (or queries the API) on it."""
    _say(f"receiver demo: still running: open {receiver_url}/dashboard and log in with the")
    _say(f"  API token {api_token}")
    _say(f"  (or: curl -H 'Authorization: Bearer {api_token}' {receiver_url}/v1/stats);")
    _say("  Ctrl-C stops it.")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("receiver demo: stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _receiver_env(
    sock: socket.socket, database: Path, sim_url: str, api_token: str
) -> dict[str, str]:
    """The receiver's whole environment: nothing of the user's (no real account is touched)."""
    from receiver.simulator import Accounts

    accounts = Accounts()
    return {
        "HOST": "127.0.0.1",
        "PORT": str(sock.getsockname()[1]),
        "RECEIVER_DATABASE": str(database),
        "RECEIVER_LOG_LEVEL": "warning",  # the terminal shows the summary, and any trouble
        "RECEIVER_API_TOKEN": api_token,
        "RECEIVER_SECRET_KEY": secrets.token_urlsafe(32),
        "RECEIVER_DLR_GRACE": f"{DLR_GRACE}s",
        "RECEIVER_POLL_BACKOFF": f"{BACKOFF}s",
        "RECEIVER_POLL_BACKOFF_MAX": f"{BACKOFF_MAX}s",
        "RECEIVER_POLL_MAX_AGE": f"{MAX_AGE}s",
        "RECEIVER_POLL_INTERVAL": "0.5s",
        "TWILIO_AUTH_TOKEN": accounts.twilio_auth_token,
        "TWILIO_ACCOUNT_SID": accounts.twilio_account_sid,
        "TWILIO_API_BASE": sim_url,
        "TELECOM23_API_KEY": accounts.telecom23_api_key,
        "TELECOM23_API_BASE": sim_url + "/api/v1",
        "MESMS_API_KEY": accounts.mesms_api_key,
        "MESMS_API_BASE": sim_url,
        # Faster than production's default of 5 a second, so a few hundred finish quickly.
        **{f"{p.upper()}_POLL_RATE": "50" for p in PROVIDERS},
    }


def _drive(
    options: Options, shares: dict[str, int], sim: SimulatorClient, receiver: httpx.Client
) -> int:
    """Send in waves, print a line a second until all is final or time is up, then the end."""
    sent = Sent(options.count)
    # No more waves than the largest share, so that no wave is empty (an empty batch is a 400).
    waves = _waves(shares, min(WAVES, max(shares.values())))
    start = time.monotonic()
    deadline = start + options.timeout
    next_wave, next_line = start, start + TICK
    _say(_LIVE_HEADER)
    while True:
        now = time.monotonic()
        if waves and now >= next_wave:
            _send_wave(sim, receiver, waves.pop(0), sent)
            next_wave += WAVE_GAP
        if now >= next_line:
            rows = _receiver_messages(receiver)
            _say(_live_line(now - start, sent, rows, sim.stats()))
            if not waves and all(rows.get(k, {}).get("final") for k in sent.keys):
                break
            if now >= deadline:
                return _report(options, now - start, sent, rows, sim)
            next_line += TICK
        time.sleep(max(0.0, min(next_wave if waves else next_line, next_line) - time.monotonic()))
    # The last callbacks (late or repeated ones) can no longer change a final status; they are
    # waited for, briefly, so the simulator's totals below are complete.
    _wait_idle(sim, min(deadline, time.monotonic() + 5))
    rows = _receiver_messages(receiver)
    return _report(options, time.monotonic() - start, sent, rows, sim)


def _wait_idle(sim: SimulatorClient, until: float) -> None:
    while time.monotonic() < until:
        stats = sim.stats()
        if stats["pending"] == 0 and stats["in_flight"] == 0:
            return
        time.sleep(0.1)


def _shares(count: int) -> dict[str, int]:
    return {
        p: count // len(PROVIDERS) + (i < count % len(PROVIDERS)) for i, p in enumerate(PROVIDERS)
    }


def _waves(shares: dict[str, int], waves: int) -> list[dict[str, int]]:
    """Each provider's share split as evenly as it goes into `waves` sends."""
    return [{p: n // waves + (w < n % waves) for p, n in shares.items()} for w in range(waves)]


def _send_wave(
    sim: SimulatorClient, receiver: httpx.Client, wave: dict[str, int], sent: Sent
) -> None:
    """Send through the simulated providers, then register the ids, as an app does."""
    registrations = []
    for provider, n in wave.items():
        if n == 0:
            continue
        sent_at = format_time(datetime.now(UTC))
        long = 0
        if provider == "telecom23":  # every MULTIPART_SHARE-th of its messages
            before = sum(1 for k in sent.keys if k[0] == provider)
            long = sum(1 for i in range(before, before + n) if i % MULTIPART_SHARE == 1)
        if long:
            registrations += _send_multipart(sim, provider, long, sent_at, sent)
            n -= long
            if n == 0:  # every message of this wave went out in segments
                continue
        numbers = [_number(provider, len(sent.keys) + i) for i in range(n)]
        # One me-sms send per wave: its recipients are polled in one sweep.
        per_send = n if provider == "mesms" else None
        ids = sim.create_messages(provider, n, to=numbers, per_send=per_send)
        for message_id, number in zip(ids, numbers, strict=True):
            registrations.append(
                {"provider": provider, "message_id": message_id, "to": number, "sent_at": sent_at}
            )
            sent.keys.append((provider, message_id))
    response = receiver.post("/v1/messages", json={"messages": registrations})
    if response.status_code != 200:
        raise DemoError(f"registering messages failed: {response.status_code} {response.text}")


def _send_multipart(
    sim: SimulatorClient, provider: str, n: int, sent_at: str, sent: Sent
) -> list[dict[str, Any]]:
    """`n` long texts, each sent as SEGMENTS segments; their registrations, one per text under
    the app's own id, with the segments' ids as its parts."""
    numbers = [_number(provider, len(sent.keys) + i) for i in range(n)]
    ids = sim.create_messages(provider, n, to=numbers, segments=SEGMENTS)
    registrations = []
    for i, number in enumerate(numbers):
        parts = ids[i * SEGMENTS : (i + 1) * SEGMENTS]
        key = (provider, f"long-{parts[0]}")
        registrations.append(
            {"provider": provider, "message_id": key[1], "parts": parts, "to": number}
            | {"sent_at": sent_at}
        )
        sent.keys.append(key)
        sent.parts[key] = parts
    return registrations


def _multipart_truth(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """What the simulator did to a multipart message's segments, as one message: the status
    the receiver folds its parts into (engine.fold_parts), and the untidiness of all."""
    folded = fold_parts([m["final"]["status"] for m in segments])
    dropped = {m["dropped"] for m in segments}
    return {
        "final": {"status": folded.value, "provider_status": None},
        "dropped": "all" if dropped == {"all"} else ("final" if dropped - {None} else None),
        "late_sent": any(m["late_sent"] for m in segments),
        "duplicates": sum(m["duplicates"] for m in segments),
        "delivered": [],
        "multipart": True,
    }


def _number(provider: str, i: int) -> str:
    return f"668{10_000_000 + i:08d}" if provider == "mesms" else f"+1555{1_000_000 + i:07d}"


def _receiver_messages(receiver: httpx.Client) -> Rows:
    """Every message the receiver tracks, page by page through GET /v1/messages."""
    rows: Rows = {}
    params: dict[str, str | int] = {"limit": 1000}
    while True:
        response = receiver.get("/v1/messages", params=params)
        if response.status_code != 200:
            raise DemoError(f"reading messages failed: {response.status_code} {response.text}")
        page = response.json()
        for row in page["messages"]:
            rows[(row["provider"], row["message_id"])] = row
        if not page["next_cursor"]:
            return rows
        params["cursor"] = page["next_cursor"]


# -- what the terminal shows ------------------------------------------------------------------


def _say(line: str = "") -> None:
    print(line, flush=True)


def _intro(options: Options, shares: dict[str, int], urls: tuple[str, str], db: Path) -> None:
    def pct(knob: str) -> str:
        return f"{getattr(REALISM, knob):.0%}"

    _say(
        f"receiver demo: {options.count} messages through the provider simulator ("
        + ", ".join(f"{p} {n}" for p, n in shares.items())
        + f"), seed {options.seed}"
    )
    _say(f"  simulator {urls[0]}, receiver {urls[1]}")
    _say(f"  database {db} ({'kept' if options.database else 'deleted at the end'})")
    _say(
        f"  DLRs: {pct('drop_all')} of messages get none, {pct('drop_final')} lose the final "
        f"one, {pct('late_sent')} get a stale 'sent' after it;"
    )
    _say(
        f"        {pct('duplicate')} come twice; {pct('reorder')} of messages get theirs out of "
        "order"
    )
    _say(
        f"  polling: a message not final {DLR_GRACE} s after its last news is polled, then "
        f"every {BACKOFF}-{BACKOFF_MAX} s;"
    )
    _say(f"           given up (unconfirmed) {MAX_AGE} s after it was sent")
    _say(
        f"  multipart: 1 in {MULTIPART_SHARE} telecom23 messages is sent as {SEGMENTS} segments, "
        "each failing on its own,"
    )
    _say("             and registered with its parts: one status, folded from theirs")
    _say()


_LIVE_HEADER = (
    "  time    final | delivered  failed  unconfirmed  waiting |"
    " callback  poll  timeout |  DLRs  polls"
)


def _live_line(elapsed: float, sent: Sent, rows: Rows, stats: dict[str, Any]) -> str:
    final = [rows[k] for k in sent.keys if k in rows and rows[k]["final"]]
    groups = Counter(_group(r["status"]) for r in final)
    via = Counter(r["final_via"] for r in final)
    polls = sum(stats["requests"].get(e, 0) for e in POLL_ENDPOINTS.values())
    done = f"{len(final)}/{sent.total}"
    return (
        f"{elapsed:5.1f}s {done:>9} | {groups['delivered']:>9} {groups['failed']:>7}"
        f" {groups['unconfirmed']:>12} {sent.total - len(final):>8} |"
        f" {via['callback']:>8} {via['poll']:>5} {via['timeout']:>8} |"
        f" {stats['deliveries']['succeeded']:>5} {polls:>6}"
    )


def _group(status: str) -> str:
    if status == Status.DELIVERED:
        return "delivered"
    return "unconfirmed" if status == Status.UNCONFIRMED else "failed"


_COLUMNS = (
    # (heading, width, key); the keys are counted by _tally
    ("sent", 4, "sent"),
    ("final", 5, "final"),
    ("agree", 5, "agree"),
    ("|", 1, ""),
    ("callback", 8, "callback"),
    ("poll", 4, "poll"),
    ("timeout", 7, "timeout"),
    ("|", 1, ""),
    ("no DLR", 6, "no DLR"),
    ("no final", 8, "no final"),
    ("late", 4, "late"),
    ("stale", 5, "stale"),
    ("twice", 5, "twice"),
    ("|", 1, ""),
    ("polls", 5, "polls"),
)
_LEGEND = (
    "final via callback, poll or timeout (given up); no DLR: messages whose DLRs were all dropped;",
    "no final: whose final DLR was dropped; late: polled to final before their final DLR came;",
    "stale: sent a 'sent' DLR after the final one; twice: DLRs delivered twice; polls: status "
    "requests",
)


def _table_row(name: str, c: Counter[str]) -> str:
    cells = ("|" if key == "" else f"{c[key]:>{width}}" for _, width, key in _COLUMNS)
    return f"{name:<10} " + " ".join(cells)


def _tally(keys: list[Key], truth: dict[Key, Any], rows: Rows) -> tuple[Counter[str], list[Key]]:
    """One provider's line of the table, and its messages whose status is not the simulator's."""
    c: Counter[str] = Counter(sent=len(keys))
    mismatches = []
    for k in keys:
        sim_message, row = truth[k], rows.get(k)
        final = sim_message["final"]
        c["no DLR"] += sim_message["dropped"] == "all"
        c["no final"] += sim_message["dropped"] == "final"
        c["stale"] += bool(sim_message["late_sent"])
        c["twice"] += sim_message["duplicates"]
        if row is None or not row["final"]:
            continue
        c["final"] += 1
        c[row["final_via"] or "unknown"] += 1
        # Polled before the final DLR, which came all the same (and changed nothing).
        c["late"] += (
            row["final_via"] == "poll" and final["provider_status"] in sim_message["delivered"]
        )
        if sim_message.get("multipart"):  # its provider_status is that of the part it heard last
            agree = row["status"] == final["status"]
        else:
            agree = (row["status"], row["provider_status"]) == (
                final["status"],
                final["provider_status"],
            )
        if agree:
            c["agree"] += 1
        else:
            mismatches.append(k)
    return c, mismatches


def _report(options: Options, elapsed: float, sent: Sent, rows: Rows, sim: SimulatorClient) -> int:
    """The end: per provider, what the receiver concluded beside what the simulator did."""
    truth = {(m["provider"], m["message_id"]): m for m in sim.messages()}
    for key, parts in sent.parts.items():
        truth[key] = _multipart_truth([truth[(key[0], part)] for part in parts])
    stats = sim.stats()
    total: Counter[str] = Counter()
    mismatches: list[Key] = []
    _say()
    _say(f"{'provider':<10} " + " ".join(f"{h:>{w}}" for h, w, _ in _COLUMNS))
    for provider in PROVIDERS:
        c, wrong = _tally([k for k in sent.keys if k[0] == provider], truth, rows)
        c["polls"] = stats["requests"].get(POLL_ENDPOINTS[provider], 0)
        _say(_table_row(provider, c))
        total.update(c)
        mismatches += wrong
    _say(_table_row("total", total))
    for line in _LEGEND:
        _say("  " + line)
    _say()
    final = [rows[k] for k in sent.keys if k in rows and rows[k]["final"]]
    statuses = Counter(r["status"] for r in final)
    _say("statuses:   " + (", ".join(f"{s} {n}" for s, n in statuses.most_common()) or "-"))
    _say(
        f"final via:  callback {total['callback']}, poll {total['poll']}, "
        f"timeout {total['timeout']}"
    )
    _say(
        f"simulator:  {total['agree']}/{sent.total} messages ended in the simulator's own "
        f"final status; {len(mismatches)} mismatch(es)"
    )
    deliveries = stats["deliveries"]
    _say(
        f"            {deliveries['succeeded']} DLRs delivered, {deliveries['gave_up']} given "
        f"up, {stats['pending']} pending; {total['polls']} status requests answered"
    )
    if sent.parts:
        off = sum(1 for k in sent.parts if k in mismatches)
        failed = sum(
            1
            for k in sent.parts
            if rows.get(k, {}).get("final") and _group(rows[k]["status"]) == "failed"
        )
        _say(
            f"multipart:  {len(sent.parts)} telecom23 messages of {SEGMENTS} segments "
            f"({len(sent.parts) * SEGMENTS} DLR streams), {failed} failed by a segment; "
            f"{len(sent.parts) - off} folded as the simulator's segments ended"
        )
    for k in mismatches[:10]:
        row, should = rows[k], truth[k]["final"]
        _say(
            f"  mismatch: {k[0]} {k[1]}: receiver {row['status']} ({row['provider_status']}, "
            f"via {row['final_via']}), simulator {should['status']} ({should['provider_status']})"
        )
    if len(mismatches) > 10:
        _say(f"  ... and {len(mismatches) - 10} more")
    if options.database:
        _say(f"database:   {options.database}")
    _say()
    waiting = [k for k in sent.keys if not rows.get(k, {}).get("final")]
    if waiting:
        by_status = Counter(rows[k]["status"] if k in rows else "unknown" for k in waiting)
        _say(
            f"receiver demo: the time limit ({options.timeout:g} s) passed with "
            f"{len(waiting)} of {sent.total} messages not final ("
            + ", ".join(f"{s} {n}" for s, n in by_status.most_common())
            + "); a longer --timeout gives them time"
        )
        return 1
    if mismatches:
        _say(
            f"receiver demo: {len(mismatches)} message(s) ended in a status the simulator "
            "did not give them"
        )
        return 1
    _say(f"OK: all {sent.total} messages final in {elapsed:.1f} s, each as the simulator says.")
    return 0


# -- the two servers ---------------------------------------------------------------------------


def _listen() -> socket.socket:
    """A socket on a loopback port the OS chose, listening already, so its URL is known first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextmanager
def _serving(apps: Sequence[tuple[Any, socket.socket]]) -> Iterator[None]:
    """The apps under uvicorn, in one event loop on a thread of their own, so the demo's
    blocking requests never stall them; stopped (their lifespans closed) on the way out."""
    import uvicorn

    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                log_config=None,  # configure_logging() routes uvicorn's lines
                access_log=False,
                proxy_headers=False,
                server_header=False,
                lifespan="on",
            )
        )
        for app, _sock in apps
    ]

    stopped = [threading.Event() for _ in servers]

    async def serve_one(i: int, sock: socket.socket) -> None:
        try:
            await servers[i].serve(sockets=[sock])
        finally:
            stopped[i].set()
            for other in servers:  # one failing to start stops the other
                other.should_exit = True

    async def serve_all() -> None:
        await asyncio.gather(*(serve_one(i, sock) for i, (_app, sock) in enumerate(apps)))

    # A daemon, so a server that will not stop cannot keep the process alive after the join.
    thread = threading.Thread(
        target=asyncio.run, args=(serve_all(),), name="demo-servers", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not all(s.started for s in servers):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the servers did not start (see the log lines above)")
            time.sleep(0.02)
        yield
    finally:
        # The last first: the receiver stops polling before the simulator it polls goes away.
        for server, done in reversed(list(zip(servers, stopped, strict=True))):
            server.should_exit = True
            done.wait(timeout=15)
        thread.join(timeout=30)
        for _app, sock in apps:
            sock.close()
