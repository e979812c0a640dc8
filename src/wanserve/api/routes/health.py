"""`GET /health` (status, models, devices, queue, and the Wan2.1 I2V service's fields), `/health/live` and
`/health/ready`. `/health` and `/health/ready` answer 503 while the service is starting or when no worker can serve,
so a load balancer or an orchestrator's probe sends no traffic to a process that cannot run jobs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from wanserve.api.deps import OwnerDep, RuntimeDep
from wanserve.api.schemas.jobs import HealthPublic

router = APIRouter(tags=["health"])

_NOT_READY = {503: {"model": HealthPublic, "description": "Starting, or no worker can serve."}}


@router.get("/health", response_model=HealthPublic, responses=_NOT_READY)
async def health(runtime: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    """Whether the service can run jobs, what it serves, and why not when it cannot."""
    state = await run_in_threadpool(runtime.health)
    if owner is not None:  # a key that is no admin does not learn other keys' job ids
        state["workers"] = [{**worker, "current_job": None} for worker in state["workers"]]
    body = HealthPublic.model_validate(state)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process answers (liveness probe); says nothing about the workers."""
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"description": "Starting, or no worker can serve."}})
def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 when jobs can run now, else 503 (readiness probe); the body says which phase and why."""
    state = runtime.serving.serving_state()
    body = {"ready": state.ready, "phase": state.phase, "detail": state.detail}
    return JSONResponse(body, status_code=200 if state.ready else 503)
