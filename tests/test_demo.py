"""`receiver demo`, run as a user runs it: the installed command in a process of its own."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "receiver"


def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "demo", *args], capture_output=True, text=True, timeout=timeout
    )


def numbers(pattern: str, text: str) -> list[int]:
    """The numbers the pattern's groups catch on the last line it matches."""
    matches = list(re.finditer(pattern, text, re.MULTILINE))
    assert matches, f"{pattern!r} not in the output:\n{text}"
    return [int(n) for n in matches[-1].groups()]


def test_the_demo_ends_with_every_message_final_and_as_the_simulator_says(
    tmp_path: Path,
) -> None:
    """Dropped DLRs are recovered by polling, the rest by callbacks; the database is kept."""
    database = tmp_path / "demo.db"
    # The demo runs in real time (finals within seconds); its limit is generous for a loaded
    # machine, yet short of the 60 s maximum age, so no message can have timed out.
    done = demo("--count", "60", "--seed", "1", "--timeout", "55", "--database", str(database))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert done.stderr == ""
    assert '"level"' not in out  # the receiver logs nothing at level warning or above

    assert "OK: all 60 messages final" in out
    assert numbers(r"^ *\d+\.\ds +(\d+)/(\d+) \|", out) == [60, 60]  # the last live line
    callback, poll, timeout = numbers(
        r"^final via: +callback (\d+), poll (\d+), timeout (\d+)$", out
    )
    assert callback > 0 and poll > 0 and timeout == 0
    assert callback + poll == 60
    agreed = numbers(r"^simulator: +(\d+)/(\d+) messages ended in the simulator's own", out)
    assert agreed == [60, 60]
    assert "0 mismatch(es)" in out

    # sent final agree | callback poll timeout | no DLR, no final, late, stale, twice | polls
    total = numbers(
        r"^total" + r" +(\d+)" * 3 + r" \|" + r" +(\d+)" * 3 + r" \|" + r" +(\d+)" * 5, out
    )
    sent, final, agree, _, table_poll, _, no_dlr, no_final, *_ = total
    assert (sent, final, agree, table_poll) == (60, 60, 60, poll)
    # The seed drops some DLRs, and only polling could learn how those messages ended; the
    # others polled were late (their final DLR came after the poll had settled them).
    assert 0 < no_dlr + no_final <= poll

    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT count(*), sum(is_final), sum(final_via = 'poll') FROM messages"
        ).fetchone()
    assert rows == (60, 60, poll)
    # Every stored status is the fold of its events (callbacks, polls, duplicates, late DLRs).
    ledger = subprocess.run(
        [str(BIN), "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RECEIVER_DATABASE": str(database)},
    )
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr
    assert "60 message(s) checked against their events, 0 mismatch(es)" in ledger.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--count", "0"], "argument --count: must be a whole number from 1 to 2000"),
        (["--count", "many"], "argument --count: must be a whole number from 1 to 2000"),
        (["--timeout", "1"], "argument --timeout: must be a number of seconds from 5 to 3600"),
        (["--database", "{existing}"], "--database: {existing} already exists"),
    ],
)
def test_a_bad_option_is_a_usage_error_that_says_which(
    tmp_path: Path, args: list[str], says: str
) -> None:
    existing = tmp_path / "receiver.db"
    existing.touch()
    done = demo(*(a.format(existing=existing) for a in args))
    assert done.returncode == 2
    assert says.format(existing=existing) in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("count", ["1", "9", "12"])
def test_a_small_demo_sends_every_message_in_waves_that_are_never_empty(
    tmp_path: Path, count: str
) -> None:
    """Fewer messages than waves times providers: each wave still registers something."""
    done = demo("--count", count, "--timeout", "55", "--database", str(tmp_path / "demo.db"))
    assert done.returncode == 0, done.stdout + done.stderr
    with closing(sqlite3.connect(tmp_path / "demo.db")) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (int(count),)
