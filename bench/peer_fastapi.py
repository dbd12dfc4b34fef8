"""The FastAPI peer (issue 16): the status-callback handler a developer would write with
FastAPI, twilio's RequestValidator and aiosqlite, one commit per callback, served by the same
uvicorn the receiver runs on, for bench/run.py to compare the receiver with:

    BENCH_DATABASE=peer.db TWILIO_AUTH_TOKEN=... .venv/bin/python bench/peer_fastapi.py --port 8002
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiosqlite
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from twilio.request_validator import RequestValidator

validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with aiosqlite.connect(os.environ["BENCH_DATABASE"]) as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute(
            "CREATE TABLE IF NOT EXISTS messages (sid TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "error_code TEXT, updated_at TEXT NOT NULL)"
        )
        await db.commit()
        # bench/run.py reads this line to check that every commit is a durable one.
        async with db.execute("PRAGMA journal_mode") as cur:
            journal = (await cur.fetchone() or ("?",))[0]
        async with db.execute("PRAGMA synchronous") as cur:
            synchronous = (await cur.fetchone() or ("?",))[0]
        print(f"peer_fastapi: journal_mode={journal} synchronous={synchronous}", file=sys.stderr)
        app.state.db = db
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/v1/webhook/twilio/sms-status", status_code=204)
async def status_callback(request: Request) -> Response:
    form = dict(await request.form())
    signature = request.headers.get("X-Twilio-Signature", "")
    if not validator.validate(str(request.url), form, signature):
        raise HTTPException(status_code=403)
    db: aiosqlite.Connection = request.app.state.db
    await db.execute(
        "INSERT INTO messages (sid, status, error_code, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (sid) DO UPDATE SET status = excluded.status, "
        "error_code = excluded.error_code, updated_at = excluded.updated_at",
        (
            form["MessageSid"],
            form["MessageStatus"],
            form.get("ErrorCode"),
            datetime.now(UTC).isoformat(),
        ),
    )
    await db.commit()
    # Echoed, as the receiver does, so bench/run.py knows which callbacks were acknowledged.
    return Response(
        status_code=204, headers={"X-Request-ID": request.headers.get("X-Request-ID", "")}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # uvicorn's defaults but the access log, which the Flask peer (gunicorn) has off too.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
