"""Which diffusers pipeline runs which task, and building it from a model's loaded components."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers

from wanserve.engine.registry import ModelSpec
from wanserve.engine.requests import GenerationRequest, TaskKind

_SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "FlowMatchEulerDiscreteScheduler",
}


def pipeline_class(spec: ModelSpec, request: GenerationRequest) -> type:
    """The diffusers pipeline class for this model and task."""
    task = request.task
    if task == TaskKind.ANIMATE:
        return diffusers.WanAnimatePipeline
    if spec.pipeline == "WanFunControlPipeline":
        from wanserve.engine.fun_control import WanFunControlPipeline

        return WanFunControlPipeline
    if task == TaskKind.VACE or spec.pipeline == "WanVACEPipeline":
        return diffusers.WanVACEPipeline
    if task == TaskKind.V2V:
        return diffusers.WanVideoToVideoPipeline
    if task in (TaskKind.I2V, TaskKind.FLF2V) or (task == TaskKind.TI2V and request.image is not None):
        return diffusers.WanImageToVideoPipeline
    return diffusers.WanPipeline


def build_pipeline(cls: type, spec: ModelSpec, components: dict[str, Any]):
    """Builds `cls` over the shared components; modules are shared, not copied, between a model's pipelines."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: module for name, module in components.items() if name in params}
    if "boundary_ratio" in params and spec.experts == 2:
        kwargs["boundary_ratio"] = spec.boundary_ratio
    if "expand_timesteps" in params and spec.vae == "wan2.2":
        # TI2V-5B conditions on the first frame by per-token timesteps, not by extra input channels.
        kwargs["expand_timesteps"] = True
    return cls(**kwargs)


def make_scheduler(base, solver: str, flow_shift: float):
    """A fresh scheduler for one generation (solver and shift are per request)."""
    cls = getattr(diffusers, _SCHEDULERS[solver])
    if solver == "euler":
        return cls(num_train_timesteps=1000, shift=flow_shift)
    config = dict(base.config) if base is not None and type(base).__name__ == cls.__name__ else {}
    config.update(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift
    )
    if solver == "dpm++":
        config.update(algorithm_type="dpmsolver++", solver_order=2)
    return cls.from_config(config)
