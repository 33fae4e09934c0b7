"""Label bounding and the newly-stored filter of processor/product_metrics.py (no services)."""

from __future__ import annotations

from processor.product_metrics import OTHER, LabelBound, newly_stored
from processor.store import WriteResult


def test_label_bound_keeps_first_values_and_always_kept_ones() -> None:
    bound = LabelBound(2, always=["vip"])
    assert [bound(v) for v in ("a", "b", "c", "a", "vip", "d")] == [
        "a",
        "b",
        OTHER,
        "a",
        "vip",
        OTHER,
    ]


def test_newly_stored_drops_duplicates_and_rejected() -> None:
    docs = {
        "token_usage": [{"_id": "1"}, {"_id": "2"}, {"_id": "3"}],
        "gpu_metrics": [{"_id": "1"}],
    }
    result = WriteResult()
    result.duplicate_ids.add(("token_usage", "1"))
    result.rejected[("token_usage", "3")] = "code=2 bad"
    assert newly_stored(docs, result) == {
        "token_usage": [{"_id": "2"}],
        "gpu_metrics": [{"_id": "1"}],
    }
