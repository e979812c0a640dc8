"""`GET /health`: status, version, models (loaded, random weights), devices, rank/world size, queue depth."""

from __future__ import annotations

from fastapi import APIRouter

from wanserve.api.deps import RuntimeDep
from wanserve.api.schemas.jobs import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health(runtime: RuntimeDep) -> HealthPublic:
    """Whether the service is up and what it serves."""
    return HealthPublic.model_validate(runtime.health())
