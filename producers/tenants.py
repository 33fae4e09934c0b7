"""Who a synthetic or replayed request is billed to: a weighted tenant mix (pure, no I/O).

    >>> mix = TenantMix.parse("team-search:5,team-chat:3,-:1")
    >>> mix.pick("trace-42")             # deterministic: the same key, the same tenant
    'team-search'

``PRODUCER_TENANTS`` is ``name[:weight],...`` like ``PRODUCER_MODELS``; the name ``-`` stands
for "no tenant" (the event carries none and the processor shows it as ``(unattributed)``).
Names follow ``token.usage.v1``'s ``tenant`` rules. A request's tenant is drawn from
``blake2b(key)`` — the key being the request's id — so it never consumes the traffic
generator's random stream (a seed gives the same models and token counts with or without
tenants) and a replayed trace bills the same request to the same tenant every time.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

__all__ = ["DEFAULT_TENANTS", "NO_TENANT", "TenantMix"]

NO_TENANT: Final = "-"
# The default mix: three teams and a tenth of the traffic without a tenant (shown apart).
DEFAULT_TENANTS: Final = "team-search:5,team-chat:3,team-batch:1,-:1"
# token.usage.v1's tenant rule (schemas/token.usage.v1.json).
_TENANT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}$")


class TenantMix:
    """Tenants with relative weights; :meth:`pick` maps a key onto one of them."""

    __slots__ = ("_cum", "_names")

    def __init__(self, entries: Sequence[tuple[str | None, float]]) -> None:
        if not entries:
            raise ValueError("a tenant mix needs at least one entry")
        for name, weight in entries:
            if name is not None and not _TENANT.match(name):
                raise ValueError(
                    f"tenant {name!r}: 1-128 characters, a letter or digit first, then letters, "
                    "digits and . _ : @ + / -"
                )
            if not weight > 0:
                raise ValueError(f"tenant {name or NO_TENANT!r}: weight must be > 0")
        self._names = [name for name, _ in entries]
        self._cum = list(itertools.accumulate(weight for _, weight in entries))

    @classmethod
    def parse(cls, text: str) -> TenantMix:
        """``name[:weight],...`` (``-`` = no tenant); ValueError says what is wrong."""
        entries: list[tuple[str | None, float]] = []
        seen: set[str] = set()
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, tail = item.rpartition(":")
            weight = 1.0
            try:
                weight = float(tail) if sep else 1.0
            except ValueError:  # the colon belongs to the name ("org:team")
                name = item
            name = (name if sep else item).strip()
            if name in seen:
                raise ValueError(f"lists {name!r} more than once")
            seen.add(name)
            entries.append((None if name == NO_TENANT else name, weight))
        return cls(entries)

    @property
    def names(self) -> list[str | None]:
        return list(self._names)

    def pick(self, key: str) -> str | None:
        """The tenant of the request identified by ``key`` (None: no tenant)."""
        digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"tenant").digest()
        target = int.from_bytes(digest, "big") / 2**64 * self._cum[-1]
        return self._names[min(bisect_right(self._cum, target), len(self._names) - 1)]

    def __str__(self) -> str:
        weights = [b - a for a, b in zip([0.0, *self._cum], self._cum, strict=False)]
        return ",".join(
            f"{name or NO_TENANT}:{w:g}" for name, w in zip(self._names, weights, strict=True)
        )
