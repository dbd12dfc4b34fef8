"""The rules of recording (receiver.store.rules) with plain calls over a dict-backed RowAccess:
no database, a fixed clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from receiver.engine import (
    MessageState,
    Outcome,
    Status,
    StatusEvent,
    format_time,
    parse_time,
)
from receiver.store import Registration, rules
from receiver.store.base import DueMessage, PollDone

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW = format_time(T0)


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


POLICY = rules.Policy(dlr_grace=300, dlr_grace_by_provider={"mesms": 60}, clock=lambda: T0)
HOLD = rules.Policy(unknown_messages="hold", dlr_grace=300, clock=lambda: T0)


@dataclass
class FakeRows:
    """rules.RowAccess over two dicts: the messages by primary key and the events in order."""

    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    locked_elsewhere: set[str] = field(default_factory=set)  # groups another claimer holds

    def _pk(self, provider: str, message_id: str) -> int | None:
        for pk, row in self.messages.items():
            if row["provider"] == provider and row["message_id"] == message_id:
                return pk
        return None

    def _current(self, pk: int) -> rules.Current:
        row = self.messages[pk]
        return rules.Current(
            pk,
            MessageState(Status(row["status"]), row["sent_at"], row["final_at"], row["final_via"]),
            provider_status=row["provider_status"],
            account=row["account"],
            to_number=row["to_number"],
            from_number=row["from_number"],
            registered=row["registered"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            poll_attempts=row["poll_attempts"],
            poll_lease=row["poll_lease"],
            next_poll_at=row["next_poll_at"],
        )

    def message(self, provider: str, message_id: str) -> rules.Current | None:
        pk = self._pk(provider, message_id)
        return None if pk is None else self._current(pk)

    def message_for_event(self, ev: StatusEvent) -> tuple[rules.Current | None, bool]:
        seen = ev.dedupe_key is not None and any(
            e["provider"] == ev.provider
            and e["message_id"] == ev.message_id
            and e["dedupe_key"] == ev.dedupe_key
            for e in self.events
        )
        return self.message(ev.provider, ev.message_id), seen

    def insert_message(self, row: Mapping[str, Any]) -> int:
        assert set(row) <= rules.MESSAGE_COLUMNS
        if self._pk(row["provider"], row["message_id"]) is not None:
            raise AssertionError("unique (provider, message_id) violated")
        pk = len(self.messages) + 1
        self.messages[pk] = dict.fromkeys(rules.MESSAGE_COLUMNS) | {"poll_attempts": 0} | row
        return pk

    def update_message(self, pk: int, changes: Mapping[str, Any]) -> None:
        assert set(changes) <= rules.MESSAGE_COLUMNS
        self.messages[pk].update(changes)

    def insert_event(
        self,
        ev: StatusEvent,
        *,
        message_pk: int | None,
        previous_status: str | None,
        outcome: Outcome,
        received_at: str,
    ) -> None:
        self.events.append(
            {
                "id": len(self.events) + 1,
                "event": ev,
                "provider": ev.provider,
                "message_id": ev.message_id,
                "dedupe_key": ev.dedupe_key,
                "message_pk": message_pk,
                "previous_status": previous_status,
                "outcome": outcome,
                "received_at": received_at,
                "resolved_at": None,
            }
        )

    def held_events(self, provider: str, message_id: str) -> list[tuple[int, StatusEvent]]:
        return [
            (e["id"], e["event"])
            for e in self.events
            if e["provider"] == provider
            and e["message_id"] == message_id
            and e["message_pk"] is None
            and e["outcome"] is Outcome.PENDING_UNKNOWN
        ]

    def resolve_held(
        self,
        event_id: int,
        *,
        message_pk: int,
        outcome: Outcome,
        previous_status: str,
        resolved_at: str,
    ) -> None:
        self.events[event_id - 1].update(
            outcome=outcome,
            message_pk=message_pk,
            previous_status=previous_status,
            resolved_at=resolved_at,
        )

    def adopt_events(self, provider: str, message_id: str, message_pk: int) -> None:
        for e in self.events:
            if (e["provider"], e["message_id"], e["message_pk"]) == (provider, message_id, None):
                e["message_pk"] = message_pk

    def _queued(self, pk: int) -> rules.Queued:
        row = self.messages[pk]
        due = DueMessage(
            pk,
            row["provider"],
            row["message_id"],
            row["account"],
            row["status"],
            row["provider_status"],
            row["poll_attempts"],
            row["created_at"],
            row["sent_at"],
        )
        return rules.Queued(due, row["poll_lease"], row["next_poll_at"])

    def due(self, provider: str, now: str, limit: int) -> list[rules.Queued]:
        pks = sorted(
            (
                pk
                for pk, row in self.messages.items()
                if row["provider"] == provider
                and row["next_poll_at"] is not None
                and row["next_poll_at"] <= now
            ),
            key=lambda pk: self.messages[pk]["next_poll_at"],
        )
        return [self._queued(pk) for pk in pks[:limit]]

    def group(self, provider: str, prefix: str) -> list[rules.Queued] | None:
        if prefix in self.locked_elsewhere:
            return None
        return [
            self._queued(pk)
            for pk, row in self.messages.items()
            if row["provider"] == provider
            and row["message_id"].startswith(prefix)
            and row["next_poll_at"] is not None
        ]

    def put_off(self, until: Sequence[tuple[int, str | None]]) -> None:
        for pk, next_poll_at in until:
            self.messages[pk]["next_poll_at"] = next_poll_at

    def lease(self, pks: Sequence[int], owner: str, until: str) -> None:
        for pk in pks:
            self.messages[pk].update(poll_lease=owner, next_poll_at=until)

    def unseen(self, provider: str, message_ids: Sequence[str]) -> set[str]:
        return {
            mid
            for mid in message_ids
            if self._pk(provider, mid) is None
            and not any(
                e["provider"] == provider and e["message_id"] == mid and e["message_pk"] is None
                for e in self.events
            )
        }

    def tracked_send(self, provider: str, prefix: str) -> bool:
        return False  # sends registered whole: tests/test_campaign_store.py

    # Multipart messages' parts: tests/test_multipart.py, on the stores.
    def part(self, provider: str, part_id: str) -> None:
        return None

    def pending_parts(self, parent_pks: Sequence[int]) -> dict[int, list[Any]]:
        return {}

    # -- for the assertions --------------------------------------------------------------------

    def row(self, message_id: str, provider: str = "twilio") -> dict[str, Any]:
        pk = self._pk(provider, message_id)
        assert pk is not None, message_id
        return self.messages[pk]

    def outcomes(self, message_id: str) -> list[str]:
        return [e["outcome"].value for e in self.events if e["message_id"] == message_id]


def cb(message_id: str, status: Status | None, raw: str | None = None, **kw: Any) -> StatusEvent:
    return StatusEvent(
        provider=kw.pop("provider", "twilio"),
        message_id=message_id,
        provider_status=raw or (status.value if status else "weird"),
        status=status,
        **kw,
    )


def polled(message_id: str, raw: str, status: Status | None) -> StatusEvent:
    return StatusEvent("twilio", message_id, raw, status, source="poll")


# -- callbacks --------------------------------------------------------------------------------


def test_an_unknown_message_is_created_in_the_state_its_first_event_gives() -> None:
    rows = FakeRows()
    r = rules.record(rows, POLICY, cb("SM1", Status.SENT, to_number="+1555"))
    assert (r.outcome, r.previous_status, r.status, r.created) == (
        Outcome.APPLIED,
        None,
        "sent",
        True,
    )
    row = rows.row("SM1")
    assert row["status"] == "sent"
    assert row["registered"] is False
    assert row["sent_at"] == NOW  # first seen under way
    assert row["to_number"] == "+1555"
    assert row["next_poll_at"] == at(300)  # the grace after now
    assert rows.outcomes("SM1") == ["applied"]


def test_an_unknown_message_first_heard_final_is_out_of_the_queue_without_a_sent_time() -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.DELIVERED))
    row = rows.row("SM1")
    assert (row["is_final"], row["final_via"], row["final_at"]) == (True, "callback", NOW)
    assert row["sent_at"] is None
    assert row["next_poll_at"] is None


def test_an_unmapped_first_event_creates_a_registered_message_without_its_raw_status() -> None:
    rows = FakeRows()
    r = rules.record(rows, POLICY, cb("SM1", None, "weird"))
    assert (r.outcome, r.status, r.created) == (Outcome.UNMAPPED, "registered", True)
    assert rows.row("SM1")["provider_status"] is None


def test_hold_keeps_an_unknown_messages_event_without_creating_it() -> None:
    rows = FakeRows()
    r = rules.record(rows, HOLD, cb("SM1", Status.DELIVERED))
    assert (r.outcome, r.status) == (Outcome.PENDING_UNKNOWN, None)
    assert rows.messages == {}
    assert rows.events[0]["message_pk"] is None


@pytest.mark.parametrize(
    ("first", "second", "outcome", "final_status"),
    [
        (Status.SENT, Status.DELIVERED, Outcome.APPLIED, "delivered"),
        (Status.DELIVERED, Status.SENT, Outcome.REGRESSION, "delivered"),
        (Status.SENT, Status.SENT, Outcome.DUPLICATE, "sent"),
        (Status.FAILED, Status.UNDELIVERED, Outcome.CONFLICT, "failed"),
        (Status.UNCONFIRMED, Status.DELIVERED, Outcome.APPLIED, "delivered"),
    ],
)
def test_a_second_event_is_decided_by_the_transition_rule(
    first: Status, second: Status, outcome: Outcome, final_status: str
) -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", first))
    r = rules.record(rows, POLICY, cb("SM1", second))
    assert (r.outcome, r.previous_status, r.status) == (outcome, first.value, final_status)
    assert rows.row("SM1")["status"] == final_status


def test_an_exact_retry_is_recorded_as_a_duplicate_whatever_it_says() -> None:
    """The same delivery id twice is one delivery: the second is kept, and decides nothing."""
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.SENT, dedupe_key="d1"))
    before = dict(rows.row("SM1"))
    r = rules.record(rows, POLICY, cb("SM1", Status.DELIVERED, dedupe_key="d1"))
    assert (r.outcome, r.previous_status, r.status) == (Outcome.DUPLICATE, "sent", "sent")
    assert rows.row("SM1") == before
    assert rows.outcomes("SM1") == ["applied", "duplicate"]


def test_a_delivery_id_is_per_message() -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.SENT, dedupe_key="d1"))
    r = rules.record(rows, POLICY, cb("SM2", Status.SENT, dedupe_key="d1"))
    assert r.outcome is Outcome.APPLIED


def test_a_retry_of_a_held_event_is_held_as_a_duplicate() -> None:
    rows = FakeRows()
    rules.record(rows, HOLD, cb("SM1", Status.SENT, dedupe_key="d1"))
    r = rules.record(rows, HOLD, cb("SM1", Status.SENT, dedupe_key="d1"))
    assert (r.outcome, r.status) == (Outcome.DUPLICATE, None)
    assert rows.events[1]["message_pk"] is None


def test_a_callback_fills_empty_facts_and_never_overwrites_them() -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.QUEUED, to_number="+1"))
    rules.record(rows, POLICY, cb("SM1", Status.SENT, to_number="+2", from_number="+9"))
    row = rows.row("SM1")
    assert (row["to_number"], row["from_number"]) == ("+1", "+9")


def test_a_losing_event_writes_nothing_to_the_message() -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.DELIVERED))
    before = dict(rows.row("SM1"))
    rules.record(rows, POLICY, cb("SM1", Status.SENT, to_number="+1"))
    assert rows.row("SM1") == before


def test_a_leased_message_keeps_at_least_its_lease_when_a_callback_moves_it() -> None:
    """It must not fall due, and be claimed by another, while its poll is under way."""
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.QUEUED))
    pk = rows._pk("twilio", "SM1")
    assert pk is not None
    rows.lease([pk], "poller", at(1000))
    rules.record(rows, POLICY, cb("SM1", Status.SENT))
    assert rows.row("SM1")["next_poll_at"] == at(1000)
    rows.lease([pk], "poller", at(10))  # a lease ending before the new due time
    rules.record(rows, POLICY, cb("SM1", Status.SENDING))  # regression: nothing changes
    rules.record(rows, POLICY, cb("SM1", Status.UNCONFIRMED))  # final: out of the queue
    assert rows.row("SM1")["next_poll_at"] is None


# -- registration -----------------------------------------------------------------------------


def test_registration_creates_a_message_due_the_grace_after_it_was_sent() -> None:
    rows = FakeRows()
    r = rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(-100)))
    assert (r.created, r.status, r.pending_applied, r.created_at) == (True, "registered", 0, NOW)
    row = rows.row("SM1")
    assert (row["registered"], row["sent_at"], row["next_poll_at"]) == (True, at(-100), at(200))


def test_registration_without_a_sent_time_is_due_the_grace_from_now() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("mesms", "u:1"))
    assert rows.row("u:1", "mesms")["next_poll_at"] == at(60)


def test_registration_with_an_unreadable_sent_time_is_due_the_grace_from_now() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at="not a time"))
    assert rows.row("SM1")["next_poll_at"] == at(300)


def test_registration_corrects_the_callbacks_facts_and_keeps_the_status() -> None:
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.DELIVERED, to_number="+1", account="ACcb"))
    r = rules.register(
        rows,
        POLICY,
        Registration("twilio", "SM1", to_number="+2", account="ACapp", metadata={"k": 1}),
    )
    assert (r.created, r.status, r.created_at) == (False, "delivered", NOW)
    row = rows.row("SM1")
    assert (row["to_number"], row["account"], row["metadata"]) == ("+2", "ACapp", {"k": 1})
    assert row["registered"] is True


def test_registering_again_changes_nothing_but_the_given_facts() -> None:
    later = rules.Policy(clock=lambda: T0 + timedelta(seconds=5))
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", metadata={"k": 1}))
    rules.register(rows, later, Registration("twilio", "SM1"))
    row = rows.row("SM1")
    assert row["updated_at"] == NOW  # a registered message's repeat is no update
    assert row["metadata"] == {"k": 1}  # not given: kept


def test_a_first_registration_of_a_callbacks_message_is_an_update() -> None:
    later = rules.Policy(clock=lambda: T0 + timedelta(seconds=5))
    rows = FakeRows()
    rules.record(rows, POLICY, cb("SM1", Status.SENT))
    rules.register(rows, later, Registration("twilio", "SM1"))
    assert rows.row("SM1")["updated_at"] == at(5)


def test_registration_decides_the_held_events_in_order_and_adopts_their_duplicates() -> None:
    rows = FakeRows()
    rules.record(rows, HOLD, cb("SM1", Status.DELIVERED, dedupe_key="d2"))
    rules.record(rows, HOLD, cb("SM1", Status.SENT, dedupe_key="d1"))
    rules.record(rows, HOLD, cb("SM1", Status.SENT, dedupe_key="d1"))  # a retry: duplicate
    r = rules.register(rows, HOLD, Registration("twilio", "SM1"))
    assert (r.created, r.status, r.pending_applied) == (True, "delivered", 2)
    assert rows.outcomes("SM1") == ["applied", "regression", "duplicate"]
    assert [e["previous_status"] for e in rows.events] == ["registered", "delivered", None]
    assert [e["resolved_at"] for e in rows.events] == [NOW, NOW, None]
    assert {e["message_pk"] for e in rows.events} == {rows._pk("twilio", "SM1")}
    assert rows.row("SM1")["next_poll_at"] is None  # final


def test_the_registrations_sent_time_counts_for_held_events() -> None:
    rows = FakeRows()
    rules.record(rows, HOLD, cb("SM1", Status.SENT))
    rules.register(rows, HOLD, Registration("twilio", "SM1", sent_at=at(-50)))
    assert rows.row("SM1")["sent_at"] == at(-50)


# -- polls ------------------------------------------------------------------------------------


def claim(rows: FakeRows, now: str = at(400), owner: str = "x", **kw: Any) -> list[DueMessage]:
    return rules.claim_due(
        rows,
        kw.pop("provider", "twilio"),
        now=now,
        limit=kw.pop("limit", 10),
        lease_until=kw.pop("lease_until", at(1000)),
        owner=owner,
        **kw,
    )


def test_a_claim_leases_the_due_messages_soonest_first() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "b", sent_at=at(-50)))  # due at 250
    rules.register(rows, POLICY, Registration("twilio", "a", sent_at=at(-100)))  # due at 200
    rules.register(rows, POLICY, Registration("twilio", "c"))  # due at 300
    got = claim(rows, limit=1)
    assert [m.message_id for m in got] == ["a"]
    assert (rows.row("a")["poll_lease"], rows.row("a")["next_poll_at"]) == ("x", at(1000))
    assert [m.message_id for m in claim(rows, now=at(260), owner="y")] == ["b"]  # a: leased


def test_a_send_is_claimed_whole_or_put_off_while_another_holds_part_of_it() -> None:
    group_of = lambda message_id: message_id.split(":")[0] + ":"  # noqa: E731
    rows = FakeRows()
    for i in range(3):
        rules.register(rows, POLICY, Registration("mesms", f"s:{i}", sent_at=at(i * 100)))
    got = claim(rows, provider="mesms", now=at(60), group_of=group_of)
    assert sorted(m.message_id for m in got) == ["s:0", "s:1", "s:2"]  # one due: all claimed
    pk = rows._pk("mesms", "s:0")
    assert pk is not None
    rows.messages[pk].update(poll_lease=None, next_poll_at=at(61))  # finished, due again
    got = claim(rows, provider="mesms", now=at(100), owner="y", group_of=group_of)
    assert got == []  # s:1 and s:2 are still x's
    assert rows.row("s:0", "mesms")["next_poll_at"] == at(1000)  # put off until x's lease ends


def test_a_send_another_claimer_is_claiming_now_is_left_to_it_untouched() -> None:
    """Its due members are neither leased nor put off: the other claimer takes it whole."""
    group_of = lambda message_id: message_id.split(":")[0] + ":"  # noqa: E731
    rows = FakeRows(locked_elsewhere={"s:"})
    rules.register(rows, POLICY, Registration("mesms", "s:0", sent_at=at(0)))
    rules.register(rows, POLICY, Registration("twilio", "t"))
    before = rows.row("s:0", "mesms")["next_poll_at"]
    got = claim(rows, provider="mesms", now=at(500), group_of=group_of)
    assert got == []
    assert (rows.row("s:0", "mesms")["poll_lease"], rows.row("s:0", "mesms")["next_poll_at"]) == (
        None,
        before,
    )


def test_a_polled_status_is_decided_against_the_row_as_it_is_now() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1"))
    rules.record(rows, POLICY, cb("SM1", Status.DELIVERED))
    r = rules.record_polled(rows, POLICY, polled("SM1", "sent", Status.SENT))
    assert r is not None
    assert (r.outcome, r.status) == (Outcome.REGRESSION, "delivered")


def test_a_poll_repeating_the_last_report_or_about_an_unknown_message_is_not_kept() -> None:
    rows = FakeRows()
    assert rules.record_polled(rows, POLICY, polled("SM1", "sent", Status.SENT)) is None
    rules.record(rows, POLICY, cb("SM1", Status.SENT))
    assert rules.record_polled(rows, POLICY, polled("SM1", "sent", Status.SENT)) is None
    assert rules.record_polled(rows, POLICY, polled("SM1", "sent", None)) is None
    assert len(rows.events) == 1


def done(message: DueMessage, **kw: Any) -> PollDone:
    return PollDone(message, kw.pop("result", "ok"), kw.pop("next_poll_at", at(2000)), **kw)


def test_finishing_a_poll_counts_it_and_reschedules_the_message() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(0)))
    [m] = claim(rows)
    rules.finish_polls(rows, POLICY, "x", [], [done(m)])
    row = rows.row("SM1")
    assert (row["poll_attempts"], row["last_polled_at"], row["last_poll_result"]) == (1, NOW, "ok")
    assert (row["poll_lease"], row["next_poll_at"]) == (None, at(2000))
    [m] = claim(rows, now=at(2000))
    rules.finish_polls(rows, POLICY, "x", [], [done(m, result="rate_limited", attempted=False)])
    row = rows.row("SM1")
    assert (row["poll_attempts"], row["last_poll_result"]) == (1, "rate_limited")


def test_a_message_final_by_the_end_of_its_poll_leaves_the_queue() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(0)))
    [m] = claim(rows)
    recorded = rules.finish_polls(
        rows, POLICY, "x", [polled("SM1", "delivered", Status.DELIVERED)], [done(m)]
    )
    assert [r.outcome for r in recorded] == [Outcome.APPLIED]
    row = rows.row("SM1")
    assert (row["status"], row["final_via"], row["next_poll_at"]) == ("delivered", "poll", None)


def test_a_poll_finished_by_someone_no_longer_holding_the_lease_changes_nothing() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(0)))
    [m] = claim(rows, lease_until=at(500))
    claim(rows, now=at(600), owner="y")  # x's lease ran out; y holds it now
    before = dict(rows.row("SM1"))
    assert rules.finish_polls(rows, POLICY, "x", [], [done(m, give_up_reason="max_age")]) == []
    assert rows.row("SM1") == before


def test_giving_up_makes_the_message_unconfirmed_with_the_reason() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(0)))
    [m] = claim(rows)
    [r] = rules.finish_polls(rows, POLICY, "x", [], [done(m, give_up_reason="max_age")])
    assert (r.outcome, r.previous_status, r.status) == (
        Outcome.APPLIED,
        "registered",
        "unconfirmed",
    )
    assert r.event.source == "timeout"
    row = rows.row("SM1")
    assert (row["status"], row["final_reason"], row["final_via"]) == (
        "unconfirmed",
        "max_age",
        "timeout",
    )
    assert (row["poll_lease"], row["next_poll_at"], row["poll_attempts"]) == (None, None, 1)


def test_a_message_final_before_its_give_up_is_not_given_up() -> None:
    rows = FakeRows()
    rules.register(rows, POLICY, Registration("twilio", "SM1", sent_at=at(0)))
    [m] = claim(rows)
    rules.record(rows, POLICY, cb("SM1", Status.DELIVERED))
    assert rules.finish_polls(rows, POLICY, "x", [], [done(m, give_up_reason="max_age")]) == []
    assert rows.row("SM1")["final_reason"] is None


def test_the_service_clock_gives_now_and_when_a_message_falls_due() -> None:
    """The default clock's cheap path (receiver.engine.format_timestamp) keeps real times."""
    policy = rules.Policy(dlr_grace=300, dlr_grace_by_provider={"mesms": 60})
    before = format_time(datetime.now(UTC))
    now, due = policy.now_and_due("twilio")
    _, mesms_due = policy.now_and_due("mesms")
    assert before <= now <= format_time(datetime.now(UTC))
    grace = parse_time(due) - parse_time(now)
    assert abs(grace - timedelta(seconds=300)) <= timedelta(milliseconds=1)
    assert parse_time(mesms_due) - parse_time(now) < timedelta(seconds=61)
