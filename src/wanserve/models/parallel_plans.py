"""Context-parallel plans (`_cp_plan`s) for the Wan transformers diffusers ships without one: where the sequence is
split and where it is gathered. diffusers' `ContextParallelSplitHook` / `ContextParallelGatherHook` apply them.

- VACE: the VACE blocks run first, on the same tokens as the main blocks (the first one adds the video tokens to
  the control tokens), so both their inputs are split as the main blocks' are; the hints they return are then
  already split like the hidden states they are added to.
- Animate: the face adapter after every `inject_face_latents_blocks`-th block attends from each frame's tokens to
  that frame's motion vector, so it needs whole frames: the sequence is gathered before it and split again for the
  next block.
"""

from __future__ import annotations

from typing import Any


def context_parallel_plans(model: Any) -> list[dict[str, Any]]:
    """The plans for `model`, applied in order: its own `_cp_plan` (the plain Wan transformer), else wanserve's by
    class. A list, because a module may need both a split hook on its input and a gather hook on its output, and
    diffusers takes one entry per module in a plan."""
    name = type(model).__name__
    if "VACE" in name:
        return [vace_plan()]
    if "Animate" in name:
        return animate_plans(len(model.blocks), model.config.inject_face_latents_blocks)
    plan = getattr(model, "_cp_plan", None)
    if plan is None:
        raise ValueError(f"{name} has no context-parallel plan")
    return [plan]


def _split(expected_dims: int, split_output: bool = False):
    from diffusers.models._modeling_parallel import ContextParallelInput

    return ContextParallelInput(split_dim=1, expected_dims=expected_dims, split_output=split_output)


def _gather():
    from diffusers.models._modeling_parallel import ContextParallelOutput

    return ContextParallelOutput(gather_dim=1, expected_dims=3)


def vace_plan() -> dict[str, Any]:
    """`WanVACETransformer3DModel`."""
    return {
        "rope": {0: _split(4, True), 1: _split(4, True)},
        "vace_blocks.0": {"hidden_states": _split(3), "control_hidden_states": _split(3)},
        "blocks.0": {"hidden_states": _split(3)},
        "proj_out": _gather(),
    }


def animate_plans(num_blocks: int, inject_every: int) -> list[dict[str, Any]]:
    """`WanAnimateTransformer3DModel` with `num_blocks` blocks and a face adapter after every `inject_every`-th:
    (splits, gathers). Each injecting block gathers its output; the block after it splits its input again."""
    splits: dict[str, Any] = {
        "rope": {0: _split(4, True), 1: _split(4, True)},
        "blocks.0": {"hidden_states": _split(3)},
    }
    gathers: dict[str, Any] = {}
    for index in range(0, num_blocks, inject_every):
        gathers[f"blocks.{index}"] = _gather()
        if index + 1 < num_blocks:
            splits[f"blocks.{index + 1}"] = {"hidden_states": _split(3)}
    if (num_blocks - 1) % inject_every:
        gathers["proj_out"] = _gather()
    return [splits, gathers]
