"""``python -m producers``: the command line.

    python -m producers run --count 5000 --rate 200 --gpu-interval 5
    python -m producers run --duration 60            # or neither: until SIGINT/SIGTERM
    python -m producers replay events.jsonl --speed 10x
    python -m producers replay gpu-log.csv --speed max --loop --retime
    python -m producers otlp --listen 0.0.0.0:4318     # OTLP/HTTP GenAI spans -> token.usage.v1
    python -m producers proxy --upstream http://127.0.0.1:8000 --listen 0.0.0.0:8100

Settings come from the environment (see ``producers.settings``); a flag overrides its
variable. Exit codes: 0 every event delivered; 1 something was not delivered, or Kafka / the
topic / the GPUs were unavailable; 2 bad usage, a bad setting, or an invalid replay file
(nothing was sent).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from gpu_readers import GpuReader, GpuReaderError
from producers.exceptions import NoGpus, ProducerError, ReplayFileError, SettingsError
from producers.kafka_sink import KafkaSink
from producers.pacing import parse_speed
from producers.replay import FORMATS, load_replay
from producers.service import (
    ReplayOptions,
    ReplaySource,
    RunOptions,
    StopSignals,
    Summary,
    deployed,
    gpu_targets,
    model_mix,
    run_replay,
    run_synthetic,
)
from producers.settings import ProducerSettings, load_settings
from producers.trace import AzureTraceReplay, TraceMapper, scan_azure_trace
from service_settings import report
from service_settings.logs import configure_logging, json_logging

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # something was not delivered, or a dependency is unavailable
EXIT_USAGE: Final = 2  # bad flag, bad setting, invalid replay file: nothing was sent

log = logging.getLogger("producers")

# Flags that override a setting: (flag, settings env name, help). They are parsed as plain
# strings and validated by the settings object, so an error names the setting and the flag.
_COMMON_SETTING_FLAGS: Final = (
    ("--bootstrap", "KAFKA_BOOTSTRAP", "Kafka bootstrap servers (host:port,...)"),
    ("--topic", "KAFKA_TOPIC", "topic to produce to (must exist)"),
    ("--host", "PRODUCER_HOST", "this inference host's name (events' host, key prefix)"),
    ("--client-id", "PRODUCER_CLIENT_ID", "Kafka client.id (default producer-{host}-{pid})"),
    ("--compression", "PRODUCER_COMPRESSION", "none, gzip, snappy, lz4 or zstd"),
    ("--linger-ms", "PRODUCER_LINGER_MS", "librdkafka linger.ms"),
    ("--delivery-timeout-ms", "PRODUCER_DELIVERY_TIMEOUT_MS", "librdkafka delivery.timeout.ms"),
    ("--connect-timeout", "PRODUCER_CONNECT_TIMEOUT_S", "seconds to wait for Kafka at start"),
    ("--flush-timeout", "PRODUCER_FLUSH_TIMEOUT_S", "seconds to wait for deliveries at exit"),
    ("--progress", "PRODUCER_PROGRESS_S", "seconds between progress lines (0 = none)"),
    ("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
)
_RUN_SETTING_FLAGS: Final = (
    ("--rate", "PRODUCER_RATE", "token events per second; 0 or max = as fast as possible"),
    ("--gpu-interval", "PRODUCER_GPU_INTERVAL_S", "seconds between GPU readings"),
)
# The fleet: used by `run` and by `replay --format azure-trace`.
_FLEET_SETTING_FLAGS: Final = (
    ("--gpu-seed-file", "GPU_SEED_FILE", "seed file for hosts without NVML/nvidia-smi"),
    ("--models", "PRODUCER_MODELS", "models and weights: name[:weight],..."),
    ("--deployment", "PRODUCER_DEPLOYMENT", "model=gpu_index[,gpu_index...];... (this host)"),
)


_PROXY_SETTING_FLAGS: Final = (
    ("--upstream", "PROXY_UPSTREAM", "base URL of the OpenAI-compatible server"),
    ("--listen", "PROXY_LISTEN", "host:port the proxy listens on"),
    ("--tenant-header", "PROXY_TENANT_HEADER", "header naming the tenant ('-' = none)"),
    ("--upstream-timeout", "PROXY_UPSTREAM_TIMEOUT_S", "seconds the upstream may stay silent"),
    ("--queue-size", "PROXY_QUEUE_SIZE", "usage events held for Kafka before dropping"),
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    if text.strip() == "0":
        return 0
    return _positive_int(text)


def _non_negative_float(text: str) -> float:
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # _positive_float words the error
    return _positive_float(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _speed(text: str) -> float:
    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ArgumentContainer(Protocol):
    # ArgumentParser and its argument groups (whose class is private) both fit.
    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


def _add_setting_flags(parser: _ArgumentContainer, flags: Sequence[tuple[str, str, str]]) -> None:
    for flag, env, help_text in flags:
        metavar = flag.removeprefix("--").upper().replace("-", "_")
        parser.add_argument(
            flag, dest=f"setting:{env}", metavar=metavar, help=f"{help_text} [{env}]"
        )


# The OTLP/HTTP receiver (`otlp`).
_OTLP_SETTING_FLAGS: Final = (
    ("--listen", "PRODUCER_OTLP_LISTEN", "HOST:PORT to listen on (default 0.0.0.0:4318)"),
    ("--tenant-attribute", "PRODUCER_OTLP_TENANT_ATTRIBUTE", "attribute holding the tenant"),
    ("--gpu-attribute", "PRODUCER_OTLP_GPU_ATTRIBUTE", "attribute listing gpu_index values"),
    ("--queue-size", "PRODUCER_OTLP_QUEUE_SIZE", "events held for Kafka before dropping"),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m producers`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("settings (flags override environment variables)")
    _add_setting_flags(group, _COMMON_SETTING_FLAGS)
    common.add_argument(
        "--summary-json",
        metavar="PATH",
        help="also write the summary as JSON to PATH ('-' = stdout, instead of the summary line)",
    )

    parser = argparse.ArgumentParser(
        prog="python -m producers",
        description="Publish GPU telemetry and LLM token usage to Kafka (contracts v1).",
        epilog="exit codes: 0 all delivered; 1 not all delivered or Kafka/topic/GPUs "
        "unavailable; 2 bad usage, setting or replay file (nothing sent)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,replay,proxy,otlp}")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="synthetic inference traffic for this host's GPUs",
        description="Synthetic token.usage.v1 traffic attributed to this host's GPUs (read via "
        "NVML, nvidia-smi or the seed file), with a gpu.metrics.v1 reading per GPU at start and "
        "every --gpu-interval seconds. Without --count or --duration it runs until SIGINT/SIGTERM.",
    )
    run.add_argument("--count", type=_positive_int, help="stop after N token events")
    run.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    run.add_argument("--seed", type=int, help="seed the traffic (models, tokens, latencies)")
    run_settings = run.add_argument_group("traffic settings")
    _add_setting_flags(run_settings, _RUN_SETTING_FLAGS)
    _add_setting_flags(run_settings, _FLEET_SETTING_FLAGS)

    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="replay events from a JSON Lines file, an nvidia-smi CSV log or a request trace",
        description="Replay v1 events (JSON Lines), an nvidia-smi CSV log, or the Azure LLM "
        "inference trace mapped onto this host's deployment map (--format azure-trace), "
        "spaced by the ts gaps divided by --speed. The whole file is validated first; any "
        "invalid line is reported (with its number) and nothing is sent.",
    )
    replay.add_argument("file", type=Path, metavar="FILE", help="the file to replay ('-' = stdin)")
    replay.add_argument(
        "--format",
        choices=(*FORMATS, "azure-trace"),
        default="auto",
        help="file format (default: sniff jsonl/smi-csv; azure-trace is never sniffed)",
    )
    replay.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="1x = original pace, 10x = ten times faster, max = no waiting (default 1x)",
    )
    replay.add_argument("--new-ids", action="store_true", help="give every event a fresh event_id")
    replay.add_argument(
        "--loop",
        dest="loops",
        action="store_const",
        const=0,
        default=1,
        help="replay until stopped (passes after the first get fresh event_ids)",
    )
    replay.add_argument(
        "--loops", dest="loops", type=_non_negative_int, default=1, metavar="N",
        help="replay N times (0 = until stopped; default 1)",
    )  # fmt: skip
    replay.add_argument(
        "--retime", action="store_true", help="set each event's ts to the time it is sent"
    )
    trace = replay.add_argument_group("azure-trace (a request trace mapped onto the fleet)")
    trace.add_argument(
        "--end-now",
        action="store_true",
        help="shift the trace's timestamps so that its last request arrives now",
    )
    trace.add_argument(
        "--seed", type=int, default=0, help="seed of the requests' model placement (default 0)"
    )
    trace.add_argument(
        "--fleet-share",
        action="store_true",
        help="this host is part of a fleet: place every request by the whole PRODUCER_MODELS "
        "mix and send only those whose model is deployed here (every host replays the same "
        "trace with the same --seed and PRODUCER_MODELS; each request is sent by one host)",
    )
    trace.add_argument(
        "--gpu-interval",
        type=_non_negative_float,
        default=30.0,
        metavar="S",
        help="read the GPUs every S seconds of trace time, readings stamped in trace time "
        "(default 30; 0 = once, before the first request)",
    )
    _add_setting_flags(trace, _FLEET_SETTING_FLAGS)

    otlp = sub.add_parser(
        "otlp",
        parents=[common],
        help="OTLP/HTTP receiver: OpenTelemetry GenAI spans -> token.usage.v1",
        description="Serve POST /v1/traces (OTLP/HTTP, protobuf or JSON, gzip allowed): spans "
        "with gen_ai.usage.* attributes become token.usage.v1 events attributed to this host's "
        "GPUs (PRODUCER_OTLP_GPU_ATTRIBUTE, else PRODUCER_DEPLOYMENT by model). Runs until "
        "SIGINT/SIGTERM. See docs/connect.md.",
    )
    otlp_settings = otlp.add_argument_group("receiver settings")
    _add_setting_flags(otlp_settings, _OTLP_SETTING_FLAGS)
    _add_setting_flags(otlp_settings, _FLEET_SETTING_FLAGS)
    proxy = sub.add_parser(
        "proxy",
        parents=[common],
        help="OpenAI-compatible reverse proxy that publishes each request's token usage",
        description="Forward every request to --upstream; meter POST /v1/chat/completions, "
        "/v1/completions and /v1/embeddings (streaming included) into token.usage.v1 events "
        "attributed through the deployment map. Kafka being slow or down never fails or "
        "delays a request: events are dropped and counted (GET /_proxy/health, "
        "/_proxy/metrics). Runs until SIGINT/SIGTERM. See docs/proxy.md.",
    )
    proxy_settings = proxy.add_argument_group("proxy settings")
    _add_setting_flags(proxy_settings, _PROXY_SETTING_FLAGS)
    _add_setting_flags(proxy_settings, _FLEET_SETTING_FLAGS)
    return parser


def _settings_from(args: argparse.Namespace) -> ProducerSettings:
    overrides: dict[str, object] = {}
    flags: dict[str, str] = {}
    every = (
        *_COMMON_SETTING_FLAGS,
        *_RUN_SETTING_FLAGS,
        *_FLEET_SETTING_FLAGS,
        *_PROXY_SETTING_FLAGS,
        *_OTLP_SETTING_FLAGS,
    )
    for flag, env, _ in every:
        value = getattr(args, f"setting:{env}", None)
        if value is not None:
            overrides[env] = value
            flags[env] = flag
    return load_settings(overrides, flags=flags)


def _report(summary: Summary, summary_json: str | None) -> None:
    if summary_json == "-":
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
        if json_logging():  # stderr holds only JSON lines then
            log.info("%s", summary.line())
        else:
            sys.stderr.write(summary.line() + "\n")
    else:
        sys.stdout.write(summary.line() + "\n")
        if summary_json:
            Path(summary_json).write_bytes(
                orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2)
            )
    sys.stdout.flush()


def _error(message: str) -> None:
    if json_logging():
        log.error("%s", message)
    else:
        sys.stderr.write(f"producers: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings_from(args)
    except SettingsError as exc:
        sys.stderr.write(report("producers", str(exc).splitlines()))
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "otlp":
        return _otlp(args, settings)
    if args.command == "proxy":
        from producers.proxy.serve import run_proxy  # aiohttp only for this command

        return run_proxy(settings)

    replay: ReplaySource | None = None
    if args.command == "replay":
        try:
            # Validate the whole file before connecting: a bad file needs no broker to be told.
            if args.format == "azure-trace":
                replay = _trace_replay(args, settings)
            else:
                replay = load_replay(args.file, host=settings.host, fmt=args.format)
        except ReplayFileError as exc:
            _error(str(exc))
            return EXIT_USAGE
        except SettingsError as exc:  # the deployment map does not fit the GPUs read
            sys.stderr.write(report("producers", _deployment_problems(exc, args)))
            return EXIT_USAGE
        except (NoGpus, GpuReaderError) as exc:
            _error(str(exc))
            return EXIT_FAILED

    try:
        sink = KafkaSink(settings.kafka_config(), settings.topic)
    except Exception as exc:  # librdkafka rejected the configuration
        _error(f"kafka configuration rejected: {exc}")
        return EXIT_USAGE
    failure: str | None = None
    bad_settings: SettingsError | None = None
    try:
        partitions = sink.check_ready(settings.connect_timeout_s)
        log.info(
            "connected bootstrap=%s topic=%s partitions=%d client_id=%s",
            settings.bootstrap,
            settings.topic,
            partitions,
            settings.effective_client_id,
        )
        with StopSignals.installed() as stop:
            if replay is not None:
                options = ReplayOptions(
                    speed=args.speed, new_ids=args.new_ids, loops=args.loops, retime=args.retime
                )
                summary = run_replay(sink, replay, settings, options, stop)
            else:
                reader = _gpu_reader(settings, args.seed)
                run_options = RunOptions(count=args.count, duration_s=args.duration, seed=args.seed)
                summary = run_synthetic(sink, reader, settings, run_options, stop)
    except SettingsError as exc:  # the deployment map does not fit the GPUs read
        bad_settings = exc
    except (ProducerError, GpuReaderError) as exc:
        failure = str(exc)
    finally:
        # The loops flush before they return; this is for an exception escaping them (a bug:
        # an invalid event): deliver what was already sent, bounded, then let it propagate.
        if sink.stats.in_flight and sink.flush(settings.flush_timeout_s):
            sink.abandon()
        sink.close()
    if bad_settings is not None:
        sys.stderr.write(report("producers", _deployment_problems(bad_settings, args)))
        return EXIT_USAGE
    if failure is not None:
        _error(failure)  # after close(), so it is the last line an operator sees
        return EXIT_FAILED
    _report(summary, args.summary_json)
    return summary.exit_code


def _deployment_problems(exc: SettingsError, args: argparse.Namespace) -> list[str]:
    """The deployment map's problems, naming --deployment when the flag set it."""
    lines = str(exc).splitlines()
    if getattr(args, "setting:PRODUCER_DEPLOYMENT", None) is None:
        return lines
    env = "PRODUCER_DEPLOYMENT"
    return [
        f"{env} (--deployment){line[len(env) :]}" if line.startswith(env) else line
        for line in lines
    ]


def _trace_replay(args: argparse.Namespace, settings: ProducerSettings) -> AzureTraceReplay:
    """The trace checked and mapped onto this host's GPUs, before connecting to Kafka."""
    reader = _gpu_reader(settings, args.seed)
    readings = reader.read()
    if not readings:
        raise NoGpus(f"the GPU reader found no GPU on host {settings.host}")
    replicas = deployed(settings, gpu_targets(readings))
    if args.fleet_share:
        served_elsewhere = [r.model for r in replicas if r.model not in settings.models]
        if served_elsewhere:
            raise SettingsError(
                f"PRODUCER_MODELS: --fleet-share places requests by the fleet's mix, so it "
                f"must list every deployed model; missing: {', '.join(served_elsewhere)}"
            )
    scan = scan_azure_trace(args.file)
    shift = datetime.now(UTC) - scan.last if args.end_now else timedelta(0)
    mix = list(settings.models.items()) if args.fleet_share else model_mix(settings, replicas)
    mapper = TraceMapper(
        settings.host,
        replicas,
        mix,
        seed=args.seed,
        name=args.file.name,
        tenants=settings.tenants,
        fleet_share=args.fleet_share,
    )
    log.info(
        "trace file=%s requests=%d first=%s last=%s shift_s=%.3f deployment=%s",
        args.file,
        scan.count,
        scan.first.isoformat(),
        scan.last.isoformat(),
        shift.total_seconds(),
        " ".join(f"{r.model}={','.join(str(g.gpu_index) for g in r.gpus)}" for r in replicas),
    )
    start = scan.first + shift
    return AzureTraceReplay(
        scan,
        mapper,
        shift,
        prelude=tuple(mapper.stamp_reading(r, start, 0) for r in readings),
        gpu_interval_s=args.gpu_interval,
        read_gpus=reader.read,
    )


def _gpu_reader(settings: ProducerSettings, seed: int | None) -> GpuReader:
    rng = None if seed is None else random.Random(seed)
    return GpuReader(
        settings.host,
        seed_file=settings.gpu_seed_file,
        rng=rng,
        dcgm_url=settings.dcgm_exporter_url,
        sources=settings.gpu_sources,
    )


def _otlp(args: argparse.Namespace, settings: ProducerSettings) -> int:
    """Serve the OTLP/HTTP receiver until SIGINT/SIGTERM; 1 if events were lost."""
    from aiohttp import web

    from producers.fleet import resolve
    from producers.otlp_map import SpanMapping
    from producers.otlp_receiver import QueuedPublisher, build_app

    try:
        gpus = gpu_targets(_gpu_reader(settings, None).read())
        # Only an explicit map: the synthetic round-robin default says nothing about real serving.
        replicas = resolve(settings.deployment, gpus) if settings.deployment else ()
    except SettingsError as exc:
        sys.stderr.write(report("producers", _deployment_problems(exc, args)))
        return EXIT_USAGE
    except GpuReaderError as exc:
        _error(str(exc))
        return EXIT_FAILED
    mapping = SpanMapping(
        host=settings.host,
        gpus={gpu.gpu_index: gpu for gpu in gpus},
        replicas=replicas,
        tenant_attribute=settings.otlp_tenant_attribute,
        gpu_attribute=settings.otlp_gpu_attribute,
    )
    try:
        sink = KafkaSink(settings.kafka_config(), settings.topic)
    except Exception as exc:  # librdkafka rejected the configuration
        _error(f"kafka configuration rejected: {exc}")
        return EXIT_USAGE
    try:
        sink.check_ready(settings.connect_timeout_s)
    except ProducerError as exc:
        sink.close()
        _error(str(exc))
        return EXIT_FAILED
    publisher = QueuedPublisher(sink, settings.otlp_queue_size)
    publisher.start()
    app = build_app(mapping, publisher, max_body_bytes=settings.otlp_max_body_bytes)
    host, _, port = settings.otlp_listen.rpartition(":")
    log.info(
        "otlp receiver listen=%s topic=%s gpus=%d deployment=%s",
        settings.otlp_listen,
        settings.topic,
        len(gpus),
        " ".join(f"{r.model}={','.join(str(g.gpu_index) for g in r.gpus)}" for r in replicas)
        or "-",
    )
    try:
        web.run_app(app, host=host or None, port=int(port), print=None, access_log=None)
    finally:
        left = publisher.stop(settings.flush_timeout_s)
        sink.close()
    metrics = publisher.metrics
    dropped = int(metrics.value(metrics.events_dropped))
    sys.stdout.write(
        f"otlp: events queued={int(metrics.value(metrics.events_queued))} "
        f"delivered={sink.stats.delivered} failed={sink.stats.failed} dropped={dropped} "
        f"unconfirmed={left}\n"
    )
    return EXIT_OK if not (left or dropped or sink.stats.failed) else EXIT_FAILED
