"""GET /api/v1/stats: how much the pipeline has stored."""

from __future__ import annotations

from fastapi import APIRouter

from processor.api.deps import StoreDep
from processor.api.problems import problem_responses

router = APIRouter(prefix="/api/v1", tags=["stats"])


@router.get("/stats", response_model=dict[str, int], responses=problem_responses(503))
def get_stats(store: StoreDep) -> dict[str, int]:
    """Documents stored per collection."""
    return store.counts()
