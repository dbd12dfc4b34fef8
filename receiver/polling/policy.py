"""When to ask again: pure arithmetic on seconds, with the randomness passed in, so the rules
are tested with plain calls."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
