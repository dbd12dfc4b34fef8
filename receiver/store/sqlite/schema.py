"""The SQLite schema, as named forward migrations recorded in the `_sqlite_migrations` table."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

migrations = Migrations("receiver")


@migrations(name="0001_messages_and_events")
def _messages_and_events(db: Database) -> None:
    db["messages"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "provider": str,
            "message_id": str,
            "account": str,
            "status": str,
            "provider_status": str,
            "error_code": str,
            "to_number": str,
            "from_number": str,
            "metadata": str,  # JSON object given at registration
            "registered": int,  # 1 once the app registered it (else created from a callback)
            "is_final": int,
            "final_via": str,  # callback | poll | timeout
            "created_at": str,  # ISO 8601 UTC, millisecond precision, sortable as text
            "updated_at": str,
            "sent_at": str,
            "final_at": str,
        },
        pk="id",
        not_null={
            "provider",
            "message_id",
            "status",
            "registered",
            "is_final",
            "created_at",
            "updated_at",
        },
    )
    messages = db["messages"]
    messages.create_index(["provider", "message_id"], unique=True)  # type: ignore[union-attr]
    # Each list filter walks its own index newest-first (ORDER BY id DESC).
    messages.create_index(["message_id"])  # type: ignore[union-attr]
    messages.create_index(["status", "id"])  # type: ignore[union-attr]
    messages.create_index(["provider", "id"])  # type: ignore[union-attr]
    messages.create_index(["to_number", "id"])  # type: ignore[union-attr]
    messages.create_index(["created_at"])  # type: ignore[union-attr]

    db["events"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "provider": str,
            "message_id": str,
            "message_pk": int,  # NULL while the message is unknown (pending_unknown)
            "source": str,  # callback | poll | timeout
            "provider_status": str,
            "status": str,  # canonical; NULL when the provider status has no mapping
            "previous_status": str,  # the message's status when the event was decided
            "outcome": str,
            "error_code": str,
            "account": str,  # the parsed fields a held event needs when it is decided later
            "to_number": str,
            "from_number": str,
            "event_time": str,
            "received_at": str,
            "resolved_at": str,  # when a pending_unknown event was later decided
            "dedupe_key": str,
            "headers": str,  # JSON object of the request headers worth keeping
            "body": str,  # the raw body as received
        },
        pk="id",
        not_null={"provider", "message_id", "source", "provider_status", "outcome", "received_at"},
    )
    db.execute("CREATE INDEX idx_events_message_pk ON events (message_pk, id)")
    # Events not yet tied to a message: held ones (pending_unknown) and their duplicates.
    db.execute(
        "CREATE INDEX idx_events_unattached ON events (provider, message_id, id) "
        "WHERE message_pk IS NULL"
    )
    db.execute(
        "CREATE INDEX idx_events_dedupe ON events (provider, dedupe_key) "
        "WHERE dedupe_key IS NOT NULL"
    )
    db["_receiver_health"].create({"id": int, "checked_at": str}, pk="id")  # type: ignore[union-attr]


@migrations(name="0002_prunable_index")
def _prunable_index(db: Database) -> None:
    # Retention finds final messages by the time they became final, oldest first: with this
    # index a prune reads only what it deletes, however many messages are kept.
    db.execute(
        "CREATE INDEX idx_messages_prunable ON messages (coalesce(final_at, updated_at), id) "
        "WHERE is_final = 1"
    )


@migrations(name="0003_status_counts")
def _status_counts(db: Database) -> None:
    # Messages per status, kept by triggers in the same transaction as every change, so the
    # metrics read a handful of rows instead of counting millions at each scrape. Triggers
    # run inside SQLite: no extra statement, and no GIL hand-off, on the callback path.
    db.execute(
        "CREATE TABLE message_status_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) "
        "WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO message_status_counts (status, n) "
        "SELECT status, count(*) FROM messages GROUP BY status"
    )
    count_in = (
        "INSERT INTO message_status_counts (status, n) VALUES (NEW.status, 1) "
        "ON CONFLICT (status) DO UPDATE SET n = n + 1;"
    )
    count_out = "UPDATE message_status_counts SET n = n - 1 WHERE status = OLD.status;"
    db.execute(f"CREATE TRIGGER messages_counted_in AFTER INSERT ON messages BEGIN {count_in} END")
    db.execute(
        f"CREATE TRIGGER messages_counted_out AFTER DELETE ON messages BEGIN {count_out} END"
    )
    db.execute(
        "CREATE TRIGGER messages_recounted AFTER UPDATE OF status ON messages "
        f"WHEN OLD.status IS NOT NEW.status BEGIN {count_out} {count_in} END"
    )


@migrations(name="0004_poll_queue")
def _poll_queue(db: Database) -> None:
    # The due queue for late-DLR polling lives on the message row: next_poll_at is set at every
    # change that leaves a message non-final and cleared when it becomes final. A claim writes
    # its owner to poll_lease and moves next_poll_at to the lease's end, so a claim whose
    # owner died falls due again by itself.
    for column, kind in (
        ("next_poll_at", "TEXT"),
        ("poll_attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("last_polled_at", "TEXT"),
        ("last_poll_result", "TEXT"),
        ("poll_lease", "TEXT"),
        ("final_reason", "TEXT"),  # why the receiver gave a message up as unconfirmed
    ):
        db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    # Messages already waiting are due at once: they had no queue to wait in.
    db.execute("UPDATE messages SET next_poll_at = updated_at WHERE is_final = 0")
    # Only non-final messages are in this index, ordered by due time per provider: finding the
    # due ones reads just those, whether the table holds ten messages or ten million.
    db.execute(
        "CREATE INDEX idx_messages_due ON messages (provider, next_poll_at) "
        "WHERE next_poll_at IS NOT NULL"
    )


@migrations(name="0006_messages_one_id_index")
def _one_id_index(db: Database) -> None:
    # One index on the message id instead of two: the pair's uniqueness, keyed by message_id
    # first, answers a lookup by the pair and one by message_id alone (GET /v1/messages/{id}),
    # so the (message_id) index only cost every insert a page write at a random place.
    # Measured: 28% fewer WAL bytes and about 30 us of CPU less per inserted message.
    db.execute(
        "CREATE UNIQUE INDEX idx_messages_message_id_provider ON messages (message_id, provider)"
    )
    db.execute("DROP INDEX idx_messages_provider_message_id")
    db.execute("DROP INDEX idx_messages_message_id")


# The outbox (receiver/push/): one row per push owed to one endpoint, written in the
# transaction of the change it reports; each attempt at it; the endpoints a 410 disabled.
PUSH_TABLES = """
CREATE TABLE pushes (
    id INTEGER PRIMARY KEY,
    webhook_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    message_pk INTEGER,
    provider TEXT,
    message_id TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_step INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT,
    last_attempt_at TEXT,
    last_result TEXT,
    delivered_at TEXT,
    lease_owner TEXT,
    lease_until TEXT
);
CREATE INDEX idx_pushes_due ON pushes (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX idx_pushes_chain ON pushes (message_pk, endpoint, status, id);
CREATE INDEX idx_pushes_status ON pushes (status, id);
CREATE TABLE push_attempts (
    id INTEGER PRIMARY KEY,
    push_id INTEGER NOT NULL,
    attempted_at TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    response TEXT
);
CREATE INDEX idx_push_attempts_push ON push_attempts (push_id, id);
CREATE TABLE push_endpoints (url TEXT PRIMARY KEY, disabled_at TEXT, reason TEXT);
"""


@migrations(name="0007_push_outbox")
def _push_outbox(db: Database) -> None:
    # Pending pushes are found by due time on a partial index (only pending rows are in it);
    # whether an older push of the same message to the same endpoint is still pending is one
    # seek of idx_pushes_chain, which also finds a pruned message's delivered pushes.
    for statement in PUSH_TABLES.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations(name="0008_deadlines_and_changes")
def _deadlines_and_changes(db: Database) -> None:
    # A registration's deadline, and whether it was missed: NULL until decided (0 met, 1
    # missed), so it is decided once. The index holds only the undecided ones, by due time.
    db.execute("ALTER TABLE messages ADD COLUMN deadline_at TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN deadline_missed INTEGER")
    db.execute(
        "CREATE INDEX idx_messages_deadline ON messages (deadline_at) "
        "WHERE deadline_at IS NOT NULL AND deadline_missed IS NULL"
    )
    # The change log the stream serves and resumes from (receiver.realtime): one row per
    # applied change, its id the stream's event id. Written by triggers in the transaction of
    # the change itself; SQLite has one writer at a time, so ids are committed in order.
    db.execute(
        "CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
        "message_pk INTEGER NOT NULL, provider TEXT NOT NULL, message_id TEXT NOT NULL, "
        "previous_status TEXT, status TEXT NOT NULL, provider_status TEXT, error_code TEXT, "
        "created_at TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX idx_changes_created ON changes (created_at)")
    # The last change id pruned: a stream resuming from before it gets `event: reset`.
    db.execute(
        "CREATE TABLE changes_pruned (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "through INTEGER NOT NULL)"
    )
    log = (
        "INSERT INTO changes (kind, message_pk, provider, message_id, previous_status, status, "
        "provider_status, error_code, created_at) VALUES ('{kind}', NEW.id, NEW.provider, "
        "NEW.message_id, {previous}, NEW.status, NEW.provider_status, NEW.error_code, {at});"
    )
    status_changed = "message.status_changed"
    # A message created by a callback is a change; one registered is not (yet).
    db.execute(
        "CREATE TRIGGER messages_change_created AFTER INSERT ON messages "
        f"WHEN NEW.registered = 0 BEGIN "
        f"{log.format(kind=status_changed, previous='NULL', at='NEW.updated_at')} END"
    )
    db.execute(
        "CREATE TRIGGER messages_change_status AFTER UPDATE OF status ON messages "
        f"WHEN OLD.status IS NOT NEW.status BEGIN "
        f"{log.format(kind=status_changed, previous='OLD.status', at='NEW.updated_at')} END"
    )
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    db.execute(
        "CREATE TRIGGER messages_change_deadline AFTER UPDATE OF deadline_missed ON messages "
        "WHEN NEW.deadline_missed = 1 AND OLD.deadline_missed IS NULL BEGIN "
        f"{log.format(kind='message.deadline_missed', previous='NEW.status', at=now)} END"
    )


@migrations(name="0009_registered_sent_at")
def _registered_sent_at(db: Database) -> None:
    # The sent time the app's registration gave, kept apart from sent_at (which an event may
    # fill): `receiver verify` re-derives sent_at from the events and this. A message
    # registered before this step is taken to have been given the sent_at it has.
    db.execute("ALTER TABLE messages ADD COLUMN registered_sent_at TEXT")
    db.execute(
        "UPDATE messages SET registered_sent_at = sent_at "
        "WHERE registered = 1 AND sent_at IS NOT NULL"
    )


@migrations(name="0010_sends")
def _sends(db: Database) -> None:
    # A me-sms send registered by its uuid alone: its sweep's cursor and progress, its lease
    # (the same leasing as the poll queue's: a claimer whose lease ran out loses the send,
    # and another continues from the cursor), and what the last finished sweep found.
    db.execute(
        """
        CREATE TABLE sends (
            provider TEXT NOT NULL,
            uuid TEXT NOT NULL,
            account TEXT,
            metadata TEXT,
            sent_at TEXT,
            created_at TEXT NOT NULL,
            cursor INTEGER NOT NULL DEFAULT 0,
            sweep_started_at TEXT,
            sweep_pages INTEGER NOT NULL DEFAULT 0,
            sweep_seen INTEGER NOT NULL DEFAULT 0,
            sweep_tally TEXT,
            sweeps INTEGER NOT NULL DEFAULT 0,
            pages INTEGER NOT NULL DEFAULT 0,
            last_sweep_at TEXT,
            last_sweep TEXT,
            last_result TEXT,
            malformed INTEGER NOT NULL DEFAULT 0,
            malformed_sample TEXT,
            next_sweep_at TEXT,
            lease_owner TEXT,
            PRIMARY KEY (provider, uuid)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        "CREATE INDEX idx_sends_due ON sends (provider, next_sweep_at) "
        "WHERE next_sweep_at IS NOT NULL"
    )
    # Recipients per status for every me-sms send ("<uuid>:<msisdn>"), kept by triggers in
    # the transaction of each change, so a send's summary reads a few rows at any size.
    db.execute(
        "CREATE TABLE send_status_counts (uuid TEXT NOT NULL, status TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (uuid, status)) WITHOUT ROWID"
    )
    uuid_of = "substr({row}.message_id, 1, instr({row}.message_id, ':') - 1)"
    recipient = "{row}.provider = 'mesms' AND instr({row}.message_id, ':') > 1"
    count_in = (
        f"INSERT INTO send_status_counts (uuid, status, n) VALUES ({uuid_of}, NEW.status, 1) "
        "ON CONFLICT (uuid, status) DO UPDATE SET n = n + 1;"
    ).format(row="NEW")
    count_out = (
        f"UPDATE send_status_counts SET n = n - 1 WHERE uuid = {uuid_of} AND status = OLD.status;"
    ).format(row="OLD")
    db.execute(
        "INSERT INTO send_status_counts (uuid, status, n) "
        f"SELECT {uuid_of.format(row='messages')}, status, count(*) FROM messages "
        f"WHERE {recipient.format(row='messages')} GROUP BY 1, 2"
    )
    db.execute(
        "CREATE TRIGGER sends_counted_in AFTER INSERT ON messages "
        f"WHEN {recipient.format(row='NEW')} BEGIN {count_in} END"
    )
    db.execute(
        "CREATE TRIGGER sends_counted_out AFTER DELETE ON messages "
        f"WHEN {recipient.format(row='OLD')} BEGIN {count_out} END"
    )
    db.execute(
        "CREATE TRIGGER sends_recounted AFTER UPDATE OF status ON messages "
        f"WHEN OLD.status IS NOT NEW.status AND {recipient.format(row='NEW')} "
        f"BEGIN {count_out} {count_in} END"
    )


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in one write transaction; return the names applied.

    BEGIN IMMEDIATE takes the write lock first, so two processes starting on one file apply
    each migration once: the second waits, then finds nothing pending.
    """
    db = Database(conn, execute_plugins=False)
    conn.execute("BEGIN IMMEDIATE")
    try:
        pending = [m.name for m in migrations.pending(db)]
        migrations.apply(db)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return pending


def applied(conn: sqlite3.Connection) -> list[str]:
    return [m.name for m in migrations.applied(Database(conn, execute_plugins=False))]
