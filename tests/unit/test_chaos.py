"""The fault suite's pure parts: its report line, its verdict and the feed it sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.chaos import GPUS, Feed, Result, Target, run_fault
from schemas.contracts import kafka_key


def test_line_and_verdict() -> None:
    ok = Result("one_replica", 0, 0, 0, 4.26, sent=100, stored=100)
    assert ok.line() == "fault=one_replica lost=0 duplicated=0 differing=0 recovery_s=4.3"
    assert ok.ok
    for bad in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert not Result("x", *bad, 1.0, sent=1, stored=1).ok


def test_feed_events_are_unique_and_spread_over_every_gpu() -> None:
    feed = Feed("127.0.0.1:1", "t", rate=1, count=1200)
    events = feed.events()
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    tokens = [e for e in events if e["schema"] == "token.usage.v1"]
    assert len(tokens) == 1200
    assert {kafka_key(e) for e in tokens} == {f"{h}/{g}" for h, g in GPUS}
    readings = [e for e in events if e["schema"] == "gpu.metrics.v1"]
    assert len(readings) == len(GPUS) + 2  # one per GPU first, then a price change every 500
    assert events[: len(GPUS)] == readings[: len(GPUS)]


def test_unknown_fault_and_server_fault_without_a_stack_are_refused(tmp_path: Path) -> None:
    target = Target(bootstrap="127.0.0.1:1", mongo_url="mongodb://127.0.0.1:1", log_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown fault"):
        run_fault(target, "meteor")
    with pytest.raises(ValueError, match="state dir"):
        target.stop_servers("kafka")
