"""Reading MongoDB explain output (tests/support/mongo_plans.py) without a server: the shapes are
those MongoDB 7 answers with (classic and slot-based engines, aggregations, distinct)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.mongo_plans import Stage, explain_command, plan_stages

CLASSIC_FIND: dict[str, Any] = {
    "queryPlanner": {
        "namespace": "gpu_cost.gpu_metrics",
        "winningPlan": {
            "stage": "LIMIT",
            "inputStage": {
                "stage": "FETCH",
                "filter": {"kafka_offset": {"$lt": 10}},
                "inputStage": {"stage": "IXSCAN", "indexName": "partition_gpu_ts",
                               "direction": "backward"},
            },
        },
        "rejectedPlans": [
            {"stage": "SORT", "inputStage": {"stage": "FETCH", "inputStage": {
                "stage": "IXSCAN", "indexName": "gpu_key_ts"}}},
            {"stage": "COLLSCAN"},
        ],
    },
    "ok": 1.0,
}  # fmt: skip

SBE_FIND: dict[str, Any] = {
    "explainVersion": "2",
    "queryPlanner": {
        "winningPlan": {
            "queryPlan": {"stage": "FETCH", "planNodeId": 2, "inputStage": {
                "stage": "IXSCAN", "planNodeId": 1, "indexName": "minute"}},
            "slotBasedPlan": {"slots": "...", "stages": "[2] nlj ..."},
        },
        "rejectedPlans": [],
    },
}  # fmt: skip

AGGREGATE_CURSOR: dict[str, Any] = {
    "explainVersion": "1",
    "stages": [
        {"$cursor": {"queryPlanner": {"winningPlan": {
            "stage": "PROJECTION_SIMPLE",
            "inputStage": {"stage": "FETCH", "inputStage": {
                "stage": "IXSCAN", "indexName": "model_minute"}}}}}},
        {"$group": {"_id": "$model", "n": {"$sum": 1}}},
    ],
}  # fmt: skip

AGGREGATE_COLLSCAN: dict[str, Any] = {
    "queryPlanner": {"winningPlan": {"queryPlan": {
        "stage": "GROUP", "inputStage": {"stage": "COLLSCAN", "direction": "forward"}}}},
}  # fmt: skip

DISTINCT: dict[str, Any] = {
    "queryPlanner": {"winningPlan": {
        "stage": "PROJECTION_COVERED",
        "inputStage": {"stage": "DISTINCT_SCAN", "indexName": "partition_gpu_ts"}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("explain", "stages"),
    [
        (CLASSIC_FIND, [Stage("LIMIT", None), Stage("FETCH", None),
                        Stage("IXSCAN", "partition_gpu_ts")]),
        (SBE_FIND, [Stage("FETCH", None), Stage("IXSCAN", "minute")]),
        (AGGREGATE_CURSOR, [Stage("PROJECTION_SIMPLE", None), Stage("FETCH", None),
                            Stage("IXSCAN", "model_minute")]),
        (AGGREGATE_COLLSCAN, [Stage("GROUP", None), Stage("COLLSCAN", None)]),
        (DISTINCT, [Stage("PROJECTION_COVERED", None),
                    Stage("DISTINCT_SCAN", "partition_gpu_ts")]),
    ],
    ids=["classic-find", "sbe-find", "aggregate-cursor", "aggregate-collscan", "distinct"],
)  # fmt: skip
def test_winning_plan_stages_outermost_first(explain: dict[str, Any], stages: list[Stage]) -> None:
    assert plan_stages(explain) == stages


def test_rejected_plans_do_not_count() -> None:
    assert "COLLSCAN" not in {s.stage for s in plan_stages(CLASSIC_FIND)}
    assert "gpu_key_ts" not in {s.index for s in plan_stages(CLASSIC_FIND)}


def test_no_winning_plan_no_stages() -> None:
    assert plan_stages({"ok": 1.0, "stage": "IXSCAN"}) == []


def test_explain_wraps_the_sent_command_without_the_drivers_fields() -> None:
    sent = {
        "find": "token_usage", "filter": {"kafka_partition": 3}, "sort": {"ts_us": -1},
        "limit": 1, "singleBatch": True, "lsid": {"id": "x"}, "$db": "gpu_cost",
        "$clusterTime": {"clusterTime": 1}, "$readPreference": {"mode": "primary"},
    }  # fmt: skip
    assert explain_command(sent) == {
        "explain": {"find": "token_usage", "filter": {"kafka_partition": 3},
                    "sort": {"ts_us": -1}, "limit": 1, "singleBatch": True},
        "verbosity": "queryPlanner",
    }  # fmt: skip


def test_only_queries_are_explained() -> None:
    with pytest.raises(ValueError, match="insert"):
        explain_command({"insert": "token_usage", "documents": []})
