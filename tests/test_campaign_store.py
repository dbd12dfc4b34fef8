"""Sends registered whole, in both stores: registration, claims and leases across two
instances, a sweep resumed from its stored cursor, no junk events, and the summary's counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database
from stores import StoreFactory

from receiver.engine import Status, StatusEvent, format_time
from receiver.providers.mesms import STATUS_MAP
from receiver.store import Registration, Store
from receiver.store.sends import SendPage
from receiver.store.sqlite import SQLiteStore, schema

Run = Callable[[Awaitable[Any]], Any]
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
NOW, LATER, MUCH_LATER = "2026-12-03T10:00:00.000Z", "2026-12-03T10:05:00.000Z", "2027"


def event(position: int, raw: str = "success", uuid: str = UUID) -> StatusEvent:
    msisdn = f"66{800000000 + position}"
    return StatusEvent(
        provider="mesms",
        message_id=f"{uuid}:{msisdn}",
        provider_status=raw,
        status=STATUS_MAP.get(raw),
        source="poll",
        to_number=msisdn,
    )


def page(
    after: int, raws: list[str], *, last: bool = False, malformed: tuple[str, ...] = ()
) -> SendPage:
    events = [event(after + i + 1, raw) for i, raw in enumerate(raws)]
    end = after + len(raws) + len(malformed)
    return SendPage(
        "mesms",
        UUID,
        after,
        events,
        None if last else end,
        malformed,
        lease_until=LATER,
        next_sweep_at=LATER,
    )


def claim(store: Store, run: Run, owner: str, now: str = NOW, until: str = LATER) -> list[Any]:
    found: list[Any] = run(
        store.claim_sends("mesms", now=now, limit=10, lease_until=until, owner=owner)
    )
    return found


def events_of(store: Store, run: Run, position: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = run(store.get_events("mesms", event(position).message_id))
    return found


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory(dlr_grace=0.0)


def test_a_send_registered_by_its_uuid_is_tracked_once_and_due_at_once(
    store: Store, run: Run
) -> None:
    first = run(store.register_sends([Registration("mesms", UUID, account="shop")]))
    again = run(store.register_sends([Registration("mesms", UUID, metadata={"c": "x"})]))
    assert [r.created for r in first + again] == [True, False]
    summary = run(store.send_summary(UUID))
    assert summary["tracked"] and summary["state"] == "waiting"
    assert summary["account"] == "shop" and summary["metadata"] == {"c": "x"}
    assert summary["recipients"] == 0 and summary["counts"] == {}
    assert run(store.send_summary("1f8fad5b-d9cb-469f-a165-70867728950e")) is None
    assert [c.uuid for c in claim(store, run, "a", now=MUCH_LATER)] == [UUID]


def test_pages_move_the_cursor_and_the_last_one_settles_the_send(store: Store, run: Run) -> None:
    run(store.register_sends([Registration("mesms", UUID)]))
    (c,) = claim(store, run, "a", now=MUCH_LATER, until="2028")
    assert c.cursor == 0
    written = run(store.record_send_page("a", page(0, ["success", "pending", "failed"])))
    assert written is not None and not written.done
    # The same page again (a claimer that lost its lease) writes nothing.
    assert run(store.record_send_page("a", page(0, ["success"]))) is None
    summary = run(store.send_summary(UUID))
    assert summary["state"] == "sweeping" and summary["sweep"]["cursor"] == 3
    assert summary["counts"] == {"delivered": 1, "queued": 1, "undelivered": 1}
    assert summary["final"] == 2 and summary["recipients"] == 3
    done = run(store.record_send_page("a", page(3, ["success"], last=True, malformed=('{"x":1}',))))
    assert done.done and not done.settled  # one recipient is still pending
    summary = run(store.send_summary(UUID))
    assert summary["state"] == "waiting" and summary["sweep"] is None
    assert summary["last_sweep"]["created"] == 4 and summary["last_sweep"]["malformed"] == 1
    assert summary["last_sweep"]["pages"] == 2 and summary["page_requests"] == 2
    assert summary["malformed"] == 1 and summary["malformed_sample"] == ['{"x":1}']
    assert summary["next_sweep_at"] == LATER
    # The next sweep starts from the beginning, and settles the send once all are final.
    (c,) = claim(store, run, "a", now=MUCH_LATER, until="2028")
    assert c.cursor == 0 and c.sweeps == 1
    end = run(store.record_send_page("a", page(0, ["success"] * 4, last=True)))
    assert end.settled
    summary = run(store.send_summary(UUID))
    assert summary["state"] == "settled" and summary["final"] == summary["recipients"] == 4
    assert claim(store, run, "a", now=MUCH_LATER) == []


def test_a_sweep_keeps_an_event_only_for_a_change_or_a_new_fact(store: Store, run: Run) -> None:
    """A final recipient answered lower (or differently) each sweep gets no event: the sweep's
    summary counts it instead."""
    run(store.register_sends([Registration("mesms", UUID)]))
    for sweep, raws in enumerate(
        (
            ["success", "pending"],
            ["pending", "pending"],
            ["failed", "success"],
        )
    ):
        claim(store, run, "a", now=MUCH_LATER, until="2028")
        written = run(store.record_send_page("a", page(0, raws, last=True)))
        assert written is not None and written.done, sweep
    assert [e["outcome"] for e in events_of(store, run, 1)] == ["applied"]
    assert [e["outcome"] for e in events_of(store, run, 2)] == ["applied", "applied"]
    summary = run(store.send_summary(UUID))
    assert summary["state"] == "settled"
    assert summary["counts"] == {"delivered": 2}


def test_regressions_are_counted_in_the_sweeps_summary(store: Store, run: Run) -> None:
    run(store.register_sends([Registration("mesms", UUID)]))
    for raws in (["success", "pending"], ["pending", "pending"]):
        claim(store, run, "a", now=MUCH_LATER, until="2028")
        run(store.record_send_page("a", page(0, raws, last=True)))
    last = run(store.send_summary(UUID))["last_sweep"]
    assert last["regression"] == 1 and last["unchanged"] == 1


def test_two_instances_never_hold_one_send_and_a_resumed_sweep_continues_the_others(
    store_factory: StoreFactory, run: Run
) -> None:
    one = store_factory("shared", dlr_grace=0.0)
    two = store_factory("shared", dlr_grace=0.0)
    run(one.register_sends([Registration("mesms", UUID)]))
    assert len(claim(one, run, "one", now=MUCH_LATER, until="2028")) == 1
    assert claim(two, run, "two", now=MUCH_LATER, until="2028") == []  # leased to one
    assert run(one.record_send_page("one", page(0, ["success"] * 3))) is not None
    # one's lease runs out (no page written by 2028): two takes the send over at its cursor.
    (taken,) = claim(two, run, "two", now="2029", until="2030")
    assert taken.cursor == 3
    assert run(one.record_send_page("one", page(3, ["success"]))) is None  # no longer one's
    assert run(two.record_send_page("two", page(3, ["success"], last=True))).settled
    summary = run(one.send_summary(UUID))
    assert summary["recipients"] == summary["final"] == 4 and summary["sweeps"] == 1
    for position in range(1, 5):
        assert len(events_of(two, run, position)) == 1


def test_a_released_send_keeps_its_cursor(store: Store, run: Run) -> None:
    run(store.register_sends([Registration("mesms", UUID)]))
    claim(store, run, "a", now=MUCH_LATER, until="2028")
    run(store.record_send_page("a", page(0, ["pending"] * 2)))
    assert run(store.release_send("mesms", UUID, "a", next_sweep_at=NOW, result="handed_back"))
    assert not run(store.release_send("mesms", UUID, "b", next_sweep_at=NOW, result="x"))
    (again,) = claim(store, run, "b", now=MUCH_LATER, until="2028")
    assert again.cursor == 2
    assert run(store.send_summary(UUID))["sweep"]["pages"] == 1


def test_a_callback_for_a_tracked_recipient_never_starts_a_sweep_of_the_send(
    store: Store, run: Run
) -> None:
    """A pushed report puts its recipient in the poll queue; the claim takes it out again (the
    send's own sweeps answer for it) instead of claiming the whole send."""
    run(store.register_sends([Registration("mesms", UUID)]))
    ev = event(9, "pending")
    callback = StatusEvent(
        provider="mesms",
        message_id=ev.message_id,
        provider_status="pending",
        status=Status.QUEUED,
        source="callback",
    )
    run(store.record([callback]))
    claimed = run(
        store.claim_due(
            "mesms",
            now=MUCH_LATER,
            limit=10,
            lease_until="2028",
            owner="a",
            group_of=lambda mid: mid.partition(":")[0] + ":",
        )
    )
    assert claimed == []
    assert run(store.next_due("mesms")) is None
    assert run(store.send_summary(UUID))["counts"] == {"queued": 1}


def test_a_sweep_past_the_sends_age_gives_up_what_is_not_final(store: Store, run: Run) -> None:
    run(store.register_sends([Registration("mesms", UUID)]))
    claim(store, run, "a", now=MUCH_LATER, until="2028")
    last = page(0, ["success", "pending"], last=True)
    reason = "no final status within 3 days: the send's sweeps gave up"
    from dataclasses import replace

    written = run(store.record_send_page("a", replace(last, give_up_reason=reason)))
    assert written.settled and written.tally["gave_up"] == 1
    summary = run(store.send_summary(UUID))
    assert summary["state"] == "settled"
    assert summary["counts"] == {"delivered": 1, "unconfirmed": 1}
    assert format_time  # the stored times are kept strings throughout


def test_the_upgrade_counts_the_recipients_already_stored(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrations.apply(Database(conn), stop_before="0010_sends")
    for message_id, status in [
        (f"{UUID}:1", "delivered"),
        (f"{UUID}:2", "queued"),
        ("SM1", "sent"),
    ]:
        conn.execute(
            "INSERT INTO messages (provider, message_id, status, registered, is_final, "
            "created_at, updated_at) VALUES (?, ?, ?, 1, 0, ?, ?)",
            ("twilio" if message_id == "SM1" else "mesms", message_id, status, NOW, NOW),
        )
    conn.close()
    store = SQLiteStore(str(path))
    assert store.migrate()[0] == "0010_sends"  # and any later steps
    run(store.open())
    try:
        found = run(store.send_summary(UUID))
        assert found["counts"] == {"delivered": 1, "queued": 1} and not found["tracked"]
    finally:
        run(store.close())
