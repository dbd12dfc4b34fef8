"""Helpers for the realtime tests: the app's hub, and a reader of Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from support import LiveServer

from receiver.realtime.hub import Hub


def hub_of(server: LiveServer) -> Hub:
    """The running app's hub (to wait until requests are waiting, never by sleeping)."""
    assert server._server is not None
    hub: Hub = server._server.app.state.hub
    return hub


@dataclass
class Sse:
    """One event or comment as the stream framed it."""

    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def sse(response: httpx.Response) -> Iterator[Sse]:
    """The events (comment-only blocks included) of an open streaming response."""
    current = Sse()
    started = False
    for line in response.iter_lines():
        if line == "":
            if started:
                yield current
            current, started = Sse(), False
            continue
        started = True
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            current.comments.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "data":
            current.data = value if not current.data else current.data + "\n" + value


def events_only(stream: Iterator[Sse]) -> Iterator[Sse]:
    """The events of a stream, pings left out."""
    return (e for e in stream if e.event is not None)
