"""The local stack's FerretDB is a real MongoDB-wire server with what the pipeline relies on.

Exactly the features STACK.md lists as supported and the processor uses: unordered bulk inserts
that continue past duplicate keys (code 11000), unique indexes, and $match/$group/$sum.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

pytestmark = pytest.mark.integration

Doc = dict[str, Any]


def test_insert_and_read_back(mongo_db: Database[Doc]) -> None:
    doc = {"_id": "evt-1", "host": "vm4", "input_tokens": 120, "nested": {"a": [1, 2.5, "x"]}}
    mongo_db["token_usage"].insert_one(doc)
    assert mongo_db["token_usage"].find_one({"_id": "evt-1"}) == doc
    assert mongo_db["token_usage"].count_documents({}) == 1


def test_unordered_insert_many_keeps_the_rest_and_reports_11000(mongo_db: Database[Doc]) -> None:
    coll = mongo_db["token_usage"]
    coll.insert_one({"_id": "e2", "n": 0})
    batch = [{"_id": f"e{i}", "n": i} for i in range(1, 6)]  # e2 is already stored
    with pytest.raises(BulkWriteError) as caught:
        coll.insert_many(batch, ordered=False)
    details = caught.value.details
    assert [e["code"] for e in details["writeErrors"]] == [11000]
    assert details["writeErrors"][0]["index"] == 1
    assert details["nInserted"] == 4
    assert sorted(d["_id"] for d in coll.find()) == ["e1", "e2", "e3", "e4", "e5"]
    assert coll.find_one({"_id": "e2"}) == {"_id": "e2", "n": 0}  # the first write wins


def test_unique_index_is_enforced(mongo_db: Database[Doc]) -> None:
    coll = mongo_db["gpu_metrics"]
    coll.create_index([("gpu_uuid", ASCENDING), ("minute", ASCENDING)], unique=True)
    coll.insert_one({"gpu_uuid": "GPU-1", "minute": 100})
    coll.insert_one({"gpu_uuid": "GPU-1", "minute": 101})
    with pytest.raises(DuplicateKeyError) as caught:
        coll.insert_one({"gpu_uuid": "GPU-1", "minute": 100})
    assert caught.value.code == 11000
    assert coll.count_documents({}) == 2
    assert any(ix.get("unique") for ix in coll.index_information().values())


def test_match_group_sum_aggregation(mongo_db: Database[Doc]) -> None:
    coll = mongo_db["token_usage"]
    rows = [
        ("llama", "GPU-1", 100, 20, 0.001),
        ("llama", "GPU-1", 50, 10, 0.0005),
        ("llama", "GPU-2", 30, 5, 0.0002),
        ("mistral", "GPU-1", 70, 30, 0.002),
        ("llama", "GPU-1", 999, 999, 1.0),  # status error: filtered out by $match
    ]
    coll.insert_many(
        [
            {
                "_id": f"t{i}",
                "model": model,
                "gpu_uuid": gpu,
                "input_tokens": tin,
                "output_tokens": tout,
                "cost_usd": cost,
                "status": "error" if i == 4 else "ok",
            }
            for i, (model, gpu, tin, tout, cost) in enumerate(rows)
        ],
        ordered=False,
    )
    result = list(
        coll.aggregate(
            [
                {"$match": {"status": "ok"}},
                {
                    "$group": {
                        "_id": "$model",
                        "input_tokens": {"$sum": "$input_tokens"},
                        "output_tokens": {"$sum": "$output_tokens"},
                        "cost_usd": {"$sum": "$cost_usd"},
                        "events": {"$sum": 1},
                    }
                },
                {"$sort": {"_id": 1}},
            ]
        )
    )
    assert [r["_id"] for r in result] == ["llama", "mistral"]
    llama, mistral = result
    assert (llama["input_tokens"], llama["output_tokens"], llama["events"]) == (180, 35, 3)
    assert llama["cost_usd"] == pytest.approx(0.0017)
    assert (mistral["input_tokens"], mistral["output_tokens"], mistral["events"]) == (70, 30, 1)
    assert mistral["cost_usd"] == pytest.approx(0.002)
