"""In-process wake-ups: long polls wait on a message, streams on any change; the store's
commits (and, on PostgreSQL, every instance's, through LISTEN) wake them. Nothing here reads
the database: a woken waiter reads what it needs itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

Key = tuple[str, str]  # (provider, message_id)


class Busy(Exception):
    """Too many waiting at once: the caller answers 429 with Retry-After."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"at most {limit} {what} at once")
        self.what = what
        self.limit = limit


class Hub:
    """Who waits for what. Used on one event loop (the app's); `changed` is cheap when nobody
    waits, as it is called after every commit."""

    def __init__(self, *, max_waiters: int, max_streams: int) -> None:
        self.max_waiters = max_waiters
        self.max_streams = max_streams
        self._by_key: dict[Key, set[asyncio.Event]] = {}
        self._streams: set[asyncio.Event] = set()
        self._waiters = 0
        self.closed = False

    @property
    def waiters(self) -> int:
        return self._waiters

    @property
    def streams(self) -> int:
        return len(self._streams)

    def changed(self, keys: Iterable[Key]) -> None:
        """These messages changed (committed): wake their waiters and every stream."""
        if self._by_key:
            for key in keys:
                for woken in self._by_key.get(key, ()):
                    woken.set()
        for woken in self._streams:
            woken.set()

    def changed_any(self) -> None:
        """Something may have changed that nobody named (a reconnected listener): wake all."""
        for waiting in self._by_key.values():
            for woken in waiting:
                woken.set()
        for woken in self._streams:
            woken.set()

    @contextlib.contextmanager
    def watch(self, key: Key) -> Iterator[asyncio.Event]:
        """An event set when `key` changes (clear it before reading again); Busy past the cap."""
        if self._waiters >= self.max_waiters:
            raise Busy("waiting requests", self.max_waiters)
        woken = asyncio.Event()
        if self.closed:
            woken.set()
        self._by_key.setdefault(key, set()).add(woken)
        self._waiters += 1
        try:
            yield woken
        finally:
            self._waiters -= 1
            waiting = self._by_key.get(key)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._by_key[key]

    def open_stream(self) -> asyncio.Event:
        """A stream's event, set at every change; Busy past the cap. close_stream it after."""
        if len(self._streams) >= self.max_streams:
            raise Busy("streams", self.max_streams)
        woken = asyncio.Event()
        if self.closed:
            woken.set()
        self._streams.add(woken)
        return woken

    def close_stream(self, woken: asyncio.Event) -> None:
        self._streams.discard(woken)

    def close(self) -> None:
        """The service is stopping: every waiter answers now, every stream ends."""
        self.closed = True
        self.changed_any()
