"""Multipart messages (receiver.store.parts): a concatenated SMS registered with its parts'
ids, each part's DLRs recorded on the part and folded into the message's one status.

The fold is engine.fold_parts (plain calls); the recording runs against every kind of store
(tests/stores.py); the API and the simulator's multipart send against a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from stores import StoreFactory
from support import AppServer, LiveServer, assert_error, events, make_settings, message, wait_until

from receiver import engine, ledger
from receiver.engine import Status, StatusEvent, format_time
from receiver.simulator.app import create_simulator
from receiver.simulator.client import SimulatorClient
from receiver.simulator.config import Accounts, SimConfig
from receiver.store import Registration, Store
from receiver.store.base import PollDone

ACCOUNTS = Accounts()
BIN = Path(sys.executable).parent / "receiver"

Run = Callable[[Awaitable[Any]], Any]
S = Status


@pytest.mark.parametrize(
    ("parts", "folded"),
    [
        ([S.DELIVERED, S.DELIVERED, S.DELIVERED], S.DELIVERED),
        ([S.DELIVERED, S.SENT, S.DELIVERED], S.SENT),  # the least advanced part
        ([S.REGISTERED, S.SENT, S.DELIVERED], S.REGISTERED),
        ([S.QUEUED, S.SENT], S.QUEUED),
        ([S.DELIVERED, S.UNDELIVERED, S.SENT], S.UNDELIVERED),  # failed as soon as one is
        ([S.REGISTERED, S.REJECTED], S.REJECTED),
        ([S.EXPIRED, S.REJECTED, S.UNDELIVERED], S.REJECTED),  # the worst failure
        ([S.EXPIRED, S.UNDELIVERED], S.UNDELIVERED),
        ([S.UNCONFIRMED, S.DELIVERED], S.UNCONFIRMED),
        (["delivered", "sent"], S.SENT),  # stored text is as good as a Status
    ],
)
def test_fold_parts(parts: list[Status], folded: Status) -> None:
    assert engine.fold_parts(parts) is folded


def test_parts_summary_counts_unconfirmed_as_pending() -> None:
    assert engine.parts_summary([S.DELIVERED, S.FAILED, S.UNCONFIRMED, S.SENT]) == {
        "total": 4,
        "delivered": 1,
        "failed": 1,
        "pending": 2,
    }


def event(message_id: str, status: Status | None, **kw: Any) -> StatusEvent:
    return StatusEvent(
        provider="telecom23",
        message_id=message_id,
        provider_status=kw.pop("raw", status.value if status else "weird"),
        status=status,
        **kw,
    )


def multipart(message_id: str = "M1", parts: tuple[str, ...] = ("p1", "p2", "p3")) -> Registration:
    return Registration("telecom23", message_id, to_number="+15550001", parts=parts)


def one(s: Store, run: Run, message_id: str) -> dict[str, Any]:
    (found,) = run(s.get_messages(message_id))
    return found


def verify(s: Store, run: Run) -> tuple[ledger.Report, list[ledger.Mismatch]]:
    found: list[ledger.Mismatch] = []
    report = run(ledger.verify(s, page_size=3, on_mismatch=found.append))
    return report, found


def test_parts_are_folded_into_the_message(store_factory: StoreFactory, run: Run) -> None:
    s = store_factory()
    (r,) = run(s.register([multipart()]))
    assert r.created and r.status == "registered" and r.conflict is None
    assert one(s, run, "M1")["parts"] == {"total": 3, "delivered": 0, "failed": 0, "pending": 3}
    run(s.record([event("p1", S.SENT), event("p2", S.SENT)]))
    assert one(s, run, "M1")["status"] == "registered"  # p3 has not been heard of
    run(s.record([event("p3", S.DELIVERED), event("p1", S.DELIVERED)]))
    m = one(s, run, "M1")
    assert m["status"] == "sent" and not m["final"]
    assert m["parts"] == {"total": 3, "delivered": 2, "failed": 0, "pending": 1}
    recorded = run(s.record([event("p2", S.DELIVERED)]))
    assert recorded[0].parent_id == "M1" and recorded[0].status == "delivered"
    m = one(s, run, "M1")
    assert m["status"] == "delivered" and m["final"] and m["final_via"] == "callback"
    assert m["parts"] == {"total": 3, "delivered": 3, "failed": 0, "pending": 0}
    # The parts are not messages, and the history shows each part's status.
    assert run(s.get_messages("p1")) == []
    events = run(s.get_events("telecom23", "M1"))
    parts = [(e["part"], e["status"]) for e in events if "part" in e]
    assert parts == [
        ("p1", "sent"),
        ("p2", "sent"),
        ("p3", "delivered"),
        ("p1", "delivered"),
        ("p2", "delivered"),
    ]
    folds = [e["status"] for e in events if "part" not in e]
    assert folds == ["sent", "delivered"]  # the message's own changes


def test_one_failed_part_fails_the_message_and_it_stays_failed(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart()]))
    run(s.record([event("p1", S.DELIVERED), event("p2", S.UNDELIVERED, error_code="30003")]))
    m = one(s, run, "M1")
    assert m["status"] == "undelivered" and m["final"] and m["error_code"] == "30003"
    assert m["parts"] == {"total": 3, "delivered": 1, "failed": 1, "pending": 1}
    # A late delivered for the failed part: the message is not failed now, but the least
    # advanced part (p3) is behind it; the message does not regress, until all are delivered.
    run(s.record([event("p2", S.DELIVERED)]))
    assert one(s, run, "M1")["status"] == "undelivered"
    run(s.record([event("p3", S.DELIVERED)]))
    assert one(s, run, "M1")["status"] == "delivered"


def test_a_parts_duplicate_and_regression_decide_nothing(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart(parts=("p1", "p2"))]))
    run(s.record([event("p1", S.DELIVERED, dedupe_key="k")]))
    (dup,) = run(s.record([event("p1", S.UNDELIVERED, dedupe_key="k")]))
    (regression,) = run(s.record([event("p1", S.SENT)]))
    assert dup.outcome.value == "duplicate" and regression.outcome.value == "regression"
    m = one(s, run, "M1")
    assert m["parts"]["delivered"] == 1 and m["status"] == "registered"


@pytest.mark.parametrize("unknown_messages", ["create", "hold"])
def test_an_early_dlr_for_a_part_is_folded_in_at_registration(
    store_factory: StoreFactory, run: Run, unknown_messages: str
) -> None:
    s = store_factory(unknown_messages=unknown_messages)
    run(s.record([event("p2", S.SENT), event("p2", S.UNDELIVERED, error_code="1")]))
    early = run(s.get_messages("p2"))
    assert len(early) == (1 if unknown_messages == "create" else 0)
    (r,) = run(s.register([multipart()]))
    assert r.created and r.status == "undelivered" and r.pending_applied >= 1
    # The message the early DLR created (create) became the part; the held events (hold)
    # were decided on it.
    assert run(s.get_messages("p2")) == []
    m = one(s, run, "M1")
    assert m["status"] == "undelivered"
    assert m["parts"] == {"total": 3, "delivered": 0, "failed": 1, "pending": 2}
    events = run(s.get_events("telecom23", "M1"))
    assert [(e["part"], e["status"]) for e in events if "part" in e] == [
        ("p2", "sent"),
        ("p2", "undelivered"),
    ]
    # Later DLRs for the part find it as a part.
    (later,) = run(s.record([event("p2", S.DELIVERED)]))
    assert later.parent_id == "M1"
    report, found = verify(s, run)
    assert found == [] and report.mismatched == 0


def test_registering_again_is_idempotent_and_conflicts_write_nothing(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart(), Registration("telecom23", "single")]))
    (again,) = run(s.register([multipart()]))
    assert not again.created and again.conflict is None
    cases = {
        "parts_differ": multipart(parts=("p1", "p2")),
        "message_not_multipart": multipart("single", ("x1", "x2")),
        "part_of_another_message": multipart("M2", ("p9", "p3")),
        "part_is_a_message": multipart("M3", ("single", "x3")),
        "message_is_a_part": Registration("telecom23", "p2"),
    }
    for code, reg in cases.items():
        (r,) = run(s.register([reg]))
        assert r.conflict is not None and r.conflict[0] == code, code
    assert run(s.get_messages("M2")) == [] and run(s.get_messages("M3")) == []
    assert run(s.get_messages("p9")) == [] and run(s.get_messages("p2")) == []
    # In a batch too, where ids nothing is known of are inserted without a read each.
    results = run(s.register([Registration("telecom23", "new"), Registration("telecom23", "p3")]))
    assert [r.conflict and r.conflict[0] for r in results] == [None, "message_is_a_part"]
    assert run(s.get_messages("p3")) == []


def test_parts_are_not_counted_as_messages(store_factory: StoreFactory, run: Run) -> None:
    s = store_factory()
    run(s.register([multipart(), Registration("telecom23", "single")]))
    run(s.record([event("p1", S.DELIVERED), event("p2", S.DELIVERED), event("p3", S.FAILED)]))
    run(s.record([event("single", S.DELIVERED)]))
    assert run(s.count_by_status()) == {"failed": 1, "delivered": 1}
    from receiver.store import MessageFilter

    stats = run(s.stats(MessageFilter()))
    assert stats["total"] == 2
    page, _ = run(s.list_messages(MessageFilter()))
    assert [m["message_id"] for m in page] == ["single", "M1"]
    assert page[1]["parts"] == {"total": 3, "delivered": 2, "failed": 1, "pending": 0}


def test_verify_finds_nothing_wrong_with_multipart_messages_and_finds_a_corrupted_one(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart(), multipart("M2", ("q1", "q2"))]))
    run(s.record([event("p1", S.SENT), event("p2", S.DELIVERED), event("p3", S.QUEUED)]))
    run(s.record([event("q1", S.DELIVERED), event("q2", S.REJECTED)]))
    report, found = verify(s, run)
    assert found == [] and report.checked == 2
    from test_ledger import execute

    execute(s, "UPDATE messages SET status = 'delivered' WHERE message_id = 'M1'")
    report, found = verify(s, run)
    assert [m.row.message_id for m in found] == ["M1"]
    assert found[0].differences["status"] == ("delivered", "queued")
    repaired: list[ledger.Mismatch] = []
    report = run(ledger.verify(s, page_size=3, repair=True, on_repaired=repaired.append))
    assert report.repaired == 1 and [m.row.message_id for m in repaired] == ["M1"]
    assert one(s, run, "M1")["status"] == "queued"
    report, found = verify(s, run)
    assert found == [] and report.mismatched == 0
    # The part keeps deciding, and folding, after the repair.
    run(s.record([event("p3", S.DELIVERED), event("p1", S.DELIVERED)]))
    assert one(s, run, "M1")["status"] == "delivered"
    assert verify(s, run)[1] == []


def test_two_instances_folding_one_messages_parts_at_once_agree(
    store_factory: StoreFactory, run: Run
) -> None:
    """Each part's report is decided under its own lock and the fold under the message's, so
    reports for every part through two stores on one database (two instances, on PostgreSQL)
    at once end in the fold of all of them, and the ledger agrees."""
    import asyncio

    a, b = store_factory("shared"), store_factory("shared")
    parts = tuple(f"s{i}" for i in range(12))
    run(a.register([multipart("BIG", parts)]))

    async def both() -> None:
        await asyncio.gather(
            *(
                (a if i % 2 else b).record([event(p, S.SENT), event(p, S.DELIVERED)])
                for i, p in enumerate(parts)
            ),
            b.register([multipart("BIG", parts)]),  # the same registration again, meanwhile
        )

    run(both())
    m = one(a, run, "BIG")
    assert m["status"] == "delivered" and m["parts"]["delivered"] == 12
    report, found = verify(a, run)
    assert found == [] and report.checked == 1


def test_polling_asks_about_the_parts_still_pending_and_settles_the_message_once(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart(), Registration("telecom23", "single")]))
    run(s.record([event("p2", S.DELIVERED)]))
    far = format_time(datetime.now(UTC) + timedelta(days=1))
    claimed = run(s.claim_due("telecom23", now=far, limit=100, lease_until=far, owner="me"))
    assert sorted(m.message_id for m in claimed) == ["p1", "p3", "single"]
    parent = one(s, run, "M1")
    by_id = {m.message_id: m for m in claimed}
    assert by_id["p1"].pk == by_id["p3"].pk  # the message's key: its lease is the message's
    polled = [event("p1", S.DELIVERED, source="poll"), event("p3", S.SENT, source="poll")]
    done = [PollDone(by_id[i], "ok", far) for i in ("p1", "p3", "single")]
    recorded = run(s.finish_polls("me", polled, done))
    assert [(r.event.message_id, r.status) for r in recorded] == [
        ("p1", "delivered"),
        ("p3", "sent"),
    ]
    m = one(s, run, "M1")
    assert m["status"] == "sent" and m["final_via"] is None
    assert m["poll"]["attempts"] == parent["poll"]["attempts"] + 1  # once, not per part
    assert m["poll"]["next_poll_at"] == far
    # Given up: the message (not each part) becomes unconfirmed.
    claimed = run(s.claim_due("telecom23", now=far, limit=100, lease_until=far, owner="me"))
    (p3,) = [m for m in claimed if m.message_id != "single"]
    assert p3.message_id == "p3"
    run(s.finish_polls("me", [], [PollDone(p3, "ok", far, give_up_reason="max age")]))
    m = one(s, run, "M1")
    assert m["status"] == "unconfirmed" and m["final_via"] == "timeout"
    assert m["parts"] == {"total": 3, "delivered": 2, "failed": 0, "pending": 1}
    run(s.record([event("p3", S.DELIVERED)]))  # positive evidence after the give-up
    assert one(s, run, "M1")["status"] == "delivered"
    report, found = verify(s, run)
    assert found == [] and report.checked == 2


# -- a real server, the simulator's multipart sends ---------------------------------------------


@pytest.fixture
def sim_and_receiver(tmp_path: Path) -> Iterator[tuple[SimulatorClient, LiveServer]]:
    """The simulator at 1000x speed and a receiver polling it (grace and backoffs in fractions
    of a second), each under uvicorn; the simulator's 23 Telecom DLRs go to the receiver."""
    sim_server = AppServer(create_simulator(SimConfig(seed=3))).start()
    with SimulatorClient(sim_server.base_url) as sim:
        sim.configure(
            speed=1000,
            api_latency=0,
            timing={"sent_after": [0.1, 0.5], "final_after": [1, 5]},
        )
        settings = make_settings(
            tmp_path,
            secret_key="multipart-test-secret-key-0123456789",
            polling=True,
            dlr_grace=0.2,
            poll_backoff=0.2,
            poll_backoff_max=0.5,
            poll_interval=0.1,
            poll_lease=30.0,
            poll_timeout=10.0,
            provider_env={
                "TELECOM23_API_BASE": sim.telecom23_api_base,
                "TELECOM23_API_KEY": ACCOUNTS.telecom23_api_key,
                "TELECOM23_POLL_RATE": "500",
            },
        )
        receiver = LiveServer(settings).start()
        try:
            sim.point_at_receiver(receiver.base_url, providers=("telecom23",))
            yield sim, receiver
        finally:
            receiver.stop()
            sim_server.stop()


def _truth_so_far(sim: SimulatorClient, parts: list[str]) -> str | None:
    """The fold of the parts' fates once the simulator has decided each (None before)."""
    finals = {m["message_id"]: m["final"] for m in sim.messages(provider="telecom23")}
    if not all(finals.get(p) for p in parts):
        return None
    return engine.fold_parts([finals[p]["status"] for p in parts]).value


def _final(server: LiveServer, message_id: str) -> dict[str, Any] | None:
    found = message(server, message_id)
    return found if found["final"] else None


def _settled(
    sim: SimulatorClient, server: LiveServer, message_id: str, parts: list[str]
) -> dict[str, Any]:
    """The message once it shows the fold of every segment's fate, as the simulator tells it:
    it is final as soon as one segment fails, and a worse failure may still follow."""
    return wait_until(
        lambda: (
            (m := _final(server, message_id)) and m["status"] == _truth_so_far(sim, parts) and m
        ),
        what=f"{message_id} final, folded from every segment's fate",
    )


def test_a_long_text_sent_through_23_telecom_is_one_message_folded_from_its_segments(
    sim_and_receiver: tuple[SimulatorClient, LiveServer],
) -> None:
    """The send splits the text into segments (one id each, as 23 Telecom answers); the app
    registers them as the parts of its message; the segments' DLRs fold into one status."""
    sim, receiver = sim_and_receiver
    sim.configure(realism={"delivered": 0.5, "drop_all": 0, "drop_final": 0})
    response = httpx.post(
        sim.telecom23_api_base + "/sms/send",
        headers={"X-API-Key": ACCOUNTS.telecom23_api_key},
        json={"to": ["+447911123456", "+14155551234"], "message": "x" * 400, "sender_id": "Shop"},
    )
    assert response.status_code == 200, response.text
    sent = response.json()
    assert sent["summary"]["total_segments"] == 6  # 400 GSM-7 characters: 3 segments of 153
    by_number: dict[str, list[str]] = {}
    for segment in sent["messages"]:
        by_number.setdefault(segment["dnis"], []).append(segment["message_id"])
    assert [s["segment_num"] for s in sent["messages"]] == [1, 2, 3, 1, 2, 3]
    registrations = [
        {"provider": "telecom23", "message_id": f"order-{i}", "to": number, "parts": parts}
        for i, (number, parts) in enumerate(sorted(by_number.items()))
    ]
    with receiver.client() as client:
        answer = client.post("/v1/messages", json={"messages": registrations})
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 2
    for reg in registrations:
        mid = reg["message_id"]
        found = _settled(sim, receiver, mid, reg["parts"])
        counts = found["parts"]
        assert counts["total"] == 3 == counts["delivered"] + counts["failed"] + counts["pending"]
        history = events(receiver, reg["message_id"])
        assert {e["part"] for e in history if "part" in e} == set(reg["parts"])
        assert any(e["outcome"] == "applied" and "part" not in e for e in history)
    with receiver.client() as client:
        stats = client.get("/v1/stats").json()
    assert stats["total"] == 2  # two messages, not six


def test_segments_whose_dlrs_are_dropped_are_polled_as_the_parts_still_pending(
    sim_and_receiver: tuple[SimulatorClient, LiveServer],
) -> None:
    sim, receiver = sim_and_receiver
    sim.configure(realism={"delivered": 0.7, "drop_all": 1})  # only polling can tell
    ids = sim.create_messages("telecom23", 4, segments=2)
    messages = {f"m{i}": ids[2 * i : 2 * i + 2] for i in range(4)}
    with receiver.client() as client:
        response = client.post(
            "/v1/messages",
            json=[
                {"provider": "telecom23", "message_id": mid, "parts": parts}
                for mid, parts in messages.items()
            ],
        )
    assert response.status_code == 200, response.text
    failed = {s.value for s in engine.FAILED_STATUSES}
    for mid, parts in messages.items():
        found = wait_until(lambda mid=mid: _final(receiver, mid), what=f"{mid} final")
        truth = wait_until(lambda parts=parts: _truth_so_far(sim, parts), what="every fate")
        # The fold of every part's fate; but once one part has failed the message is final
        # and polling stops, so a worse failure of another part may go unasked: which
        # failure it shows may then differ.
        assert found["status"] == truth or {found["status"], truth} <= failed, (found, truth)
        assert found["final_via"] == "poll" and found["poll"]["attempts"] >= 1
    asked = {m["message_id"]: m["status_requests"] for m in sim.messages(provider="telecom23")}
    assert all(asked[p] >= 1 for parts in messages.values() for p in parts)
    report = subprocess.run(
        [str(BIN), "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RECEIVER_DATABASE": receiver.settings.database},
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "4 message(s) checked against their events, 0 mismatch(es)" in report.stdout


# -- the API's checks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path_factory.mktemp("parts-api"))).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([], "parts_empty"),
        ("p1", "invalid_parts"),
        (["p1", 2], "invalid_parts"),
        (["p1", " "], "invalid_parts"),
        (["p1", "x" * 257], "invalid_parts"),
        (["p1", "p2", "p1"], "duplicate_parts"),
        ([f"p{i}" for i in range(256)], "too_many_parts"),
        (["p1", "A1"], "part_is_message_id"),  # only the first part's id may be the message's
    ],
)
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_bad_parts_are_refused_with_a_stable_error_code(
    api: LiveServer, parts: Any, code: str, batch: bool
) -> None:
    item = {"provider": "twilio", "message_id": "A1", "parts": parts}
    with api.client() as client:
        response = client.post("/v1/messages", json=[item] if batch else item)
    error = assert_error(response, 400, code)
    assert error["details"]["field"] == "parts" and error["details"]["index"] == 0


def test_parts_that_contradict_what_is_kept_are_a_409_or_the_batch_items_error(
    api: LiveServer,
) -> None:
    with api.client() as client:
        first = client.post(
            "/v1/messages", json={"provider": "twilio", "message_id": "C1", "parts": ["c1", "c2"]}
        )
        assert first.status_code == 201, first.text
        assert first.json()["status"] == "registered"
        again = client.post(
            "/v1/messages", json={"provider": "twilio", "message_id": "C1", "parts": ["c1", "c2"]}
        )
        assert again.status_code == 200 and not again.json()["created"]
        taken = {"provider": "twilio", "message_id": "C2", "parts": ["c3", "c2"]}
        error = assert_error(
            client.post("/v1/messages", json=taken), 409, "part_of_another_message"
        )
        assert "c2" in error["message"]
        batch = client.post(
            "/v1/messages",
            json=[taken, {"provider": "twilio", "message_id": "C3", "parts": ["c4"]}],
        )
        assert batch.status_code == 200, batch.text
        first_item, second_item = batch.json()["messages"]
        assert first_item["error_code"] == "part_of_another_message" and not first_item["created"]
        assert second_item["created"] and batch.json()["created"] == 1
        assert client.get("/v1/messages/C2").status_code == 404
        listed = client.get("/v1/messages").json()["messages"]
    assert {m["message_id"]: m.get("parts") for m in listed} == {
        "C3": {"total": 1, "delivered": 0, "failed": 0, "pending": 1},
        "C1": {"total": 2, "delivered": 0, "failed": 0, "pending": 2},
    }


def test_a_part_that_is_a_message_earlier_in_the_same_batch_is_a_conflict(
    api: LiveServer,
) -> None:
    """New messages of a batch are inserted together; one a later multipart registration
    names as its part is inserted first, so the conflict is found as across two requests."""
    single = {"provider": "twilio", "message_id": "B1"}
    whole = {"provider": "twilio", "message_id": "B2", "parts": ["B1", "b2"]}
    with api.client() as client:
        batch = client.post("/v1/messages", json=[single, whole])
        assert batch.status_code == 200, batch.text
        first_item, second_item = batch.json()["messages"]
        assert first_item["created"]
        assert second_item["error_code"] == "part_is_a_message" and not second_item["created"]
        assert client.get("/v1/messages/B2").status_code == 404


def test_pushes_and_the_change_log_report_the_message_never_its_parts(
    store_factory: StoreFactory, run: Run
) -> None:
    """A part's change is the message's change only when it changes the folded status: then
    one `message.status_changed` (of the message, under its id) is owed and logged."""
    s = store_factory()
    s.configure_push(("http://app.test/hook",), "all", lambda: None)  # type: ignore[attr-defined]
    run(s.register([multipart()]))
    run(s.record([event("p1", S.SENT), event("p2", S.SENT)]))  # p3 registered: no change
    run(s.record([event("p3", S.SENT)]))  # now every part is sent: the message is
    run(s.record([event("p1", S.DELIVERED)]))  # the least advanced is still sent: no change
    run(s.record([event("p2", S.REJECTED)]))  # failed as soon as one part is
    pushes, _ = run(
        s.list_pushes(status=None, since=None, before_id=None, limit=100)  # type: ignore[attr-defined]
    )
    owed = sorted((p["message_id"], p["type"]) for p in pushes)
    assert owed == [("M1", "message.status_changed")] * 2
    changes = run(s.changes_after(0))
    assert [(c["data"]["message_id"], c["data"]["status"]) for c in changes] == [
        ("M1", "sent"),
        ("M1", "rejected"),
    ]


# -- a message registered under its first part's id ---------------------------------------------

FIRST = ("id-1", "id-2", "id-3")


def _parts_history(s: Store, run: Run, message_id: str = "id-1") -> list[tuple[str, str]]:
    return [
        (e["part"], e["status"]) for e in run(s.get_events("telecom23", message_id)) if "part" in e
    ]


def _folds(s: Store, run: Run, message_id: str = "id-1") -> list[str]:
    return [e["status"] for e in run(s.get_events("telecom23", message_id)) if "part" not in e]


def test_the_first_parts_id_may_be_the_messages_id(store_factory: StoreFactory, run: Run) -> None:
    """A report under that id is the first part's, decided on the part and folded, never
    applied to the message directly; the ledger tells the part's events from the message's."""
    s = store_factory()
    r, _ = run(s.register([multipart("id-1", FIRST), Registration("telecom23", "single")]))
    assert r.created and r.conflict is None and r.status == "registered"
    (delivered,) = run(s.record([event("id-1", S.DELIVERED, dedupe_key="d1")]))
    assert delivered.parent_id == "id-1" and delivered.status == "delivered"
    m = one(s, run, "id-1")
    assert m["status"] == "registered"  # not the first part's delivered: two are unheard of
    assert m["parts"] == {"total": 3, "delivered": 1, "failed": 0, "pending": 2}
    (dup,) = run(s.record([event("id-1", S.UNDELIVERED, dedupe_key="d1")]))
    (regression,) = run(s.record([event("id-1", S.SENT)]))
    assert dup.outcome.value == "duplicate" and regression.outcome.value == "regression"
    run(s.record([event("id-2", S.SENT), event("id-3", S.SENT)]))
    assert one(s, run, "id-1")["status"] == "sent"
    assert verify(s, run)[1] == []
    run(s.record([event("id-2", S.DELIVERED), event("id-3", S.DELIVERED)]))
    m = one(s, run, "id-1")
    assert m["status"] == "delivered" and m["final"]
    assert m["parts"] == {"total": 3, "delivered": 3, "failed": 0, "pending": 0}
    assert _parts_history(s, run) == [
        ("id-1", "delivered"),
        ("id-1", "undelivered"),  # the duplicate, kept as the part's
        ("id-1", "sent"),
        ("id-2", "sent"),
        ("id-3", "sent"),
        ("id-2", "delivered"),
        ("id-3", "delivered"),
    ]
    assert _folds(s, run) == ["sent", "delivered"]  # the message's own changes
    assert run(s.get_messages("id-2")) == []
    report, found = verify(s, run)
    assert found == [] and report.checked == 2
    # A status changed by hand is found, and repaired from the message's own events.
    from test_ledger import execute

    execute(s, "UPDATE messages SET status = 'undelivered' WHERE message_id = 'id-1'")
    report, found = verify(s, run)
    assert [m.row.message_id for m in found] == ["id-1"]
    assert found[0].differences["status"] == ("undelivered", "delivered")
    report = run(ledger.verify(s, page_size=3, repair=True))
    assert report.repaired == 1 and one(s, run, "id-1")["status"] == "delivered"
    assert verify(s, run)[1] == []


def test_registering_under_the_first_parts_id_again_is_idempotent_and_conflicts_stay(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart("id-1", FIRST), Registration("telecom23", "single")]))
    run(s.record([event("id-1", S.DELIVERED)]))
    (again,) = run(s.register([multipart("id-1", FIRST)]))
    assert not again.created and again.conflict is None and again.status == "registered"
    assert one(s, run, "id-1")["parts"]["delivered"] == 1
    cases = {
        "parts_differ": multipart("id-1", ("id-1", "id-2")),
        "message_not_multipart": multipart("single", ("single", "x2")),
        "part_of_another_message": multipart("id-2", ("id-2", "x3")),
        "part_is_a_message": multipart("x4", ("x4", "single")),
    }
    for code, reg in cases.items():
        (r,) = run(s.register([reg]))
        assert r.conflict is not None and r.conflict[0] == code, code
    assert run(s.get_messages("x4")) == [] and run(s.get_messages("id-2")) == []
    assert one(s, run, "single").get("parts") is None
    report, found = verify(s, run)
    assert found == [] and report.checked == 2


@pytest.mark.parametrize("unknown_messages", ["create", "hold"])
def test_an_early_dlr_under_the_first_parts_id_becomes_that_parts(
    store_factory: StoreFactory, run: Run, unknown_messages: str
) -> None:
    """With `create`, the message the early report created under that id becomes the
    multipart message (the same row: its history stays), its state the first part's; with
    `hold`, the held report is decided on the first part."""
    s = store_factory(unknown_messages=unknown_messages)
    run(s.record([event("id-1", S.SENT), event("id-1", S.DELIVERED), event("id-2", S.SENT)]))
    early = run(s.get_messages("id-1"))
    assert len(early) == (1 if unknown_messages == "create" else 0)
    (r,) = run(s.register([multipart("id-1", FIRST)]))
    assert r.conflict is None and r.pending_applied >= 2
    assert r.created is (unknown_messages == "hold")
    assert r.status == "registered"  # delivered, sent, and one unheard of
    m = one(s, run, "id-1")
    assert m["status"] == "registered" and not m["final"] and m["registered"]
    assert m["parts"] == {"total": 3, "delivered": 1, "failed": 0, "pending": 2}
    if early:
        assert m["created_at"] == early[0]["created_at"]  # the same message, kept
    assert run(s.get_messages("id-2")) == []
    assert _parts_history(s, run) == [("id-1", "sent"), ("id-1", "delivered"), ("id-2", "sent")]
    report, found = verify(s, run)
    assert found == [] and report.checked == 1
    run(s.record([event("id-3", S.DELIVERED), event("id-2", S.UNDELIVERED)]))
    m = one(s, run, "id-1")
    assert m["status"] == "undelivered" and m["final"]
    assert m["parts"] == {"total": 3, "delivered": 2, "failed": 1, "pending": 0}
    report, found = verify(s, run)
    assert found == [] and report.checked == 1
    (again,) = run(s.register([multipart("id-1", FIRST)]))
    assert not again.created and again.conflict is None and again.status == "undelivered"


def test_polling_a_message_under_its_first_parts_id_asks_its_parts_and_settles_it_once(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.register([multipart("id-1", FIRST)]))
    run(s.record([event("id-3", S.DELIVERED)]))
    attempts = one(s, run, "id-1")["poll"]["attempts"]
    far = format_time(datetime.now(UTC) + timedelta(days=1))
    claimed = run(s.claim_due("telecom23", now=far, limit=100, lease_until=far, owner="me"))
    assert [m.message_id for m in claimed] == ["id-1", "id-2"]
    polled = [event("id-1", S.DELIVERED, source="poll"), event("id-2", S.SENT, source="poll")]
    done = [PollDone(m, "ok", far) for m in reversed(claimed)]
    recorded = run(s.finish_polls("me", polled, done))
    assert [(r.event.message_id, r.status, r.parent_id) for r in recorded] == [
        ("id-1", "delivered", "id-1"),
        ("id-2", "sent", "id-1"),
    ]
    m = one(s, run, "id-1")
    assert m["status"] == "sent" and m["poll"]["attempts"] == attempts + 1
    assert m["parts"] == {"total": 3, "delivered": 2, "failed": 0, "pending": 1}
    # The same status polled again is nothing new, for the first part as for any.
    assert run(s.finish_polls("me", [event("id-1", S.DELIVERED, source="poll")], [])) == []
    assert verify(s, run)[1] == []


def test_two_instances_reporting_the_first_part_while_registering_agree(
    store_factory: StoreFactory, run: Run
) -> None:
    """Reports for every part, the first under the message's own id, through two stores on
    one database at once, with the registration again meanwhile."""
    import asyncio

    a, b = store_factory("shared"), store_factory("shared")
    parts = tuple(f"s{i}" for i in range(10))
    run(a.register([multipart("s0", parts)]))

    async def both() -> None:
        await asyncio.gather(
            *(
                (a if i % 2 else b).record([event(p, S.SENT), event(p, S.DELIVERED)])
                for i, p in enumerate(parts)
            ),
            b.register([multipart("s0", parts)]),
            a.register([multipart("s0", parts)]),
        )

    run(both())
    m = one(a, run, "s0")
    assert m["status"] == "delivered" and m["parts"]["delivered"] == 10
    report, found = verify(b, run)
    assert found == [] and report.checked == 1


def test_a_long_text_registered_under_its_first_segments_id_end_to_end(
    sim_and_receiver: tuple[SimulatorClient, LiveServer],
) -> None:
    """23 Telecom's segmented send registered under each recipient's first segment's id: the
    segments' DLRs (some before the registration, creating a message under that id) fold into
    one status, and `receiver verify` finds every status its events' fold."""
    sim, receiver = sim_and_receiver
    sim.configure(realism={"delivered": 0.5, "drop_all": 0, "drop_final": 0})
    response = httpx.post(
        sim.telecom23_api_base + "/sms/send",
        headers={"X-API-Key": ACCOUNTS.telecom23_api_key},
        json={
            "to": ["+447911123456", "+14155551234", "+4915112345678"],
            "message": "y" * 400,
            "sender_id": "Shop",
        },
    )
    assert response.status_code == 200, response.text
    by_number: dict[str, list[str]] = {}
    for segment in sorted(response.json()["messages"], key=lambda s: s["segment_num"]):
        by_number.setdefault(segment["dnis"], []).append(segment["message_id"])
    assert all(len(parts) == 3 for parts in by_number.values())
    registrations = [
        {"provider": "telecom23", "message_id": parts[0], "to": number, "parts": parts}
        for number, parts in sorted(by_number.items())
    ]
    with receiver.client() as client:
        answer = client.post("/v1/messages", json={"messages": registrations})
        assert answer.status_code == 200, answer.text
        assert all(item.get("error_code") is None for item in answer.json()["messages"])
        again = client.post("/v1/messages", json=registrations[0])
        assert again.status_code == 200 and not again.json()["created"]
    for reg in registrations:
        mid = reg["message_id"]
        # Final as soon as one segment fails (a worse failure may follow): wait for the fold
        # of every segment's fate as the simulator tells it.
        found = wait_until(
            lambda reg=reg: (
                (m := _final(receiver, reg["message_id"]))
                and m["status"] == _truth_so_far(sim, reg["parts"])
                and m
            ),
            what=f"{mid} final, folded from every segment's fate",
        )
        assert found["parts"]["total"] == 3
        history = events(receiver, mid)
        assert {e["part"] for e in history if "part" in e} == set(reg["parts"])
        assert any(e["outcome"] == "applied" and "part" not in e for e in history)
        for part in reg["parts"][1:]:  # the later segments are not messages
            with receiver.client() as client:
                assert client.get(f"/v1/messages/{part}").status_code == 404
    with receiver.client() as client:
        assert client.get("/v1/stats").json()["total"] == 3
    report = subprocess.run(
        [str(BIN), "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RECEIVER_DATABASE": receiver.settings.database},
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "3 message(s) checked against their events, 0 mismatch(es)" in report.stdout
