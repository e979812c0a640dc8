"""`GET /v1/models`: what this server serves, as a form needs it (tasks, inputs, trained sizes, defaults).

A task's parameters come from the parameter table (`engine.parameters`: type, help, choices) and their defaults
from the validation code itself (a request with only the task's required inputs is resolved, and every field it
fills in is listed), so this listing cannot drift from what `POST /v1/jobs` accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from wanserve.api.deps import OwnerDep, RuntimeDep
from wanserve.api.schemas.models import ModelPublic, ModelsPublic, ParameterPublic, SizePublic, TaskPublic
from wanserve.engine.parameters import BY_NAME, MEDIA_FIELDS
from wanserve.engine.registry import ModelSpec, get_spec
from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.engine.validation import field_applies, request_params, resolve_request, task_inputs
from wanserve.errors import InvalidRequestError

router = APIRouter(prefix="/v1/models", tags=["models"])

_TYPES = {
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "text": "string",
    "choice": "string",
    "object": "object",
}
_NOT_PARAMETERS = {"model", "task", "loras", *MEDIA_FIELDS}
"""Not form parameters: media are inputs, `loras` a list of objects (docs/lora.md), not one value with a default."""
_IMAGE_TASKS = {"t2i"}
"""Tasks whose content is one image rather than an MP4."""


@router.get("", response_model=ModelsPublic)
def list_models(runtime: RuntimeDep, owner: OwnerDep) -> ModelsPublic:
    """The served models, the default (used when a job names none) first: tasks with their media inputs and
    parameters (with defaults), trained sizes, size and frame rules, and whether the weights are random."""
    data = []
    for index, name in enumerate(runtime.models):
        random = runtime.pool.is_random(name) if runtime.pool is not None else get_spec(name).random_weights
        data.append(model_public(get_spec(name), default=index == 0, random_weights=random))
    return ModelsPublic(data=data)


def model_public(spec: ModelSpec, *, default: bool, random_weights: bool) -> ModelPublic:
    """The listing of one model."""
    return ModelPublic(
        id=spec.name,
        family=spec.family,
        default=default,
        random_weights=random_weights,
        default_task=spec.default_task.value,
        tasks=[_task_public(spec, task) for task in spec.tasks],
        sizes=[SizePublic(width=w, height=h) for w, h in spec.sizes],
        size_multiple=spec.spatial_factor,
        max_side=spec.max_side,
        frames_multiple=spec.temporal_factor,
        max_frames=spec.max_frames,
        fps=spec.fps,
    )


def _task_public(spec: ModelSpec, task: TaskKind) -> TaskPublic:
    required, accepted = task_inputs(task)
    resolved = request_params(_resolve_minimal(spec, task, set(required)))
    # Animate's size and length are the pose video's: shown in its jobs' params, never given.
    parameters = [
        _parameter(name, value)
        for name, value in resolved.items()
        if _is_parameter(name, value) and field_applies(name, task)
    ]
    return TaskPublic(
        task=task.value,
        output="image" if task.value in _IMAGE_TASKS else "video",
        required_inputs=sorted(required),
        optional_inputs=sorted(accepted - required),
        parameters=parameters,
    )


def _resolve_minimal(spec: ModelSpec, task: TaskKind, inputs: set[str]) -> GenerationRequest:
    """Resolves a request with only `task`, a prompt, a seed and placeholder media: every default gets filled in.
    A media field the validation still asks for (such as one of a pair) is added and the request tried again."""
    for _ in range(len(MEDIA_FIELDS) + 1):
        params: dict[str, Any] = {"task": task.value, "seed": 0}
        if BY_NAME["prompt"].applies_to(task, spec.experts):  # upscale takes no prompt
            params["prompt"] = "-"
        params.update({name: ["-"] if name == "reference_images" else "-" for name in inputs})
        try:
            return resolve_request(spec.name, params, probe_inputs=False)  # placeholders: no size to fit
        except InvalidRequestError as exc:
            if exc.field not in MEDIA_FIELDS or exc.field in inputs:
                raise
            inputs.add(exc.field)
    raise AssertionError(f"no set of media inputs resolves task {task.value!r} of {spec.name}")


def _is_parameter(name: str, value: Any) -> bool:
    # None: the field does not apply to this model (e.g. `guidance_scale_2` of a one-expert model).
    return name not in _NOT_PARAMETERS and value is not None


def _parameter(name: str, value: Any) -> ParameterPublic:
    param = BY_NAME[name]
    # The seed is random when omitted, and the prompt resolved above is a placeholder: neither has a default.
    default = None if name == "seed" else "" if name == "prompt" else value
    return ParameterPublic(
        name=name,
        type=_TYPES[param.type],
        default=default,
        choices=list(param.choices) or (["false", "true"] if param.type == "bool" else None),
        description=param.help,
    )
