"""The transition rule, with plain function calls."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from receiver.engine import (
    FINAL_STATUSES,
    RANK,
    MessageState,
    Outcome,
    Status,
    StatusEvent,
    apply_event,
    decide,
    format_time,
    format_timestamp,
    is_final,
    parse_status,
)

FAILURES = [Status.UNDELIVERED, Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.CANCELED]


def test_ranks_follow_the_documented_order() -> None:
    order = ["registered", "queued", "sending", "sent", "unconfirmed"]
    assert [RANK[Status(s)] for s in order] == [0, 1, 2, 3, 4]
    assert {RANK[s] for s in FAILURES} == {5}
    assert RANK[Status.DELIVERED] == 6


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (None, Status.SENT, Outcome.APPLIED),
        (Status.REGISTERED, Status.QUEUED, Outcome.APPLIED),
        (Status.SENT, Status.DELIVERED, Outcome.APPLIED),
        (Status.SENT, Status.SENT, Outcome.DUPLICATE),
        (Status.DELIVERED, Status.DELIVERED, Outcome.DUPLICATE),
        (Status.DELIVERED, Status.SENT, Outcome.REGRESSION),
        (Status.UNDELIVERED, Status.QUEUED, Outcome.REGRESSION),
        (Status.DELIVERED, Status.UNDELIVERED, Outcome.REGRESSION),
        (Status.UNDELIVERED, Status.FAILED, Outcome.CONFLICT),
        (Status.EXPIRED, Status.REJECTED, Outcome.CONFLICT),
        (Status.UNDELIVERED, Status.DELIVERED, Outcome.APPLIED),
        (Status.UNCONFIRMED, Status.DELIVERED, Outcome.APPLIED),
        (Status.UNCONFIRMED, Status.FAILED, Outcome.APPLIED),
        (Status.SENT, None, Outcome.UNMAPPED),
        (None, None, Outcome.UNMAPPED),
    ],
)
def test_decide(current: Status | None, new: Status | None, expected: Outcome) -> None:
    assert decide(current, new) is expected


def test_decide_accepts_plain_strings() -> None:
    """Stores hand the engine the text they keep."""
    assert decide("sent", "delivered") is Outcome.APPLIED
    assert decide("delivered", "sent") is Outcome.REGRESSION


@pytest.mark.parametrize(("a", "b"), list(itertools.product(Status, Status)))
def test_exactly_one_direction_applies_between_different_ranks(a: Status, b: Status) -> None:
    """The rule is a strict order on ranks: never both a->b and b->a applied."""
    forward, backward = decide(a, b), decide(b, a)
    if a == b:
        assert forward is backward is Outcome.DUPLICATE
    elif RANK[a] == RANK[b]:
        assert forward is backward is Outcome.CONFLICT
    else:
        assert {forward, backward} == {Outcome.APPLIED, Outcome.REGRESSION}


def replay(events: list[Status]) -> Status | None:
    current: Status | None = None
    for event in events:
        if decide(current, event) is Outcome.APPLIED:
            current = event
    return current


@pytest.mark.parametrize("terminal", [Status.DELIVERED, *FAILURES, Status.UNCONFIRMED])
def test_any_order_of_a_stream_ends_in_its_highest_status(terminal: Status) -> None:
    """A realistic stream (at most one status per rank, duplicates allowed) is order-free."""
    rng = random.Random(f"stream-{terminal}")
    stream = [Status.QUEUED, Status.SENDING, Status.SENT, terminal, Status.SENT, terminal]
    for _ in range(200):
        rng.shuffle(stream)
        assert replay(stream) is terminal


def test_positive_evidence_beats_an_earlier_failure_in_any_order() -> None:
    for order in itertools.permutations([Status.SENT, Status.UNDELIVERED, Status.DELIVERED]):
        assert replay(list(order)) is Status.DELIVERED


def test_among_equal_ranks_the_first_one_wins() -> None:
    assert replay([Status.UNDELIVERED, Status.FAILED]) is Status.UNDELIVERED
    assert replay([Status.FAILED, Status.UNDELIVERED]) is Status.FAILED


def test_final_statuses_are_unconfirmed_and_above() -> None:
    assert {Status.UNCONFIRMED, Status.DELIVERED, *FAILURES} == FINAL_STATUSES
    assert not any(is_final(s) for s in (Status.REGISTERED, Status.QUEUED, Status.SENT))
    assert is_final("delivered")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("delivered", Status.DELIVERED), (" Sent ", Status.SENT), ("bogus", None), ("", None)],
)
def test_parse_status(text: str, expected: Status | None) -> None:
    assert parse_status(text) is expected


def ev(status: Status | None, source: str = "callback") -> StatusEvent:
    return StatusEvent("twilio", "SM1", status.value if status else "odd", status, source=source)


NOW = "2026-11-25T12:00:00.000Z"
EARLIER = "2026-11-25T11:00:00.000Z"


def test_apply_event_creates_state_for_an_unknown_message() -> None:
    outcome, state = apply_event(None, ev(Status.SENT), NOW)
    assert outcome is Outcome.APPLIED
    assert state == MessageState(Status.SENT, sent_at=NOW)


def test_apply_event_keeps_the_apps_sent_time_and_stamps_the_final_one() -> None:
    registered = MessageState(Status.REGISTERED, sent_at=EARLIER)
    outcome, state = apply_event(registered, ev(Status.DELIVERED, source="poll"), NOW)
    assert outcome is Outcome.APPLIED
    assert state == MessageState(Status.DELIVERED, EARLIER, final_at=NOW, final_via="poll")
    assert state.final


def test_a_message_first_heard_of_at_its_final_status_has_no_sent_time() -> None:
    """Else it would count as delivered instantly in the time-to-final statistics."""
    _, state = apply_event(None, ev(Status.DELIVERED), NOW)
    assert state is not None and state.sent_at is None and state.final_at == NOW


def test_positive_evidence_after_a_failure_moves_the_final_time() -> None:
    failed = MessageState(Status.UNDELIVERED, EARLIER, final_at=EARLIER, final_via="callback")
    outcome, state = apply_event(failed, ev(Status.DELIVERED), NOW)
    assert outcome is Outcome.APPLIED
    assert state == MessageState(Status.DELIVERED, EARLIER, final_at=NOW, final_via="callback")


@pytest.mark.parametrize(
    ("current", "new", "outcome"),
    [
        (Status.DELIVERED, Status.SENT, Outcome.REGRESSION),
        (Status.SENT, Status.SENT, Outcome.DUPLICATE),
        (Status.FAILED, Status.UNDELIVERED, Outcome.CONFLICT),
        (Status.SENT, None, Outcome.UNMAPPED),
    ],
)
def test_apply_event_changes_nothing_unless_applied(
    current: Status, new: Status | None, outcome: Outcome
) -> None:
    assert apply_event(MessageState(current, EARLIER), ev(new), NOW) == (outcome, None)


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        0.0005,
        0.0009995,  # rounds up to the next millisecond only at the microsecond
        0.9999995,  # rounds up into the next second
        0.9999994,
        1_796_326_441.953416,
        2_033_705_952.0009995,
        3_043_849_779.9999995,
        253_402_300_799.999,  # 9999-12-31T23:59:59.999Z
    ],
)
def test_a_timestamp_is_kept_as_its_datetime_is(seconds: float) -> None:
    """format_timestamp (the service clock's cheap path) keeps the text format_time keeps."""
    assert format_timestamp(seconds) == format_time(datetime.fromtimestamp(seconds, UTC))


def test_timestamps_agree_with_datetimes_over_a_random_sample() -> None:
    rng = random.Random(16)
    for _ in range(20_000):
        seconds = rng.choice([rng.uniform(0, 4e9), int(rng.uniform(0, 4e9)) + rng.random()])
        assert format_timestamp(seconds) == format_time(datetime.fromtimestamp(seconds, UTC))


@pytest.mark.parametrize("later", [0.01, 0.3, 12.345, 300.0, 604_800.0])
def test_a_timestamp_later_is_kept_as_a_datetime_plus_its_timedelta(later: float) -> None:
    """A due time (now plus a grace) is added in whole microseconds, as a timedelta adds."""
    rng = random.Random(17)
    for _ in range(5_000):
        seconds = rng.uniform(1.7e9, 1.9e9)
        kept = format_time(datetime.fromtimestamp(seconds, UTC) + timedelta(seconds=later))
        assert format_timestamp(seconds, later) == kept
    # The reviewer's case: adding the grace to the float first gave 47.964Z.
    moment = datetime.fromtimestamp(1797032675.6189995, UTC) + timedelta(seconds=12.345)
    assert format_timestamp(1797032675.6189995, 12.345) == format_time(moment)
