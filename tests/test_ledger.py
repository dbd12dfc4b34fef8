"""The ledger (receiver.ledger, `receiver verify`): every message's stored state is the fold of
its events; rows changed by hand are found, exactly those, and repaired from their events.

Store behaviour runs against every kind of store (tests/stores.py); the command as a process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from stores import StoreFactory

from receiver import ledger
from receiver.engine import Status, StatusEvent, format_time
from receiver.ledger import LedgerEvent
from receiver.store import Registration, Store
from receiver.store.base import PollDone

Run = Callable[[Awaitable[Any]], Any]
BIN = Path(sys.executable).parent / "receiver"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


def event(message_id: str, status: Status | None, raw: str | None = None, **kw: Any) -> StatusEvent:
    return StatusEvent(
        provider="twilio",
        message_id=message_id,
        provider_status=raw or (status.value if status else "weird"),
        status=status,
        **kw,
    )


def execute(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database behind its back (written with "?" placeholders)."""
    if store.kind == "sqlite":
        with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
            return conn.execute(sql, params).fetchall()
    with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        cur = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def verify(store: Store, run: Run, **kw: Any) -> tuple[ledger.Report, list[ledger.Mismatch]]:
    found: list[ledger.Mismatch] = []
    report = run(ledger.verify(store, page_size=3, on_mismatch=found.append, **kw))
    return report, found


async def every_kind_of_recording(s: Store) -> None:
    """Registrations (with and without sent_at, before and after callbacks), duplicates by
    delivery id, regressions, conflicts, unmapped statuses, polled statuses, a give-up by
    timeout and a delivery after it, and held events when the store holds them."""
    await s.register([Registration("twilio", "R1", sent_at=at(-60), to_number="+15550001")])
    await s.record([event("R1", Status.SENT), event("R1", Status.DELIVERED)])
    await s.record([event("R1", Status.SENT)])  # regression
    await s.record([event("C1", Status.SENT, dedupe_key="k1")])  # created from a callback
    # The same delivery again, whatever it says: a duplicate that decides nothing.
    await s.record([event("C1", Status.DELIVERED, dedupe_key="k1")])
    await s.record([event("C1", Status.UNDELIVERED), event("C1", Status.FAILED)])  # conflict
    await s.register([Registration("twilio", "C1", sent_at=at(-30))])  # corrects sent_at
    await s.record([event("U1", None, "weird"), event("U1", Status.QUEUED)])  # unmapped
    await s.register([Registration("twilio", "U1")])  # no sent_at: the event's stays
    # Held (hold mode) or created (create mode) before their registration.
    await s.record([event("H1", Status.SENT, dedupe_key="h"), event("H1", Status.SENT, "x")])
    await s.record([event("H1", Status.DELIVERED, dedupe_key="h")])  # same delivery id
    await s.record([event("H2", Status.DELIVERED)])
    await s.register([Registration("twilio", "H1"), Registration("twilio", "H2")])
    await s.record([event("H1", Status.UNDELIVERED)])
    await s.register([Registration("twilio", "P1"), Registration("twilio", "P2")])
    await s.record([event("P1", Status.SENT), event("P2", Status.SENT)])
    far = format_time(datetime.now(UTC) + timedelta(days=1))
    claimed = await s.claim_due("twilio", now=far, limit=100, lease_until=far, owner="me")
    by_id = {m.message_id: m for m in claimed}
    assert {"P1", "P2"} <= set(by_id)
    polled = [event("P1", Status.DELIVERED, source="poll")]
    done = [
        PollDone(by_id["P1"], "ok", far),
        PollDone(by_id["P2"], "ok", far, give_up_reason="max_age"),
    ]
    await s.finish_polls("me", polled, done)
    await s.record([event("P2", Status.DELIVERED)])  # after the give-up: positive evidence


@pytest.mark.parametrize("unknown_messages", ["create", "hold"])
def test_verify_finds_nothing_wrong_after_every_kind_of_recording(
    store_factory: StoreFactory, run: Run, unknown_messages: str
) -> None:
    s = store_factory(unknown_messages=unknown_messages)
    run(every_kind_of_recording(s))
    report, found = verify(s, run)
    assert found == []
    assert report.checked == 7 and report.mismatched == 0
    # The give-up and the polled status are in the fold as the rules made them.
    (p2,) = run(s.get_messages("P2"))
    assert (p2["status"], p2["final_via"]) == ("delivered", "callback")


def test_events_held_before_a_switch_to_create_are_replayed_where_the_registration_decided_them(
    store_factory: StoreFactory, run: Run
) -> None:
    """Held (hold), then the message created by a callback (create), then registered: the
    held events are decided last, and the replay puts them there."""
    holding = store_factory("switch", unknown_messages="hold")
    creating = store_factory("switch", unknown_messages="create")
    clock = iter([T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)])
    for s in (holding, creating):  # each write a second after the last, whatever the machine
        s.policy = replace(s.policy, clock=lambda: next(clock))  # type: ignore[attr-defined]
    run(holding.record([event("S1", Status.FAILED)]))
    run(creating.record([event("S1", Status.UNDELIVERED)]))
    run(creating.register([Registration("twilio", "S1")]))
    history = run(creating.get_events("twilio", "S1"))
    assert [(e["status"], e["outcome"]) for e in history] == [
        ("failed", "conflict"),
        ("undelivered", "applied"),
    ]
    report, found = verify(creating, run)
    assert found == [] and report.checked == 1


def test_verify_finds_exactly_the_rows_changed_by_hand(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory(unknown_messages="hold")
    run(every_kind_of_recording(s))
    execute(s, "UPDATE messages SET status = 'delivered' WHERE message_id = 'C1'")
    execute(s, "UPDATE messages SET sent_at = ? WHERE message_id = 'R1'", (at(5),))
    execute(s, "UPDATE messages SET final_via = 'poll' WHERE message_id = 'H1'")
    execute(
        s,
        "UPDATE messages SET status = 'sent', is_final = 0, final_at = NULL, final_via = NULL "
        "WHERE message_id = 'P2'",
    )
    report, found = verify(s, run)
    assert report.checked == 7 and report.mismatched == 4
    differences = {m.row.message_id: m.differences for m in found}
    assert differences == {
        "C1": {"status": ("delivered", "undelivered")},
        "R1": {"sent_at": (at(5), at(-60))},
        "H1": {"final_via": ("poll", "callback")},
        "P2": {
            "status": ("sent", "delivered"),
            "final": (False, True),
            "final_via": (None, "callback"),
            "final_at": (None, differences["P2"]["final_at"][1]),
        },
    }
    assert differences["P2"]["final_at"][1] is not None


def test_repair_rewrites_each_mismatch_from_its_events_and_verify_then_accepts_it(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(every_kind_of_recording(s))
    before = {m["message_id"]: m for m in run(s.list_messages(_all()))[0]}
    execute(s, "UPDATE messages SET status = 'delivered', is_final = 1 WHERE message_id = 'U1'")
    execute(s, "UPDATE messages SET provider_status = 'nonsense' WHERE message_id = 'C1'")

    repaired: list[ledger.Mismatch] = []
    report, found = verify(s, run, repair=True, on_repaired=repaired.append)
    assert report.mismatched == report.repaired == 2 and report.settled == 0
    assert sorted(m.row.message_id for m in repaired) == ["C1", "U1"]

    report, found = verify(s, run)
    assert found == [] and report.checked == 7
    after = {m["message_id"]: m for m in run(s.list_messages(_all()))[0]}
    for message_id in ("C1", "U1"):
        for column in ("status", "provider_status", "final", "final_via", "sent_at", "final_at"):
            assert after[message_id][column] == before[message_id][column], column
    # Wrongly made final, it is back in the poll queue, due now.
    assert execute(s, "SELECT next_poll_at IS NOT NULL FROM messages WHERE message_id = 'U1'")[0][0]
    history = run(s.get_events("twilio", "U1"))
    repair = history[-1]
    assert (repair["source"], repair["outcome"], repair["provider_status"]) == (
        "repair",
        "applied",
        "receiver_repaired",
    )
    assert (repair["previous_status"], repair["status"]) == ("delivered", "queued")
    assert json.loads(repair["body"]) == {
        "status": {"stored": "delivered", "events": "queued"},
        "final": {"stored": True, "events": False},
    }
    # Later callbacks are decided against the repaired row, and the ledger still agrees.
    run(s.record([event("U1", Status.DELIVERED)]))
    assert verify(s, run)[1] == []


def test_repair_leaves_a_message_written_correctly_meanwhile_alone(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory()
    run(s.record([event("M1", Status.SENT)]))
    execute(s, "UPDATE messages SET status = 'queued' WHERE message_id = 'M1'")
    _, found = verify(s, run)
    # The service sets it right before the repair runs (here: by hand, as it was).
    execute(s, "UPDATE messages SET status = 'sent' WHERE message_id = 'M1'")
    assert run(s.repair_ledger(found)) == []  # type: ignore[attr-defined]
    assert [e["source"] for e in run(s.get_events("twilio", "M1"))] == ["callback"]


def _all() -> Any:
    from receiver.store import MessageFilter

    return MessageFilter(limit=1000)


# -- the replay, with plain calls -----------------------------------------------------------


def ev(
    id: int,
    status: str | None,
    received: float,
    *,
    source: str = "callback",
    key: str | None = None,
    resolved: float | None = None,
    raw: str | None = None,
) -> LedgerEvent:
    return LedgerEvent(
        id,
        source,
        raw or status or "weird",
        status,
        key,
        at(received),
        None if resolved is None else at(resolved),
    )


def test_held_events_are_decided_when_their_registration_came() -> None:
    """Held before the message existed, decided by the registration that created it: before
    every later callback, even one recorded by an instance whose clock is behind."""
    events = [ev(1, "undelivered", 0, resolved=10), ev(2, "failed", 10), ev(3, "expired", 9)]
    assert [e.id for e in ledger.decision_order(events, created_at=at(10))] == [1, 2, 3]
    folded = ledger.replay("twilio", "M", events, created_at=at(10))
    assert (folded.status, folded.final_at) == ("undelivered", at(10))


def test_held_events_resolved_after_callbacks_that_created_the_message_come_after_them() -> None:
    """A message created by a callback (RECEIVER_UNKNOWN_MESSAGES switched from hold to
    create) whose earlier held events its registration decided later."""
    events = [ev(1, "failed", 0, resolved=20), ev(2, "undelivered", 5), ev(3, "sent", 30)]
    assert [e.id for e in ledger.decision_order(events)] == [2, 1, 3]
    folded = ledger.replay("twilio", "M", events)
    assert (folded.status, folded.final_at) == ("undelivered", at(5))


def test_a_delivery_id_seen_before_decides_nothing_but_a_polled_status_is_never_deduplicated() -> (
    None
):
    events = [
        ev(1, "sent", 0, key="d"),
        ev(2, "delivered", 1, key="d"),
        ev(3, "undelivered", 2, key="d", source="poll"),
    ]
    folded = ledger.replay("twilio", "M", events)
    assert (folded.status, folded.final_via, folded.sent_at) == ("undelivered", "poll", at(0))


def test_the_sent_time_a_registration_gave_wins_and_repair_events_decide_nothing() -> None:
    events = [ev(1, "sent", 0), ev(2, "delivered", 3, source="repair", raw="receiver_repaired")]
    assert ledger.replay("twilio", "M", events).sent_at == at(0)
    assert ledger.replay("twilio", "M", events, registered_sent_at=at(-9)).sent_at == at(-9)
    assert ledger.replay("twilio", "M", events).status == "sent"


# -- the command -----------------------------------------------------------------------------


def database_env(store: Store) -> dict[str, str]:
    """The settings that name the store's database, as the service is given them."""
    if store.kind == "sqlite":
        return {"RECEIVER_DATABASE": store.path}  # type: ignore[attr-defined]
    return {"DATABASE_URL": store.url}  # type: ignore[attr-defined]


def receiver(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_the_command_reports_mismatches_exits_1_and_repairs_them(
    store_factory: StoreFactory, run: Run
) -> None:
    s = store_factory("cli")
    run(every_kind_of_recording(s))
    env = database_env(s)
    clean = receiver("verify", **env)
    assert clean.returncode == 0, clean.stderr
    assert "7 message(s) checked against their events, 0 mismatch(es)" in clean.stdout

    execute(s, "UPDATE messages SET status = 'expired' WHERE message_id = 'H2'")
    found = receiver("verify", **env)
    assert found.returncode == 1
    assert "mismatch: twilio/H2" in found.stdout and "status 'expired'" in found.stdout
    assert "1 mismatch(es)" in found.stdout

    fixed = receiver("verify", "--repair", **env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired: twilio/H2" in fixed.stdout and "1 repaired" in fixed.stdout
    assert receiver("verify", **env).returncode == 0


def test_the_command_refuses_a_database_that_is_not_there(tmp_path: Path) -> None:
    result = receiver("verify", RECEIVER_DATABASE=str(tmp_path / "none.db"))
    assert result.returncode == 1 and "there is no database" in result.stderr
    assert not (tmp_path / "none.db").exists()
