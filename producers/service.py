"""The producer loops: synthetic traffic (``run``) and file replay (``replay``).

    >>> with StopSignals.installed() as stop:
    ...     summary = run_synthetic(sink, reader, settings, RunOptions(count=5000), stop)
    >>> summary.line()
    'summary command=run sent=5004 token_events=5000 gpu_events=4 delivered=5004 failed=0 ...'

Both loops send through an :class:`~producers.kafka_sink.EventSink`, sleep by serving
delivery reports (``sink.poll``), log a progress line every ``PRODUCER_PROGRESS_S`` seconds,
stop on SIGINT/SIGTERM (a second signal cuts the final flush short), flush with a bound and
return a :class:`Summary` whose ``exit_code`` is 1 if any event was not delivered.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final, Protocol

from producers.exceptions import NoGpus
from producers.fleet import Replica, default_deployment, resolve, split_request
from producers.kafka_sink import EventSink
from producers.pacing import Pacer, Ticker
from producers.settings import ProducerSettings
from producers.traffic import GpuTarget, TrafficGenerator, profiles_for
from schemas.contracts import GPU_METRICS_V1, format_ts

__all__ = [
    "GpuSource",
    "ReplayOptions",
    "ReplaySource",
    "RunOptions",
    "StopSignals",
    "Summary",
    "deployed",
    "gpu_targets",
    "model_mix",
    "run_replay",
    "run_synthetic",
]

log = logging.getLogger("producers")

# The longest single sleep: the loops re-check the stop flag, the GPU ticker and the progress
# ticker at least this often, so a signal is acted on within a fifth of a second.
MAX_SLEEP_S: Final = 0.2

Clock = Callable[[], float]
WallClock = Callable[[], datetime]


class ReplaySource(Protocol):
    """What ``replay`` sends: a loaded file (``ReplayFile``) or a streamed trace."""

    @property
    def name(self) -> str: ...

    @property
    def prelude(self) -> tuple[dict[str, Any], ...]: ...  # sent once, before the first pass

    def items(self) -> Iterable[tuple[dict[str, Any], float]]: ...  # (event, offset at 1x)


class GpuSource(Protocol):
    """Reads this host's GPUs (``gpu_readers.GpuReader`` in production)."""

    def read(self) -> list[dict[str, Any]]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StopSignals:
    """SIGINT/SIGTERM -> ``stop`` (finish: flush and summarise); a second one -> ``abort``."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.received: str | None = None

    def request(self, name: str = "request") -> None:
        """Ask the loop to stop (what a signal does); a second request aborts the flush."""
        if self.stop.is_set():
            log.warning("second %s: abandoning the flush", name)
            self.abort.set()
            return
        self.received = name
        log.info("%s received: stopping, flushing what was sent", name)
        self.stop.set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)

    @classmethod
    @contextmanager
    def installed(cls) -> Iterator[StopSignals]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""
        stop = cls()
        previous = {
            sig: signal.signal(sig, stop._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield stop
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass(slots=True)
class Summary:
    """The outcome of one producer run; ``line()`` is the machine-readable summary."""

    command: str
    sent: int = 0
    token_events: int = 0
    gpu_events: int = 0
    delivered: int = 0
    failed: int = 0
    undelivered: int = 0
    elapsed_s: float = 0.0
    flush_s: float = 0.0
    rate_eps: float = 0.0
    stopped_by: str = ""
    fatal: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (``--summary-json``)."""
        return asdict(self)

    def line(self) -> str:
        """``summary command=run sent=... exit_code=0``: one line of key=value pairs."""
        parts = [
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.as_dict().items()
            if k != "fatal" or v is not None
        ]
        return "summary " + " ".join(parts)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``run`` was asked to do beyond the settings."""

    count: int | None = None  # stop after this many token events
    duration_s: float | None = None  # stop after this many seconds
    seed: int | None = None  # reproducible traffic


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What ``replay`` was asked to do."""

    speed: float = 1.0  # math.inf = as fast as possible
    new_ids: bool = False  # fresh event_id for every event, first pass included
    loops: int = 1  # passes over the file; 0 = until stopped
    retime: bool = False  # ts := the time the event is sent


@dataclass
class _Loop:
    """Shared mechanics: send and count, sleep by polling, progress, final flush."""

    command: str
    sink: EventSink
    settings: ProducerSettings
    stop: StopSignals
    clock: Clock
    summary: Summary = field(init=False)
    start: float = field(init=False)
    _progress: Ticker | None = field(init=False, default=None)
    _last_sent: int = field(init=False, default=0)
    _last_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.summary = Summary(self.command)
        self.start = self.clock()
        self._last_at = self.start
        if self.settings.progress_s > 0:
            self._progress = Ticker(self.settings.progress_s, self.start + self.settings.progress_s)

    def send(self, event: dict[str, Any]) -> None:
        self.sink.send(event)
        if event["schema"] == GPU_METRICS_V1:
            self.summary.gpu_events += 1
        else:
            self.summary.token_events += 1

    def should_stop(self) -> str | None:
        if self.stop.stop.is_set():
            return "signal"
        if self.sink.fatal is not None:
            return "fatal"
        return None

    def idle(self, seconds: float) -> None:
        """Serve delivery reports for up to ``seconds`` (bounded by MAX_SLEEP_S and progress)."""
        if self._progress is not None:
            seconds = min(seconds, self._progress.delay(self.clock()))
        self.sink.poll(max(0.0, min(seconds, MAX_SLEEP_S)))
        self.progress()

    def progress(self) -> None:
        if self._progress is None:
            return
        now = self.clock()
        if not self._progress.fire(now):
            return
        stats = self.sink.stats
        window = now - self._last_at
        rate = (stats.sent - self._last_sent) / window if window > 0 else 0.0
        self._last_sent, self._last_at = stats.sent, now
        log.info(
            "progress sent=%d delivered=%d failed=%d in_flight=%d rate=%.1f/s",
            stats.sent,
            stats.delivered,
            stats.failed,
            stats.in_flight,
            rate,
        )

    def finish(self, stopped_by: str) -> Summary:
        sent_done = self.clock()
        remaining = self.sink.flush(self.settings.flush_timeout_s, abort=self.stop.abort)
        if remaining:
            log.error(
                "flush gave up after %.1fs with %d event(s) unconfirmed; purging them",
                self.clock() - sent_done,
                remaining,
            )
            self.sink.abandon()
        stats = self.sink.stats
        s = self.summary
        s.stopped_by = stopped_by
        s.sent, s.delivered, s.failed = stats.sent, stats.delivered, stats.failed
        s.undelivered = stats.unconfirmed
        s.elapsed_s = sent_done - self.start
        s.flush_s = self.clock() - sent_done
        s.rate_eps = s.sent / s.elapsed_s if s.elapsed_s > 0 else 0.0
        s.fatal = self.sink.fatal
        s.exit_code = 1 if (s.failed or s.undelivered or s.fatal) else 0
        return s


def gpu_targets(readings: list[dict[str, Any]]) -> list[GpuTarget]:
    seen: dict[str, GpuTarget] = {}
    for event in readings:
        target = GpuTarget.from_event(event)
        seen.setdefault(target.gpu_uuid, target)
    return sorted(seen.values(), key=lambda t: (t.gpu_index, t.gpu_uuid))


def run_synthetic(
    sink: EventSink,
    reader: GpuSource,
    settings: ProducerSettings,
    options: RunOptions,
    stop: StopSignals,
    *,
    clock: Clock = time.monotonic,
    wall_clock: WallClock = _utcnow,
) -> Summary:
    """Publish GPU readings every ``gpu_interval_s`` and token events at ``settings.rate``.

    The first GPU readings go out before the first token event, so the processor knows each
    GPU's name and price. Stops after ``options.count`` token events, after
    ``options.duration_s`` seconds, or on a signal, whichever comes first.
    """
    loop = _Loop("run", sink, settings, stop, clock)
    rng = random.Random(options.seed)
    generator: TrafficGenerator | None = None
    gpu_ticker = Ticker(settings.gpu_interval_s, loop.start)
    pacer = Pacer(settings.rate, loop.start)
    end = math.inf if options.duration_s is None else loop.start + options.duration_s
    count = math.inf if options.count is None else options.count

    while True:
        stopped_by = loop.should_stop()
        if stopped_by:
            break
        if loop.summary.token_events >= count:
            stopped_by = "count"
            break
        now = clock()
        if now >= end:
            stopped_by = "duration"
            break
        if gpu_ticker.fire(now):
            generator = _publish_gpus(loop, reader, settings, rng, generator)
            continue
        assert generator is not None  # the ticker fires at start, so readings went first
        wait = pacer.delay(now)
        if wait > 0:
            loop.idle(min(wait, gpu_ticker.delay(now), end - now))
            continue
        for event in split_request(*generator.next_request(wall_clock())):
            loop.send(event)
        pacer.sent()
        loop.progress()
    return loop.finish(stopped_by)


def _publish_gpus(
    loop: _Loop,
    reader: GpuSource,
    settings: ProducerSettings,
    rng: random.Random,
    generator: TrafficGenerator | None,
) -> TrafficGenerator:
    try:
        readings = reader.read()
    except Exception as exc:
        if generator is None:
            raise
        # A GPU that cannot be read for one interval must not stop the token stream.
        log.error("gpu read failed, keeping the previous GPUs error=%s", exc)
        return generator
    if not readings:
        if generator is None:
            raise NoGpus(f"the GPU reader found no GPU on host {settings.host}")
        log.error("gpu read returned no GPU, keeping the previous GPUs")
        return generator
    if generator is None:  # before sending: a bad deployment map sends nothing
        targets = gpu_targets(readings)
        log.info(
            "gpus host=%s count=%d source=%s",
            settings.host,
            len(targets),
            readings[0].get("source"),
        )
        replicas = deployed(settings, targets)
        groups: dict[str, list[tuple[GpuTarget, ...]]] = {}
        for replica in replicas:
            groups.setdefault(replica.model, []).append(replica.gpus)
        log.info(
            "deployment %s",
            " ".join(f"{r.model}={','.join(str(g.gpu_index) for g in r.gpus)}" for r in replicas),
        )
        generator = TrafficGenerator(
            settings.host,
            targets,
            profiles_for(model_mix(settings, replicas)),
            rng,
            groups=groups,
            tenants=settings.tenants,
        )
    for event in readings:
        loop.send(event)
    return generator


def deployed(settings: ProducerSettings, gpus: list[GpuTarget]) -> tuple[Replica, ...]:
    """``PRODUCER_DEPLOYMENT`` bound to ``gpus`` (else one model per GPU); SettingsError."""
    entries = settings.deployment or default_deployment(list(settings.models), gpus)
    return resolve(entries, gpus)


def model_mix(settings: ProducerSettings, replicas: tuple[Replica, ...]) -> list[tuple[str, float]]:
    """The deployed models with their PRODUCER_MODELS weight (1 for a model not listed there),
    in PRODUCER_MODELS order, then deployment order."""
    served = dict.fromkeys(r.model for r in replicas)
    mix = [(name, weight) for name, weight in settings.models.items() if name in served]
    mix += [(name, 1.0) for name in served if name not in settings.models]
    return mix


def run_replay(
    sink: EventSink,
    replay: ReplaySource,
    settings: ProducerSettings,
    options: ReplayOptions,
    stop: StopSignals,
    *,
    clock: Clock = time.monotonic,
    wall_clock: WallClock = _utcnow,
) -> Summary:
    """Send ``replay``'s events, spaced by their ts gaps divided by ``options.speed``.

    Every pass after the first gives each event a fresh event_id (the same ids again would
    be discarded downstream as duplicates); ``new_ids`` does so in the first pass too.
    """
    loop = _Loop("replay", sink, settings, stop, clock)
    for event in replay.prelude:
        loop.send(event)
    passes = 0
    stopped_by: str | None = None
    while stopped_by is None and (options.loops == 0 or passes < options.loops):
        base = clock()
        fresh_ids = options.new_ids or passes > 0
        for event, offset in replay.items():
            due = base + offset / options.speed
            while (stopped_by := loop.should_stop()) is None and (left := due - clock()) > 0:
                loop.idle(left)
            if stopped_by:
                break
            out = dict(event)
            if fresh_ids:
                out["event_id"] = str(uuid.uuid4())
            if options.retime:
                out["ts"] = format_ts(wall_clock())
            loop.send(out)
            loop.progress()
        passes += 1
    log.info("replay passes=%d file=%s", passes, replay.name)
    return loop.finish(stopped_by or "end")
