"""The rules of recording, once for every store: what a callback, a registration, a polled
status, a give-up and a claim do to the rows. No SQL here.

Each function runs inside one write transaction of its store, over that transaction's
`RowAccess`: a few synchronous row reads and writes that the store implements in its dialect.
The status rule itself (ranks, positive evidence, non-regression) is receiver.engine's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from receiver import engine
from receiver.engine import (
    MessageState,
    Outcome,
    Status,
    StatusEvent,
    format_time,
    format_timestamp,
)
from receiver.push import payload
from receiver.store.base import NEVER, DueMessage, PollDone, Recorded, Registered, Registration
from receiver.store.parts import Part


class Current(NamedTuple):
    """A message as the rules read it: its key, the state the transition rule reads, and the
    columns the rules fill in or keep (read in the same one-row read). A named tuple: one is
    built for every callback, and a tuple is the cheapest record to build."""

    pk: int
    state: MessageState
    provider_status: str | None = None
    account: str | None = None
    to_number: str | None = None
    from_number: str | None = None
    registered: bool = False
    created_at: str | None = None
    updated_at: str | None = None
    poll_attempts: int = 0
    poll_lease: str | None = None  # the claimer holding it, while a poll is under way
    next_poll_at: str | None = None  # None: out of the poll queue
    parts: int | None = None  # a multipart message: how many parts (receiver.store.parts)


class Queued(NamedTuple):
    """A message in the poll queue, as a claim reads it."""

    message: DueMessage
    poll_lease: str | None
    next_poll_at: str


# The columns of `messages` the rules write (insert_message and update_message take these
# names as keys). `registered` and `is_final` are bools; `metadata` is a dict (a JSON object)
# or None, stored however the dialect stores JSON; every time is a kept string (format_time).
MESSAGE_COLUMNS = frozenset(
    {
        "provider",
        "message_id",
        "account",
        "status",
        "provider_status",
        "error_code",
        "to_number",
        "from_number",
        "metadata",
        "registered",
        "is_final",
        "final_via",
        "created_at",
        "updated_at",
        "sent_at",
        "final_at",
        "final_reason",
        "registered_sent_at",  # the sent_at a registration gave (receiver verify reads it)
        "poll_attempts",
        "last_polled_at",
        "last_poll_result",
        "poll_lease",
        "next_poll_at",
        "parts",  # a multipart message: how many parts it has (receiver.store.parts)
    }
)


class RowAccess(Protocol):
    """The row reads and writes of one open write transaction (synchronous: the store's writer
    thread calls the rules). Every read of a message is of the row as this transaction sees
    it; a store where several writers run at once locks the row there (SELECT ... FOR UPDATE)
    so the decision made on it holds until the commit."""

    def message_for_event(self, ev: StatusEvent) -> tuple[Current | None, bool]:
        """The event's message (None: unknown) and whether an event with the event's
        dedupe_key (when it has one) was stored before for the same provider and message_id,
        held events included. One round trip; concurrent transactions on one (provider,
        message_id) are serialised from here on, whether or not the message exists yet."""
        ...

    def message(self, provider: str, message_id: str) -> Current | None:
        """The message (None: unknown), locked like message_for_event's."""
        ...

    def insert_message(self, row: Mapping[str, Any]) -> int:
        """Insert a message (keys from MESSAGE_COLUMNS; the rest default: poll_attempts 0,
        others NULL); its primary key."""
        ...

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        """Set these columns (keys from MESSAGE_COLUMNS) of the message `pk`."""
        ...

    def insert_event(
        self,
        ev: StatusEvent,
        *,
        message_pk: int | None,
        previous_status: str | None,
        outcome: Outcome,
        received_at: str,
    ) -> None:
        """Append the event to the history (message_pk None: held, the message unknown)."""
        ...

    def held_events(self, provider: str, message_id: str) -> list[tuple[int, StatusEvent]]:
        """The message's held events (outcome pending_unknown, no message_pk), oldest first,
        each with its event id and rebuilt as the StatusEvent to decide now."""
        ...

    def resolve_held(
        self,
        event_id: int,
        *,
        message_pk: int,
        outcome: Outcome,
        previous_status: str,
        resolved_at: str,
    ) -> None:
        """Record what a held event did once its message became known."""
        ...

    def adopt_events(self, provider: str, message_id: str, message_pk: int) -> None:
        """Give every event still without a message (duplicates of held ones) this message."""
        ...

    def due(self, provider: str, now: str, limit: int) -> list[Queued]:
        """Up to `limit` of the provider's messages with next_poll_at <= now, soonest first
        (a store with concurrent claimers skips rows another claimer has locked)."""
        ...

    def group(self, provider: str, prefix: str) -> list[Queued] | None:
        """Every queued message (next_poll_at not NULL) of the provider whose message_id
        starts with `prefix`. A store with concurrent claimers takes a lock on the group
        first, so two never decide one group at once; None when another claimer holds that
        lock now (it claims the group whole, so this claim leaves the group alone)."""
        ...

    def put_off(self, until: Sequence[tuple[int, str | None]]) -> None:
        """Set next_poll_at of each (pk, next_poll_at); None takes it out of the queue."""
        ...

    def lease(self, pks: Sequence[int], owner: str, until: str) -> None:
        """Lease these messages to `owner`: poll_lease = owner, next_poll_at = until."""
        ...

    def insert_registered(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert registered messages (keys as insert_message's) in one go, every kept count
        (status counts, send counts, the dashboard's rollups) added once for the batch exactly
        as a row's insert adds to it; their primary keys, in order. A registered message is
        not a change: nothing goes to the change log."""
        ...

    def insert_push(self, row: Mapping[str, Any]) -> None:
        """Add a push to the outbox (keys: receiver.store.outbox.PUSH_COLUMNS)."""
        ...

    def insert_change_pushes(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Add pushes of changes to the outbox, each row (webhook_id, endpoint, type,
        message_pk, provider, message_id, created_at, next_attempt_at, then the change's
        facts: receiver.store.outbox.CHANGE_COLUMNS, then message_pk again: the app's
        metadata is the message's, read by the insert). Their body is built from these
        when it is read (outbox.body)."""
        ...

    def message_metadata(self, pk: int) -> dict[str, Any] | None:
        """The app's metadata of the message `pk` (None: none)."""
        ...

    def set_deadline(self, pk: int, deadline_at: str) -> None:
        """Set the message's deadline, unless its deadline was decided already (met or
        missed: that is decided once)."""
        ...

    def due_deadlines(self, now: str, limit: int) -> list[tuple[int, str, str, str]]:
        """Up to `limit` undecided deadlines at or before `now`, soonest first, as (pk,
        provider, message_id, status); a store with concurrent deciders skips rows another
        has locked."""
        ...

    def decide_deadline(self, pk: int, missed: bool) -> None:
        """Keep the decision on the message's deadline (a miss is logged as a change)."""
        ...

    def unseen(self, provider: str, message_ids: Sequence[str]) -> set[str]:
        """Those of `message_ids` (distinct) with no message and no event without a message
        (held, or a duplicate of a held one): nothing is known of them yet."""
        ...

    def tracked_send(self, provider: str, prefix: str) -> bool:
        """Whether the group of `prefix` is a send registered whole (receiver.store.sends),
        whose own resumable sweeps answer for its members."""
        ...

    # Multipart messages (receiver.store.parts).
    def part(self, provider: str, part_id: str) -> Part | None:
        """The part with this provider's id (None: not a part of any message)."""
        ...

    def parts_of(self, parent_pk: int) -> list[Part]:
        """The message's parts, in order."""
        ...

    def insert_part(self, row: Mapping[str, Any]) -> None:
        """Insert a part (keys from receiver.store.parts.PART_COLUMNS)."""
        ...

    def update_part(self, pk: int, changes: Mapping[str, Any]) -> None:
        """Set these columns of the part `pk`."""
        ...

    def adopt_message(self, pk: int, parent_pk: int) -> None:
        """The message `pk` becomes a part of `parent_pk`: its events move there, its row goes."""
        ...

    def mark_part_events(self, parent_pk: int, part_id: str, *, latest: bool = False) -> None:
        """Mark the events under `parent_pk` with the id `part_id` (the message's own: its
        first part's) as the part's; all of them, or the latest only."""
        ...

    def pending_parts(self, parent_pks: Sequence[int]) -> dict[int, list[Part]]:
        """The parts not final yet of those of these messages that have parts, in order."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PushPolicy:
    """Which changes owe the app a push, and to which endpoints (RECEIVER_PUSH_*)."""

    endpoints: tuple[str, ...]
    # "final": changes to a final status (and upgrades after one); "all": every applied one.
    events: str = "final"


@dataclass(frozen=True)
class Policy:
    """The settings the rules read."""

    # An event for a message nobody registered: "create" it from the event, or "hold" the
    # event until the message is registered (RECEIVER_UNKNOWN_MESSAGES).
    unknown_messages: str = "create"
    # How long a non-final message waits for its DLR before it is due for a poll.
    dlr_grace: float = 300.0
    dlr_grace_by_provider: Mapping[str, float] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utc_now
    push: PushPolicy | None = None  # None: pushes are off

    def grace(self, provider: str) -> float:
        return self.dlr_grace_by_provider.get(provider, self.dlr_grace)

    def now_and_due(self, provider: str) -> tuple[str, str]:
        """Now, and when a message left non-final now falls due for a poll."""
        if self.clock is _utc_now:  # the service's own clock: once per callback, kept cheap
            seconds = time.time()
            return format_timestamp(seconds), format_timestamp(seconds, self.grace(provider))
        moment = self.clock()
        return format_time(moment), format_time(moment + timedelta(seconds=self.grace(provider)))

    def due_after(self, provider: str, sent_at: str | None) -> str:
        """When a message sent at `sent_at` falls due (NEVER when that is unknown)."""
        if sent_at is None:
            return NEVER
        try:
            return engine.later(sent_at, self.grace(provider))
        except (ValueError, OverflowError):
            return NEVER


def _fill(kept: str | None, given: str | None) -> str | None:
    """A fact only fills an empty column (as SQL's coalesce(kept, given))."""
    return kept if kept is not None else given


def _correct(kept: str | None, given: str | None) -> str | None:
    """The app's fact corrects the kept one (as SQL's coalesce(given, kept))."""
    return given if given is not None else kept


# -- callbacks ------------------------------------------------------------------------------


def record(rows: RowAccess, policy: Policy, ev: StatusEvent) -> Recorded:
    """Record one callback: one read, at most one message write, one event insert.

    A delivery id seen before for the message is the same delivery again, whatever it says (a
    provider's retry): it is kept in the history as a duplicate and decides nothing.
    """
    now, due = policy.now_and_due(ev.provider)
    current, seen = rows.message_for_event(ev)
    if current is None:
        if (part := rows.part(ev.provider, ev.message_id)) is not None:
            return record_part(rows, policy, part, ev, now, due, seen=seen)
    elif current.parts and (part := _first_part(rows, current, ev)) is not None:
        return record_part(rows, policy, part, ev, now, due, seen=seen)
    status = current.state.status.value if current else None
    if seen:
        pk = current.pk if current else None
        _event(rows, ev, pk, status, Outcome.DUPLICATE, now)
        return Recorded(ev, Outcome.DUPLICATE, status, status)

    if current is None:
        if policy.unknown_messages == "hold":
            _event(rows, ev, None, None, Outcome.PENDING_UNKNOWN, now)
            return Recorded(ev, Outcome.PENDING_UNKNOWN, None, None)
        # A new message is inserted in the state the event gives it (one write rather than an
        # insert and an update), decided exactly as for a registered one.
        outcome, new = engine.apply_event(MessageState(Status.REGISTERED), ev, now)
        pk = rows.insert_message(
            _message_row(
                ev.provider,
                ev.message_id,
                now,
                registered=False,
                to_number=ev.to_number,
                from_number=ev.from_number,
                account=ev.account,
                state=new,
                provider_status=ev.provider_status if new else None,
                error_code=ev.error_code if new else None,
                next_poll_at=due,
            )
        )
        new_status = new.status.value if new else Status.REGISTERED.value
        _event(rows, ev, pk, None, outcome, now)
        if new is not None and policy.push is not None:  # a change from nothing
            _owe_change(rows, policy.push, pk, None, new, ev, ev.to_number, ev.account, now)
        return Recorded(ev, outcome, None, new_status, created=True)

    return _decide(rows, current, ev, now, due, policy.push)


def apply(
    rows: RowAccess,
    current: Current,
    ev: StatusEvent,
    now: str,
    due: str,
    extra: Mapping[str, Any] | None = None,
    push: PushPolicy | None = None,
) -> tuple[Outcome, Current]:
    """Decide `ev` against the message and write the change if it wins (with `extra` columns);
    the outcome and the message afterwards.

    A change that leaves the message non-final puts it (back) in the poll queue at `due`; a
    final one takes it out. A message leased to a poller keeps at least its lease: it must not
    fall due (and be claimed by another) while that poll is under way.
    """
    outcome, new = engine.apply_event(current.state, ev, now)
    if new is None:
        return outcome, current
    if new.final:
        next_poll_at = None
    elif current.poll_lease is not None:
        next_poll_at = max(current.next_poll_at or "", due)
    else:
        next_poll_at = due
    # Built whole rather than with dataclasses.replace, which is slow for the callback path.
    after = Current(
        current.pk,
        new,
        provider_status=ev.provider_status,
        account=_fill(current.account, ev.account),
        to_number=_fill(current.to_number, ev.to_number),
        from_number=_fill(current.from_number, ev.from_number),
        registered=current.registered,
        created_at=current.created_at,
        updated_at=now,
        poll_attempts=current.poll_attempts,
        poll_lease=current.poll_lease,
        next_poll_at=next_poll_at,
        parts=current.parts,
    )
    rows.update_message(
        current.pk,
        {
            "status": new.status.value,
            "provider_status": ev.provider_status,
            "error_code": ev.error_code,
            "updated_at": now,
            "sent_at": new.sent_at,
            "is_final": new.final,
            "final_via": new.final_via,
            "final_at": new.final_at,
            "next_poll_at": next_poll_at,
            "to_number": after.to_number,
            "from_number": after.from_number,
            "account": after.account,
            **(extra or {}),
        },
    )
    if push is not None:
        status = current.state.status.value
        _owe_change(rows, push, current.pk, status, new, ev, after.to_number, after.account, now)
    return outcome, after


def _message_row(
    provider: str,
    message_id: str,
    now: str,
    *,
    registered: bool,
    to_number: str | None = None,
    from_number: str | None = None,
    account: str | None = None,
    sent_at: str | None = None,
    metadata: dict[str, Any] | None = None,
    state: MessageState | None = None,
    provider_status: str | None = None,
    error_code: str | None = None,
    next_poll_at: str | None = None,
) -> dict[str, Any]:
    """The columns of a new message, registered or in `state` (the one its first event gave
    it)."""
    state = state or MessageState(Status.REGISTERED, sent_at=sent_at)
    return {
        "provider": provider,
        "message_id": message_id,
        "account": account,
        "status": state.status.value,
        "provider_status": provider_status,
        "error_code": error_code,
        "to_number": to_number,
        "from_number": from_number,
        "metadata": metadata,
        "registered": registered,
        "is_final": state.final,
        "final_via": state.final_via,
        "created_at": now,
        "updated_at": now,
        "sent_at": state.sent_at,
        "final_at": state.final_at,
        "next_poll_at": None if state.final else next_poll_at,
        **({"registered_sent_at": sent_at} if registered and sent_at else {}),
    }


def _event(
    rows: RowAccess,
    ev: StatusEvent,
    pk: int | None,
    previous: str | None,
    outcome: Outcome,
    now: str,
) -> None:
    rows.insert_event(ev, message_pk=pk, previous_status=previous, outcome=outcome, received_at=now)


def _decide(
    rows: RowAccess,
    current: Current,
    ev: StatusEvent,
    now: str,
    due: str,
    push: PushPolicy | None = None,
) -> Recorded:
    """Apply `ev` to the stored message as it is now and keep the event with its outcome."""
    before = current.state.status.value
    outcome, after = apply(rows, current, ev, now, due, push=push)
    _event(rows, ev, current.pk, before, outcome, now)
    return Recorded(ev, outcome, before, after.state.status.value)


# -- registration ---------------------------------------------------------------------------


def register(
    rows: RowAccess, policy: Policy, reg: Registration, at: tuple[str, str] | None = None
) -> Registered:
    """Create the message, or let the app's facts fill in or correct it (idempotent; the
    status is left to the events), then decide the events held for it, in order. `at` is
    (now, due) when the caller took them once for a batch (register_batch)."""
    now, due = at or policy.now_and_due(reg.provider)
    current = rows.message(reg.provider, reg.message_id)
    created = current is None
    if current is None and (part := rows.part(reg.provider, reg.message_id)) is not None:
        return _conflict(
            reg, "message_is_a_part", f"{reg.message_id!r} is a part of {part.parent_id!r}"
        )
    if current is None:
        current = _insert_registered(rows, policy, reg, now, due)
    else:
        # The app's account corrects a callback's (which only fills an empty one); the first
        # registration of a message created from a callback counts as an update.
        changes: dict[str, Any] = {
            "registered": True,
            "to_number": _correct(current.to_number, reg.to_number),
            "from_number": _correct(current.from_number, reg.from_number),
            "account": _correct(current.account, reg.account),
            "sent_at": _correct(current.state.sent_at, reg.sent_at),
            "updated_at": current.updated_at if current.registered else now,
        }
        if reg.metadata:
            changes["metadata"] = reg.metadata
        if reg.sent_at is not None:
            changes["registered_sent_at"] = reg.sent_at
        rows.update_message(current.pk, changes)
        current = current._replace(
            state=replace(current.state, sent_at=changes["sent_at"]),
            registered=True,
            to_number=changes["to_number"],
            from_number=changes["from_number"],
            account=changes["account"],
            updated_at=changes["updated_at"],
        )
    held = rows.held_events(reg.provider, reg.message_id)
    for event_id, ev in held:
        previous = current.state.status.value
        outcome, current = apply(rows, current, ev, now, due, push=policy.push)
        rows.resolve_held(
            event_id,
            message_pk=current.pk,
            outcome=outcome,
            previous_status=previous,
            resolved_at=now,
        )
    # Duplicates of held events (same delivery id) belong to the history too. (Only a held
    # event has unattached duplicates: a delivery seen first for a known message gets its pk.)
    if held:
        rows.adopt_events(reg.provider, reg.message_id, current.pk)
    if reg.deadline is not None or reg.deadline_after is not None:
        rows.set_deadline(current.pk, deadline_at(reg, current.state.sent_at, now))
    return Registered(
        reg.provider,
        reg.message_id,
        created,
        current.state.status.value,
        len(held),
        created_at=current.created_at,
    )


def deadline_at(reg: Registration, sent_at: str | None, now: str) -> str:
    """A registration's deadline as a kept time: the time given, or its duration from when
    the message was sent (the registration, when that is not known)."""
    if reg.deadline is not None:
        return reg.deadline
    try:
        return engine.later(sent_at or now, reg.deadline_after or 0.0)
    except (ValueError, OverflowError):
        return NEVER


# -- deadlines ------------------------------------------------------------------------------


def decide_deadlines(
    rows: RowAccess, now: str, limit: int, push: PushPolicy | None = None
) -> list[tuple[str, str]]:
    """Decide every deadline due at `now` (up to `limit`), once each: met when the message is
    delivered by then, missed otherwise; the (provider, message_id) of those missed. A miss
    owes the app a `message.deadline_missed` push, in this same transaction."""
    missed: list[tuple[str, str]] = []
    for pk, provider, message_id, status in rows.due_deadlines(now, limit):
        is_missed = status != Status.DELIVERED.value
        rows.decide_deadline(pk, is_missed)
        if is_missed:
            missed.append((provider, message_id))
            if push is not None:
                _owe_deadline_missed(rows, push, provider, message_id, now)
    return missed


def _owe_deadline_missed(
    rows: RowAccess, push: PushPolicy, provider: str, message_id: str, now: str
) -> None:
    current = rows.message(provider, message_id)
    if current is None:  # deleted by retention meanwhile: nothing left to tell
        return
    state = current.state
    owe_push(
        rows,
        push,
        payload.DEADLINE_MISSED,
        payload.message_data(
            provider=provider,
            message_id=message_id,
            status=state.status.value,
            provider_status=current.provider_status,
            final=state.final,
            final_via=state.final_via,
            to=current.to_number,
            account=current.account,
            metadata=rows.message_metadata(current.pk),
            sent_at=state.sent_at,
            final_at=state.final_at,
        ),
        message_pk=current.pk,
        now=now,
    )


def _insert_registered(
    rows: RowAccess, policy: Policy, reg: Registration, now: str, due: str
) -> Current:
    """Insert a registered message nothing was known of."""
    row = _registered_row(policy, reg, now, due)
    pk = rows.insert_message(row)
    if reg.deadline is not None or reg.deadline_after is not None:
        rows.set_deadline(pk, deadline_at(reg, reg.sent_at, now))
    next_poll_at = row["next_poll_at"]
    return Current(
        pk,
        MessageState(Status.REGISTERED, sent_at=reg.sent_at),
        account=reg.account,
        to_number=reg.to_number,
        from_number=reg.from_number,
        registered=True,
        created_at=now,
        updated_at=now,
        next_poll_at=next_poll_at,
    )


def _registered_row(policy: Policy, reg: Registration, now: str, due: str) -> dict[str, Any]:
    """The row of a registered message nothing was known of."""
    return _message_row(
        reg.provider,
        reg.message_id,
        now,
        registered=True,
        to_number=reg.to_number,
        from_number=reg.from_number,
        account=reg.account,
        sent_at=reg.sent_at,
        metadata=reg.metadata or None,
        # Due the grace after it was sent, when the app says it was sent earlier.
        next_poll_at=min(due, policy.due_after(reg.provider, reg.sent_at)),
    )


def register_batch(
    rows: RowAccess, policy: Policy, registrations: Sequence[Registration]
) -> list[Registered]:
    """register() for each, with one `now` (and due time per provider) for the batch: one
    write transaction is one moment, and a batch of 1,000 then reads the clock once.

    The ids nothing is known of (no message, no held event: rows.unseen, one read for the
    batch) are inserted as register() would insert them, without a read each, and together
    (rows.insert_registered: one statement, the kept counts added once for them all). Those
    waiting to be inserted are inserted before any other registration of the batch is
    decided, so ids follow the batch's order and a second registration of one id finds it.
    """
    at: dict[str, tuple[str, str]] = {}
    fresh: dict[str, set[str]] = {}
    for reg in registrations:
        fresh.setdefault(reg.provider, set()).add(reg.message_id)
    for provider, ids in fresh.items():
        fresh[provider] = rows.unseen(provider, sorted(ids))
    results = []
    waiting: list[tuple[Registration, dict[str, Any]]] = []

    def insert_waiting() -> None:
        pks = rows.insert_registered([row for _, row in waiting])
        for (reg, row), pk in zip(waiting, pks, strict=True):
            if reg.deadline is not None or reg.deadline_after is not None:
                rows.set_deadline(pk, deadline_at(reg, reg.sent_at, row["created_at"]))
        waiting.clear()

    for reg in registrations:
        when = at.get(reg.provider)
        if when is None:
            when = at[reg.provider] = policy.now_and_due(reg.provider)
        unseen = fresh[reg.provider]
        if reg.parts:
            unseen.discard(reg.message_id)
            if waiting:  # a part may be one of them (a conflict it must find)
                insert_waiting()
            results.append(register_multipart(rows, policy, reg, when))
        elif reg.message_id in unseen:
            unseen.discard(reg.message_id)  # a second registration in the batch finds it
            now = when[0]
            waiting.append((reg, _registered_row(policy, reg, now, when[1])))
            registered = Status.REGISTERED.value
            results.append(
                Registered(reg.provider, reg.message_id, True, registered, 0, created_at=now)
            )
        else:
            if waiting:
                insert_waiting()
            results.append(register(rows, policy, reg, when))
    if waiting:
        insert_waiting()
    return results


# -- the poll queue -------------------------------------------------------------------------


def record_polled(rows: RowAccess, policy: Policy, ev: StatusEvent) -> Recorded | None:
    """A polled status, decided as a callback's is; None when it is not kept: its message is
    unknown (a poll never creates one), or it says what the message already says."""
    now, due = policy.now_and_due(ev.provider)
    current = rows.message(ev.provider, ev.message_id)
    part = None
    if current is None:
        part = rows.part(ev.provider, ev.message_id)
    elif current.parts:
        part = _first_part(rows, current, ev)
    if part is not None or current is None:
        if part is None or (
            part.provider_status == ev.provider_status
            and (ev.status is None or ev.status is part.state.status)
        ):
            return None
        return record_part(rows, policy, part, ev, now, due)
    assert current is not None
    status = current.state.status.value
    if current.provider_status == ev.provider_status and (
        ev.status is None or ev.status.value == status
    ):
        return None  # nothing new: a poll repeats what the last report said
    # Decided against the status as it is now, inside the write: a callback committed while
    # the request was in flight is seen here, and an older polled status cannot undo it.
    return _decide(rows, current, ev, now, due, policy.push)


def finish_polls(
    rows: RowAccess,
    policy: Policy,
    owner: str,
    events: Sequence[StatusEvent],
    done: Sequence[PollDone],
) -> list[Recorded]:
    """Decide the polled `events`, then give up or reschedule each of `done` that `owner`
    still holds (a message whose lease ran out and was claimed again is the new claimer's)."""
    recorded = [r for ev in events if (r := record_polled(rows, policy, ev)) is not None]
    now = format_time(policy.clock())
    settled: set[int] = set()  # a multipart message's, once for all its parts asked about
    for item in done:
        current = rows.message(item.message.provider, item.message.message_id)
        if current is None:
            found = _part_done(rows, item, settled)
            if found is None:
                continue
            item, current = found
        elif current.parts:  # a multipart message asked about as its first part (same id)
            if current.pk in settled:
                continue
            settled.add(current.pk)
        if current is None or current.pk != item.message.pk or current.poll_lease != owner:
            continue
        if item.give_up_reason is not None and not current.state.final:
            gave_up, current = give_up(
                rows, current, item.message, item.give_up_reason, now, push=policy.push
            )
            recorded.append(gave_up)
        changes: dict[str, Any] = {
            "poll_attempts": current.poll_attempts + int(item.attempted),
            "last_poll_result": item.result,
            "poll_lease": None,
            # A message final by now leaves the queue.
            "next_poll_at": None if current.state.final else item.next_poll_at,
        }
        if item.attempted:
            changes["last_polled_at"] = now
        rows.update_message(current.pk, changes)
    return recorded


def give_up(
    rows: RowAccess,
    current: Current,
    message: DueMessage,
    reason: str,
    now: str,
    push: PushPolicy | None = None,
) -> tuple[Recorded, Current]:
    """No final status within the maximum age: the message becomes unconfirmed (a later report
    of higher rank still moves it on), with the reason kept."""
    ev = StatusEvent(
        provider=message.provider,
        message_id=message.message_id,
        provider_status="receiver_gave_up",
        status=Status.UNCONFIRMED,
        source="timeout",
        body=json.dumps({"reason": reason}),
    )
    status = current.state.status.value
    outcome, after = apply(rows, current, ev, now, now, extra={"final_reason": reason}, push=push)
    if after is current:  # not applied (it always is: nothing non-final outranks unconfirmed)
        rows.update_message(current.pk, {"final_reason": reason})
    _event(rows, ev, current.pk, status, outcome, now)
    return Recorded(ev, outcome, status, after.state.status.value), after


def claim_due(
    rows: RowAccess,
    provider: str,
    *,
    now: str,
    limit: int,
    lease_until: str,
    owner: str,
    group_of: Callable[[str], str | None] | None = None,
) -> list[DueMessage]:
    """Lease up to `limit` due messages to `owner` (see Store.claim_due).

    With `group_of` (the message-id prefix of the messages one request answers for together,
    such as a me-sms send's "<uuid>:"), a group is claimed whole, due or not, so one sweep
    settles all of it and no two claimers ever sweep it at once: a group with a member still
    leased to someone else is left to them, its due members put off until that lease ends.
    """
    claimed: dict[int, DueMessage] = {}
    put_off: list[tuple[int, str | None]] = []
    groups: dict[str, list[Queued]] = {}
    for queued in rows.due(provider, now, limit):
        prefix = group_of(queued.message.message_id) if group_of else None
        if prefix:
            groups.setdefault(prefix, []).append(queued)
        else:
            claimed[queued.message.pk] = queued.message
    for prefix, due in groups.items():
        if rows.tracked_send(provider, prefix):
            # A send registered whole: its sweeps answer for these (a callback put them in
            # the queue); they leave it rather than start a sweep of the send in memory.
            put_off += [(queued.message.pk, None) for queued in due]
            continue
        members = rows.group(provider, prefix)
        if members is None:  # being claimed by another claimer right now: theirs
            continue
        busy = [
            m.next_poll_at
            for m in members
            if m.poll_lease not in (None, owner) and m.next_poll_at > now
        ]
        if busy:
            put_off += [(queued.message.pk, max(busy)) for queued in due]
            continue
        claimed.update((m.message.pk, m.message) for m in members)
    rows.put_off(put_off)
    rows.lease(list(claimed), owner, lease_until)
    return poll_parts(rows, list(claimed.values()))


# -- the push outbox ------------------------------------------------------------------------


def owe_push(
    rows: RowAccess,
    push: PushPolicy | None,
    kind: str,
    data: Mapping[str, Any],
    *,
    message_pk: int | None,
    now: str,
) -> None:
    """Owe the app a push of `kind` (receiver.push.payload.TYPES) with `data` (built with
    payload.message_data), one per endpoint, in the transaction of the change it reports: it
    is owed if and only if that change commits. Due at once; the dispatcher is woken after
    the commit. Nothing when pushes are off."""
    if push is None or not push.endpoints:
        return
    body = payload.body(kind, now, data)
    for endpoint in push.endpoints:
        rows.insert_push(
            {
                "webhook_id": payload.new_webhook_id(),
                "endpoint": endpoint,
                "type": kind,
                "message_pk": message_pk,
                "provider": data.get("provider"),
                "message_id": data.get("message_id"),
                "payload": body,
                "status": "pending",
                "created_at": now,
                "next_attempt_at": now,
            }
        )


def _owe_change(
    rows: RowAccess,
    push: PushPolicy,
    pk: int,
    previous: str | None,
    new: MessageState,
    ev: StatusEvent,
    to_number: str | None,
    account: str | None,
    now: str,
) -> None:
    """A message.status_changed push for an applied change, if the policy's events take it:
    the change's facts, kept as they are now (its body is built from them when it is sent;
    the app's metadata is the message's, read by the insert)."""
    if (push.events == "final" and not new.final) or not push.endpoints:
        return
    facts = (
        new.status.value,
        previous,
        ev.provider_status,
        ev.error_code,
        new.final_via,
        to_number,
        account,
        new.sent_at,
        new.final_at,
    )
    kind, provider, message_id = payload.STATUS_CHANGED, ev.provider, ev.message_id
    rows.insert_change_pushes(
        [
            (payload.new_webhook_id(), url, kind, pk, provider, message_id, now, now, *facts, pk)
            for url in push.endpoints
        ]
    )


# -- multipart messages (receiver.store.parts) ----------------------------------------------


def record_part(
    rows: RowAccess,
    policy: Policy,
    part: Part,
    ev: StatusEvent,
    now: str,
    due: str,
    *,
    seen: bool = False,
) -> Recorded:
    """A status for one part of a multipart message: decided against the part's own status
    (the same rule as a message's), kept in its message's history under the part's id, then
    folded into the message's status (fold_into_message). The part owes no push and logs no
    change of its own: its message's change, when there is one, is the change."""
    before = part.state.status.value
    # The message's first part under the message's own id: its events are marked as the part's.
    first = part.part_id == part.parent_id
    if seen:  # the same delivery again (a provider's retry)
        _event(rows, ev, part.parent_pk, before, Outcome.DUPLICATE, now)
        if first:
            rows.mark_part_events(part.parent_pk, part.part_id, latest=True)
        return Recorded(ev, Outcome.DUPLICATE, before, before, parent_id=part.parent_id)
    outcome, new = engine.apply_event(part.state, ev, now)
    if new is not None:
        rows.update_part(part.pk, _part_changes(new, ev, now))
    _event(rows, ev, part.parent_pk, before, outcome, now)
    if first:
        rows.mark_part_events(part.parent_pk, part.part_id, latest=True)
    if new is not None:
        fold_into_message(rows, policy, ev.provider, part.parent_id, ev, now, due)
    after = new.status.value if new is not None else before
    return Recorded(ev, outcome, before, after, parent_id=part.parent_id)


def _first_part(rows: RowAccess, current: Current, ev: StatusEvent) -> Part | None:
    """The multipart message `current`'s first part, when it has the message's own id (it was
    registered under it): a report under that id is the part's. Only read for a message with
    parts (Current.parts), so a message of one part costs nothing more."""
    part = rows.part(ev.provider, ev.message_id)
    return part if part is not None and part.parent_pk == current.pk else None


def _part_changes(new: MessageState, ev: StatusEvent, now: str) -> dict[str, Any]:
    return {
        "status": new.status.value,
        "provider_status": ev.provider_status,
        "error_code": ev.error_code,
        "sent_at": new.sent_at,
        "final_at": new.final_at,
        "final_via": new.final_via,
        "updated_at": now,
    }


def fold_into_message(
    rows: RowAccess,
    policy: Policy,
    provider: str,
    message_id: str,
    trigger: StatusEvent,
    now: str,
    due: str,
) -> Outcome | None:
    """Fold the message's parts into its status (engine.fold_parts), decided against its
    status like any report, so it never regresses. A change is kept as the message's own
    event (its message_id, the fold in its body: what `receiver verify` replays), owes the
    app the message's push and is the message's change in the change log."""
    current = rows.message(provider, message_id)  # its lock: one fold of a message at a time
    if current is None:
        return None
    statuses = [p.state.status for p in rows.parts_of(current.pk)]
    folded = engine.fold_parts(statuses)
    ev = StatusEvent(
        provider=provider,
        message_id=message_id,
        provider_status=trigger.provider_status,
        status=folded,
        source=trigger.source,
        error_code=trigger.error_code,
        event_time=trigger.event_time,
        body=json.dumps(
            {
                "part": trigger.message_id,
                "part_status": trigger.status.value if trigger.status else None,
                "parts": engine.parts_summary(statuses),
            }
        ),
    )
    before = current.state.status.value
    outcome, _ = apply(rows, current, ev, now, due, push=policy.push)
    if outcome is Outcome.APPLIED:
        _event(rows, ev, current.pk, before, outcome, now)
    return outcome


def _conflict(reg: Registration, code: str, detail: str) -> Registered:
    return Registered(reg.provider, reg.message_id, False, "", 0, conflict=(code, detail))


def register_multipart(
    rows: RowAccess, policy: Policy, reg: Registration, at: tuple[str, str]
) -> Registered:
    """Register a message sent as several parts (reg.parts: the provider's id of each).

    Idempotent: the same parts again update the message as register() does. Nothing is
    written, and the answer carries the conflict, when the message is kept with other parts
    or as a message of one part, or a part is another message (registered) or another
    message's part. A message an early callback created for a part's id (unknown messages
    `create`) becomes that part, its events moved to the message; events held for a part's
    id (`hold`) are decided on the part. Then the parts are folded into the message.

    The message's id may be its first part's (the API refuses any other part's): then a
    message an early callback created under that id becomes the message, reset to registered,
    and its state and events become the first part's; and that part's events are marked as
    the part's (events.is_part), since they carry the message's own id.
    """
    assert reg.parts
    now, due = at
    parts = list(reg.parts)
    single = replace(reg, parts=None)
    current = rows.message(reg.provider, reg.message_id)
    early: dict[str, Current] = {}
    if current is not None:
        kept = [p.part_id for p in rows.parts_of(current.pk)]
        if kept == parts:
            return register(rows, policy, single, at)
        if kept:
            return _conflict(
                reg, "parts_differ", f"{reg.message_id!r} is registered with other parts"
            )
        if current.registered or parts[0] != reg.message_id:
            return _conflict(
                reg,
                "message_not_multipart",
                f"{reg.message_id!r} is kept as a message of one part",
            )
        early[reg.message_id] = current  # an early callback's, for the first part
    for part_id in parts:
        other = rows.part(reg.provider, part_id)
        if other is not None:
            return _conflict(
                reg, "part_of_another_message", f"part {part_id!r} is a part of {other.parent_id!r}"
            )
        if part_id == reg.message_id:
            continue  # the message itself (its first part's id): new, or the one above
        known = rows.message(reg.provider, part_id)
        if known is not None:
            if known.registered:
                return _conflict(
                    reg, "part_is_a_message", f"part {part_id!r} is registered as a message"
                )
            early[part_id] = known
    created = current is None
    if current is None:
        current = _insert_registered(rows, policy, single, now, due)
    else:
        current = _reset_registered(rows, policy, single, current, now, due)
    rows.update_message(current.pk, {"parts": len(parts)})
    applied = 0
    trigger: StatusEvent | None = None
    for position, part_id in enumerate(parts):
        known = early.get(part_id)
        state = known.state if known else MessageState(Status.REGISTERED)
        provider_status = known.provider_status if known else None
        if known is not None and known.pk == current.pk:  # the message's own row: the part
            applied += 1  # keeps its events (marked below)
        elif known is not None:  # it was never a message: it becomes this part
            rows.adopt_message(known.pk, current.pk)
            applied += 1
        rows.insert_part(
            {
                "parent_pk": current.pk,
                "provider": reg.provider,
                "part_id": part_id,
                "position": position,
                "status": state.status.value,
                "provider_status": provider_status,
                "sent_at": state.sent_at,
                "final_at": state.final_at,
                "final_via": state.final_via,
                "updated_at": now,
            }
        )
        held = rows.held_events(reg.provider, part_id)
        if held:
            part = rows.part(reg.provider, part_id)
            assert part is not None
            for event_id, ev in held:
                previous = state.status.value
                outcome, new = engine.apply_event(state, ev, now)
                if new is not None:
                    state, provider_status = new, ev.provider_status
                    rows.update_part(part.pk, _part_changes(new, ev, now))
                rows.resolve_held(
                    event_id,
                    message_pk=current.pk,
                    outcome=outcome,
                    previous_status=previous,
                    resolved_at=now,
                )
                applied += 1
            rows.adopt_events(reg.provider, part_id, current.pk)
        if part_id == reg.message_id:  # before the message has any fold of its own
            rows.mark_part_events(current.pk, part_id)
        if state.status is not Status.REGISTERED and (
            trigger is None
            or engine.RANK[state.status] >= engine.RANK[trigger.status or state.status]
        ):
            trigger = StatusEvent(
                reg.provider,
                part_id,
                provider_status or state.status.value,
                state.status,
                source=state.final_via or "callback",
            )
    status = current.state.status.value
    if trigger is not None:
        fold_into_message(rows, policy, reg.provider, reg.message_id, trigger, now, due)
        folded = rows.message(reg.provider, reg.message_id)
        assert folded is not None
        status = folded.state.status.value
    return Registered(
        reg.provider, reg.message_id, created, status, applied, created_at=current.created_at
    )


def _reset_registered(
    rows: RowAccess, policy: Policy, reg: Registration, current: Current, now: str, due: str
) -> Current:
    """The message an early callback created under the first part's id, registered as the
    multipart message: its status starts again from `registered` (its reports are its first
    part's now, and the parts' fold decides it), with the app's facts as a registration
    gives them; its key, and so its history, changes and pushes, stay."""
    next_poll_at = min(due, policy.due_after(reg.provider, reg.sent_at))
    if current.poll_lease is not None:  # a poll under way keeps its lease (as apply does)
        next_poll_at = max(current.next_poll_at or "", next_poll_at)
    changes: dict[str, Any] = {
        "registered": True,
        "status": Status.REGISTERED.value,
        "provider_status": None,
        "error_code": None,
        "is_final": False,
        "final_via": None,
        "final_at": None,
        "final_reason": None,
        "sent_at": reg.sent_at,
        "registered_sent_at": reg.sent_at,
        "to_number": _correct(current.to_number, reg.to_number),
        "from_number": _correct(current.from_number, reg.from_number),
        "account": _correct(current.account, reg.account),
        "updated_at": now,
        "next_poll_at": next_poll_at,
    }
    if reg.metadata:
        changes["metadata"] = reg.metadata
    rows.update_message(current.pk, changes)
    if reg.deadline is not None or reg.deadline_after is not None:
        rows.set_deadline(current.pk, deadline_at(reg, reg.sent_at, now))
    return current._replace(
        state=MessageState(Status.REGISTERED, sent_at=reg.sent_at),
        provider_status=None,
        account=changes["account"],
        to_number=changes["to_number"],
        from_number=changes["from_number"],
        registered=True,
        updated_at=now,
        next_poll_at=next_poll_at,
    )


def poll_parts(rows: RowAccess, claimed: list[DueMessage]) -> list[DueMessage]:
    """The claimed messages as the poller asks about them: a multipart message as its parts
    still pending, each under its provider id (and the message's key, lease and age), so one
    claim of the message is a send of several; finish_polls settles the message once."""
    pending = rows.pending_parts([m.pk for m in claimed])
    if not pending:
        return claimed
    asked: list[DueMessage] = []
    for message in claimed:
        parts = pending.get(message.pk)
        if not parts:
            asked.append(message)
            continue
        asked += [
            replace(
                message,
                message_id=p.part_id,
                status=p.state.status.value,
                provider_status=p.provider_status,
            )
            for p in parts
        ]
    return asked


def _part_done(
    rows: RowAccess, item: PollDone, settled: set[int]
) -> tuple[PollDone, Current | None] | None:
    """A poll of a part (poll_parts) settles its message, the first time one of its parts'
    polls is finished in this batch: the PollDone as the message's, and the message."""
    part = rows.part(item.message.provider, item.message.message_id)
    if part is None or part.parent_pk != item.message.pk or part.parent_pk in settled:
        return None
    settled.add(part.parent_pk)
    message = replace(item.message, message_id=part.parent_id)
    return replace(item, message=message), rows.message(item.message.provider, part.parent_id)
