"""Two `receiver serve` processes on one PostgreSQL database, behind a load balancer.

The simulator's callbacks are split between the instances at random, one request at a time, so
the deliveries of one message (and a provider's retries of one delivery) land on both at once;
one instance is killed with SIGKILL in the middle. Its schedulers share one poll queue.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from server_process import ServerProcess
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import WAIT, AppServer, wait_until

from receiver.simulator.app import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig

ACCOUNTS = Accounts()
MESSAGES = 1000
KILL_AFTER_ACKS = 400  # of about 2,900 pushes
UNTIDY = {"duplicate": 0.3, "reorder": 0.3, "late_sent": 0.3, "drop_all": 0, "drop_final": 0}
# Headers a proxy must not pass on as they are.
HOP = {"host", "content-length", "connection", "transfer-encoding"}


class Balancer:
    """A load balancer on loopback: each request to one of the live backends, at random.

    A backend that refuses a connection is taken out; a request it dropped is answered 502, as
    a real balancer would, and the provider retries it (maybe onto the other instance).
    """

    def __init__(self, seed: int) -> None:
        self.backends: list[str] = []
        self.down: set[str] = set()
        self.routed: Counter[str] = Counter()
        self.rng = random.Random(seed)
        self.client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])],
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # The client lives and is closed on the server's own event loop.
        async with httpx.AsyncClient(timeout=WAIT) as client:
            self.client = client
            yield

    async def forward(self, request: Request) -> Response:
        live = [b for b in self.backends if b not in self.down]
        if not live:
            return Response(status_code=503)
        backend = self.rng.choice(live)
        assert self.client is not None
        url = backend + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {k: v for k, v in request.headers.items() if k not in HOP}
        try:
            answer = await self.client.request(
                request.method, url, content=await request.body(), headers=headers
            )
        except httpx.ConnectError:
            self.down.add(backend)
            return Response(status_code=502)
        except httpx.TransportError:
            return Response(status_code=502)
        self.routed[backend] += 1
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


@pytest.fixture
def balancer() -> Iterator[tuple[Balancer, AppServer]]:
    lb = Balancer(seed=15)
    server = AppServer(lb.app).start()
    yield lb, server
    server.stop()


@pytest.fixture
def sim() -> Iterator[SimulatorClient]:
    config = SimConfig(seed=15, speed=100, concurrency=16, max_attempts=20, retry_base=2.0)
    server = AppServer(create_simulator(config)).start()
    with SimulatorClient(server.base_url) as client:
        yield client
    server.stop()


def instances(
    tmp_path: Path, url: str, public_url: str, count: int = 2, **env: str
) -> list[ServerProcess]:
    """`receiver serve` processes on the database at `url`, signing for `public_url`."""
    processes = [
        ServerProcess(
            tmp_path / f"unused-{n}.db",  # DATABASE_URL wins over RECEIVER_DATABASE
            log=tmp_path / f"instance-{n}.log",
            DATABASE_URL=url,
            RECEIVER_PUBLIC_URL=public_url,
            TWILIO_AUTH_TOKEN=ACCOUNTS.twilio_auth_token,
            **env,
        )
        for n in range(count)
    ]
    for process in processes:
        process.start()
        ready = httpx.get(process.base_url + "/readyz", timeout=WAIT).json()
        assert ready["store"] == "postgresql", ready  # not a SQLite file by mistake
    return processes


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def register(base_url: str, ids: list[str]) -> None:
    with httpx.Client(base_url=base_url, timeout=WAIT) as client:
        for start in range(0, len(ids), 100):
            items = [{"provider": "twilio", "message_id": i} for i in ids[start : start + 100]]
            # Registration is idempotent: the app sends again what a dying instance dropped.
            response = wait_until(
                lambda items=items: ok(client.post("/v1/messages", json=items)),
                what="a registration accepted",
            )
            assert response.status_code in (200, 201), response.text


def ok(response: httpx.Response) -> httpx.Response | None:
    return None if response.status_code in (502, 503) else response


def acked(sim: SimulatorClient) -> int:
    return int(sim.stats()["deliveries"]["succeeded"])


def poll_requests(base_url: str) -> float:
    """The instance's Twilio status requests answered ok (receiver_poll_requests_total)."""
    text = httpx.get(base_url + "/metrics", timeout=WAIT).text
    for line in text.splitlines():
        series = line.startswith("receiver_poll_requests_total{")
        if series and 'result="ok"' in line and 'provider="twilio"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_instances_record_split_callbacks_once_and_survive_a_kill_9(
    tmp_path: Path,
    pg_url: str,
    sim: SimulatorClient,
    balancer: tuple[Balancer, AppServer],
) -> None:
    lb, lb_server = balancer
    processes = instances(tmp_path, pg_url, lb_server.base_url)
    lb.backends = [p.base_url for p in processes]
    try:
        sim.configure(realism=UNTIDY | {"delay": [0, 3]})
        sim.point_at_receiver(lb_server.base_url)
        started = time.monotonic()
        ids = sim.create_messages("twilio", MESSAGES)
        # Half are registered by the app while their callbacks arrive, through either instance.
        registering = threading.Thread(target=register, args=(lb_server.base_url, ids[::2]))
        registering.start()
        # Mid-load: some hundreds of pushes acknowledged, the rest in flight or still to come.
        wait_until(lambda: acked(sim) >= KILL_AFTER_ACKS, timeout=WAIT * 4, what="acks")
        processes[0].kill()
        # Out of the pool, as a balancer's health check would take it: its port is free now,
        # and another program on the machine may bind it and answer 404 for our callbacks.
        lb.down.add(processes[0].base_url)
        registering.join(WAIT)
        stats = sim.wait_idle(timeout=WAIT * 10)  # a bound for a loaded machine
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            process.stop()
    # Every push was acknowledged in the end (its answers by status, if not).
    assert stats["deliveries"]["gave_up"] == 0, stats["deliveries"]
    assert lb.routed[processes[0].base_url] > 0 and lb.routed[processes[1].base_url] > 0

    simulated = {m["message_id"]: m for m in sim.messages(provider="twilio")}
    stored = dict(query(pg_url, "SELECT message_id, status FROM messages"))
    assert len(stored) == MESSAGES
    wrong = [i for i, m in simulated.items() if stored[i] != m["final"]["status"]]
    assert not wrong, wrong[:5]  # every message ends in the simulator's final status

    events = query(
        pg_url, "SELECT message_id, dedupe_key, outcome, status, provider_status FROM events"
    )
    # One `applied` per transition: no status applied twice to one message.
    applied = Counter((m, s) for m, _, outcome, s, _ in events if outcome == "applied")
    assert set(applied.values()) == {1}
    # Each delivery decided exactly once, the kill and the retries notwithstanding: its other
    # copies (the simulator's duplicates, a retry of a push the killed instance committed but
    # never answered) are all `duplicate`.
    decided = Counter((m, key) for m, key, outcome, _, _ in events if outcome != "duplicate")
    assert set(decided.values()) == {1}
    # Every acknowledged push is there.
    kept = {(m, raw) for m, _, _, _, raw in events}
    for message_id, m in simulated.items():
        for raw in m["delivered"]:
            assert (message_id, raw) in kept, (message_id, raw)
    assert query(pg_url, "SELECT count(*) FROM events WHERE message_pk IS NULL") == [(0,)]
    # Every stored status is the fold of its events, whichever instance recorded them.
    ledger = subprocess.run(
        [str(Path(sys.executable).parent / "receiver"), "verify"],
        capture_output=True,
        text=True,
        timeout=WAIT * 4,
        env={**os.environ, "DATABASE_URL": pg_url},
    )
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr
    assert f"{MESSAGES} message(s) checked against their events, 0 mismatch" in ledger.stdout
    print(
        f"\n{MESSAGES} messages, {len(events)} callbacks over two instances "
        f"({dict(lb.routed)}), one killed: {elapsed:.1f} s"
    )


def test_two_schedulers_on_one_database_never_poll_one_message_at_once(
    tmp_path: Path, pg_url: str, sim: SimulatorClient, balancer: tuple[Balancer, AppServer]
) -> None:
    lb, lb_server = balancer
    count = 300
    polling = {
        "RECEIVER_POLLING": "1",
        "RECEIVER_DLR_GRACE": "0.2s",
        "RECEIVER_POLL_BACKOFF": "0.2s",
        "RECEIVER_POLL_BACKOFF_MAX": "0.5s",
        "RECEIVER_POLL_INTERVAL": "0.1s",
        "RECEIVER_POLL_BATCH": "20",
        "RECEIVER_POLL_LEASE": "30s",
        "RECEIVER_POLL_TIMEOUT": "10s",
        "TWILIO_ACCOUNT_SID": ACCOUNTS.twilio_account_sid,
        "TWILIO_API_BASE": sim.twilio_api_base,
        "TWILIO_POLL_RATE": "500",
    }
    processes = instances(tmp_path, pg_url, lb_server.base_url, **polling)
    lb.backends = [p.base_url for p in processes]
    try:
        # Every DLR dropped: only polling learns the outcome. Slow answers keep claims in
        # flight long enough for the two schedulers to overlap.
        sim.configure(
            api_latency=0.05,
            realism={"drop_all": 1, "duplicate": 0, "reorder": 0, "late_sent": 0, "delivered": 0.8},
            timing={"sent_after": [0.1, 0.5], "final_after": [1, 5]},
        )
        ids = sim.create_messages("twilio", count)
        register(lb_server.base_url, ids)

        def all_final() -> bool:
            found = query(pg_url, "SELECT count(*) FROM messages WHERE is_final = 1")
            return bool(found[0][0] == count)

        wait_until(all_final, timeout=WAIT * 4, what=f"{count} messages final by polling")
        shares = [poll_requests(p.base_url) for p in processes]
    finally:
        for process in processes:
            process.stop()
    stats = sim.stats()
    assert stats["max_concurrent_polls"] == 1  # never two requests about one message at once
    asked = [m["status_requests"] for m in sim.messages(provider="twilio")]
    assert min(asked) >= 1
    assert sum(shares) >= count and min(shares) > 0, shares  # both schedulers did part
    simulated = {m["message_id"]: m["final"]["status"] for m in sim.messages(provider="twilio")}
    stored = dict(query(pg_url, "SELECT message_id, status FROM messages"))
    assert stored == simulated
