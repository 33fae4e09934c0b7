"""Deadline-based pacing: when the next event is due, computed from a fixed start.

    >>> pacer = Pacer(rate=50.0, start=time.monotonic())
    >>> while running:
    ...     wait = pacer.delay(time.monotonic())
    ...     if wait > 0: sleep(wait); continue
    ...     send(); pacer.sent()

Event ``n`` is due at ``start + n / rate``. Deadlines are absolute, so a late wake-up or a slow
send does not push every later event back: the rate holds without drift. After a stall longer
than ``max_lag_s`` (broker back-pressure, a paused VM) the pacer forgives the debt beyond
``max_lag_s`` instead of bursting for as long as the stall lasted.

Pure: every function takes the current time (any monotonic clock, seconds) as an argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

__all__ = ["Pacer", "Ticker", "parse_speed", "replay_offsets"]

# One second of catch-up burst at most: enough to absorb scheduler jitter and GC pauses,
# small enough that a minute-long broker outage does not end in a minute's worth of burst.
DEFAULT_MAX_LAG_S: Final = 1.0


class Pacer:
    """Paces events at ``rate`` per second; ``rate == 0`` means as fast as possible."""

    def __init__(self, rate: float, start: float, *, max_lag_s: float = DEFAULT_MAX_LAG_S) -> None:
        if rate < 0 or math.isnan(rate):
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self.start = start
        self.max_lag_s = max_lag_s
        self.count = 0

    def due(self) -> float:
        """When the next event is due (same clock as ``start``)."""
        if self.rate == 0:
            return self.start
        return self.start + self.count / self.rate

    def delay(self, now: float) -> float:
        """Seconds to wait before the next event; <= 0 means send now."""
        if self.rate == 0:
            return 0.0
        lag = now - self.due()
        if lag > self.max_lag_s:
            # Forgive the debt beyond max_lag_s: move the start, keep the count.
            self.start += lag - self.max_lag_s
        return self.due() - now

    def sent(self, n: int = 1) -> None:
        """Record that ``n`` events went out."""
        self.count += n


class Ticker:
    """Fires every ``interval`` seconds from ``start`` (fires at ``start`` itself too)."""

    def __init__(self, interval: float, start: float) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.next_at = start

    def fire(self, now: float) -> bool:
        """True if a tick is due at ``now``; ticks missed while busy collapse into one."""
        if now < self.next_at:
            return False
        # Advance on the fixed grid (no drift); skip the ticks that were missed.
        missed = math.floor((now - self.next_at) / self.interval)
        self.next_at += (missed + 1) * self.interval
        return True

    def delay(self, now: float) -> float:
        """Seconds until the next tick (<= 0 when due)."""
        return self.next_at - now


def parse_speed(text: str) -> float:
    """Replay speed factor: ``1x``, ``10x``, ``0.5x``, ``10`` or ``max`` (``math.inf``)."""
    value = text.strip().lower()
    if value in ("max", "inf", "0", "0x"):
        return math.inf
    number = value.removesuffix("x")
    try:
        speed = float(number)
    except ValueError:
        raise ValueError(f"speed must look like 1x, 10x, 0.5x or max, got {text!r}") from None
    if math.isnan(speed) or speed <= 0:
        raise ValueError(f"speed must be > 0 (or max), got {text!r}")
    return speed


def replay_offsets(timestamps: Sequence[datetime]) -> list[float]:
    """Seconds after the first event at which each event is due at 1x.

    A timestamp earlier than the one before it (clock steps, merged logs) does not send the
    schedule backwards: that event is due right after its predecessor.
    """
    offsets: list[float] = []
    if not timestamps:
        return offsets
    first = timestamps[0]
    latest = 0.0
    for ts in timestamps:
        latest = max(latest, (ts - first).total_seconds())
        offsets.append(latest)
    return offsets
