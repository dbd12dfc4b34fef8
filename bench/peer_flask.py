"""The Flask peer (issue 16): the status-callback handler a developer would write with Flask,
twilio's RequestValidator and sqlite3, one commit per callback, for bench/run.py to compare
the receiver with. It runs under gunicorn with one sync worker:

    BENCH_DATABASE=peer.db TWILIO_AUTH_TOKEN=... .venv/bin/gunicorn --workers 1 \
        --worker-class sync --bind 127.0.0.1:8001 --chdir bench peer_flask:app
"""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import UTC, datetime

from flask import Flask, abort, request
from twilio.request_validator import RequestValidator

app = Flask(__name__)
validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])

# One connection for the worker's life (a sync worker serves one request at a time).
db = sqlite3.connect(os.environ["BENCH_DATABASE"])
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = FULL")
db.execute(
    "CREATE TABLE IF NOT EXISTS messages (sid TEXT PRIMARY KEY, status TEXT NOT NULL, "
    "error_code TEXT, updated_at TEXT NOT NULL)"
)
db.commit()
# bench/run.py reads this line to check that every commit is a durable one.
print(
    f"peer_flask: journal_mode={db.execute('PRAGMA journal_mode').fetchone()[0]} "
    f"synchronous={db.execute('PRAGMA synchronous').fetchone()[0]}",
    file=sys.stderr,
    flush=True,
)


@app.post("/v1/webhook/twilio/sms-status")
def status_callback() -> tuple[str, int, dict[str, str]]:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not validator.validate(request.url, request.form, signature):
        abort(403)
    db.execute(
        "INSERT INTO messages (sid, status, error_code, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (sid) DO UPDATE SET status = excluded.status, "
        "error_code = excluded.error_code, updated_at = excluded.updated_at",
        (
            request.form["MessageSid"],
            request.form["MessageStatus"],
            request.form.get("ErrorCode"),
            datetime.now(UTC).isoformat(),
        ),
    )
    db.commit()
    # Echoed, as the receiver does, so bench/run.py knows which callbacks were acknowledged.
    return "", 204, {"X-Request-ID": request.headers.get("X-Request-ID", "")}
