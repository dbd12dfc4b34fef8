"""The rules of a send registered whole (a me-sms send by its uuid alone), once for both
stores: its registration, the claim of its sweep, each page written as it arrives, and the
hand-back. No SQL here: a dialect's sends module implements `SendAccess`.

A send's sweep is resumable: its cursor (the next page's `after`) and its progress are kept
on the send's row and moved in the same transaction as the page's recipients, so a sweep
that stops anywhere (lease ending, kill -9, another instance taking over) continues from the
last page written, and never reads a page twice unless that page's write was lost with it.
The recipients of such a send are not in the poll queue one by one: the send's sweep answers
for them (a million rows are never claimed, leased or held in memory).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from receiver import engine
from receiver.engine import MessageState, Outcome, Status, StatusEvent
from receiver.store import rules
from receiver.store.base import (
    DueMessage,
    PageWritten,
    Registered,
    Registration,
    SendClaim,
    SendPage,
)

# The records of a send's sweep live beside the Store interface; importable from here too.
__all__ = ["PageWritten", "SendClaim", "SendPage"]  # with the rules below

# The raw malformed recipients kept with a send (the first ones; the rest are counted).
MALFORMED_KEPT = 10
MALFORMED_BYTES = 1000  # of each one kept

# The columns of `sends` the rules write.
SEND_COLUMNS = frozenset(
    {
        "provider",
        "uuid",
        "account",
        "metadata",
        "sent_at",
        "created_at",
        "cursor",
        "sweep_started_at",
        "sweep_pages",
        "sweep_seen",
        "sweep_tally",
        "sweeps",
        "pages",
        "last_sweep_at",
        "last_sweep",
        "last_result",
        "malformed",
        "malformed_sample",
        "next_sweep_at",
        "lease_owner",
    }
)


class SendAccess(Protocol):
    """A dialect's statements on `sends`, in the open write transaction of `rows`."""

    rows: rules.RowAccess

    def get(self, provider: str, uuid: str) -> dict[str, Any] | None:
        """The send's row (keys: SEND_COLUMNS), locked to the commit where writers run at
        once; None when the send is not registered."""
        ...

    def insert(self, row: Mapping[str, Any]) -> None: ...

    def update(self, provider: str, uuid: str, changes: Mapping[str, Any]) -> None: ...

    def due(self, provider: str, now: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` sends with next_sweep_at <= now, soonest first (skipping rows another
        claimer holds, where claimers run at once)."""
        ...

    def counts(self, uuid: str) -> dict[str, int]:
        """The send's recipients per status (statuses with none left out)."""
        ...


def _send_uuid(reg: Registration) -> str:
    return reg.message_id


def register_send(acc: SendAccess, policy: rules.Policy, reg: Registration) -> Registered:
    """Track a whole send from its uuid (idempotent: a second registration fills in or
    corrects the account, sent time and metadata); its first sweep is due a grace after it
    was sent."""
    now, due = policy.now_and_due(reg.provider)
    uuid = _send_uuid(reg)
    row = acc.get(reg.provider, uuid)
    metadata = json.dumps(reg.metadata, separators=(",", ":")) if reg.metadata else None
    if row is None:
        acc.insert(
            {
                "provider": reg.provider,
                "uuid": uuid,
                "account": reg.account,
                "metadata": metadata,
                "sent_at": reg.sent_at,
                "created_at": now,
                "next_sweep_at": min(due, policy.due_after(reg.provider, reg.sent_at)),
            }
        )
        return Registered(reg.provider, uuid, True, Status.REGISTERED.value, 0, created_at=now)
    changes = {
        "account": rules._correct(row["account"], reg.account),
        "sent_at": rules._correct(row["sent_at"], reg.sent_at),
    }
    if metadata:
        changes["metadata"] = metadata
    acc.update(reg.provider, uuid, changes)
    return Registered(
        reg.provider, uuid, False, Status.REGISTERED.value, 0, created_at=row["created_at"]
    )


def claim_sends(
    acc: SendAccess, provider: str, *, now: str, limit: int, lease_until: str, owner: str
) -> list[SendClaim]:
    """Lease up to `limit` due sends to `owner` until `lease_until` (when a send falls due
    again if its claimer dies): each continues from its stored cursor."""
    claimed = []
    for row in acc.due(provider, now, limit):
        acc.update(
            provider,
            row["uuid"],
            {
                "lease_owner": owner,
                "next_sweep_at": lease_until,
                "sweep_started_at": row["sweep_started_at"] or now,
            },
        )
        claimed.append(
            SendClaim(
                provider,
                row["uuid"],
                row["account"],
                int(row["cursor"]),
                row["created_at"],
                row["sent_at"],
                int(row["sweeps"]),
            )
        )
    return claimed


def record_page(
    acc: SendAccess, policy: rules.Policy, owner: str, page: SendPage
) -> PageWritten | None:
    """Write one page: its recipients decided as polled statuses (see record_swept), and the
    send's cursor and progress moved past it, in one transaction. None, writing nothing, when
    the send is not `owner`'s any more or its cursor moved (another claimer wrote this page)."""
    row = acc.get(page.provider, page.uuid)
    if row is None or row["lease_owner"] != owner or int(row["cursor"]) != page.after:
        return None
    now, due = policy.now_and_due(page.provider)  # once a page: a page is one moment
    tally: Counter[str] = Counter(json.loads(row["sweep_tally"] or "{}"))
    for ev in page.events:
        tally[record_swept(acc.rows, policy, ev, page.give_up_reason, now=now, due=due)] += 1
    tally["malformed"] += len(page.malformed)
    changes: dict[str, Any] = {
        "pages": int(row["pages"]) + 1,
        "sweep_pages": int(row["sweep_pages"]) + 1,
        "sweep_seen": int(row["sweep_seen"]) + len(page.events) + len(page.malformed),
        "next_sweep_at": page.lease_until,
    }
    if page.malformed:
        sample = json.loads(row["malformed_sample"] or "[]")
        room = MALFORMED_KEPT - len(sample)
        sample += [raw[:MALFORMED_BYTES] for raw in page.malformed[: max(room, 0)]]
        changes["malformed"] = int(row["malformed"]) + len(page.malformed)
        changes["malformed_sample"] = json.dumps(sample)
    if page.next_cursor is not None:
        changes["cursor"] = page.next_cursor
        changes["sweep_tally"] = json.dumps(dict(tally), separators=(",", ":"))
        acc.update(page.provider, page.uuid, changes)
        return PageWritten(False, tally=tally)
    counts = acc.counts(page.uuid)
    total = sum(counts.values())
    final = sum(n for status, n in counts.items() if engine.is_final(status))
    settled = (total > 0 and final == total) or page.give_up_reason is not None
    summary = {
        "started_at": row["sweep_started_at"],
        "finished_at": now,
        "pages": changes["sweep_pages"],
        "recipients": changes["sweep_seen"],
        **dict(sorted(tally.items())),
    }
    changes.update(
        cursor=0,
        sweep_started_at=None,
        sweep_pages=0,
        sweep_seen=0,
        sweep_tally=None,
        sweeps=int(row["sweeps"]) + 1,
        last_sweep_at=now,
        last_sweep=json.dumps(summary, separators=(",", ":")),
        last_result="ok",
        lease_owner=None,
        next_sweep_at=None if settled else (page.next_sweep_at or now),
    )
    acc.update(page.provider, page.uuid, changes)
    return PageWritten(True, settled, tally)


def release_send(
    acc: SendAccess, provider: str, uuid: str, owner: str, *, next_sweep_at: str, result: str
) -> bool:
    """Hand the send back (its cursor kept, so the next claimer continues the sweep), due at
    `next_sweep_at`; False when it was no longer `owner`'s."""
    row = acc.get(provider, uuid)
    if row is None or row["lease_owner"] != owner:
        return False
    acc.update(
        provider,
        uuid,
        {"lease_owner": None, "next_sweep_at": next_sweep_at, "last_result": result},
    )
    return True


def record_swept(
    rows: rules.RowAccess,
    policy: rules.Policy,
    ev: StatusEvent,
    give_up_reason: str | None,
    *,
    now: str,
    due: str,
) -> str:
    """Decide one recipient's status from a sweep of a send registered whole; what it did
    (the key it is counted under in the sweep's tally).

    An event is kept only when it is a new fact (the recipient first seen: "created") or
    changes the recipient ("applied"; an unmapped provider status not seen before is kept
    raw, "unmapped"). Anything else ("unchanged", "regression", "conflict", "duplicate") is
    only counted: a sweep repeats every recipient, and a final one answered differently
    every sweep must not grow the history once per sweep.
    """
    current = rows.message(ev.provider, ev.message_id)
    if current is None:
        current = _learn(rows, policy, ev, now, due)
        key = "created"
    else:
        status = current.state.status.value
        if current.provider_status == ev.provider_status and (
            ev.status is None or ev.status.value == status
        ):
            key = "unchanged"
        else:
            outcome, after = rules.apply(rows, current, ev, now, due, extra={"next_poll_at": None})
            if outcome is Outcome.APPLIED or outcome is Outcome.UNMAPPED:
                rules._event(rows, ev, current.pk, status, outcome, now)
            if outcome is Outcome.UNMAPPED and current.provider_status != ev.provider_status:
                # Kept raw, and remembered, so the next sweep's same answer is "unchanged".
                rows.update_message(current.pk, {"provider_status": ev.provider_status})
            key = outcome.value
            current = after
    if give_up_reason is not None and not current.state.final:
        message = DueMessage(
            current.pk,
            ev.provider,
            ev.message_id,
            current.account,
            current.state.status.value,
            current.provider_status,
            current.poll_attempts,
            current.created_at or now,
            current.state.sent_at,
        )
        rules.give_up(rows, current, message, give_up_reason, now)  # final: out of the queue
        key = "gave_up"
    return key


def _learn(
    rows: rules.RowAccess, policy: rules.Policy, ev: StatusEvent, now: str, due: str
) -> rules.Current:
    """A recipient first seen in its send's sweep: registered (the app registered its send),
    out of the poll queue (the send's sweeps answer for it), in the state the event gives it,
    with the event kept. Events held for it (pushed before it was known, with
    RECEIVER_UNKNOWN_MESSAGES=hold) are decided first, as a registration decides them."""
    if policy.unknown_messages == "hold" and rows.held_events(ev.provider, ev.message_id):
        rules.register(
            rows,
            policy,
            Registration(ev.provider, ev.message_id, to_number=ev.to_number, account=ev.account),
        )
        found = rows.message(ev.provider, ev.message_id)
        assert found is not None
        before = found.state.status.value
        outcome, after = rules.apply(rows, found, ev, now, due, extra={"next_poll_at": None})
        rules._event(rows, ev, found.pk, before, outcome, now)
        rows.update_message(found.pk, {"next_poll_at": None})
        return after._replace(next_poll_at=None)
    # One insert in the state the event gives it, as a callback creates a message.
    outcome, new = engine.apply_event(MessageState(Status.REGISTERED), ev, now)
    pk = rows.insert_message(
        rules._message_row(
            ev.provider,
            ev.message_id,
            now,
            registered=True,
            to_number=ev.to_number,
            account=ev.account,
            state=new,
            provider_status=ev.provider_status,
            error_code=ev.error_code if new else None,
            next_poll_at=None,
        )
    )
    rules._event(rows, ev, pk, Status.REGISTERED.value, outcome, now)
    state = new or MessageState(Status.REGISTERED)
    return rules.Current(
        pk,
        state,
        provider_status=ev.provider_status,
        account=ev.account,
        to_number=ev.to_number,
        registered=True,
        created_at=now,
        updated_at=now,
    )


# -- the summary (GET /v1/sends/{uuid}) -----------------------------------------------------


def summary(uuid: str, row: Mapping[str, Any] | None, counts: Mapping[str, int]) -> dict[str, Any]:
    """A send's summary from its row (None: recipients known, but the send not registered
    whole) and its recipients per status, as me-sms's own summary[] counts them."""
    total = sum(counts.values())
    final = sum(n for status, n in counts.items() if engine.is_final(status))
    answer: dict[str, Any] = {
        "provider": "mesms",
        "uuid": uuid,
        "tracked": row is not None,
        "recipients": total,
        "final": final,
        "counts": {status: counts[status] for status in sorted(counts) if counts[status]},
    }
    if row is None:
        return answer
    sweeping = row["sweep_started_at"] is not None
    state = "settled" if row["next_sweep_at"] is None else ("sweeping" if sweeping else "waiting")
    answer.update(
        provider=row["provider"],
        account=row["account"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        state=state,
        sweep=(
            {
                "started_at": row["sweep_started_at"],
                "cursor": int(row["cursor"]),
                "pages": int(row["sweep_pages"]),
                "recipients_seen": int(row["sweep_seen"]),
            }
            if sweeping
            else None
        ),
        sweeps=int(row["sweeps"]),
        page_requests=int(row["pages"]),
        last_sweep_at=row["last_sweep_at"],
        last_sweep=json.loads(row["last_sweep"]) if row["last_sweep"] else None,
        last_result=row["last_result"],
        next_sweep_at=None if row["lease_owner"] else row["next_sweep_at"],
        malformed=int(row["malformed"]),
        malformed_sample=json.loads(row["malformed_sample"] or "[]"),
    )
    return answer
