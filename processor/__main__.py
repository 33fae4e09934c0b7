"""`python -m processor`: serve the API and consume the topic."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from processor.app import create_app
from processor.settings import ProcessorSettings


def main() -> int:
    try:
        settings = ProcessorSettings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]).upper() or "settings"
            sys.stderr.write(f"processor: invalid setting {where}: {error['msg']}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # uvicorn turns SIGTERM into a graceful shutdown, which runs the lifespan's exit:
    # the loop finishes its batch, commits and leaves the group.
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
