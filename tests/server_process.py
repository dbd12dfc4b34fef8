"""`receiver serve` as a real child process, for tests that kill, signal or starve it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

from support import (
    CALLBACK_PATH,
    TWILIO_TOKEN,
    WAIT,
    free_port,
    status_params,
    twilio_form,
    wait_for_healthz,
)

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """One `python -m receiver serve` on a loopback port and a given SQLite file."""

    def __init__(self, database: Path, log: Path | None = None, **env: str) -> None:
        self.database = database
        self.log = log  # None: output discarded (a file-size limit would refuse a log file)
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return self.base_url + CALLBACK_PATH

    def start(self, timeout: float = WAIT) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "TWILIO_"))}
        env.update(
            PORT=str(self.port),
            RECEIVER_DATABASE=str(self.database),
            RECEIVER_LOG_FORMAT="json",
            RECEIVER_LOG_LEVEL="warning",
            TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
            PYTHONPATH=str(ROOT),
        )
        env.update(self.env)
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self._out = out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = wait_for_healthz(self.base_url, self.proc, timeout)
        except RuntimeError:
            self.stop()
            raise
        assert ready.status_code == 200, ready.text
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no last commit; whatever was committed is what survives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)
        self._close_log()

    def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._close_log()
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        self._close_log()

    def _close_log(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def signed_callback(url: str, sid: str, status: str = "delivered") -> tuple[bytes, dict[str, str]]:
    """A Twilio status callback for `sid`, with the delivery id Twilio sends, signed for `url`."""
    body, headers = twilio_form(url, status_params(sid, status))
    headers["I-Twilio-Idempotency-Token"] = f"idem-{sid}"
    return body, headers


def event_counts(database: Path) -> Counter[tuple[str, str]]:
    """How many events each (message_id, outcome) has in the store."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute(
            "SELECT message_id, outcome, count(*) FROM events GROUP BY message_id, outcome"
        ).fetchall()
    finally:
        conn.close()
    return Counter({(message_id, outcome): n for message_id, outcome, n in rows})


def integrity(database: Path) -> str:
    conn = sqlite3.connect(database)
    try:
        result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result
    finally:
        conn.close()
