"""When to ask again, and from when a message's maximum age counts: pure arithmetic, with the
randomness passed in, so the rules are tested with plain calls."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... up to cap.

    Each delay is drawn from [0.8, 1.2] times its step, so messages claimed together (a batch
    sent at once) spread out instead of falling due together forever; never above cap.
    """

    base: float
    cap: float

    def delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the `attempts`-th consecutive try (1 for the first)."""
        step = self.base * 2.0 ** min(max(attempts - 1, 0), 60)
        return min(self.cap, min(step, self.cap) * rng.uniform(0.8, 1.2))


class Pacer:
    """Spaces requests to at most `rate` per second (no bursts): `wait()` is the time to wait
    before the next one may go, and books its slot."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = float("-inf")

    def wait(self, now: float) -> float:
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now


def give_up_from(created_at: datetime, sent_at: datetime | None, max_age: float) -> datetime:
    """When a message's maximum age (RECEIVER_POLL_MAX_AGE) starts counting.

    From when it was sent, as the app said, unless that is later than when the receiver first
    heard of it (a sent time in the future is not believed), or more than the maximum age
    before it: such a message would be given up before it was ever polled, so its age counts
    from when the receiver first heard of it (for a registered message, its registration).
    The registration's warnings (api/messages.py) and the scheduler's time-outs both use this.
    """
    if sent_at is None or sent_at > created_at:
        return created_at
    if created_at - sent_at > timedelta(seconds=max_age):
        return created_at
    return sent_at
