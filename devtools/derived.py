"""The fields the processor derives for each stored document: what "same numbers" compares.

Used by the determinism test and the fault suite (devtools.chaos): two runs over the same log
store identical values for every one of these fields, keyed by event_id.
"""

from __future__ import annotations

from typing import Any, Final

from pymongo import MongoClient

# Every field the cost model or the document builder derives, and the tenant it is billed to.
COST_FIELDS: Final = (
    "tokens", "tps", "price_per_hour_usd", "price_source", "cost_per_token", "cost_usd",
    "output_weight", "weighted_tokens", "weighted_tps", "cost_per_input_token",
    "cost_per_output_token", "input_cost_usd", "output_cost_usd", "tenant", "tp_follower",
    "kafka_partition", "kafka_offset", "minute",
)  # fmt: skip
GPU_FIELDS: Final = (
    "price_per_hour_usd", "price_source", "energy_delta_j", "energy_samples",
    "energy_interval_s", "power_samples", "minute", "anomalies", "anomaly_count",
)  # fmt: skip


def stored_derived(client: MongoClient[dict[str, Any]], db: str) -> dict[str, tuple[Any, ...]]:
    """Every stored document's derived fields, token and GPU alike, keyed by event_id."""
    out: dict[str, tuple[Any, ...]] = {}
    for collection, fields in (("token_usage", COST_FIELDS), ("gpu_metrics", GPU_FIELDS)):
        for d in client[db][collection].find({}, dict.fromkeys(fields, 1)):
            out[d["_id"]] = tuple(d.get(f) for f in fields)
    return out
