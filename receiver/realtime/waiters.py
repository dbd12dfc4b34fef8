"""The long poll: answer with a message once it is final (or changed), or when the wait ends.

The waiter is registered with the hub before the message is read again, so a change committed
between the first read and the registration is seen by that read, not lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from receiver.realtime.hub import Hub

MAX_WAIT = 60.0
UNTIL = ("final", "change")


def _mark(message: dict[str, Any]) -> tuple[Any, ...]:
    """What counts as a change for `until=change`: its status, or its deadline missed."""
    return (message["status"], message["deadline_missed"])


async def long_poll(
    hub: Hub, read: Callable[[], Awaitable[dict[str, Any]]], wait: float, until: str
) -> dict[str, Any]:
    """The message as `read` gives it, once final (`until="final"`) or changed from the first
    read (`"change"`), or after `wait` seconds, or at shutdown, whichever comes first."""
    message = await read()
    start = _mark(message)

    def done(m: dict[str, Any]) -> bool:
        return bool(m["final"]) if until == "final" else _mark(m) != start

    if done(message) or wait <= 0 or hub.closed:
        return message
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    with hub.watch((message["provider"], message["message_id"])) as woken:
        message = await read()
        while not done(message) and not hub.closed:
            remaining = end - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(woken.wait(), remaining)
            except TimeoutError:
                break
            woken.clear()
            message = await read()
    return message
