"""`GET /v1/workers`: every registered worker of the deployment (any process, any host), from the `workers` table."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from wanserve.api.deps import OwnerDep, RuntimeDep

router = APIRouter(prefix="/v1/workers", tags=["workers"])


class WorkerPublic(BaseModel):
    """One worker: where it runs, what it serves, what it does now."""

    id: str = Field(description="Its lease owner id (`host:pid:boot token:slot`).")
    host: str
    pid: int
    devices: list[str]
    models: list[str]
    state: str = Field(
        description="starting, idle, busy, error, stopped, or lost (no heartbeat for a lease; its jobs are recovered "
        "when their leases expire)."
    )
    current_job: str | None
    jobs_done: int = Field(description="Jobs it ran to an end since it started.")
    error: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    memory_gib: float | None = Field(
        None, description="Accelerator memory it may use (admission plans against it); null on the CPU."
    )


class WorkersPublic(BaseModel):
    data: list[WorkerPublic]
    count: int


@router.get("", response_model=WorkersPublic)
async def list_workers(runtime: RuntimeDep, owner: OwnerDep) -> WorkersPublic:
    """Every registered worker, newest first; workers gone for a day are forgotten."""
    views = await run_in_threadpool(runtime.registry.list) if runtime.registry is not None else []
    data = [WorkerPublic(**view.__dict__) for view in views]
    if owner is not None:  # a key that is no admin does not learn other keys' job ids
        data = [worker.model_copy(update={"current_job": None}) for worker in data]
    return WorkersPublic(data=data, count=len(data))
