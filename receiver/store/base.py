"""The store's contract: the records it takes and gives, and the interface every store implements.

Only modules under receiver/store/ speak SQL; the rest of the service sees this interface.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from receiver.engine import Outcome, StatusEvent, format_time

__all__ = ["format_time", "utcnow"]  # with the records and the Store interface below


def utcnow() -> str:
    """Now as stored (engine.format_time)."""
    return format_time(datetime.now(UTC))


# Told (jobs in the batch, seconds from BEGIN to COMMIT) after each committed write batch, from
# the writer's thread: it must be quick and must not raise.
CommitObserver = Callable[[int, float], None]


class StoreUnavailable(Exception):
    """The database could not take the read or write (locked past the busy timeout, disk full,
    closed): nothing of it was committed, so the caller may retry."""


@dataclass(slots=True)  # a value, built per callback: not frozen (see engine.StatusEvent)
class Recorded:
    """What recording one event did."""

    event: StatusEvent
    outcome: Outcome
    previous_status: str | None  # None when the message was unknown
    status: str | None  # the message's status afterwards (None while held as pending)
    created: bool = False  # the message was created from this event
    parent_id: str | None = None  # the event was a part's: the message_id of its message


@dataclass(frozen=True)
class Registration:
    """A message the app says it sent."""

    provider: str
    message_id: str
    to_number: str | None = None
    from_number: str | None = None
    sent_at: str | None = None
    metadata: dict[str, Any] | None = None
    # The account it was sent from (Twilio: the AC... SID); fills or corrects the stored one.
    account: str | None = None
    # A deadline for its delivery: a kept time, or seconds after sent_at (after the
    # registration, when that is not known). Decided once (rules.decide_deadlines).
    deadline: str | None = None
    deadline_after: float | None = None
    # A multipart message: the provider's ids of its parts (segments), in order
    # (receiver.store.parts); None for a message of one part.
    parts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Registered:
    provider: str
    message_id: str
    created: bool
    status: str
    pending_applied: int  # held events decided by this registration
    # When the receiver first heard of the message (its created_at): where its maximum age
    # counts from when the registration's sent_at is older than that age (polling.policy).
    created_at: str | None = None
    # Set when nothing was written because the registration contradicts what is kept (a
    # multipart message's parts: rules.register_multipart): (error_code, message).
    conflict: tuple[str, str] | None = None


@dataclass(frozen=True)
class MessageFilter:
    status: str | None = None
    provider: str | None = None
    to_number: str | None = None
    since: str | None = None  # created_at >= since
    until: str | None = None  # created_at < until
    limit: int = 100
    before_id: int | None = None  # keyset cursor


@dataclass(frozen=True)
class DueMessage:
    """A message claimed for a poll: what a status client needs to ask about it."""

    pk: int
    provider: str
    message_id: str
    account: str | None
    status: str
    provider_status: str | None
    poll_attempts: int  # polls made before this one
    created_at: str
    sent_at: str | None


@dataclass(frozen=True)
class PollDone:
    """The end of one claimed message's poll: what to keep, and when to ask again."""

    message: DueMessage
    result: str  # ok | not_found | rate_limited | unavailable | ... (polling.base)
    next_poll_at: str  # unless the message is final by now (then it leaves the queue)
    attempted: bool = True  # a request about it was made (counted in poll_attempts)
    give_up_reason: str | None = None  # set: the message is given up as unconfirmed


@dataclass(frozen=True)
class Pruned:
    """What one prune deleted."""

    messages: int
    events: int
    batches: int
    pushes: int = 0  # delivered pushes of the deleted messages, with their attempts


@dataclass(frozen=True)
class BackupInfo:
    """A finished backup: where it is, its size, and the messages it holds."""

    path: str
    size_bytes: int
    messages: int


# The columns of an export, in order; each exported row is a tuple of these.
EXPORT_COLUMNS = (
    "provider",
    "message_id",
    "status",
    "provider_status",
    "error_code",
    "final",
    "final_via",
    "to",
    "from",
    "account",
    "registered",
    "metadata",
    "created_at",
    "updated_at",
    "sent_at",
    "final_at",
    "final_reason",
)


# A stored time later than any real one: "never" in a column compared as text.
NEVER = "9999"


# The records of sends registered whole (store/sends.py holds their rules) and of the
# dashboard's windows (store/dashboard.py): here, beside the interface that takes and gives them.


@dataclass(frozen=True)
class SendClaim:
    """A send claimed for its sweep: where the sweep stands."""

    provider: str
    uuid: str
    account: str | None
    cursor: int  # the `after` of the next page (0: a sweep from the start)
    created_at: str
    sent_at: str | None
    sweeps: int  # sweeps finished before


@dataclass(frozen=True)
class SendPage:
    """One page of a send's recipients, as read."""

    provider: str
    uuid: str
    after: int  # the cursor it was asked with
    events: Sequence[StatusEvent]
    next_cursor: int | None  # None: the sweep's last page
    malformed: Sequence[str] = ()  # recipients that could not be read, as raw JSON text
    lease_until: str = NEVER  # the lease, renewed by the page
    next_sweep_at: str | None = None  # when the next sweep is due, if this one ends unsettled
    give_up_reason: str | None = None  # set: the send is past its age; give recipients up


@dataclass
class PageWritten:
    """What writing a page did (None from record_page: the send is no longer this owner's)."""

    done: bool  # the sweep ended with this page
    settled: bool = False  # ...and every recipient is final: no more sweeps
    tally: Counter[str] = field(default_factory=Counter)


@dataclass
class WindowFigures:
    """The kept counts of one window (and provider, when one is chosen)."""

    by_status: dict[str, int] = field(default_factory=dict)
    final_via: dict[str, int] = field(default_factory=dict)
    # (chart bucket: a prefix of the rollup bucket, status, count), oldest first.
    over_time: list[tuple[str, str, int]] = field(default_factory=list)
    # (provider, error code, count), most frequent first; "" is a failure without a code.
    errors: list[tuple[str, str, int]] = field(default_factory=list)
    # (time bin, count), shortest first (bin_range), and the percentiles /v1/stats gives.
    final_bins: list[tuple[int, int]] = field(default_factory=list)
    timed: int = 0
    median: float | None = None
    p95: float | None = None


class Store(Protocol):
    """Durable state. Every method that writes returns only after its write is committed, and
    raises StoreUnavailable (never anything else) when the database cannot take it."""

    kind: str

    def exists(self) -> bool:
        """Whether the database has been created, so commands that only read or trim it
        (prune, backup) can refuse to make an empty one somewhere unexpected."""
        ...

    def migrate(self) -> list[str]:
        """Create or upgrade the schema (synchronously, for the CLI); the steps applied.

        Raises StoreUnavailable when the database cannot be opened."""
        ...

    async def open(self, on_commit: CommitObserver | None = None) -> list[str]:
        """Migrate, then start taking reads and writes; the migration steps applied."""
        ...

    async def close(self) -> None:
        """Commit what was already submitted, then release every connection."""
        ...

    async def record(self, events: Sequence[StatusEvent]) -> list[Recorded]: ...
    async def register(self, registrations: Sequence[Registration]) -> list[Registered]: ...
    async def check_writable(self) -> None: ...
    async def get_messages(
        self, message_id: str, provider: str | None = None
    ) -> list[dict[str, Any]]: ...
    async def get_events(self, provider: str, message_id: str) -> list[dict[str, Any]]: ...
    async def list_messages(self, f: MessageFilter) -> tuple[list[dict[str, Any]], int | None]: ...
    async def stats(self, f: MessageFilter) -> dict[str, Any]: ...
    def export_messages(
        self, f: MessageFilter, *, max_rows: int
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The filtered messages, newest first, at most `max_rows`, as chunks of rows in
        EXPORT_COLUMNS order (`metadata` as JSON text); never all rows in memory at once."""
        ...

    async def prune(self, older_than: str, *, batch_size: int = 500, share: float = 1.0) -> Pruned:
        """Delete final messages whose final time (else last update) is before `older_than`,
        with their events, at most `batch_size` messages per write so other writes go
        between; with `share` < 1, pausing so that deleting takes at most that share of the
        writer's time."""
        ...

    def backup(self, target: str) -> BackupInfo:
        """Write a consistent copy of the database to `target` (synchronously, for the CLI),
        safe while the service writes; `target` is replaced only by a complete copy."""

    async def claim_due(
        self,
        provider: str,
        *,
        now: str,
        limit: int,
        lease_until: str,
        owner: str,
        group_of: Callable[[str], str | None] | None = None,
    ) -> list[DueMessage]:
        """Claim up to `limit` of the provider's messages due at `now`, soonest due first: each
        is leased to `owner` until `lease_until` (when it falls due again if never finished),
        so concurrent claimers, in this process or another, never get the same message.

        `group_of` gives the message-id prefix of messages answered together (a me-sms send);
        such a group is claimed whole, or not at all while another claimer holds part of it.
        """
        ...

    async def finish_polls(
        self, owner: str, events: Sequence[StatusEvent], done: Sequence[PollDone]
    ) -> list[Recorded]:
        """In one write: decide the polled `events` as callbacks are (an event for an unknown
        message, or one that repeats the message's current provider status, is not kept), then
        give up or reschedule each of `done` that `owner` still holds."""
        ...

    async def queued_providers(self) -> list[str]:
        """Every provider with messages in the poll queue (a provider no longer configured
        included, so its messages still time out)."""
        ...

    async def next_due(self, provider: str) -> str | None:
        """When the provider's soonest queued message falls due (None: the queue is empty)."""
        ...

    async def due_count(self, provider: str, now: str) -> int:
        """How many of the provider's messages are due at `now` (for the metrics)."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """Messages per current status (statuses with none left out), for the metrics."""
        ...

    # Wake-ups, the change log and deadlines (receiver.realtime).
    # Told, after each commit, the (provider, message_id) of the messages it changed.
    changed: Callable[[list[tuple[str, str]]], None] | None

    async def decide_deadlines(self, now: str, limit: int = 500) -> list[tuple[str, str]]:
        """Decide every deadline due at `now`, once each (met if delivered by then, else
        missed, which logs a `message.deadline_missed` change); those missed."""
        ...

    async def next_deadline(self) -> str | None:
        """The soonest undecided deadline (None: there is none)."""
        ...

    async def changes_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Up to `limit` logged changes ({"id", "kind", "data"}) with ids above `after`, in
        commit order (on PostgreSQL too: ids are taken under a lock held to the commit)."""
        ...

    async def listen(
        self,
        changed: Callable[[list[tuple[str, str]]], None],
        changed_any: Callable[[], None],
    ) -> None:
        """Until cancelled, call `changed` for the changes other processes commit (PostgreSQL:
        every instance's, through LISTEN), `changed_any` when some may have been missed."""
        ...

    async def change_marks(self) -> tuple[int, int]:
        """(the last change id, the last change id pruned by retention); 0 for none."""
        ...

    # -- sends registered whole (a me-sms send by its uuid alone; receiver.store.sends) ------

    async def register_sends(self, registrations: Sequence[Registration]) -> list[Registered]:
        """Track each send whole (message_id: the send's id); idempotent as register()."""
        ...

    async def claim_sends(
        self, provider: str, *, now: str, limit: int, lease_until: str, owner: str
    ) -> list[SendClaim]:
        """Lease up to `limit` due sends to `owner` until `lease_until`; each claim says where
        its sweep stands (the stored cursor), so the sweep continues from there."""
        ...

    async def record_send_page(self, owner: str, page: SendPage) -> PageWritten | None:
        """Write one page of a send's sweep and move its cursor past it, in one transaction
        (the lease renewed to page.lease_until); None, writing nothing, when the send is no
        longer `owner`'s or its cursor is not page.after."""
        ...

    async def release_send(
        self, provider: str, uuid: str, owner: str, *, next_sweep_at: str, result: str
    ) -> bool:
        """Hand the send back, its cursor kept, due again at `next_sweep_at`."""
        ...

    async def send_summary(self, uuid: str) -> dict[str, Any] | None:
        """A send's per-status counts and sweep progress (None: nothing known of it)."""
        ...

    async def next_send_due(self, provider: str) -> str | None:
        """When the provider's soonest send falls due for a sweep (None: none waits)."""
        ...

    async def dashboard_window(
        self, since: str, provider: str | None, chart_chars: int
    ) -> WindowFigures:
        """The kept counts of the messages created since `since` (a 10-minute boundary,
        receiver.store.dashboard.bucket_of), of one provider or all; the chart's buckets are
        the first `chart_chars` characters of the 10-minute ones."""
        ...

    async def dashboard_queue(self, now: str) -> list[tuple[str, int, int, str | None]]:
        """(provider, messages waiting for a poll, due at `now`, the soonest due time)."""
        ...

    async def dashboard_recent(
        self, statuses: tuple[str, ...], since: str, provider: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The latest `limit` messages of `statuses` created since `since`, newest first."""
        ...


# -- the push outbox (receiver/push/) -------------------------------------------------------


@dataclass(frozen=True)
class PushJob:
    """A push claimed for an attempt: what the dispatcher sends, and whose lease it is."""

    pk: int
    webhook_id: str
    endpoint: str
    payload: str  # the JSON body, sent byte for byte at every attempt
    attempts: int  # attempts made before this one
    retry_step: int  # attempts since it was (re)queued: its place in the retry schedule
    lease_owner: str


@dataclass(frozen=True)
class PushAttempt:
    """One attempt's record, and what it leaves the push as."""

    attempted_at: str
    duration_ms: int
    http_status: int | None  # None: no answer (error says why)
    error: str | None  # timeout | network_error | None
    response: str | None  # the first 2 KB of the answer's body
    status: str  # the push afterwards: pending (retry at next_attempt_at) | delivered | failed
    next_attempt_at: str | None = None

    @property
    def result(self) -> str:
        """What the attempt got, as /metrics and the push's last_result say it."""
        return f"http_{self.http_status}" if self.http_status is not None else str(self.error)


PUSH_STATUSES = ("pending", "delivered", "failed")
