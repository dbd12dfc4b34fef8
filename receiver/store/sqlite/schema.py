"""The SQLite schema, as named forward migrations recorded in the `_sqlite_migrations` table."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

from receiver.store import parts

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


# The dashboard's kept counts (receiver/dashboard/): 10-minute buckets of created_at, the
# granularity its windows are aligned to, so a window's figures are sums of kept rows, however
# many messages it holds. `ROLLUP_KEY` is the bucket, `ROLLUP_ERROR` the error code kept only
# for a failed status (a delivered message's code says nothing), `TIMED_MS` the time to final
# in milliseconds, exactly what /v1/stats computes (rounded to the ms), and `BIN` its bin of
# two significant digits (receiver.store.dashboard.bin_range): a window's percentiles are found
# in the bins' counts first, then among the exact times of one bin.
ROLLUP_KEY = "substr({r}.created_at, 1, 15) || '0'"
ROLLUP_ERROR = (
    "CASE WHEN {r}.status IN ('undelivered', 'failed', 'rejected', 'expired') "
    "THEN coalesce({r}.error_code, '') ELSE '' END"
)
TIMED = "{r}.is_final = 1 AND {r}.sent_at IS NOT NULL AND {r}.final_at IS NOT NULL"
TIMED_MS = "CAST(round((julianday({r}.final_at) - julianday({r}.sent_at)) * 86400000.0) AS INTEGER)"
BIN = "CASE WHEN {ms} < 1 THEN 0 ELSE length({ms}) * 100 + CAST(substr({ms}, 1, 2) AS INTEGER) END"


def _rollup_sql(r: str, delta: str) -> str:
    """The statements adding `delta` (+1 or -1) for row `r` (NEW or OLD) to the kept counts."""
    key = ROLLUP_KEY.format(r=r)
    timed = f"FROM (SELECT {TIMED_MS.format(r=r)} AS ms) AS t WHERE {TIMED.format(r=r)}"
    return (
        "INSERT INTO dashboard_rollup (bucket, provider, status, final_via, error_code, n) "
        f"VALUES ({key}, {r}.provider, {r}.status, coalesce({r}.final_via, ''), "
        f"{ROLLUP_ERROR.format(r=r)}, {delta}) "
        f"ON CONFLICT DO UPDATE SET n = n + {delta}; "
        "INSERT INTO dashboard_rollup_days (day, provider, status, final_via, error_code, n) "
        f"VALUES (substr({r}.created_at, 1, 10), {r}.provider, {r}.status, "
        f"coalesce({r}.final_via, ''), {ROLLUP_ERROR.format(r=r)}, {delta}) "
        f"ON CONFLICT DO UPDATE SET n = n + {delta}; "
        "INSERT INTO dashboard_final_times (bucket, provider, ms, bin, n) "
        f"SELECT {key}, {r}.provider, t.ms, {BIN.format(ms='t.ms')}, {delta} {timed} "
        f"ON CONFLICT DO UPDATE SET n = n + {delta}; "
        "INSERT INTO dashboard_final_days (day, provider, bin, n) "
        f"SELECT substr({r}.created_at, 1, 10), {r}.provider, {BIN.format(ms='t.ms')}, "
        f"{delta} {timed} ON CONFLICT DO UPDATE SET n = n + {delta};"
    )


@migrations(name="0011_dashboard_rollups")
def _dashboard_rollups(db: Database) -> None:
    # Kept by triggers in the same transaction as every change (as message_status_counts is
    # for /metrics): counting a month's million messages at each page view took seconds.
    db.execute(
        "CREATE TABLE dashboard_rollup (bucket TEXT NOT NULL, provider TEXT NOT NULL, "
        "status TEXT NOT NULL, final_via TEXT NOT NULL, error_code TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (bucket, provider, status, final_via, error_code)) "
        "WITHOUT ROWID"
    )
    # The same per day: a month's window reads thirty days' rows, not 4,320 buckets'.
    db.execute(
        "CREATE TABLE dashboard_rollup_days (day TEXT NOT NULL, provider TEXT NOT NULL, "
        "status TEXT NOT NULL, final_via TEXT NOT NULL, error_code TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (day, provider, status, final_via, error_code)) "
        "WITHOUT ROWID"
    )
    # The exact times per bucket, reached by bucket (a day's bins) or by bin (one bin's times).
    db.execute(
        "CREATE TABLE dashboard_final_times (bucket TEXT NOT NULL, provider TEXT NOT NULL, "
        "ms INTEGER NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL, "
        "PRIMARY KEY (bucket, provider, ms)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE INDEX idx_dashboard_final_bins "
        "ON dashboard_final_times (bin, bucket, provider, ms, n)"
    )
    # The bins per day: a month's percentiles read thirty days of bins, not 4,320 buckets'.
    db.execute(
        "CREATE TABLE dashboard_final_days (day TEXT NOT NULL, provider TEXT NOT NULL, "
        "bin INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (day, provider, bin)) "
        "WITHOUT ROWID"
    )
    count_dashboard_rollups(db.conn)
    create_dashboard_triggers(db.conn, bulk_aware=False)


def count_dashboard_rollups(conn: sqlite3.Connection) -> None:
    """Count the kept rows afresh from the messages (the migration, and bench/dashboard.py
    after it rewrites a filled database's times)."""
    m = "messages"
    for table in (
        "dashboard_rollup",
        "dashboard_rollup_days",
        "dashboard_final_times",
        "dashboard_final_days",
    ):
        conn.execute(f"DELETE FROM {table}")
    conn.execute(
        "INSERT INTO dashboard_rollup (bucket, provider, status, final_via, error_code, n) "
        f"SELECT {ROLLUP_KEY.format(r=m)}, provider, status, coalesce(final_via, ''), "
        f"{ROLLUP_ERROR.format(r=m)}, count(*) FROM messages GROUP BY 1, 2, 3, 4, 5"
    )
    conn.execute(
        "INSERT INTO dashboard_rollup_days (day, provider, status, final_via, error_code, n) "
        "SELECT substr(bucket, 1, 10), provider, status, final_via, error_code, sum(n) "
        "FROM dashboard_rollup GROUP BY 1, 2, 3, 4, 5"
    )
    conn.execute(
        "INSERT INTO dashboard_final_times (bucket, provider, ms, bin, n) "
        f"SELECT bucket, provider, ms, {BIN.format(ms='ms')}, count(*) FROM ("
        f"SELECT {ROLLUP_KEY.format(r=m)} AS bucket, provider, {TIMED_MS.format(r=m)} AS ms "
        f"FROM messages WHERE {TIMED.format(r=m)}) GROUP BY 1, 2, 3"
    )
    conn.execute(
        "INSERT INTO dashboard_final_days (day, provider, bin, n) "
        "SELECT substr(bucket, 1, 10), provider, bin, sum(n) FROM dashboard_final_times "
        "GROUP BY 1, 2, 3"
    )


DASHBOARD_TRIGGERS = ("dashboard_counted_in", "dashboard_counted_out", "dashboard_recounted")


def create_dashboard_triggers(conn: sqlite3.Connection, *, bulk_aware: bool = True) -> None:
    """The dashboard's triggers; `bulk_aware` (from 0012 on) leaves rows inserted in bulk to
    receiver.store.sqlite.bulk, which counts them per batch."""
    conn.execute(
        "CREATE TRIGGER dashboard_counted_in AFTER INSERT ON messages "
        f"{'WHEN ' + NOT_BULK if bulk_aware else ''} BEGIN {_rollup_sql('NEW', '1')} END"
    )
    conn.execute(
        "CREATE TRIGGER dashboard_counted_out AFTER DELETE ON messages "
        f"BEGIN {_rollup_sql('OLD', '-1')} END"
    )
    changed = " OR ".join(
        f"OLD.{c} IS NOT NEW.{c}"
        for c in ("status", "final_via", "error_code", "is_final", "sent_at", "final_at")
    )
    conn.execute(
        "CREATE TRIGGER dashboard_recounted AFTER UPDATE OF status, final_via, error_code, "
        f"is_final, sent_at, final_at ON messages WHEN {changed} "
        f"BEGIN {_rollup_sql('OLD', '-1')} {_rollup_sql('NEW', '1')} END"
    )


# True unless rows are being inserted in bulk (receiver.store.sqlite.bulk), which counts them.
NOT_BULK = "NOT EXISTS (SELECT 1 FROM bulk_insert)"
# receiver.store.outbox.CHANGE_COLUMNS (the schema does not import the store's modules).
PUSH_CHANGE_COLUMNS = (
    "data_status",
    "data_previous_status",
    "data_provider_status",
    "data_error_code",
    "data_final_via",
    "data_to",
    "data_account",
    "data_sent_at",
    "data_final_at",
)


@migrations(name="0012_bulk_registration")
def _bulk_registration(db: Database) -> None:
    # A batch of registrations is inserted in one statement and counted once, per batch
    # (receiver.store.sqlite.bulk): a trigger per row doing six upserts was most of the cost
    # of registering (131 against 54 us per message). `bulk_insert` holds a row only inside
    # that statement, in the writer's transaction, so every other insert is counted as before.
    # The counts themselves are kept as they were: nothing to recount.
    db.execute("CREATE TABLE bulk_insert (one INTEGER PRIMARY KEY CHECK (one = 1))")
    for name in ("messages_counted_in", "sends_counted_in", "dashboard_counted_in"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute(
        "CREATE TRIGGER messages_counted_in AFTER INSERT ON messages "
        f"WHEN {NOT_BULK} BEGIN "
        "INSERT INTO message_status_counts (status, n) VALUES (NEW.status, 1) "
        "ON CONFLICT (status) DO UPDATE SET n = n + 1; END"
    )
    db.execute(
        "CREATE TRIGGER sends_counted_in AFTER INSERT ON messages "
        f"WHEN NEW.provider = 'mesms' AND instr(NEW.message_id, ':') > 1 AND {NOT_BULK} BEGIN "
        "INSERT INTO send_status_counts (uuid, status, n) "
        "VALUES (substr(NEW.message_id, 1, instr(NEW.message_id, ':') - 1), NEW.status, 1) "
        "ON CONFLICT (uuid, status) DO UPDATE SET n = n + 1; END"
    )
    db.execute(
        "CREATE TRIGGER dashboard_counted_in AFTER INSERT ON messages "
        f"WHEN {NOT_BULK} BEGIN {_rollup_sql('NEW', '1')} END"
    )
    # A change's push keeps the change's facts in columns, its body built when it is read
    # (receiver.store.outbox.body): no JSON built in the transaction of a callback.
    for column in (*PUSH_CHANGE_COLUMNS, "data_metadata"):
        db.execute(f"ALTER TABLE pushes ADD COLUMN {column} TEXT")


@migrations(name="0013_message_parts")
def _message_parts(db: Database) -> None:
    # A multipart message (a concatenated SMS's segments, each with the provider's own id):
    # `messages.parts` is how many it has (NULL: a message of one part), and each part is a
    # row here, not a message, so counts, the dashboard and the change log see the message
    # once. A part's events are kept under its message (events.message_pk) with the part's
    # id as their message_id.
    db.execute("ALTER TABLE messages ADD COLUMN parts INTEGER")
    db.execute(parts.MESSAGE_PARTS.format(pk="INTEGER PRIMARY KEY", text="TEXT", big="INTEGER"))
    for statement in parts.MESSAGE_PARTS_INDEXES:
        db.execute(statement)


@migrations(name="0015_part_events")
def _part_events(db: Database) -> None:
    # A multipart message registered under its first part's id (receiver.store.parts): that
    # part's events carry the message's own id, so they are marked (1) to be told from the
    # message's own (its folds, what `receiver verify` replays). NULL on every other event: a
    # column added without a default rewrites nothing.
    db.execute("ALTER TABLE events ADD COLUMN is_part INTEGER")


# What every kept count reads of a message (receiver.store.sqlite.counts).
COUNTED = (
    "provider",
    "message_id",
    "status",
    "created_at",
    "final_via",
    "error_code",
    "is_final",
    "sent_at",
    "final_at",
)
_COUNT_TRIGGERS = (
    "messages_counted_in",
    "messages_counted_out",
    "messages_recounted",
    "sends_counted_in",
    "sends_counted_out",
    "sends_recounted",
    *DASHBOARD_TRIGGERS,
)


@migrations(name="0016_counted_per_batch")
def _counted_per_batch(db: Database) -> None:
    # The kept counts are brought level once per write batch (receiver.store.sqlite.counts):
    # nine triggers doing up to ten upserts per row become two that note a message changed or
    # deleted, as the counts hold it; an inserted one is known by its id, above
    # `counted_through`. The counts themselves stay as they are.
    columns = ", ".join(COUNTED)
    db.execute(f"CREATE TABLE pending_counts (id INTEGER PRIMARY KEY, {columns})")
    db.execute("CREATE TABLE counted_through (one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER)")
    db.execute("INSERT INTO counted_through (one, id) SELECT 1, max(id) FROM messages")
    for name in _COUNT_TRIGGERS:
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE bulk_insert")  # no insert trigger left to skip
    # OR IGNORE: a message noted already keeps its first note (the state the counts hold).
    noted = (
        f"INSERT OR IGNORE INTO pending_counts (id, {columns}) "
        f"VALUES (OLD.id, {', '.join(f'OLD.{c}' for c in COUNTED)});"
    )
    db.execute(f"CREATE TRIGGER messages_counted_out AFTER DELETE ON messages BEGIN {noted} END")
    recounted = [c for c in COUNTED if c not in ("provider", "message_id", "created_at")]
    db.execute(
        f"CREATE TRIGGER messages_recounted AFTER UPDATE OF {', '.join(recounted)} "
        f"ON messages WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in recounted)} "
        f"BEGIN {noted} END"
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
