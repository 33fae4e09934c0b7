"""`python -m processor`: serve the API and consume the topic."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from processor.app import create_app
from processor.settings import ProcessorSettings
from service_settings import problems, report
from service_settings.logs import configure_logging


def _stopped_gracefully(signum: int, _frame: FrameType | None) -> None:
    logging.getLogger("processor").info("stopped by signal %d after a graceful shutdown", signum)


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m processor",
        description="Serve the HTTP API (/health, /gpu/info, /metrics, /api/v1, /docs) and "
        "consume the topic as one member of the processor group.",
        epilog="Configured by environment variables only (KAFKA_BOOTSTRAP, MONGO_URL, "
        "HTTP_PORT, ...; every one in docs/configuration.md). Invalid settings exit 2, listing "
        "each; SIGTERM stops it gracefully (the batch in hand is stored and committed), exit 0.",
    )


def main(argv: list[str] | None = None) -> int:
    # --help prints the usage and exits 0 before anything starts. Only what the caller passes
    # is parsed: a test calling main() must not see the test runner's own arguments.
    _parser().parse_args([] if argv is None else argv)
    try:
        settings = ProcessorSettings()
    except ValidationError as exc:  # before the port is bound: nothing to undo
        sys.stderr.write(report("processor", problems(exc, ProcessorSettings)))
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn turns SIGTERM into a graceful shutdown, which runs the lifespan's exit: the loop
    # finishes its batch, commits and leaves the group. It then restores the handler it found
    # and raises the signal again; this handler makes that a clean exit 0, as supervisors
    # and docs/operations.md expect from a graceful stop.
    signal.signal(signal.SIGTERM, _stopped_gracefully)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # No handlers of uvicorn's own (nor its colours): its lines go to the root handler in
        # LOG_FORMAT like every other line.
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
