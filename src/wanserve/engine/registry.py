"""The model catalog: every model wanserve serves, with its official defaults and where its weights live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wanserve.engine import official as src
from wanserve.engine.requests import TaskKind
from wanserve.errors import UnknownModelError

T = TaskKind


@dataclass(frozen=True)
class HubIds:
    """Repositories that hold a model's weights. `None` where that layout is not published."""

    hf_diffusers: str | None = None
    hf_original: str | None = None
    modelscope_diffusers: str | None = None
    modelscope_original: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One servable model and its official defaults (from the Wan repositories' generation configs)."""

    name: str
    family: str
    """`wan2.1`, `wan2.2` or `tiny`."""
    tasks: tuple[TaskKind, ...]
    pipeline: str
    """The diffusers pipeline class that runs it."""
    num_inference_steps: int
    guidance_scale: float
    flow_shift: float
    fps: int
    num_frames: int
    sizes: tuple[tuple[int, int], ...]
    """Trained resolutions as (width, height)."""
    image_sizes: tuple[tuple[int, int], ...] = ()
    """Sizes of text-to-image (`t2i`) requests, the default first; empty when the model does no t2i."""
    solver: str = "unipc"
    guidance_scale_2: float | None = None
    """Guidance of the low-noise expert (two-expert A14B models)."""
    boundary_ratio: float | None = None
    """Expert switch point (two-expert A14B models)."""
    spatial_factor: int = 16
    """Width and height must be multiples of this (VAE stride x patch size)."""
    temporal_factor: int = 4
    """`num_frames` must be `temporal_factor * k + 1`."""
    max_frames: int = 161
    max_side: int = 1920
    hub: HubIds = field(default_factory=HubIds)
    experts: int = 1
    image_encoder: bool = False
    """Wan2.1 I2V / FLF2V / Animate use a CLIP image encoder."""
    vae: str = "wan2.1"
    """`wan2.1` (z 16, stride 8) or `wan2.2` (z 48, stride 16)."""
    tiny: bool = False
    """Built offline from seeded random weights; never a real model."""
    real_counterpart: str | None = None
    default_negative_prompt: str = ""
    """Used when a request gives no `negative_prompt` (the official Wan default for real models)."""
    default_prompt: str = ""
    """Used when a request gives no `prompt` (Wan2.2-Animate's official "视频中的人在做动作")."""
    official_sizes: tuple[tuple[int, int], ...] = ()
    """Sizes the official `generate.py` also accepts for this model, beyond the trained `sizes`."""
    any_size: bool = False
    """The official code takes any size (VideoX-Fun's predict scripts check none)."""
    shift_by_size: tuple[tuple[tuple[int, int], float], ...] = ()
    """Default `flow_shift` at these requested sizes (Wan2.1 I2V: 3.0 at 480p); `flow_shift` at any other."""
    image_sizing: str = ""
    """How the requested size of an image-conditioned task becomes the output size: `max_area` (Wan2.1 I2V/FLF2V,
    Wan2.2 I2V), `best_output_size` (Wan2.2 TI2V) or "" (no image task). See engine/sizes.py."""
    variant: str = ""
    """FlashVSR models (`pipeline` "FlashVSR"): `tiny`, `tiny-long` or `full` (models/flashvsr)."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each default comes from (engine/official.py): field name -> file and line, or "our choice" + why."""

    @property
    def default_size(self) -> tuple[int, int]:
        return self.sizes[0]

    def default_size_for(self, task: TaskKind) -> tuple[int, int]:
        """The default (width, height) of a request of `task` (t2i has its own sizes)."""
        return self.image_sizes[0] if task == TaskKind.T2I and self.image_sizes else self.sizes[0]

    @property
    def vae_stride(self) -> int:
        """Spatial downsampling of the VAE (8 for the Wan2.1 VAE, 16 for the Wan2.2 one)."""
        return 16 if self.vae == "wan2.2" else 8

    def default_flow_shift(self, width: int, height: int) -> float:
        """The default `flow_shift` of a request of this (requested) size."""
        return dict(self.shift_by_size).get((width, height), self.flow_shift)

    def accepts_size(self, width: int, height: int) -> bool:
        """Whether the official code runs this model at this size without being told to (trained or accepted)."""
        return self.any_size or (width, height) in self.sizes or (width, height) in self.official_sizes

    @property
    def default_task(self) -> TaskKind:
        return self.tasks[0]

    @property
    def random_weights(self) -> bool:
        return self.tiny


# The official negative prompt of the Wan repositories (Chinese, as the models were trained with it).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)

_480 = ((832, 480), (480, 832))
# Wan2.1 `t2i-14B` (the T2V-14B checkpoint, one frame): every size of its SIZE_CONFIGS, 1024x1024 as its README runs it.
_T2I_14B = ((1024, 1024), (1280, 720), (720, 1280), (832, 480), (480, 832))
_720 = ((1280, 720), (720, 1280))
_ALL = _480 + _720
_ALL_720_FIRST = _720 + _480


def _real(name: str, tasks: tuple[TaskKind, ...], pipeline: str, hub: HubIds, **kw) -> ModelSpec:
    """A real model: the Wan repositories' shared defaults (16 fps, 81 frames, UniPC, the official negative
    prompt), overridden per model."""
    defaults = dict(family=name[:6], fps=16, num_frames=81, default_negative_prompt=WAN_NEGATIVE_PROMPT)
    return ModelSpec(name=name, tasks=tasks, pipeline=pipeline, hub=hub, **{**defaults, **kw})


def _hub(diffusers: str | None, original: str, ms_diffusers: str | None = None, ms_original: str | None = None):
    """Hugging Face ids (diffusers, original layout); ModelScope mirrors the Wan-AI names where it has them."""
    return HubIds(diffusers, original, ms_diffusers, ms_original or original)


# Every default's source is in engine/official.py (file and line of the official code). Wan2.2's
# `sample_guide_scale` is (low, high) noise there; here `guidance_scale` is the high-noise expert's and
# `guidance_scale_2` the low-noise one's.
_I2V_SHIFT_480 = (((832, 480), 3.0), ((480, 832), 3.0))
_W21_I2V_NEGATIVE = "镜头晃动，" + WAN_NEGATIVE_PROMPT
_W21_FLF2V_NEGATIVE = "镜头切换，" + _W21_I2V_NEGATIVE
ANIMATE_PROMPT = "视频中的人在做动作"
# fmt: off
_REAL: tuple[ModelSpec, ...] = (
    _real("wan2.1-t2v-1.3b", (T.T2V, T.V2V, T.T2I), "WanPipeline",
          _hub("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
          num_inference_steps=50, guidance_scale=6.0, flow_shift=8.0, sizes=_480, image_sizes=_480,
          sources={**src.W21_T2V_1_3B, "default_size": src.W21_DEFAULT_480}),
    _real("wan2.1-t2v-14b", (T.T2V, T.V2V, T.T2I), "WanPipeline",
          _hub("Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.1-T2V-14B", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
          num_inference_steps=50, guidance_scale=5.0, flow_shift=5.0, sizes=_ALL_720_FIRST, image_sizes=_T2I_14B,
          sources=src.W21_COMMON),
    _real("wan2.1-i2v-14b-480p", (T.I2V,), "WanImageToVideoPipeline",
          _hub("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-480P",
               "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
          num_inference_steps=40, guidance_scale=5.0, flow_shift=5.0, shift_by_size=_I2V_SHIFT_480, sizes=_480,
          official_sizes=_720, image_sizing="max_area", image_encoder=True,
          default_negative_prompt=_W21_I2V_NEGATIVE, sources={**src.W21_I2V, "default_size": src.W21_DEFAULT_480}),
    _real("wan2.1-i2v-14b-720p", (T.I2V,), "WanImageToVideoPipeline",
          _hub("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", "Wan-AI/Wan2.1-I2V-14B-720P",
               "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
          num_inference_steps=40, guidance_scale=5.0, flow_shift=5.0, shift_by_size=_I2V_SHIFT_480, sizes=_720,
          official_sizes=_480, image_sizing="max_area", image_encoder=True,
          default_negative_prompt=_W21_I2V_NEGATIVE, sources=src.W21_I2V),
    _real("wan2.1-flf2v-14b-720p", (T.FLF2V,), "WanImageToVideoPipeline",
          _hub("Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", "Wan-AI/Wan2.1-FLF2V-14B-720P"),
          num_inference_steps=50, guidance_scale=5.0, flow_shift=16.0, sizes=_720, official_sizes=_480,
          image_sizing="max_area", image_encoder=True,
          default_negative_prompt=_W21_FLF2V_NEGATIVE, sources=src.W21_FLF2V),
    _real("wan2.2-t2v-a14b", (T.T2V,), "WanPipeline",
          _hub("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "Wan-AI/Wan2.2-T2V-A14B", "Wan-AI/Wan2.2-T2V-A14B-Diffusers"),
          num_inference_steps=40, guidance_scale=4.0, guidance_scale_2=3.0, boundary_ratio=0.875, flow_shift=12.0,
          sizes=_ALL_720_FIRST, experts=2, sources=src.W22_T2V_A14B),
    _real("wan2.2-i2v-a14b", (T.I2V,), "WanImageToVideoPipeline",
          _hub("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "Wan-AI/Wan2.2-I2V-A14B", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
          num_inference_steps=40, guidance_scale=3.5, guidance_scale_2=3.5, boundary_ratio=0.9, flow_shift=5.0,
          sizes=_ALL_720_FIRST, image_sizing="max_area", experts=2, sources=src.W22_I2V_A14B),
    _real("wan2.2-ti2v-5b", (T.TI2V, T.T2V, T.I2V), "WanPipeline",
          _hub("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "Wan-AI/Wan2.2-TI2V-5B", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
          num_inference_steps=50, guidance_scale=5.0, flow_shift=5.0, fps=24, num_frames=121,
          sizes=((1280, 704), (704, 1280)), spatial_factor=32, max_frames=241, image_sizing="best_output_size",
          vae="wan2.2", sources=src.W22_TI2V_5B),
    _real("wan2.2-animate-14b", (T.ANIMATE,), "WanAnimatePipeline",
          _hub("Wan-AI/Wan2.2-Animate-14B-Diffusers", "Wan-AI/Wan2.2-Animate-14B"),
          num_inference_steps=20, guidance_scale=1.0, flow_shift=5.0, fps=30, num_frames=77, sizes=_720,
          max_frames=1001, image_encoder=True, default_prompt=ANIMATE_PROMPT,
          sources=src.W22_ANIMATE),
    _real("wan2.1-vace-1.3b", (T.VACE, T.T2V), "WanVACEPipeline",
          _hub("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "Wan-AI/Wan2.1-VACE-1.3B"),
          num_inference_steps=50, guidance_scale=5.0, flow_shift=16.0, sizes=_480,
          sources={**src.W21_VACE, "default_size": src.W21_DEFAULT_480}),
    _real("wan2.1-vace-14b", (T.VACE, T.T2V), "WanVACEPipeline",
          _hub("Wan-AI/Wan2.1-VACE-14B-diffusers", "Wan-AI/Wan2.1-VACE-14B"),
          num_inference_steps=50, guidance_scale=5.0, flow_shift=16.0, sizes=_ALL_720_FIRST,
          sources=src.W21_VACE),
    # VideoX-Fun publishes only the original layout (high_noise_model/, low_noise_model/, Wan2.1_VAE.pth, T5).
    _real("wan2.2-vace-fun-a14b", (T.VACE, T.T2V), "WanVACEPipeline",
          _hub(None, "alibaba-pai/Wan2.2-VACE-Fun-A14B", None, "PAI/Wan2.2-VACE-Fun-A14B"),
          num_inference_steps=50, guidance_scale=5.0, guidance_scale_2=5.0, boundary_ratio=0.875, flow_shift=12.0,
          solver="euler", sizes=((480, 832), (832, 480)) + _720, any_size=True, experts=2,
          sources=src.FUN_VACE_A14B),
    # VideoX-Fun publishes it in the original layout only (a `WanModel` folder with control input channels).
    _real("wan2.2-fun-5b-control", (T.CONTROL,), "WanFunControlPipeline",
          _hub(None, "alibaba-pai/Wan2.2-Fun-5B-Control", None, "PAI/Wan2.2-Fun-5B-Control"),
          num_inference_steps=40, guidance_scale=6.0, flow_shift=5.0, solver="euler", fps=24, num_frames=121,
          sizes=((704, 1280), (1280, 704)), any_size=True, spatial_factor=32, max_frames=241, vae="wan2.2",
          sources=src.FUN_CONTROL_5B),
)
# fmt: on

# FlashVSR v1.1 (upscale): one official directory (`JunhaoZhuang/FlashVSR-v1.1`, or FLASHVSR_MODEL_PATH) serves the
# three variants; models/flashvsr has the files. Sizes and length follow the input video (engine/upscale.py).
_FLASHVSR_HUB = HubIds(hf_original="JunhaoZhuang/FlashVSR-v1.1")


def _flashvsr(name: str, variant: str, **kw) -> ModelSpec:
    defaults = dict(
        family="flashvsr", tasks=(T.UPSCALE,), pipeline="FlashVSR", num_inference_steps=1, guidance_scale=1.0,
        flow_shift=5.0, solver="euler", fps=30, num_frames=0, sizes=((1408, 768),), max_frames=100_000,
        max_side=8192, hub=_FLASHVSR_HUB, variant=variant, sources=src.FLASHVSR,
    )  # fmt: skip
    return ModelSpec(name=name, **{**defaults, **kw})


_FLASHVSR: tuple[ModelSpec, ...] = (
    _flashvsr("flashvsr-v1.1-tiny", "tiny"),
    _flashvsr("flashvsr-v1.1-tiny-long", "tiny-long"),
    _flashvsr("flashvsr-v1.1-full", "full"),
)
_REAL = _REAL + _FLASHVSR

# Tiny counterparts: 2 layers, 2 heads, seeded random weights, built offline. Sizes are small multiples of the
# spatial factor so a CPU runs them in well under a second.
_TINY_SIZES = ((64, 64), (96, 64), (64, 96))


def _tiny(name: str, real: str, tasks: tuple[TaskKind, ...], pipeline: str, **kw) -> ModelSpec:
    defaults = dict(
        family="tiny", num_inference_steps=2, guidance_scale=5.0, flow_shift=5.0, fps=8, num_frames=9,
        sizes=_TINY_SIZES, max_frames=33, max_side=256, tiny=True,
    )  # fmt: skip
    return ModelSpec(name=name, tasks=tasks, pipeline=pipeline, real_counterpart=real, **{**defaults, **kw})


_TINY_I2V_SHIFT = "our choice: 3.0, the counterpart's shift at its trained 480p sizes (tiny sizes are never 832x480)"
# fmt: off
_TINY: tuple[ModelSpec, ...] = (
    _tiny("tiny-t2v", "wan2.1-t2v-1.3b", (T.T2V, T.V2V, T.T2I), "WanPipeline", guidance_scale=6.0, flow_shift=8.0,
          image_sizes=_TINY_SIZES, sources=src.tiny_sources(src.W21_T2V_1_3B, "wan2.1-t2v-1.3b")),
    _tiny("tiny-t2v-moe", "wan2.2-t2v-a14b", (T.T2V,), "WanPipeline",
          guidance_scale=4.0, guidance_scale_2=3.0, boundary_ratio=0.875, flow_shift=12.0, experts=2,
          sources=src.tiny_sources(src.W22_T2V_A14B, "wan2.2-t2v-a14b")),
    _tiny("tiny-i2v", "wan2.1-i2v-14b-480p", (T.I2V,), "WanImageToVideoPipeline", image_encoder=True, flow_shift=3.0,
          image_sizing="max_area",
          sources=src.tiny_sources(src.W21_I2V, "wan2.1-i2v-14b-480p", flow_shift=_TINY_I2V_SHIFT)),
    _tiny("tiny-flf2v", "wan2.1-flf2v-14b-720p", (T.FLF2V, T.I2V), "WanImageToVideoPipeline", image_encoder=True,
          flow_shift=16.0, image_sizing="max_area",
          sources=src.tiny_sources(src.W21_FLF2V, "wan2.1-flf2v-14b-720p")),
    _tiny("tiny-ti2v", "wan2.2-ti2v-5b", (T.TI2V, T.T2V, T.I2V), "WanPipeline", vae="wan2.2", spatial_factor=32,
          fps=12, image_sizing="best_output_size", sources=src.tiny_sources(src.W22_TI2V_5B, "wan2.2-ti2v-5b")),
    _tiny("tiny-vace", "wan2.1-vace-1.3b", (T.VACE, T.T2V), "WanVACEPipeline", flow_shift=16.0,
          sources=src.tiny_sources(src.W21_VACE, "wan2.1-vace-1.3b")),
    _tiny("tiny-vace-moe", "wan2.2-vace-fun-a14b", (T.VACE, T.T2V), "WanVACEPipeline", guidance_scale=5.0,
          guidance_scale_2=5.0, boundary_ratio=0.875, flow_shift=12.0, solver="euler", experts=2,
          sources=src.tiny_sources(src.FUN_VACE_A14B, "wan2.2-vace-fun-a14b")),
    _tiny("tiny-fun-control", "wan2.2-fun-5b-control", (T.CONTROL,), "WanFunControlPipeline", guidance_scale=6.0,
          solver="euler", vae="wan2.2", spatial_factor=32, sources=src.tiny_sources(src.FUN_CONTROL_5B,
          "wan2.2-fun-5b-control")),
    _tiny("tiny-animate", "wan2.2-animate-14b", (T.ANIMATE,), "WanAnimatePipeline", image_encoder=True,
          guidance_scale=1.0, default_prompt=ANIMATE_PROMPT,
          sources=src.tiny_sources(src.W22_ANIMATE, "wan2.2-animate-14b",
                                   sizes=src.TINY_REASON + " (the pose video's size must be one of them)")),
    _flashvsr("tiny-flashvsr", "tiny-long", family="tiny", tiny=True, real_counterpart="flashvsr-v1.1-tiny-long",
              hub=HubIds(), sizes=((256, 128),), max_side=1024,
              sources=src.tiny_sources(src.FLASHVSR, "flashvsr-v1.1-tiny-long")),
)
# fmt: on

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _REAL + _TINY}


def get_spec(name: str) -> ModelSpec:
    """The spec for `name`; raises `UnknownModelError` naming the known models."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(name, list(CATALOG)) from None


def real_models() -> list[ModelSpec]:
    return list(_REAL)


def tiny_models() -> list[ModelSpec]:
    return list(_TINY)
