"""The one table of generation parameters: which task kinds each applies to, its type, its help text, its
`wanserve generate` flag, and where it reaches the pipeline.

The native API's `JobCreate` and its multipart OpenAPI body are generated from this table; `GenerationRequest`,
the CLI flags and the OpenAI route's pass-through fields are checked against it by tests
(tests/engine/test_parameters.py), so a field cannot be added in one place and forgotten in another.
docs/parameters.md shows the same table for users.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanserve.engine.requests import TaskKind

T = TaskKind

TYPES = ("text", "int", "float", "bool", "choice", "media", "media_list", "lora_list", "object")


@dataclass(frozen=True)
class Parameter:
    """One user-facing generation parameter."""

    name: str
    """The field name in `GenerationRequest`, the native API and the job's `params`."""
    type: str
    """One of `TYPES`: `media` is a file (upload, `data:` URL or http(s) URL), `media_list` a list of them,
    `lora_list` a list of `{"name" | "path", "strength"}` objects (a JSON string in a multipart form), `object` a
    JSON object (its JSON text in a multipart form)."""
    help: str
    reaches: str
    """Where the value takes effect (shown in docs/parameters.md)."""
    tasks: frozenset[TaskKind] | None = None
    """Task kinds that use it; None: every task kind. Given for any other task, it is refused (422)."""
    two_expert_only: bool = False
    """Used only by two-expert (Wan2.2 A14B) models; refused for one-expert models."""
    cli: str | None = None
    """The `wanserve generate` flag that sets it (`--size` sets width and height together)."""
    choices: tuple[str, ...] = ()

    @property
    def task_names(self) -> str:
        """The task kinds that use it, in `TaskKind` order ("all" for every one)."""
        if self.tasks is None:
            return "all"
        return ", ".join(t.value for t in TaskKind if t in self.tasks)

    def applies_to(self, task: TaskKind, experts: int) -> bool:
        """Whether a request of `task` on a model with `experts` experts uses this parameter."""
        if self.two_expert_only and experts < 2:
            return False
        return self.tasks is None or task in self.tasks


_IMAGE_TASKS = frozenset({T.I2V, T.FLF2V, T.TI2V, T.ANIMATE})
_GENERATIVE = frozenset(TaskKind) - {T.UPSCALE}
"""Every task that samples a Wan DiT from a prompt (upscale runs FlashVSR on a given video)."""
_VIDEO_OUTPUT_TASKS = _GENERATIVE - {T.T2I}
"""Every generation whose output is an MP4 (t2i writes a PNG; upscale keeps its input's frame rate)."""
_G = _GENERATIVE
_EXPERT_TASKS = frozenset({T.T2V, T.I2V, T.FLF2V, T.VACE})
"""The tasks whose diffusers pipelines take `guidance_scale_2` and a `boundary_ratio` (not v2v, not Animate)."""

SOLVERS = ("unipc", "dpm++", "euler")
SPEED_PRESETS = ("exact", "fast", "fastest", "distilled")
DISTILLED_DEFAULTS = {"num_inference_steps": 4, "guidance_scale": 1.0, "guidance_scale_2": 1.0, "flow_shift": 5.0,
                      "solver": "euler"}  # fmt: skip
"""The `distilled` preset's sampling defaults: LightX2V's published configuration for its Wan2.1 4-step
distillation LoRAs (configs/distill/wan21/wan_t2v_distill_lora_4step_cfg.json: `infer_steps` 4, `enable_cfg`
false, `sample_shift` 5, flow-matching Euler steps). Fields given in the request win."""
STEP_CACHES = ("none", "teacache", "firstblock", "interval")
_CACHE_TASKS = frozenset({T.T2V, T.T2I, T.V2V, T.I2V, T.FLF2V, T.TI2V})
"""Tasks whose transformer is a plain stack of blocks a step cache can skip (not VACE's control hints nor Animate's
face features, which the model adds between blocks)."""
ANIMATE_MODES = ("animate", "replace")
_MEDIA = "An uploaded file (multipart), a `data:` URL, or an http(s) URL."

# fmt: off
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("task", "choice", "What to generate; inferred from the inputs when omitted.",
              "picks the diffusers pipeline (engine/pipelines.py `pipeline_class`) and its inputs",
              cli="--task", choices=tuple(t.value for t in TaskKind)),
    Parameter("prompt", "text", "What the video shows.", "`pipe.encode_prompt(prompt=...)`", tasks=_G,
              cli="--prompt"),
    Parameter("negative_prompt", "text",
              "What to avoid (default: the model's official negative prompt). Needs `guidance_scale` > 1.",
              "`pipe.encode_prompt` (encoded once per model and kept), used by classifier-free guidance",
              tasks=_G, cli="--negative-prompt"),
    Parameter("width", "int",
              "Output width in pixels; for i2v, flf2v and ti2v with an image, width x height is an area and the "
              "output keeps the image's aspect ratio. Animate: the pose video's, not given.",
              "`pipe(width=...)`, resolved at submission (engine/sizes.py)", tasks=_G, cli="--size"),
    Parameter("height", "int", "Output height in pixels (see `width`).",
              "`pipe(height=...)`, resolved at submission (engine/sizes.py)", tasks=_G, cli="--size"),
    Parameter("allow_untrained_size", "bool",
              "Run a size outside the model's trained sizes (without it such a size is refused, listing them).",
              "the size check of engine/sizes.py `check_size`", tasks=_G, cli="--allow-untrained-size"),
    Parameter("num_frames", "int",
              "Output frames, 4k+1 (for example 81); 1 for t2i. Animate: the pose video's length, not given.",
              "`pipe(num_frames=...)`; v2v: the input video is cut to this many frames; Animate: the whole pose video; t2i: 1",
              tasks=_G, cli="--frames"),
    Parameter("num_inference_steps", "int", "Denoising steps (v2v runs `strength` x steps of them).",
              "`pipe(num_inference_steps=...)`", tasks=_G, cli="--steps"),
    Parameter("guidance_scale", "float",
              "Classifier-free guidance scale (of the high-noise expert on two-expert models); 1 turns it off.",
              "`pipe(guidance_scale=...)`", tasks=_G, cli="--guidance"),
    Parameter("guidance_scale_2", "float", "Guidance of the low-noise expert (two-expert Wan2.2 A14B models).",
              "`pipe(guidance_scale_2=...)`", tasks=_EXPERT_TASKS, two_expert_only=True, cli="--guidance-2"),
    Parameter("boundary_ratio", "float",
              "Two-expert models: the high-noise expert runs while t >= boundary_ratio x 1000, then the low-noise one.",
              "the pipeline's `boundary_ratio` config, set for each generation",
              tasks=_EXPERT_TASKS, two_expert_only=True, cli="--boundary-ratio"),
    Parameter("flow_shift", "float", "Flow-matching shift of the sampler's noise schedule.",
              "the scheduler's `flow_shift` (`shift` for euler), engine/pipelines.py `make_scheduler`",
              tasks=_G, cli="--shift"),
    Parameter("solver", "choice", "Sampler: unipc, dpm++ (2nd order) or euler (flow-match Euler).",
              "the scheduler class, engine/pipelines.py `make_scheduler`", tasks=_G, cli="--solver",
              choices=SOLVERS),
    Parameter("seed", "int", "0..2^32-1; random when omitted (the job shows the one used).",
              "`pipe(generator=torch.Generator('cpu').manual_seed(seed))`", cli="--seed"),
    Parameter("fps", "int", "Frames per second of the output MP4 (does not change the frames).",
              "the MP4's frame rate (media `encode_mp4`)", tasks=_VIDEO_OUTPUT_TASKS, cli="--fps"),
    Parameter("crf", "int", "H.264 quality of the output MP4, 0 (lossless) .. 51.",
              "the MP4's H.264 CRF (media `encode_mp4`)", tasks=_VIDEO_OUTPUT_TASKS, cli="--crf"),
    Parameter("strength", "float", "v2v: share of the input video replaced by noise, (0, 1].",
              "`WanVideoToVideoPipeline(strength=...)`", tasks=frozenset({T.V2V}), cli="--strength"),
    Parameter("image", "media", f"First frame (i2v, flf2v, ti2v) or the reference picture (animate). {_MEDIA}",
              "`pipe(image=...)`", tasks=_IMAGE_TASKS, cli="--image"),
    Parameter("last_image", "media", f"Last frame (flf2v). {_MEDIA}", "`pipe(last_image=...)`",
              tasks=frozenset({T.FLF2V}), cli="--last-image"),
    Parameter("video", "media",
              f"Input video (v2v, upscale) or control video (vace; control: edges, depth or pose, as prepared). "
              f"{_MEDIA}",
              "`pipe(video=...)`; upscale: streamed through FlashVSR; control: "
              "`WanFunControlPipeline(control_video=...)`",
              tasks=frozenset({T.V2V, T.VACE, T.UPSCALE, T.CONTROL}), cli="--video"),
    Parameter("mask", "media",
              f"vace: mask video (white = generate); animate replace mode: the person mask video. {_MEDIA}",
              "`WanVACEPipeline(mask=...)`, `WanAnimatePipeline(mask_video=...)`",
              tasks=frozenset({T.VACE, T.ANIMATE}), cli="--mask"),
    Parameter("reference_images", "media_list", f"vace: reference images. {_MEDIA}",
              "`WanVACEPipeline(reference_images=...)`", tasks=frozenset({T.VACE}), cli="--reference-image"),
    Parameter("animate_mode", "choice", "animate: `animate` (move the reference) or `replace` (put it into the video).",
              "`WanAnimatePipeline(mode=...)`", tasks=frozenset({T.ANIMATE}), cli="--animate-mode",
              choices=ANIMATE_MODES),
    Parameter("pose_video", "media", f"animate: the preprocessed pose video. {_MEDIA}",
              "`WanAnimatePipeline(pose_video=...)`", tasks=frozenset({T.ANIMATE}), cli="--pose-video"),
    Parameter("face_video", "media", f"animate: the preprocessed face crops video. {_MEDIA}",
              "`WanAnimatePipeline(face_video=...)`", tasks=frozenset({T.ANIMATE}), cli="--face-video"),
    Parameter("background_video", "media", f"animate replace mode: the background video. {_MEDIA}",
              "`WanAnimatePipeline(background_video=...)`", tasks=frozenset({T.ANIMATE}), cli="--background-video"),
    Parameter("conditioning_scale", "float", "vace: weight of the control signal, 0..10 (default 1, as the official "
              "`context_scale`).", "`WanVACEPipeline(conditioning_scale=...)`", tasks=frozenset({T.VACE}),
              cli="--conditioning-scale"),
    Parameter("refert_num", "int", "animate: frames each segment takes from the previous one, 1 or 5 (default 1).",
              "`WanAnimatePipeline(prev_segment_conditioning_frames=...)`", tasks=frozenset({T.ANIMATE}),
              cli="--refert-num"),
    Parameter("clip_len", "int",
              "animate: frames of one segment, 4k+1 (default: the model's, 77 for Wan2.2-Animate-14B); the output "
              "is still as long as the pose video, made in segments of this length.",
              "`WanAnimatePipeline(segment_frame_length=...)` (the official `clip_len`)", tasks=frozenset({T.ANIMATE}),
              cli="--clip-len"),
    Parameter("speed", "choice",
              "Speed mode: `exact` (default; within bf16 rounding of stock diffusers), `fast` (FP8 matmuls and FP8 "
              "attention), `fastest` (fast plus a step cache where the task allows one) or `distilled` (exact "
              "kernels with a step-distilled model or LoRA's sampling: 4 steps, guidance 1 (CFG off), shift 5, "
              "euler; each can still be given). The job records the modes it ran with; docs/performance.md shows "
              "each mode's speed and deviation.",
              "engine/fast.py `fast_modes`, for this job only (no reload)", tasks=_G, cli="--speed", choices=SPEED_PRESETS),
    Parameter("fp8_gemm", "bool", "FP8 matmuls in the transformer blocks (overrides the `speed` preset).",
              "engine/fast.py `enable_fp8_gemm` (`torch._scaled_mm`, row-wise scales)", tasks=_G, cli="--fp8-gemm"),
    Parameter("fp8_attention", "bool", "FP8 attention, FlashAttention-3's FP8 kernel (overrides the `speed` preset).",
              "engine/speed.py `wanserve_attention`", tasks=_G, cli="--fp8-attention"),
    Parameter("step_cache", "choice",
              "Skip the transformer blocks on steps whose input barely changed, reusing the last residual: "
              "`teacache` (Wan2.1 models, TeaCache's published coefficients), `firstblock` (any model), `interval` "
              "(a fixed schedule: run the blocks every `step_cache_interval` steps between `step_cache_start` and "
              "`step_cache_end`, as the Wan2.1 NPU service's attention cache) or `none` (overrides the `speed` preset).",
              "engine/fast.py step-cache hooks on the blocks", tasks=_CACHE_TASKS, cli="--step-cache",
              choices=STEP_CACHES),
    Parameter("step_cache_threshold", "float",
              "Step-cache threshold, (0, 1]: higher skips more steps. Default: TeaCache's published fastest value for "
              "the model, 0.1 for `firstblock`.",
              "the cache hooks' threshold (engine/fast.py)", tasks=_CACHE_TASKS, cli="--step-cache-threshold"),
    Parameter("step_cache_start", "int",
              "`interval` cache: the first step that may be skipped (default 5; earlier steps always run).",
              "the interval cache's schedule (engine/fast.py)", tasks=_CACHE_TASKS, cli="--step-cache-start"),
    Parameter("step_cache_end", "int",
              "`interval` cache: steps from this one on always run (default: none, the window runs to the end).",
              "the interval cache's schedule (engine/fast.py)", tasks=_CACHE_TASKS, cli="--step-cache-end"),
    Parameter("step_cache_interval", "int",
              "`interval` cache: inside the window the blocks run every this many steps, >= 2 (default 2).",
              "the interval cache's schedule (engine/fast.py)", tasks=_CACHE_TASKS, cli="--step-cache-interval"),
    Parameter("max_sequence_length", "int", "Prompt tokens kept by the text encoder, 1..512.",
              "`pipe.encode_prompt(max_sequence_length=...)`", tasks=_G, cli="--max-sequence-length"),
    Parameter("loras", "lora_list",
              'LoRAs applied to the transformer for this job: a list of {"name": a file in the LoRA directory, or '
              '"path": a file under an allowed directory; "strength": its weight, default 1, 0 = off}. Diffusers, '
              "original Wan trainer (ComfyUI) and kohya/musubi key formats load.",
              "diffusers' `WanLoraLoaderMixin` loads each file into the transformer(s) once; each job selects its "
              "own with `set_adapters` (engine/lora.py)", tasks=_G, cli="--lora"),
    Parameter("scale", "int", "upscale: 2 or 4 (default 4, what FlashVSR was trained for); the result is centre-cropped "
              "to multiples of 128.", "bicubic input upscale before FlashVSR (engine/upscale.py)",
              tasks=frozenset({T.UPSCALE}), cli="--scale"),
    Parameter("input_width", "int", "upscale: resize the input to this width first, height following its aspect "
              "(ffmpeg `scale=W:-2`).", "the input decoder's resize (media/video.py `iter_frames`)",
              tasks=frozenset({T.UPSCALE}), cli="--input-width"),
    Parameter("quality", "int", "upscale: export quality 1..10 (default 6; H.264 CRF = (1 - quality/10) x 51).",
              "the output MP4's CRF (media/chunked.py)", tasks=frozenset({T.UPSCALE}), cli="--quality"),
    Parameter("upscale", "object", "Also upscale the result with FlashVSR, as stage `upscaling` of the same job: "
              '`{"scale": 2}` (keys `scale`, `model`, `quality`, `input_width`).',
              "a second part of the job (worker/loop.py), delivered as its video", tasks=_VIDEO_OUTPUT_TASKS,
              cli="--upscale"),
)
# fmt: on

BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}
MEDIA_FIELDS: tuple[str, ...] = tuple(p.name for p in PARAMETERS if p.type in ("media", "media_list"))


def applicable(task: TaskKind, experts: int) -> tuple[str, ...]:
    """Names of the parameters a request of `task` on a model with `experts` experts uses, in table order."""
    return tuple(p.name for p in PARAMETERS if p.applies_to(task, experts))


def not_applicable_reason(name: str, task: TaskKind, model: str, experts: int) -> str:
    """Why parameter `name` is refused for this task and model (for the 422 message)."""
    param = BY_NAME[name]
    if param.two_expert_only and experts < 2:
        return f"`{name}` applies to two-expert (A14B) models only; {model} has one"
    return f"`{name}` is not used by task {task.value!r} (it applies to: {param.task_names}); remove it"
