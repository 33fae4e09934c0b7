"""Hostile HTTP, automated: schemathesis against /openapi.json of the real app.

The app runs as in production (uvicorn, lifespan, consume loop) on the real Kafka + FerretDB of
the test harness, with a few events stored so that queries return rows: readings of the GPU the
OpenAPI examples name, and token events inside every route's default time range. Schemathesis
then sends what the document allows and what it forbids, and checks every answer: no 5xx, the
status code, content type and body documented for it, 4xx for invalid input, 2xx for valid.

The run is bounded (examples per operation, a time limit per request) and deterministic
(derandomized generation with a fixed seed, no example database), so a failure reproduces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from pymongo.database import Database

from devtools.events import gpu_event, token_event
from processor.api.gpus import EXAMPLE_GPU_UUID, EXAMPLE_HOST
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader, served
from tests.support.kafka_io import produce_events
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

# Per operation and generation phase: about 1,000 requests, ~15 s on the 2-core machine.
MAX_EXAMPLES: Final = 100
# Generous for one query on a shared machine, small enough that a hung request fails the run.
REQUEST_TIMEOUT_S: Final = 10
# The whole run, as a backstop to the bounds above.
RUN_TIMEOUT_S: Final = 240


@pytest.fixture
def api_url(
    kafka_bootstrap: str, mongo_url: str, topic: str, dlq_topic: str, group_id: str,
    mongo_db: Database[dict[str, Any]],
) -> Iterator[str]:  # fmt: skip
    settings = ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id, mongo_url=mongo_url, mongo_db=mongo_db.name,
    )  # fmt: skip
    local = gpu_event("fuzz-local", "GPU-local-0", 0, price_per_hour_usd=1.5)
    app = create_app(settings, gpu_reader=KnownReader([local]))
    with served(app) as url:
        # The GPU the OpenAPI examples name, so the examples phase finds its readings.
        host, gpu = EXAMPLE_HOST, EXAMPLE_GPU_UUID
        # Within the last hour: inside the default range of the readings route (1 h) and of
        # the costs route (24 h), so requests without start/end find these rows.
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        events = [
            gpu_event(host, gpu, 0, price_per_hour_usd=3.60, base=base),
            token_event(host, gpu, 10, 2000, 1000, model="m1", latency_ms=100, base=base),
            token_event(host, gpu, 20, 500, 500, model="m2", latency_ms=1000, base=base),
            gpu_event(host, gpu, 61, price_per_hour_usd=3.60, base=base),
            gpu_event("fuzz-other", "GPU-other-1", 30, base=base),
        ]
        produce_events(kafka_bootstrap, topic, events)
        wait_for("the events stored", lambda: (
            mongo_db["gpu_metrics"].count_documents({}) == 3
            and mongo_db["token_usage"].count_documents({}) == 2
        ))  # fmt: skip
        yield url


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    api_url: str, tmp_path: Path
) -> None:
    # The preloaded rows are where the requests without start/end (and the examples) look.
    example = f"/api/v1/gpus/{EXAMPLE_HOST}/{EXAMPLE_GPU_UUID}/metrics"
    assert len(httpx.get(api_url + example, timeout=10).json()["readings"]) == 2
    assert httpx.get(f"{api_url}/api/v1/costs", timeout=10).json()["totals"]["tokens"] == 4000

    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "run", f"{api_url}/openapi.json",
        "--checks", "all",
        # "Schema-valid must be accepted" cannot hold here: some values each valid alone are
        # refused together or for their value, and documented as 422 problems: start >= end, a
        # range too long for the granularity, a time outside 1970-2100 once in UTC. OpenAPI
        # cannot state such constraints. Every other check runs, invalid input included.
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(MAX_EXAMPLES),
        # Derandomized: the same cases on every run (so no seed and no example database).
        "--generation-deterministic",
        # One worker: the machine is shared, and parallel requests would find nothing more.
        "--workers", "1",
        "--request-timeout", str(REQUEST_TIMEOUT_S),
        # Every failure of every operation in one run, not only the first of each.
        "--continue-on-failure",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    # cwd: a schemathesis.toml or report directory elsewhere must not change or litter the run.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    body = json.loads(report.read_text())
    operations, cases = body["operations"], body["test_cases"]
    # What `pytest -s` shows, and what a failure message starts with.
    print(
        f"schemathesis {body['schemathesis_version']}: {operations['tested']}/"
        f"{operations['total']} operations, {cases['generated']} test cases, "
        f"{len(body['failures'])} failures, {len(body['errors'])} errors "
        f"in {body['running_time']:.1f} s"
    )
    assert operations["tested"] == operations["total"] == 9
    assert body["failures"] == []
    assert body["errors"] == []
    # The two routes with parameters get up to MAX_EXAMPLES per phase each (those without have
    # only a case or two); far fewer would mean the run stopped early.
    assert cases["generated"] >= 2 * MAX_EXAMPLES
