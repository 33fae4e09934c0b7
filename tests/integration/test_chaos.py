"""The quickest fault of the suite (`make chaos` runs them all): SIGKILL 1 of 3 replicas while
the producer is still sending; nothing lost, nothing duplicated, the same costs as a clean run.

Runs on the test stack (one broker, so the broker faults are left to `make chaos`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.chaos import Target, run_fault

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_one_replica_killed_mid_stream_loses_nothing_and_prices_alike(
    kafka_bootstrap: str, mongo_url: str, tmp_path: Path
) -> None:
    target = Target(bootstrap=kafka_bootstrap, mongo_url=mongo_url, log_dir=tmp_path)
    result = run_fault(target, "one_replica", rate=200, count=1500, say=print)
    print(result.line())
    assert result.sent > 1500
    assert result.stored == result.sent
    assert (result.lost, result.duplicated, result.differing) == (0, 0, 0), result.line()
    assert result.recovery_s < 30
