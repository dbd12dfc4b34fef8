"""Connecting to PostgreSQL: the URL as Heroku gives it, and text that SQLite takes as it is.

PostgreSQL's text refuses the NUL character, which a raw callback body may hold (SQLite keeps
it). Every connection therefore escapes it in both directions: NUL is written as U+E000 "0"
and U+E000 itself as U+E000 U+E000 (a private-use character no provider sends, escaped too so
the mapping is exact). Values read back are what was written, so the API answers as on
SQLite; only a raw SQL look at the table shows the escape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.types.string import StrDumperUnknown

ESCAPE = "\ue000"
_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgres://", "postgresql://"))


def conninfo(url: str) -> str:
    """The URL psycopg is given: `postgres://` (Heroku's spelling) as `postgresql://`, and
    TLS required for a host other than this machine unless the URL says otherwise."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    host = parts.hostname or ""
    if "sslmode" not in query and host not in _LOCAL_HOSTS and not host.startswith("/"):
        query["sslmode"] = "require"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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
