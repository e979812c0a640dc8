"""What the job service needs to know of the workers: can a model be served right now, and is the service ready.

`ServingStatus` is the one interface `/health` and `JobService.create_job` read; the in-process worker pool
implements it today (`worker.status.PoolServingStatus`), a worker registry can implement it tomorrow, and an
API-only process (workers elsewhere) uses `WorkersElsewhere`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from wanserve.errors import InvalidRequestError

ServingPhase = Literal["starting", "ready", "degraded", "unavailable"]
"""`starting`: no worker has finished loading yet. `ready`: every served model has a worker. `degraded`: some
models cannot be served (their loading failed), others can. `unavailable`: no worker can serve anything."""


@dataclass(frozen=True)
class ServingState:
    """A snapshot of what the workers can do."""

    phase: ServingPhase
    detail: str
    """One sentence saying why (shown in `/health`)."""
    unavailable_models: Mapping[str, str] = field(default_factory=dict)
    """Model -> why no worker can load it. Jobs for these are refused with a 503."""

    @property
    def ready(self) -> bool:
        """True when jobs can run now (200 on `/health/ready`)."""
        return self.phase in ("ready", "degraded")


class ServingStatus(Protocol):
    """Whoever knows the workers' state."""

    def serving_state(self) -> ServingState: ...


class WorkersElsewhere:
    """An API-only process: jobs are queued for workers in other processes, which this one cannot see."""

    def serving_state(self) -> ServingState:
        return ServingState("ready", "accepting jobs; workers run in other processes")


class ModelUnavailableError(InvalidRequestError):
    """No worker of this deployment can load the requested model (503: the request was fine, the service is not)."""

    http_status = 503
    error_type = "model_unavailable"

    def __init__(self, model: str, reason: str):
        super().__init__("model", f"`model` {model!r} cannot be served: no worker could load it ({reason})")


def check_servable(status: ServingStatus | None, model: str) -> None:
    """Raises `ModelUnavailableError` when no worker can load `model`; a starting service still queues jobs."""
    if status is None:
        return
    reason = status.serving_state().unavailable_models.get(model)
    if reason is not None:
        raise ModelUnavailableError(model, reason)
