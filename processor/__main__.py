"""`python -m processor`: serve the API and consume the topic."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from processor.app import create_app
from processor.settings import ProcessorSettings
from service_settings import problems, report


def _stopped_gracefully(signum: int, _frame: FrameType | None) -> None:
    logging.getLogger("processor").info("stopped by signal %d after a graceful shutdown", signum)


def main() -> int:
    try:
        settings = ProcessorSettings()
    except ValidationError as exc:  # before the port is bound: nothing to undo
        sys.stderr.write(report("processor", problems(exc, ProcessorSettings)))
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
