"""LOG_FORMAT: the JSON formatter and the one root handler (service_settings/logs.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service_settings.logs import KAFKA_LOGGER, configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_time_level_logger_message_and_context(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    logging.getLogger("processor.consumer").warning(
        "invalid event partition=%d offset=%d key=%r reason=%r", 3, 1187, b"h/GPU-1", "bad"
    )
    logging.getLogger("processor.store").error(
        "store rejected document collection=%s event_id=%s", "token_usage", "e-1"
    )
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8080")
    KAFKA_LOGGER.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "Connect failed")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("processor").exception("crashed", extra={"gpu_key": "h/GPU-1"})
    records = [json.loads(line) for line in lines(stream)]
    assert len(records) == 5
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert record["time"].endswith("Z")
    first, second, uvicorn, kafka, crash = records
    assert first["level"] == "WARNING"
    assert first["logger"] == "processor.consumer"
    assert (first["partition"], first["offset"]) == (3, 1187)
    assert second["event_id"] == "e-1"
    assert uvicorn["logger"] == "uvicorn.error"
    assert kafka == {**kafka, "logger": "librdkafka", "level": "ERROR"}
    assert kafka["message"] == "FAIL [rdkafka#consumer-1] Connect failed"
    assert "ValueError: boom" in crash["exception"]
    assert crash["gpu_key"] == "h/GPU-1"


def test_text_stays_the_default_format_without_colour(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("processor").info("processor started topic=tokens")
    out = stream.getvalue()
    assert "\x1b[" not in out
    assert " INFO uvicorn.error Uvicorn running" in out
    assert all(not line.startswith("{") for line in lines(stream))


def test_uvicorn_handlers_are_replaced_by_the_root_one(restore_root: None) -> None:
    stale = logging.StreamHandler(io.StringIO())
    logging.getLogger("uvicorn.error").addHandler(stale)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    logging.getLogger("uvicorn.error").info("started")
    assert stale not in logging.getLogger("uvicorn.error").handlers
    assert json.loads(stream.getvalue())["message"] == "started"
