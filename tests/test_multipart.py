"""Multipart messages (receiver.store.parts): a concatenated SMS registered with its parts'
ids, each part's DLRs recorded on the part and folded into the message's one status.

The fold is engine.fold_parts (plain calls); the recording runs against every kind of store
(tests/stores.py); the API and the simulator's multipart send against a real server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from stores import StoreFactory

from receiver import engine, ledger
from receiver.engine import Status, StatusEvent
from receiver.store import Registration, Store

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
    }
    for code, reg in cases.items():
        (r,) = run(s.register([reg]))
        assert r.conflict is not None and r.conflict[0] == code, code
    assert run(s.get_messages("M2")) == [] and run(s.get_messages("M3")) == []
    assert run(s.get_messages("p9")) == []


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


def test_polling_asks_about_the_parts_still_pending_and_settles_the_message_once(
    store_factory: StoreFactory, run: Run
) -> None:
    from datetime import UTC, datetime, timedelta

    from receiver.engine import format_time
    from receiver.store.base import PollDone

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
