"""The ledger: every message's stored state re-derived from its events (`receiver verify`).

A message's status columns are a fold of its events through the same rule the store applied
when each was recorded (receiver.engine.apply_event), so they can be checked, and rebuilt,
from the history alone. The replay here is pure; the store reads the pages and writes the
repairs (RulesStore.ledger_page, RulesStore.repair_ledger).

What the replay reproduces of receiver.store.rules:
- events are decided in the order they were recorded (their ids), except events held while
  the message was unknown (`pending_unknown`, RECEIVER_UNKNOWN_MESSAGES=hold): those were
  decided when the registration came (their resolved_at), before any event recorded after it
  (decision_order);
- a callback whose delivery id (dedupe_key) an earlier event of the message carried is the
  same delivery again and decides nothing (polled and timeout events are never deduplicated);
- a registration is not an event: it never changes the status, but its sent_at (kept as
  registered_sent_at) wins over the one an event gave;
- the `repair` events verify itself records say what it rewrote, and decide nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from receiver import engine
from receiver.engine import MessageState, Outcome, Status, StatusEvent

# The columns verify compares, as they are named in its report.
FIELDS = ("status", "provider_status", "final", "final_via", "sent_at", "final_at")

REPAIR_SOURCE = "repair"  # the source of the event a repair records
REPAIR_PROVIDER_STATUS = "receiver_repaired"

# Events a callback went through the dedupe check for (rules.record); polls and give-ups don't.
_NOT_DEDUPED = frozenset({"poll", "timeout", REPAIR_SOURCE})

_STATUSES = {status.value: status for status in Status}


class LedgerEvent(NamedTuple):
    """The part of an event the replay reads (the dialects' ledger.EVENT_COLUMNS, in order)."""

    id: int
    source: str
    provider_status: str
    status: str | None
    dedupe_key: str | None
    received_at: str
    resolved_at: str | None  # set: held as pending_unknown, decided at this time


class LedgerRow(NamedTuple):
    """A message's stored state (the dialects' ledger.MESSAGE_COLUMNS, in order)."""

    pk: int
    provider: str
    message_id: str
    status: str
    provider_status: str | None
    final: bool | int  # is_final as the dialect stores it (SQLite: 0 or 1)
    final_via: str | None
    sent_at: str | None
    final_at: str | None
    registered_sent_at: str | None
    created_at: str | None = None  # when the message was first known

    def fields(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.provider_status,
            bool(self.final),
            self.final_via,
            self.sent_at,
            self.final_at,
        )


class Folded(NamedTuple):
    """What the events say the message's columns are (FIELDS, in order)."""

    status: str
    provider_status: str | None
    final: bool
    final_via: str | None
    sent_at: str | None
    final_at: str | None


@dataclass(frozen=True)
class Mismatch:
    """A message whose stored state is not the fold of its events."""

    row: LedgerRow
    folded: Folded
    events: int

    @property
    def differences(self) -> dict[str, tuple[Any, Any]]:
        """Each field that differs: (stored, from the events)."""
        return {
            name: (stored, derived)
            for name, stored, derived in zip(FIELDS, self.row.fields(), self.folded, strict=True)
            if stored != derived
        }

    def describe(self) -> str:
        diffs = ", ".join(
            f"{name} {stored!r} (events say {derived!r})"
            for name, (stored, derived) in self.differences.items()
        )
        return f"{self.row.provider}/{self.row.message_id} (id {self.row.pk}): {diffs}"


def decision_order(
    events: Sequence[LedgerEvent], created_at: str | None = None
) -> list[LedgerEvent]:
    """The events in the order the store decided them.

    Events are recorded in the order they are decided, each message's writes serialised (one
    SQLite writer; a PostgreSQL lock per message), so ids give the order, except for held
    events: recorded before the message was known, decided when the registration came.
    When that registration created the message (its created_at is their resolved_at), they
    come before every other event. Otherwise (the message was created by a callback after
    RECEIVER_UNKNOWN_MESSAGES changed from hold to create) they go before the first event
    recorded at or after the time they were decided.
    """
    held = sorted((e for e in events if e.resolved_at is not None), key=_resolved)
    if not held:
        return list(events)
    direct = [e for e in events if e.resolved_at is None]
    if created_at is not None and all(e.resolved_at == created_at for e in held):
        return held + direct
    ordered: list[LedgerEvent] = []
    waiting = iter(held)
    pending = next(waiting, None)
    for ev in direct:
        while pending is not None and _resolved(pending) <= (ev.received_at, ev.id):
            ordered.append(pending)
            pending = next(waiting, None)
        ordered.append(ev)
    if pending is not None:
        ordered.append(pending)
        ordered.extend(waiting)
    return ordered


def _resolved(ev: LedgerEvent) -> tuple[str, int]:
    # At the same millisecond, the held events first: their registration took the lock first.
    return (ev.resolved_at or ev.received_at, -1)


def replay(
    provider: str,
    message_id: str,
    events: Sequence[LedgerEvent],
    registered_sent_at: str | None = None,
    created_at: str | None = None,
) -> Folded:
    """The message's state from its events (by id), as the store's rules would have left it."""
    seen: set[str] = set()
    repeats: set[int] = set()
    for ev in events:  # a delivery id counts as seen from the event recorded first with it
        key = ev.dedupe_key
        if key is None:
            continue
        if key in seen and ev.source not in _NOT_DEDUPED:
            repeats.add(ev.id)
        seen.add(key)
    # As rules.record creates a message from its first event, and rules.register: registered.
    state = MessageState(Status.REGISTERED)
    provider_status: str | None = None
    for ev in decision_order(events, created_at):
        if ev.id in repeats or ev.source == REPAIR_SOURCE:
            continue
        status = _STATUSES[ev.status] if ev.status is not None else None
        event = StatusEvent(provider, message_id, ev.provider_status, status, source=ev.source)
        _, new = engine.apply_event(state, event, ev.resolved_at or ev.received_at)
        if new is not None:
            state, provider_status = new, ev.provider_status
    return Folded(
        status=state.status.value,
        provider_status=provider_status,
        final=state.final,
        final_via=state.final_via,
        # The app's sent time corrects the one an event gave (rules.register's _correct).
        sent_at=registered_sent_at if registered_sent_at is not None else state.sent_at,
        final_at=state.final_at,
    )


def check(row: LedgerRow, events: Sequence[LedgerEvent]) -> Mismatch | None:
    """None when the row is the fold of its events; else what differs."""
    folded = replay(row.provider, row.message_id, events, row.registered_sent_at, row.created_at)
    if row.fields() == tuple(folded):
        return None
    return Mismatch(row, folded, len(events))


def repair_changes(folded: Folded) -> dict[str, Any]:
    """The columns a repair writes (rules.MESSAGE_COLUMNS names) to make the row the fold."""
    return {
        "status": folded.status,
        "provider_status": folded.provider_status,
        "is_final": folded.final,
        "final_via": folded.final_via,
        "sent_at": folded.sent_at,
        "final_at": folded.final_at,
    }


def repair_event(mismatch: Mismatch) -> StatusEvent:
    """The event a repair records: the status it set, and what was stored before, in its body."""
    row, folded = mismatch.row, mismatch.folded
    return StatusEvent(
        provider=row.provider,
        message_id=row.message_id,
        provider_status=REPAIR_PROVIDER_STATUS,
        status=_STATUSES[folded.status],
        source=REPAIR_SOURCE,
        body=json.dumps(
            {
                name: {"stored": stored, "events": derived}
                for name, (stored, derived) in mismatch.differences.items()
            }
        ),
    )


# -- in the writer: the repair ----------------------------------------------------------


class Locked(NamedTuple):
    """A message read again inside the repair's write transaction (locked where that is
    needed), with its events and its place in the poll queue."""

    row: LedgerRow
    events: list[LedgerEvent]
    next_poll_at: str | None


def repair(
    rows: Any,
    read: Callable[[Any, int], Locked | None],
    mismatches: Sequence[Mismatch],
    now: str,
) -> list[Mismatch]:
    """Rewrite each message that still mismatches from its events, and record a `repair`
    event on it; the mismatches repaired (as found in this transaction).

    `rows` is the write transaction's rules.RowAccess, `read(conn, pk)` the dialect's locked
    read. Each message is checked again here: the service may have written it since the page
    was read, and the repair must decide on the row as it is now.
    """
    repaired: list[Mismatch] = []
    for found in mismatches:
        locked = read(rows.conn, found.row.pk)
        if locked is None:  # pruned meanwhile
            continue
        mismatch = check(locked.row, locked.events)
        if mismatch is None:  # consistent by now
            continue
        folded = mismatch.folded
        changes = repair_changes(folded)
        changes["updated_at"] = now
        # Final leaves the poll queue; a message wrongly kept final goes back in, due now.
        changes["next_poll_at"] = None if folded.final else (locked.next_poll_at or now)
        rows.update_message(locked.row.pk, changes)
        rows.insert_event(
            repair_event(mismatch),
            message_pk=locked.row.pk,
            previous_status=locked.row.status,
            outcome=Outcome.APPLIED,
            received_at=now,
        )
        repaired.append(mismatch)
    return repaired


def page_from_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[LedgerRow, list[LedgerEvent]]]:
    """A page from the rows of a messages-left-join-events read, ordered by message then event
    (LedgerRow's columns, then LedgerEvent's; the event's all NULL for a message without)."""
    page: list[tuple[LedgerRow, list[LedgerEvent]]] = []
    width = len(LedgerRow._fields)
    for row in rows:
        if not page or page[-1][0].pk != row[0]:
            page.append((LedgerRow(*row[:width]), []))
        if row[width] is not None:
            page[-1][1].append(LedgerEvent(*row[width:]))
    return page


# -- the walk over a store ------------------------------------------------------------------


@dataclass
class Report:
    checked: int = 0
    mismatched: int = 0
    repaired: int = 0  # rewritten from their events
    settled: int = 0  # consistent by the time the repair looked again (written meanwhile)


async def walk(
    store: Any, *, page_size: int = 1000, after: int = 0
) -> AsyncIterator[tuple[int, list[Mismatch]]]:
    """Each page of messages, in id order: how many were checked and those that mismatch.

    A page (its messages and their events) is one statement, so one snapshot: a message
    written meanwhile by a live service is seen with all of that write or none of it. The
    next page is read while this one is replayed (one page ahead: memory stays bounded).
    """
    ahead = asyncio.ensure_future(store.ledger_page(after, page_size))
    try:
        while True:
            page: list[tuple[LedgerRow, list[LedgerEvent]]] = await ahead
            if not page:
                return
            more = len(page) == page_size
            if more:
                ahead = asyncio.ensure_future(store.ledger_page(page[-1][0].pk, page_size))
            found = [m for row, events in page if (m := check(row, events)) is not None]
            yield len(page), found
            if not more:
                return
    finally:
        if not ahead.done():
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead


async def verify(
    store: Any,
    *,
    repair: bool = False,
    page_size: int = 1000,
    on_mismatch: Callable[[Mismatch], None] = lambda m: None,
    on_repaired: Callable[[Mismatch], None] = lambda m: None,
) -> Report:
    """Check every message of the opened store; with `repair`, rewrite each mismatch."""
    report = Report()
    async for checked, found in walk(store, page_size=page_size):
        report.checked += checked
        report.mismatched += len(found)
        for mismatch in found:
            on_mismatch(mismatch)
        if repair and found:
            repaired = await store.repair_ledger(found)
            for mismatch in repaired:
                on_repaired(mismatch)
            report.repaired += len(repaired)
            report.settled += len(found) - len(repaired)
    return report
