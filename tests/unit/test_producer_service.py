"""The producer loops against an in-memory sink and a fake clock (no broker, no sleeping)."""

from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.exceptions import NoGpus, SettingsError
from producers.kafka_sink import DeliveryStats
from producers.replay import ReplayFile
from producers.service import (
    ReplayOptions,
    RunOptions,
    StopSignals,
    run_replay,
    run_synthetic,
)
from producers.settings import ProducerSettings, load_settings
from schemas.contracts import ContractViolation, kafka_key, validate
from schemas.contracts import format_ts as rfc3339

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
HOST = "inference-01"


class FakeClock:
    """Monotonic seconds that move only when the sink is polled (i.e. when the loop sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now - 1000.0)


class MemorySink:
    """An EventSink double: validates like KafkaSink, delivers on poll/flush."""

    def __init__(self, clock: FakeClock, *, fail_every: int = 0, stuck: bool = False) -> None:
        self.clock = clock
        self.stats = DeliveryStats()
        self.fatal: str | None = None
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self._pending = 0
        self._fail_every = fail_every
        self._stuck = stuck
        self.on_send: Any = None
        self.abandoned: int | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for _, e in self.sent]

    def send(self, event: dict[str, Any]) -> None:
        validate(event)
        kafka_key(event)
        self.sent.append((self.clock(), dict(event)))
        self.stats.sent += 1
        self._pending += 1
        if self.on_send is not None:
            self.on_send(self)

    def _deliver(self) -> None:
        if self._stuck:
            return
        for _ in range(self._pending):
            n = self.stats.delivered + self.stats.failed + 1
            if self._fail_every and n % self._fail_every == 0:
                self.stats.failed += 1
            else:
                self.stats.delivered += 1
        self._pending = 0

    def poll(self, timeout_s: float) -> None:
        self.clock.now += timeout_s
        self._deliver()

    def flush(self, timeout_s: float, *, abort: Any = None) -> int:
        self._deliver()
        return self._pending

    def abandon(self) -> None:
        self.stats.purged += self._pending
        self.abandoned = self._pending
        self._pending = 0


class FakeReader:
    """Two GPUs; each read() is a fresh pair of valid gpu.metrics.v1 events."""

    def __init__(self, clock: FakeClock, gpus: int = 2) -> None:
        self.clock = clock
        self.gpus = gpus
        self.reads = 0
        self.fail_after: int | None = None

    def read(self) -> list[dict[str, Any]]:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("nvml went away")
        return [
            {
                "schema": "gpu.metrics.v1",
                "event_id": str(uuid.uuid4()),
                "ts": rfc3339(self.clock.wall()),
                "host": HOST,
                "gpu_uuid": f"GPU-{i:04d}",
                "gpu_index": i,
                "source": "seed",
                "gpu_name": "NVIDIA A100-SXM4-40GB",
                "utilization_gpu_pct": 50.0,
                "memory_used_mib": 1000,
                "memory_total_mib": 40960,
                "power_draw_w": 250.0,
                "temperature_gpu_c": 60,
                "clock_sm_mhz": 1410,
                "price_per_hour_usd": 3.2,
            }
            for i in range(self.gpus)
        ]


def settings(**env: str) -> ProducerSettings:
    return load_settings({"PRODUCER_HOST": HOST, "PRODUCER_PROGRESS_S": "0", **env})


def run(
    sink: MemorySink, reader: Any, options: RunOptions, stop: StopSignals | None = None, **env: str
) -> Any:
    clock = sink.clock
    return run_synthetic(
        sink,
        reader,
        settings(**env),
        options,
        stop or StopSignals(),
        clock=clock,
        wall_clock=clock.wall,
    )


def test_count_stops_after_exactly_n_token_events_with_gpu_readings_first() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    summary = run(
        sink,
        FakeReader(clock),
        RunOptions(count=20),
        PRODUCER_RATE="10",
        PRODUCER_GPU_INTERVAL_S="1",
    )
    kinds = [e["schema"] for e in sink.events]
    assert kinds[:2] == ["gpu.metrics.v1", "gpu.metrics.v1"]
    assert kinds.count("token.usage.v1") == 20
    assert kinds.count("gpu.metrics.v1") == 4  # at t=0 and t=1 (the 20th event goes at t=1.9)
    assert summary.token_events == 20
    assert summary.gpu_events == 4
    assert (summary.sent, summary.delivered, summary.failed, summary.undelivered) == (24, 24, 0, 0)
    assert summary.stopped_by == "count"
    assert summary.exit_code == 0


def test_rate_is_held_on_the_fake_clock() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock),
        RunOptions(count=50),
        PRODUCER_RATE="25",
        PRODUCER_GPU_INTERVAL_S="100",
    )
    times = [t for t, e in sink.sent if e["schema"] == "token.usage.v1"]
    assert times[0] == pytest.approx(1000.0)
    assert times[-1] - times[0] == pytest.approx(49 / 25)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.04) for g in gaps)


def test_one_model_on_every_gpu_takes_the_gpus_in_turn() -> None:
    # Default deployment: each GPU serves one model, round-robin over PRODUCER_MODELS; one
    # model on three GPUs is three replicas, which take its requests in turn.
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock, gpus=3),
        RunOptions(count=9, seed=1),
        PRODUCER_RATE="max",
        PRODUCER_MODELS="m",
    )
    tokens = [e for e in sink.events if e["schema"] == "token.usage.v1"]
    assert [e["gpu_index"] for e in tokens] == [0, 1, 2] * 3
    assert {e["host"] for e in tokens} == {HOST}


def test_default_deployment_pins_one_model_per_gpu_round_robin() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock, gpus=3),
        RunOptions(count=200, seed=1),
        PRODUCER_RATE="max",
        PRODUCER_MODELS="a:1,b:1",
    )
    tokens = [e for e in sink.events if e["schema"] == "token.usage.v1"]
    # GPU 0 -> a, GPU 1 -> b, GPU 2 -> a (wraps around).
    assert {(e["gpu_index"], e["model"]) for e in tokens} == {(0, "a"), (1, "b"), (2, "a")}


def test_tensor_parallel_request_is_one_event_per_gpu_of_its_group() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock, gpus=3),
        RunOptions(count=40, seed=3),
        PRODUCER_RATE="max",
        PRODUCER_MODELS="big:1,small:1",
        PRODUCER_DEPLOYMENT="big=0,1;small=2",
    )
    tokens = [e for e in sink.events if e["schema"] == "token.usage.v1"]
    by_request: dict[str, list[dict[str, Any]]] = {}
    for e in tokens:
        by_request.setdefault(e["request_id"], []).append(e)
    shapes = {
        (group[0]["model"], tuple(e["gpu_index"] for e in group)) for group in by_request.values()
    }
    assert shapes == {("big", (0, 1)), ("small", (2,))}
    assert len({e["event_id"] for e in tokens}) == len(tokens)


def test_deployment_that_does_not_fit_the_gpus_sends_nothing() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    with pytest.raises(SettingsError) as caught:
        run(
            sink,
            FakeReader(clock, gpus=2),
            RunOptions(count=5),
            PRODUCER_DEPLOYMENT="a=0,1;b=1;c=7",
        )
    assert str(caught.value).splitlines() == [
        "PRODUCER_DEPLOYMENT['b']: GPU 1 already serves 'a'",
        "PRODUCER_DEPLOYMENT['c']: GPU 7 is not on this host (GPUs: 0, 1)",
    ]
    assert sink.events == []


def test_seed_makes_the_traffic_reproducible() -> None:
    def traffic(seed: int) -> list[tuple[Any, ...]]:
        clock = FakeClock()
        sink = MemorySink(clock)
        run(sink, FakeReader(clock), RunOptions(count=200, seed=seed), PRODUCER_RATE="max")
        return [
            (e["model"], e["input_tokens"], e["output_tokens"], e["latency_ms"], e["gpu_uuid"])
            for e in sink.events
            if e["schema"] == "token.usage.v1"
        ]

    assert traffic(5) == traffic(5)
    assert traffic(5) != traffic(6)


def test_duration_stops_the_run_and_gpu_readings_follow_the_interval() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    summary = run(
        sink,
        FakeReader(clock),
        RunOptions(duration_s=3.0),
        PRODUCER_RATE="10",
        PRODUCER_GPU_INTERVAL_S="1",
    )
    assert summary.stopped_by == "duration"
    assert summary.token_events == 30
    gpu_times = [
        t - 1000.0 for t, e in sink.sent if e["schema"] == "gpu.metrics.v1" and e["gpu_index"] == 0
    ]
    assert gpu_times == pytest.approx([0.0, 1.0, 2.0])


def test_unicode_models_from_settings() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock),
        RunOptions(count=50, seed=3),
        PRODUCER_RATE="max",
        PRODUCER_MODELS="通义千问-7b:1,模型-β:1",
    )
    assert {e["model"] for e in sink.events if e["schema"] == "token.usage.v1"} == {
        "通义千问-7b",
        "模型-β",
    }


def test_signal_stops_generation_and_the_summary_counts_what_was_sent() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    stop = StopSignals()

    def stop_at_100(s: MemorySink) -> None:
        if s.stats.sent == 100:
            stop.request("SIGTERM")

    sink.on_send = stop_at_100
    summary = run(sink, FakeReader(clock), RunOptions(), stop, PRODUCER_RATE="max")
    assert summary.stopped_by == "signal"
    assert summary.sent == 100 == summary.delivered
    assert summary.token_events + summary.gpu_events == 100
    assert summary.exit_code == 0


def test_failed_deliveries_make_the_exit_code_1() -> None:
    clock = FakeClock()
    sink = MemorySink(clock, fail_every=10)
    summary = run(sink, FakeReader(clock), RunOptions(count=98), PRODUCER_RATE="max")
    assert summary.failed == 10
    assert summary.delivered == 90
    assert summary.exit_code == 1


def test_undelivered_at_flush_timeout_makes_the_exit_code_1() -> None:
    clock = FakeClock()
    sink = MemorySink(clock, stuck=True)
    summary = run(sink, FakeReader(clock), RunOptions(count=5), PRODUCER_RATE="max")
    assert sink.abandoned == 7  # purged, so that close() does not wait for delivery timeouts
    assert summary.undelivered == 7
    assert summary.exit_code == 1
    assert "undelivered=7" in summary.line()


def test_fatal_kafka_error_stops_the_loop() -> None:
    clock = FakeClock()
    sink = MemorySink(clock)

    def go_fatal(s: MemorySink) -> None:
        if s.stats.sent == 10:
            s.fatal = "PRODUCER_FENCED"

    sink.on_send = go_fatal
    summary = run(sink, FakeReader(clock), RunOptions(count=1000), PRODUCER_RATE="max")
    assert (summary.stopped_by, summary.sent, summary.exit_code) == ("fatal", 10, 1)
    assert "fatal=PRODUCER_FENCED" in summary.line()


def test_no_gpu_at_start_is_an_error() -> None:
    clock = FakeClock()
    with pytest.raises(NoGpus, match=HOST):
        run(MemorySink(clock), FakeReader(clock, gpus=0), RunOptions(count=1))


def test_a_later_gpu_read_failure_keeps_the_traffic_going(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sink = MemorySink(clock)
    reader = FakeReader(clock)
    reader.fail_after = 1
    summary = run(
        sink, reader, RunOptions(duration_s=2.5), PRODUCER_RATE="10", PRODUCER_GPU_INTERVAL_S="1"
    )
    assert summary.token_events == 25
    assert summary.gpu_events == 2
    assert "gpu read failed" in caplog.text


def test_an_invalid_event_is_a_bug_and_raises() -> None:
    clock = FakeClock()
    reader = FakeReader(clock)
    original = reader.read

    def broken() -> list[dict[str, Any]]:
        events = original()
        events[0]["utilization_gpu_pct"] = 140.0
        return events

    reader.read = broken  # type: ignore[method-assign]
    with pytest.raises(ContractViolation, match="utilization_gpu_pct"):
        run(MemorySink(clock), reader, RunOptions(count=1))


def test_progress_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="producers")
    clock = FakeClock()
    sink = MemorySink(clock)
    run(
        sink,
        FakeReader(clock),
        RunOptions(duration_s=3.0),
        PRODUCER_RATE="10",
        PRODUCER_PROGRESS_S="1",
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress ")]
    assert len(lines) == 3
    assert "rate=12.0/s" in lines[0]  # 10 token events + 2 GPU readings in the first second
    assert all("delivered=" in line and "failed=0" in line for line in lines)


def _replay(events: list[dict[str, Any]], offsets: list[float]) -> ReplayFile:
    return ReplayFile(name="test.jsonl", format="jsonl", events=events, offsets=offsets)


def _tokens(n: int) -> list[dict[str, Any]]:
    return [
        validate(
            {
                "schema": "token.usage.v1",
                "event_id": str(uuid.uuid4()),
                "ts": rfc3339(T0 + timedelta(seconds=i)),
                "host": HOST,
                "gpu_uuid": "GPU-0000",
                "gpu_index": 0,
                "model": "m",
                "input_tokens": 10,
                "output_tokens": 5,
                "latency_ms": 100.0,
            }
        )
        for i in range(n)
    ]


def replay(
    events: list[dict[str, Any]],
    offsets: list[float],
    options: ReplayOptions,
    stop: StopSignals | None = None,
) -> tuple[MemorySink, Any]:
    clock = FakeClock()
    sink = MemorySink(clock)
    summary = run_replay(
        sink,
        _replay(events, offsets),
        settings(),
        options,
        stop or StopSignals(),
        clock=clock,
        wall_clock=clock.wall,
    )
    return sink, summary


def test_replay_spaces_events_by_ts_gap_over_speed() -> None:
    events = _tokens(3)
    sink, summary = replay(events, [0.0, 0.5, 3.0], ReplayOptions(speed=2.0))
    assert [t - 1000.0 for t, _ in sink.sent] == pytest.approx([0.0, 0.25, 1.5])
    assert sink.events == events  # ids and ts kept
    assert (summary.sent, summary.stopped_by, summary.exit_code) == (3, "end", 0)


def test_replay_at_max_speed_does_not_wait() -> None:
    sink, _ = replay(_tokens(3), [0.0, 100.0, 200.0], ReplayOptions(speed=math.inf))
    assert [t for t, _ in sink.sent] == [1000.0] * 3


def test_replay_new_ids() -> None:
    events = _tokens(3)
    sink, _ = replay(events, [0.0] * 3, ReplayOptions(new_ids=True))
    assert {e["event_id"] for e in sink.events}.isdisjoint({e["event_id"] for e in events})
    assert [e["ts"] for e in sink.events] == [e["ts"] for e in events]


def test_replay_loops_get_fresh_ids_after_the_first_pass() -> None:
    events = _tokens(2)
    sink, summary = replay(events, [0.0, 1.0], ReplayOptions(loops=3))
    ids = [e["event_id"] for e in sink.events]
    assert ids[:2] == [e["event_id"] for e in events]
    assert len(set(ids)) == 6
    assert summary.sent == 6
    assert [t - 1000.0 for t, _ in sink.sent] == pytest.approx([0.0, 1.0, 1.0, 2.0, 2.0, 3.0])


def test_replay_loop_forever_until_stopped() -> None:
    stop = StopSignals()
    clock = FakeClock()
    sink = MemorySink(clock)
    sink.on_send = lambda s: stop.request() if s.stats.sent == 25 else None
    summary = run_replay(
        sink,
        _replay(_tokens(4), [0.0] * 4),
        settings(),
        ReplayOptions(loops=0, speed=math.inf),
        stop,
        clock=clock,
    )
    assert (summary.sent, summary.stopped_by) == (25, "signal")


def test_replay_retime_sets_ts_to_send_time() -> None:
    sink, _ = replay(_tokens(2), [0.0, 2.0], ReplayOptions(retime=True))
    assert [e["ts"] for e in sink.events] == [rfc3339(T0), rfc3339(T0 + timedelta(seconds=2))]


def test_stop_signals_second_request_aborts_the_flush() -> None:
    stop = StopSignals()
    stop.request("SIGINT")
    assert stop.stop.is_set()
    assert not stop.abort.is_set()
    stop.request("SIGINT")
    assert stop.abort.is_set()


def test_stop_signals_handle_real_signals_and_restore_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals.installed() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.stop.wait(2.0)
        assert stop.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_summary_line_is_key_value() -> None:
    clock = FakeClock()
    summary = run(MemorySink(clock), FakeReader(clock), RunOptions(count=3), PRODUCER_RATE="max")
    line = summary.line()
    assert line.startswith("summary command=run ")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    assert fields["sent"] == "5"
    assert fields["token_events"] == "3"
    assert fields["exit_code"] == "0"
    assert "fatal" not in fields
    assert summary.as_dict()["delivered"] == 5
