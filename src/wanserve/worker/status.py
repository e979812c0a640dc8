"""`PoolServingStatus`: the in-process workers' answer to "what can be served now" (see `jobs.serving`)."""

from __future__ import annotations

from collections.abc import Sequence

from wanserve.jobs.serving import ServingState
from wanserve.worker.pool import WorkerPool, WorkerStatus


def serving_state(models: Sequence[str], workers: Sequence[WorkerStatus]) -> ServingState:
    """The service's phase from its workers: a model is unavailable once every worker failed to load it (or
    stopped); the service is starting until one worker is ready."""
    unavailable: dict[str, str] = {}
    for model in models:
        reasons = []
        for worker in workers:
            if model in worker.model_errors:
                reasons.append(worker.model_errors[model])
            elif worker.load_error is not None:
                reasons.append(worker.load_error)
            else:
                break  # this worker serves it, or is still loading it
        else:
            unavailable[model] = reasons[0] if reasons else "no worker serves it"
    if len(unavailable) == len(models):
        return ServingState("unavailable", "no worker can serve any model", unavailable)
    if not any(worker.ready for worker in workers):
        if any(worker.phase == "warming_up" for worker in workers):
            detail = "the workers are warming up their models at the configured sizes (WANSERVE_WARMUP)"
            return ServingState("starting", detail, unavailable)
        return ServingState("starting", "the workers are loading their models", unavailable)
    if unavailable:
        return ServingState("degraded", f"cannot serve {', '.join(unavailable)}", unavailable)
    return ServingState("ready", "every served model has a ready worker")


class PoolServingStatus:
    """`ServingStatus` of a `WorkerPool`."""

    def __init__(self, pool: WorkerPool, models: Sequence[str]):
        self.pool = pool
        self.models = tuple(models)

    def serving_state(self) -> ServingState:
        return serving_state(self.models, self.pool.status())
