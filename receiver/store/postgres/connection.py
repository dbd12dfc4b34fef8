"""Connecting to PostgreSQL: the URL as Heroku gives it, and text that SQLite takes as it is.

PostgreSQL's text refuses the NUL character, which a raw callback body may hold (SQLite keeps
it). Every connection therefore escapes it in both directions: NUL is written as U+E000 "0"
and U+E000 itself as U+E000 U+E000 (a private-use character no provider sends, escaped too so
the mapping is exact). Values read back are what was written, so the API answers as on
SQLite; only a raw SQL look at the table shows the escape.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.types.string import StrDumperUnknown

from receiver.env import read_database_url, redact_database_url

ESCAPE = "\ue000"

# The URL as the settings read it (TLS required for a host elsewhere, unless it says
# otherwise), and as logs show it (no password): one reading for the service and its stores.
conninfo = partial(read_database_url, name="the database URL")
describe = redact_database_url


def escape(text: str) -> str:
    if "\x00" in text or ESCAPE in text:
        return text.replace(ESCAPE, ESCAPE + ESCAPE).replace("\x00", ESCAPE + "0")
    return text


def unescape(text: str) -> str:
    if ESCAPE not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == ESCAPE:
            nxt = next(chars, "")
            out.append("\x00" if nxt == "0" else nxt)
        else:
            out.append(c)
    return "".join(out)


class _Dumper(StrDumperUnknown):
    # Unknown type, as psycopg's default: the server infers it from where the value goes.
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(escape(obj))


class _Loader(Loader):
    # The connections' encoding is UTF-8 (psycopg's default client encoding).
    def load(self, data: Buffer) -> str:
        return unescape(bytes(data).decode())


def configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Register the NUL-safe text adapters on a connection (also a pool's `configure`)."""
    conn.adapters.register_dumper(str, _Dumper)
    for name in ("text", "varchar", "bpchar", "name"):
        conn.adapters.register_loader(name, _Loader)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are begun explicitly) with the adapters."""
    conn = psycopg.connect(conninfo(url), autocommit=True, **kwargs)
    configure(conn)
    return conn
