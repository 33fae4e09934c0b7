"""The product's own series on /metrics: tokens, requests, cost, energy, GPU gauges, budgets.

    >>> product = ProductMetrics(max_models=50, max_tenants=100, budgets={"team-a": 250.0})
    >>> product.record(stored_docs)      # after a batch is durably written: new documents only

Counters count documents the store *newly* inserted: the consume loop passes only those
(``newly_stored``), so a redelivered batch that MongoDB answers with duplicate-key errors adds
nothing. GPU gauges carry dcgm-exporter's names and labels (``gpu``, ``UUID``, ``Hostname``,
``modelName``) so dashboards written for dcgm-exporter work on them. Every metric and its
labels is listed in docs/metrics.md, with how to sum replicas into a fleet view.

Label values of ``model`` and ``tenant`` come from producers, so their number is bounded per
replica (METRICS_MAX_MODELS, METRICS_MAX_TENANTS): the first N values seen keep their name,
later ones are counted as ``(other)``. Tenants with a budget always keep theirs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import Counter, Gauge

from processor.documents import GPU_METRICS, TOKEN_USAGE
from processor.store import WriteResult

__all__ = ["OTHER", "UNATTRIBUTED", "LabelBound", "ProductMetrics", "newly_stored"]

OTHER: Final = "(other)"
# The same name the costs API gives usage without a tenant (processor/rollup.py).
UNATTRIBUTED: Final = "(unattributed)"

_USAGE = ("model", "gpu", "host", "tenant")
_GPU = ("gpu", "host")
_DCGM = ("gpu", "UUID", "Hostname", "modelName")

TOKENS = Counter(
    "tokencost_tokens",
    "Tokens of newly stored token.usage events, by direction (input | output).",
    [*_USAGE, "direction"],
)
REQUESTS = Counter("tokencost_requests", "Newly stored token.usage events (requests).", _USAGE)
THROUGHPUT_COST = Counter(
    "tokencost_throughput_cost_usd",
    "Sum of the stored per-event cost_usd: the live throughput estimate (price / tokens per "
    "second over COST_WINDOW_S), not the allocation cost of /api/v1/costs.",
    _USAGE,
)
THROUGHPUT_COST_BY_DIRECTION = Counter(
    "tokencost_throughput_cost_by_direction_usd",
    "input_cost_usd and output_cost_usd of the stored events (they add up to cost_usd).",
    [*_USAGE, "direction"],
)
ENERGY = Counter(
    "tokencost_gpu_energy_joules",
    "GPU energy between consecutive readings (stored energy_delta_j of gpu.metrics events).",
    _GPU,
)
PRICE = Gauge(
    "tokencost_gpu_price_per_hour_usd",
    "Price per hour the cost model resolved for the GPU's latest reading (event, map or default).",
    _GPU,
)
BUDGET = Gauge(
    "tokencost_tenant_budget_usd_per_day",
    "Daily budget of a tenant (TENANT_BUDGETS_USD_PER_DAY); the TenantOverBudget alert compares "
    "it with increase(tokencost_throughput_cost_usd_total[1d]).",
    ["tenant"],
)
# dcgm-exporter's names, units and labels (NVIDIA/dcgm-exporter etc/default-counters.csv).
# `gpu` is the index on its host, as dcgm-exporter has it.
DCGM: Final[dict[str, tuple[Gauge, str]]] = {
    name: (Gauge(name, help_text, _DCGM), field)
    for name, field, help_text in (
        ("DCGM_FI_DEV_GPU_UTIL", "utilization_gpu_pct", "GPU utilization (in %)."),
        ("DCGM_FI_DEV_POWER_USAGE", "power_draw_w", "Power draw (in W)."),
        ("DCGM_FI_DEV_GPU_TEMP", "temperature_gpu_c", "GPU temperature (in C)."),
        ("DCGM_FI_DEV_FB_USED", "memory_used_mib", "Framebuffer memory used (in MiB)."),
        ("DCGM_FI_DEV_SM_CLOCK", "clock_sm_mhz", "SM clock frequency (in MHz)."),
        (
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "energy_total_mj",
            "Total energy consumption since boot (in mJ).",
        ),
    )
}


class LabelBound:
    """The first ``limit`` distinct values keep their name; later ones become ``(other)``."""

    def __init__(self, limit: int, always: Iterable[str] = ()) -> None:
        self._limit = limit
        self._always = frozenset(always)
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._always or value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


def newly_stored(
    docs_by_collection: Mapping[str, list[dict[str, Any]]], result: WriteResult
) -> dict[str, list[dict[str, Any]]]:
    """The documents of a write that the store inserted: not duplicates, not rejected."""
    refused = result.duplicate_ids | result.rejected.keys()
    return {
        name: [d for d in docs if (name, str(d["_id"])) not in refused]
        for name, docs in docs_by_collection.items()
    }


class ProductMetrics:
    """Feeds the product series from stored documents (the consume loop's thread only)."""

    def __init__(self, *, max_models: int, max_tenants: int, budgets: Mapping[str, float]) -> None:
        self._model = LabelBound(max_models)
        self._tenant = LabelBound(max_tenants, always=budgets)
        self._latest_ts: dict[str, int] = {}  # gpu_key -> ts_us of the reading on the gauges
        self._lock = threading.Lock()
        for tenant, budget in budgets.items():
            BUDGET.labels(tenant).set(budget)

    def record(self, stored: Mapping[str, list[dict[str, Any]]]) -> None:
        with self._lock:
            for doc in stored.get(TOKEN_USAGE, ()):
                self._usage(doc)
            for doc in stored.get(GPU_METRICS, ()):
                self._gpu(doc)

    def _usage(self, doc: Mapping[str, Any]) -> None:
        labels = (
            self._model(str(doc.get("model", ""))),
            str(doc["gpu_uuid"]),
            str(doc["host"]),
            self._tenant(str(doc["tenant"])) if doc.get("tenant") else UNATTRIBUTED,
        )
        REQUESTS.labels(*labels).inc()
        TOKENS.labels(*labels, "input").inc(int(doc.get("input_tokens") or 0))
        TOKENS.labels(*labels, "output").inc(int(doc.get("output_tokens") or 0))
        THROUGHPUT_COST.labels(*labels).inc(float(doc.get("cost_usd") or 0.0))
        for direction in ("input", "output"):
            cost = float(doc.get(f"{direction}_cost_usd") or 0.0)
            THROUGHPUT_COST_BY_DIRECTION.labels(*labels, direction).inc(cost)

    def _gpu(self, doc: Mapping[str, Any]) -> None:
        gpu, host = str(doc["gpu_uuid"]), str(doc["host"])
        if doc.get("energy_delta_j") is not None:
            ENERGY.labels(gpu, host).inc(float(doc["energy_delta_j"]))
        key, ts = str(doc["gpu_key"]), int(doc["ts_us"])
        # A late or redelivered older reading must not overwrite a newer one on the gauges.
        if ts < self._latest_ts.get(key, ts):
            return
        self._latest_ts[key] = ts
        PRICE.labels(gpu, host).set(float(doc["price_per_hour_usd"]))
        dcgm = (str(doc.get("gpu_index", "")), gpu, host, str(doc.get("gpu_name", "")))
        for gauge, field in DCGM.values():
            value = doc.get(field)
            if value is None:  # unsupported on this device: no sample rather than a false 0
                with contextlib.suppress(KeyError):  # none set yet
                    gauge.remove(*dcgm)
                continue
            gauge.labels(*dcgm).set(float(value))
