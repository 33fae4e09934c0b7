"""Logging of both services: `text` for people, `json` (one object per line) for log shippers.

    >>> configure_logging("INFO", "json")
    >>> logging.getLogger("processor.consumer").info("rebuilt partition=3 offset=17")
    {"time": "2026-12-01T10:00:00.123Z", "level": "INFO", "logger": "processor.consumer",
     "message": "rebuilt partition=3 offset=17", "partition": 3, "offset": 17}

One handler on the root logger, on stderr: the services' own loggers, uvicorn's (run with
``log_config=None`` so it adds no handler of its own, and so prints no ANSI colour) and
librdkafka's (confluent-kafka's ``logger`` setting, logger name ``librdkafka``) all go through
it. Neither format ever writes colour codes, whether stderr is a terminal or not.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

__all__ = ["KAFKA_LOGGER", "TEXT_FORMAT", "JsonFormatter", "configure_logging", "json_logging"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Pass as confluent-kafka's `logger`: librdkafka's own lines (connection failures, broker state)
# then go through Python logging, served by poll()/consume(), instead of raw stderr.
KAFKA_LOGGER: Final = logging.getLogger("librdkafka")

# Context the services write as key=value in their messages (STYLE: "partition=3 offset=17"),
# lifted into fields so a log store can filter on them. `extra={...}` fields win.
_CONTEXT: Final = re.compile(r"\b(partition|offset|event_id|topic|gpu)=([^\s,;]+)")
_INTEGER_FIELDS: Final = frozenset({"partition", "offset"})
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, context fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }  # fmt: skip
        for key, value in _CONTEXT.findall(message):
            value = value.strip("'\"")
            number = key in _INTEGER_FIELDS and value.isdigit()
            entry.setdefault(key, int(value) if number else value)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one on ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's loggers may carry handlers from an earlier run in this process: let them
    # propagate to the root handler only, so every line has one format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # An earlier uvicorn.Config in this process may have set a level or disabled the
        # logger (dictConfig): the root's level decides again.
        logger.setLevel(logging.NOTSET)
        logger.disabled = False


def json_logging() -> bool:
    """Whether the root handler writes JSON: then a service writes its own stderr lines (an
    error, a summary) as log records rather than as text."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
