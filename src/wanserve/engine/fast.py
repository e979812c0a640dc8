"""Opt-in fast modes, chosen per job and removed after it: FP8 matmuls, FP8 attention and step caches.

Each changes what is computed (unlike `engine.speed`'s exact options), so every job records the modes it ran with
and the benchmark reports each mode's deviation from exact mode on the same seed. Nothing here reloads the model:

- **FP8 matmuls** (`fp8_gemm`): the Linear layers of the transformer blocks run as FP8 (e4m3) GEMMs with a scale per
  weight row and per activation row (`torch._scaled_mm`, the row-wise recipe torchao's
  `Float8DynamicActivationFloat8WeightConfig(PerRow())` uses). The FP8 copy of each weight is made at the first
  fast job and kept beside the bf16 weight, so a job can switch back to exact without a reload (torchao quantises in
  place, which would not allow that). Elsewhere than a CUDA GPU the same rounding is emulated (quantise, dequantise,
  matmul in the layer's dtype): the numbers match FP8, the speed does not, and the job records `emulated`.
- **FP8 attention** (`fp8_attention`): FlashAttention-3's FP8 forward with a scale per (sample, head) for q, k and v.
  Without FlashAttention-3 the same rounding is emulated around PyTorch's attention (recorded as `emulated`).
- **Step caches** (`step_cache`): `interval` (a fixed schedule: inside a window of steps the blocks run every n-th
  step, the others reuse the last residual; the Wan2.1 NPU service's attention cache maps onto it), `teacache` (TeaCache4Wan2.1: skip all blocks while the accumulated, polynomially
  rescaled change of the timestep modulation stays under the threshold, reusing the last residual; the published
  coefficients per model) and `firstblock` (diffusers' FirstBlockCache). Both are diffusers hooks on the blocks, kept
  per guidance branch (the pipeline's `cache_context("cond")` / `("uncond")`), so the two CFG branches never mix.
  `engine.speed` compiles each block's own `forward`, so the hooks stay outside the compiled code.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from wanserve.engine.parameters import SPEED_PRESETS, STEP_CACHES  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

FP8_MAX = 448.0
"""Largest finite float8_e4m3fn value."""

CACHEABLE_PIPELINES = frozenset({"WanPipeline", "WanImageToVideoPipeline"})
"""Pipelines whose transformer is a plain stack of blocks: VACE adds control hints and Animate face features between
blocks inside the model's own loop, so skipping the blocks would apply those twice."""

# TeaCache4Wan2.1's published polynomial coefficients (use_ret_steps=True: the indicator is the timestep
# modulation `e0`, the first 5 steps always run) and its fastest published thresholds.
TEACACHE_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "t2v-1.3b": (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
    "t2v-14b": (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
    "i2v-480p": (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
    "i2v-720p": (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
}
TEACACHE_THRESHOLDS = {"t2v-1.3b": 0.08, "t2v-14b": 0.2, "i2v-480p": 0.26, "i2v-720p": 0.3}
TEACACHE_MODELS = {
    "wan2.1-t2v-1.3b": "t2v-1.3b",
    "wan2.1-t2v-14b": "t2v-14b",
    "wan2.1-i2v-14b-480p": "i2v-480p",
    "wan2.1-i2v-14b-720p": "i2v-720p",
    "wan2.1-flf2v-14b-720p": "i2v-720p",
}
TEACACHE_RET_STEPS = 5
FIRSTBLOCK_THRESHOLD = 0.1


@dataclass(frozen=True)
class FastOptions:
    """The fast modes of one job (all off: exact)."""

    fp8_gemm: bool = False
    fp8_attention: bool = False
    step_cache: str = "none"
    step_cache_threshold: float = 0.0
    teacache_coefficients: tuple[float, ...] = ()
    schedule: tuple[int, int, int] | None = None
    """The `interval` cache's (start, end, interval)."""

    @property
    def exact(self) -> bool:
        return not (self.fp8_gemm or self.fp8_attention or self.step_cache != "none")


def teacache_key(model: str, real_counterpart: str | None = None) -> str | None:
    """The TeaCache coefficient set of `model` (a tiny model uses its real counterpart's), or None."""
    return TEACACHE_MODELS.get(model) or (TEACACHE_MODELS.get(real_counterpart) if real_counterpart else None)


def options_for(spec, request) -> FastOptions:
    """The fast modes a resolved request runs with, on the model of `spec`."""
    coefficients = ()
    if request.step_cache == "teacache":
        coefficients = TEACACHE_COEFFICIENTS[teacache_key(spec.name, spec.real_counterpart)]
    return FastOptions(
        fp8_gemm=request.fp8_gemm,
        fp8_attention=request.fp8_attention,
        step_cache=request.step_cache,
        step_cache_threshold=request.step_cache_threshold,
        teacache_coefficients=coefficients,
        schedule=(
            (request.step_cache_start, request.step_cache_end, request.step_cache_interval)
            if request.step_cache == "interval"
            else None
        ),
    )


# -- FP8 matmuls ------------------------------------------------------------------------------------------------


def quantize_fp8(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` as float8_e4m3fn with one float32 scale per slice over `dims` (kept as size-1 dims): x ~= q * scale.
    Plain tensor code, so inside a compiled block Inductor fuses it into the op that made `x`."""
    scale = x.abs().amax(dim=dims, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def _block_linears(transformer: torch.nn.Module) -> list[torch.nn.Linear]:
    """The blocks' Linear layers (a LoRA's own small `lora_A` / `lora_B` layers stay in bf16)."""
    return [
        m for name, m in transformer.blocks.named_modules()
        if isinstance(m, torch.nn.Linear) and "lora_" not in name
    ]  # fmt: skip


class Fp8Linear(torch.nn.Linear):
    """A block Linear while a job runs with FP8 matmuls (the class of the layer is swapped for the job, so every block
    keeps one compiled graph: Dynamo guards on the class, not on a per-layer function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xq, xs = quantize_fp8(x2, (1,))  # a scale per row: [rows, 1]
        if self._wanserve_fp8_native:
            out = torch._scaled_mm(
                xq, self._wanserve_w8.t(), scale_a=xs, scale_b=self._wanserve_w8_scale.t(),
                bias=self.bias, out_dtype=self.weight.dtype, use_fast_accum=True,
            )  # fmt: skip
        else:  # the same rounding, computed in the layer's dtype
            dtype = self.weight.dtype
            w = (self._wanserve_w8.float() * self._wanserve_w8_scale).to(dtype)
            out = torch.nn.functional.linear((xq.float() * xs).to(dtype), w, self.bias)
        return out.reshape(*shape[:-1], out.shape[-1])


def fp8_gemm_native(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` with row-wise scales runs here (CUDA, compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def enable_fp8_gemm(transformer: torch.nn.Module) -> str:
    """Routes the block Linears through FP8 GEMMs (making the FP8 weights on first use). Returns `native` or
    `emulated`."""
    native = fp8_gemm_native(transformer.device)
    for layer in _block_linears(transformer):
        if not hasattr(layer, "_wanserve_w8"):
            with torch.no_grad():
                w8, scale = quantize_fp8(layer.weight.detach(), (1,))
            # Buffers (not plain attributes): compiled code takes them as inputs, so all blocks share one graph.
            # Not persistent: they never reach a state dict.
            layer.register_buffer("_wanserve_w8", w8, persistent=False)
            layer.register_buffer("_wanserve_w8_scale", scale, persistent=False)
        # `_scaled_mm` needs both matrix sides in multiples of 16; other layers emulate.
        out_features, in_features = layer.weight.shape
        layer._wanserve_fp8_native = native and in_features % 16 == 0 and out_features % 16 == 0
        layer.__class__ = Fp8Linear
    return "native" if native else "emulated"


def disable_fp8_gemm(transformer: torch.nn.Module) -> None:
    """Back to the bf16 Linears (the FP8 copies stay for the next fast job)."""
    for layer in _block_linears(transformer):
        if type(layer) is Fp8Linear:
            layer.__class__ = torch.nn.Linear


# -- FP8 attention ----------------------------------------------------------------------------------------------

_FP8_ATTENTION = {"on": False}
"""Read by the attention backend `engine.speed` registers; set only for the duration of a job."""


def fp8_attention_enabled() -> bool:
    return _FP8_ATTENTION["on"]


def quantize_heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` [batch, seq, heads, dim] as float8_e4m3fn with one float32 scale per (batch, head), shaped [batch, heads]
    as FlashAttention-3's descale arguments are."""
    q, scale = quantize_fp8(x, (1, 3))
    return q, scale[:, 0, :, 0]


def emulate_fp8(x: torch.Tensor) -> torch.Tensor:
    """`x` [batch, seq, heads, dim] rounded as FP8 attention inputs are (quantised, dequantised)."""
    q, scale = quantize_fp8(x, (1, 3))
    return (q.float() * scale).to(x.dtype)


def fp8_attention_applies(query: torch.Tensor, key: torch.Tensor) -> bool:
    """FP8 attention runs only where it pays: self-attention (as many keys as queries, [batch, seq, heads, dim]).
    Cross-attention over the 512 text tokens (and the image tokens) costs little next to quantising its queries,
    so it stays in the model's dtype."""
    return fp8_attention_enabled() and query.shape[1] == key.shape[1]


# -- Step caches --------------------------------------------------------------------------------------------------


def _teacache_classes():
    from diffusers.hooks.hooks import BaseState, ModelHook

    class TeaCacheState(BaseState):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.previous_modulation: torch.Tensor | None = None
            self.accumulated = 0.0
            self.residual: torch.Tensor | None = None
            self.head_input: torch.Tensor | None = None
            self.compute = True

        def reset(self) -> None:
            self.__init__()

    class TeaCacheHeadHook(ModelHook):
        """On the first block: decides for this forward whether the blocks run, from the timestep modulation."""

        _is_stateful = True

        def __init__(self, state_manager, threshold: float, coefficients: tuple[float, ...], steps: int, schedule):
            super().__init__()
            self.state_manager, self.threshold, self.steps = state_manager, threshold, steps
            self.coefficients, self.schedule = coefficients, schedule
            self.skipped = 0
            """Forwards whose blocks were skipped (over both guidance branches): the pipeline resets the states."""

        @torch.compiler.disable
        def _decide(self, state, modulation: torch.Tensor) -> bool:
            step = state.calls
            state.calls += 1
            if self.schedule is not None:  # the `interval` cache: a fixed schedule, no indicator
                start, end, interval = self.schedule
                return state.residual is None or not start <= step < end or (step - start) % interval == 0
            previous, state.previous_modulation = state.previous_modulation, modulation.detach().clone()
            if step < TEACACHE_RET_STEPS or step >= self.steps - 1 or previous is None or state.residual is None:
                state.accumulated = 0.0
                return True
            change = ((modulation - previous).abs().mean() / previous.abs().mean().clamp(min=1e-12)).item()
            rescaled = sum(c * change ** (len(self.coefficients) - 1 - i) for i, c in enumerate(self.coefficients))
            state.accumulated += rescaled
            if state.accumulated < self.threshold:
                return False
            state.accumulated = 0.0
            return True

        def new_forward(self, module, hidden_states, encoder_hidden_states, temb, rotary_emb, *args, **kwargs):
            state = self.state_manager.get_state()
            state.compute = self._decide(state, temb)
            if not state.compute:
                self.skipped += 1
                return hidden_states + state.residual
            state.head_input = hidden_states
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb, rotary_emb, *args, **kwargs)

        def reset_state(self, module):
            self.state_manager.reset()
            return module

    class TeaCachePassHook(ModelHook):
        """On every other block: passes the input through when the head skipped; the last block keeps the residual."""

        def __init__(self, state_manager, is_tail: bool):
            super().__init__()
            self.state_manager, self.is_tail = state_manager, is_tail

        def new_forward(self, module, hidden_states, *args, **kwargs):
            state = self.state_manager.get_state()
            if not state.compute:
                return hidden_states
            output = self.fn_ref.original_forward(hidden_states, *args, **kwargs)
            if self.is_tail:
                state.residual = output - state.head_input
                state.head_input = None
            return output

    return TeaCacheState, TeaCacheHeadHook, TeaCachePassHook


TEACACHE_HEAD, TEACACHE_BLOCK = "wanserve_teacache_head", "wanserve_teacache_block"


def apply_teacache(
    transformer: torch.nn.Module, threshold: float, coefficients: tuple[float, ...], steps: int, schedule=None
):
    """TeaCache hooks on `transformer.blocks` (with `schedule` (start, end, interval): the `interval` cache, which
    skips on a fixed schedule instead); returns the head hook (its `skipped` counts skipped forwards)."""
    from diffusers.hooks.hooks import HookRegistry, StateManager

    state_cls, head_cls, pass_cls = _teacache_classes()
    manager = StateManager(state_cls, (), {})
    blocks = list(transformer.blocks)
    head = head_cls(manager, threshold, coefficients, steps, schedule)
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(head, TEACACHE_HEAD)
    for index, block in enumerate(blocks[1:], start=1):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            pass_cls(manager, is_tail=index == len(blocks) - 1), TEACACHE_BLOCK
        )
    # The model's `cache_context` finds the hooks' state through a cached list of registries.
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return head


def remove_teacache(transformer: torch.nn.Module) -> None:
    from diffusers.hooks.hooks import HookRegistry

    for index, block in enumerate(transformer.blocks):
        registry = HookRegistry.check_if_exists_or_initialize(block)
        registry.remove_hook(TEACACHE_HEAD if index == 0 else TEACACHE_BLOCK, recurse=False)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()


# -- Per job ------------------------------------------------------------------------------------------------------


def _transformers(components: dict[str, Any]) -> list[torch.nn.Module]:
    return [components[n] for n in ("transformer", "transformer_2") if isinstance(components.get(n), torch.nn.Module)]


@contextlib.contextmanager
def fast_modes(
    components: dict[str, Any], options: FastOptions, steps: int, in_group: bool = False
) -> Iterator[dict[str, str]]:
    """Applies `options` to the model's transformers for one generation and removes them afterwards. Yields the
    record of what ran (filled in further when the generation ends: `step_cache_skipped`)."""
    record: dict[str, str] = {}
    if options.exact:
        yield record
        return
    transformers = _transformers(components)
    managers = []
    previous_backends: list[tuple[Any, Any]] = []
    try:
        if options.fp8_gemm:
            for module in transformers:
                record["fp8_gemm"] = enable_fp8_gemm(module)
        if options.fp8_attention:
            from wanserve.engine.speed import fa3_available, route_attention_to_wanserve

            for module in transformers:
                previous_backends += route_attention_to_wanserve(module)
            _FP8_ATTENTION["on"] = True
            record["fp8_attention"] = (
                "native" if fa3_available() and transformers[0].device.type == "cuda" else "emulated"
            )
        if options.step_cache in ("teacache", "interval"):
            for module in transformers:
                managers.append(
                    apply_teacache(
                        module, options.step_cache_threshold, options.teacache_coefficients, steps, options.schedule
                    )
                )
            if options.step_cache == "teacache":
                record["step_cache"] = f"teacache (threshold {options.step_cache_threshold:g})"
            else:
                start, end, interval = options.schedule
                record["step_cache"] = f"interval (every {interval} steps from step {start} to {end})"
        elif options.step_cache == "firstblock":
            from diffusers.hooks import FirstBlockCacheConfig

            from wanserve.engine.parallel import coordinate_step_cache

            for module in transformers:
                module.enable_cache(FirstBlockCacheConfig(threshold=options.step_cache_threshold))
                if in_group:  # one decision for all ranks (never from a process group this engine is not in)
                    coordinate_step_cache(module)
            record["step_cache"] = f"firstblock (threshold {options.step_cache_threshold:g})"
        yield record
        if managers:
            skipped = sum(head.skipped for head in managers)
            record["step_cache_skipped_forwards"] = str(skipped)
    finally:
        _FP8_ATTENTION["on"] = False
        for processor, backend in previous_backends:
            processor._attention_backend = backend
        for module in transformers:
            if options.fp8_gemm:
                disable_fp8_gemm(module)
            if options.step_cache in ("teacache", "interval"):
                remove_teacache(module)
            elif options.step_cache == "firstblock" and module.is_cache_enabled:
                module.disable_cache()
