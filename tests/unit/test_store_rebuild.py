"""The rebuild query is skipped where nothing can precede the first offset (no server needed)."""

from __future__ import annotations

import pytest

from processor.exceptions import StoreUnavailable
from processor.store import MongoStore

# Nothing listens on port 1: any query fails fast with StoreUnavailable.
UNREACHABLE = "mongodb://127.0.0.1:1/"


def test_offset_zero_needs_no_query() -> None:
    store = MongoStore(UNREACHABLE, "unused", timeout_ms=200)
    try:
        history = store.partition_history(3, 0, 60_000_000)
    finally:
        store.close()
    assert history.latest_gpu_metrics == []
    assert history.token_events == []


def test_a_later_offset_does_ask_the_server() -> None:
    store = MongoStore(UNREACHABLE, "unused", timeout_ms=200)
    try:
        with pytest.raises(StoreUnavailable):
            store.partition_history(3, 1, 60_000_000)
    finally:
        store.close()
