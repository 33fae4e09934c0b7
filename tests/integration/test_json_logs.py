"""LOG_FORMAT=json as processes write it: every stderr line one JSON object.

Kafka is pointed at a closed port, so librdkafka itself logs (connection refused): its lines,
uvicorn's and the services' own must all be JSON. MongoDB is the real test server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO, ProcessorProcess, free_port, wait_for

pytestmark = pytest.mark.integration


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    return records


def test_processor_logs_only_json_lines(mongo_url: str, tmp_path: Path) -> None:
    log_path = tmp_path / "processor.log"
    env = {
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nobody listens: librdkafka complains
        "MONGO_URL": mongo_url, "MONGO_DB": f"jsonlogs_{os.getpid()}",
        "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "TERM": "xterm-256color",
    }  # fmt: skip
    processor = ProcessorProcess(env, log_path).start()
    try:
        wait_for("a librdkafka line", lambda: '"logger":"librdkafka"' in log_path.read_text(), 60)
        processor.stop()
    finally:
        processor.kill()
    text = log_path.read_text()
    assert "\x1b[" not in text
    records = json_lines(text)
    loggers = {r["logger"] for r in records}
    assert {"librdkafka", "uvicorn.error", "processor.app", "processor.consumer"} <= loggers
    kafka = next(r for r in records if r["logger"] == "librdkafka")
    assert "Connection refused" in kafka["message"] or "failed" in kafka["message"], kafka


def test_producers_log_only_json_lines() -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LOG_FORMAT": "json",
        "PRODUCER_CONNECT_TIMEOUT_S": "3",
    }
    done = subprocess.run(
        [sys.executable, "-m", "producers", "run", "--count", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0  # no broker
    records = json_lines(done.stderr)
    assert any(r["level"] == "ERROR" for r in records), done.stderr
    assert "\x1b[" not in done.stderr
