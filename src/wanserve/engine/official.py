"""Where each catalog default comes from: file and line of the official code, or "our choice" with the reason.

The official code is read at fixed commits (Wan-Video/Wan2.1 9737cba, Wan-Video/Wan2.2 42bf4cf,
aigc-apps/VideoX-Fun 804a425). The catalog (engine/registry.py) attaches these to every `ModelSpec`, `wanserve
models --sources` prints them, and docs/models.md holds the same table (a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping

W21 = "Wan2.1@9737cba"
W22 = "Wan2.2@42bf4cf"
FUN = "VideoX-Fun@804a425"

# The fields a source is given for, in the order tables show them.
SOURCE_FIELDS = (
    "num_inference_steps",
    "guidance_scale",
    "guidance_scale_2",
    "boundary_ratio",
    "flow_shift",
    "solver",
    "fps",
    "num_frames",
    "sizes",
    "default_size",
    "image_sizing",
    "negative_prompt",
    "prompt",
    "conditioning_scale",
    "refert_num",
)

# -- Wan2.1 generate.py and configs ------------------------------------------------------------------------------
_W21_STEPS = f"{W21} generate.py:70-74 (50; 40 when the task name has 'i2v')"
_W21_GUIDE = f"{W21} generate.py:241-245 (`--sample_guide_scale` 5.0)"
_W21_SOLVER = f"{W21} generate.py:228-233 (`--sample_solver` unipc)"
_W21_FPS = f"{W21} wan/configs/shared_config.py:18"
_W21_FRAMES = f"{W21} generate.py:83-85 (81)"
_W21_NEG = f"{W21} wan/configs/shared_config.py:19"
_W21_SIZES = f"{W21} wan/configs/__init__.py:45-53 (`SUPPORTED_SIZES`); README.md:107-113 (trained resolutions)"
_W21_DEFAULT_SIZE = f"{W21} generate.py:110-115 (`--size` 1280*720)"
W21_DEFAULT_480 = (
    "our choice: 832x480, the first trained size (generate.py's default `--size` 1280*720, lines 110-115, is not "
    "a trained size of this model)"
)
_W21_MAX_AREA = f"{W21} wan/image2video.py:184-193 (`max_area`, aspect ratio of the image)"
_W21_VACE_SCALE = f"{W21} wan/vace.py:302 (`context_scale=1.0`)"

W21_COMMON: Mapping[str, str] = {
    "num_inference_steps": _W21_STEPS,
    "guidance_scale": _W21_GUIDE,
    "flow_shift": f"{W21} generate.py:76-81 (5.0)",
    "solver": _W21_SOLVER,
    "fps": _W21_FPS,
    "num_frames": _W21_FRAMES,
    "sizes": _W21_SIZES,
    "default_size": _W21_DEFAULT_SIZE,
    "negative_prompt": _W21_NEG,
}
W21_T2V_1_3B: Mapping[str, str] = {
    **W21_COMMON,
    "guidance_scale": f"{W21} README.md:177-180 (recommends `--sample_guide_scale 6`); "
    "gradio/t2v_1.3B_singleGPU.py:106-111 (6.0)",
    "flow_shift": f"{W21} README.md:177-180 (`--sample_shift` 8 to 12); gradio/t2v_1.3B_singleGPU.py:113-118 (8.0)",
}
W21_I2V: Mapping[str, str] = {
    **W21_COMMON,
    "flow_shift": f"{W21} generate.py:76-79 (3.0 at 832*480 / 480*832, else 5.0, whichever checkpoint)",
    "image_sizing": _W21_MAX_AREA,
    "negative_prompt": f"{W21} wan/configs/wan_i2v_14B.py:11 ('镜头晃动，' + the base prompt)",
}
W21_FLF2V: Mapping[str, str] = {
    **W21_COMMON,
    "flow_shift": f"{W21} generate.py:80-81 (16 for flf2v)",
    "image_sizing": f"{W21} wan/first_last_frame2video.py:194-203 (`max_area`, aspect ratio of the first frame)",
    "negative_prompt": f"{W21} wan/configs/__init__.py:18 ('镜头切换，' + the I2V prompt)",
}
W21_VACE: Mapping[str, str] = {
    **W21_COMMON,
    "flow_shift": f"{W21} generate.py:80-81 (16 for vace)",
    "conditioning_scale": _W21_VACE_SCALE,
}

# -- Wan2.2 generate.py and configs ------------------------------------------------------------------------------
_W22_SOLVER = f"{W22} generate.py:201-206 (`--sample_solver` unipc)"
_W22_NEG = f"{W22} wan/configs/shared_config.py:19"
_W22_FPS = f"{W22} wan/configs/shared_config.py:18"
_W22_FRAMES = f"{W22} wan/configs/shared_config.py:20"
_W22_SIZES = f"{W22} wan/configs/__init__.py:43-50 (`SUPPORTED_SIZES`)"
_W22_DEFAULT_SIZE = f"{W22} generate.py:115-121 (`--size` 1280*720)"


def _w22(config: str, lines: str, guide_note: str) -> dict[str, str]:
    """Wan2.2 A14B: steps, guidance (low, high noise), boundary and shift in one config's `# inference` lines."""
    where = f"{W22} wan/configs/{config}:{lines}"
    return {
        "num_inference_steps": where,
        "guidance_scale": f"{where} ({guide_note})",
        "guidance_scale_2": f"{where} ({guide_note})",
        "boundary_ratio": where,
        "flow_shift": where,
        "solver": _W22_SOLVER,
        "fps": _W22_FPS,
        "num_frames": _W22_FRAMES,
        "sizes": _W22_SIZES,
        "default_size": _W22_DEFAULT_SIZE,
        "negative_prompt": _W22_NEG,
    }


W22_T2V_A14B = _w22("wan_t2v_A14B.py", "34-37", "`sample_guide_scale` (3.0, 4.0) = (low, high) noise")
W22_I2V_A14B = {
    **_w22("wan_i2v_A14B.py", "34-37", "`sample_guide_scale` (3.5, 3.5) = (low, high) noise"),
    "image_sizing": f"{W22} wan/image2video.py:262-271 (`max_area`, aspect ratio of the image)",
}
W22_TI2V_5B: Mapping[str, str] = {
    "num_inference_steps": f"{W22} wan/configs/wan_ti2v_5B.py:34",
    "guidance_scale": f"{W22} wan/configs/wan_ti2v_5B.py:35",
    "flow_shift": f"{W22} wan/configs/wan_ti2v_5B.py:33",
    "solver": _W22_SOLVER,
    "fps": f"{W22} wan/configs/wan_ti2v_5B.py:32",
    "num_frames": f"{W22} wan/configs/wan_ti2v_5B.py:36",
    "sizes": _W22_SIZES,
    "default_size": f"{W22} README.md:228 (`--size 1280*704`)",
    "image_sizing": f"{W22} wan/textimage2video.py:462-473 and wan/utils/utils.py:202-225 (`best_output_size`, "
    "resize and centre crop)",
    "negative_prompt": _W22_NEG,
}
W22_ANIMATE: Mapping[str, str] = {
    "num_inference_steps": f"{W22} wan/configs/wan_animate_14B.py:36",
    "guidance_scale": f"{W22} wan/configs/wan_animate_14B.py:37",
    "flow_shift": f"{W22} wan/configs/wan_animate_14B.py:35",
    "solver": _W22_SOLVER,
    "fps": f"{W22} wan/configs/wan_animate_14B.py:39",
    "num_frames": f"{W22} wan/configs/wan_animate_14B.py:38 (the segment length); wan/animate.py:380-383, 647 "
    "(the output is as long as the pose video, run in whole segments)",
    "sizes": f"{W22} wan/configs/__init__.py:49 (720p only); wan/animate.py:279, 393 (size of the pose video)",
    "default_size": f"{W22} wan/animate.py:279, 393 (the pose video's size)",
    "negative_prompt": _W22_NEG,
    "prompt": f"{W22} wan/configs/wan_animate_14B.py:40; wan/animate.py:359-360",
    "refert_num": f"{W22} wan/animate.py:302, 351 (1; 1 or 5); README.md:336 (`--refert_num 1`)",
}

# -- VideoX-Fun Wan2.2-VACE-Fun-A14B ------------------------------------------------------------------------------
_FUN_PREDICT = f"{FUN} examples/wan2.2_vace_fun/predict_v2v_control.py"
FUN_VACE_A14B: Mapping[str, str] = {
    "num_inference_steps": f"{_FUN_PREDICT}:143",
    "guidance_scale": f"{_FUN_PREDICT}:141 (one `guidance_scale` for both experts)",
    "guidance_scale_2": f"{_FUN_PREDICT}:141 (one `guidance_scale` for both experts)",
    "boundary_ratio": f"{FUN} config/wan2.2/wan_civitai_t2v.yaml:7",
    "flow_shift": f"{FUN} config/wan2.2/wan_civitai_t2v.yaml:35 (the 'Flow' scheduler's shift)",
    "solver": f"{_FUN_PREDICT}:96, 231-240 ('Flow': FlowMatchEulerDiscreteScheduler)",
    "fps": f"{_FUN_PREDICT}:114",
    "num_frames": f"{_FUN_PREDICT}:113",
    "sizes": f"{_FUN_PREDICT}:112 (any `sample_size`; the predict scripts check none)",
    "default_size": f"{_FUN_PREDICT}:112, 356-357 (`sample_size` [832, 480] is height, width)",
    "negative_prompt": f"{_FUN_PREDICT}:135",
    "conditioning_scale": f"{_FUN_PREDICT}:126 (`vace_context_scale`)",
}

# -- VideoX-Fun Wan2.2-Fun-5B-Control ----------------------------------------------------------------------------
_FUN_CONTROL_5B = f"{FUN} examples/wan2.2_fun/predict_v2v_control_5b.py"
FUN_CONTROL_5B: Mapping[str, str] = {
    "num_inference_steps": f"{_FUN_CONTROL_5B}:139",
    "guidance_scale": f"{_FUN_CONTROL_5B}:137",
    "flow_shift": f"{_FUN_CONTROL_5B}:100; config/wan2.2/wan_civitai_5b.yaml:33",
    "solver": f"{_FUN_CONTROL_5B}:97, 225-231 ('Flow': FlowMatchEulerDiscreteScheduler)",
    "fps": f"{_FUN_CONTROL_5B}:117",
    "num_frames": f"{_FUN_CONTROL_5B}:116",
    "sizes": f"{_FUN_CONTROL_5B}:115 (any `sample_size`; the predict scripts check none)",
    "default_size": f"{_FUN_CONTROL_5B}:115, 350-351 (`sample_size` [1280, 704] is height, width)",
    "negative_prompt": f"{_FUN_CONTROL_5B}:131",
}

# -- Tiny models --------------------------------------------------------------------------------------------------
_FV = "FlashVSR@ccac0ac examples/WanVSR/infer_flashvsr_tiny.py"
FLASHVSR = {
    "num_inference_steps": f"{_FV}: `num_inference_steps=1` (one step per chunk, t = 1000)",
    "guidance_scale": f"{_FV}: `cfg_scale=1.0` (the pipeline asserts it)",
    "fps": f"{_FV}: the input video's frame rate",
    "num_frames": f"{_FV} `prepare_input_tensor`: input + 4 copies of the last frame, cut to 8n+1, minus 4",
    "sizes": f"{_FV} `compute_scaled_and_target_dims`: input x `scale`, centre-cropped to multiples of 128",
}
"""FlashVSR v1.1 (OpenImagingLab/FlashVSR, read 2026-12-02)."""

TINY_REASON = "our choice: tiny test model, sized for fast CPU tests"
_TINY_OURS = ("num_inference_steps", "num_frames", "fps", "sizes", "default_size")


def tiny_sources(real: Mapping[str, str], counterpart: str, **overrides: str) -> dict[str, str]:
    """A tiny model's sources: steps, frames, fps and sizes are ours (fast tests), no negative prompt (short
    prompts keep tests small), every other default as its real counterpart unless `overrides` says why not."""
    out = {key: TINY_REASON if key in _TINY_OURS else f"as {counterpart}" for key in real}
    if "negative_prompt" in out:
        out["negative_prompt"] = "our choice: none, to keep tiny-model tests short"
    return {**out, **overrides}


# -- Tables (`wanserve models --sources`, docs/models.md) ---------------------------------------------------------
def _sizes(sizes) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes)


def _negative_text(text: str) -> str:
    from wanserve.engine.registry import WAN_NEGATIVE_PROMPT

    if not text:
        return "none"
    if text == WAN_NEGATIVE_PROMPT:
        return "the official one (色调艳丽，过曝，…)"
    if text.endswith(WAN_NEGATIVE_PROMPT):
        return f"'{text[: -len(WAN_NEGATIVE_PROMPT)]}' + the official one"
    return text


def default_values(spec) -> dict[str, str]:
    """Each default of `spec` that has a source, as text (field -> value)."""
    shift = f"{spec.flow_shift:g}"
    if spec.shift_by_size:
        at = _sizes(size for size, _ in spec.shift_by_size)
        shift = f"{spec.shift_by_size[0][1]:g} at {at}; else {spec.flow_shift:g}"
    sizes = _sizes(spec.sizes)
    if spec.any_size:
        sizes += " (any size runs)"
    elif spec.official_sizes:
        sizes += f" (the official code also runs {_sizes(spec.official_sizes)})"
    values = {
        "num_inference_steps": str(spec.num_inference_steps),
        "guidance_scale": f"{spec.guidance_scale:g}",
        "flow_shift": shift,
        "solver": spec.solver,
        "fps": str(spec.fps),
        "num_frames": str(spec.num_frames),
        "sizes": sizes,
        "default_size": _sizes([spec.default_size]),
        "negative_prompt": _negative_text(spec.default_negative_prompt),
    }
    if spec.experts == 2:
        values.update(guidance_scale_2=f"{spec.guidance_scale_2:g}", boundary_ratio=f"{spec.boundary_ratio:g}")
    if spec.image_sizing:
        values["image_sizing"] = f"`{spec.image_sizing}` (the size is an area)"
    if spec.default_prompt:
        values["prompt"] = spec.default_prompt
    if spec.pipeline == "FlashVSR":
        return {
            "num_inference_steps": "1 per chunk of 8 frames",
            "guidance_scale": "1 (no guidance)",
            "fps": "the input's",
            "num_frames": "the input's, less up to 7 at the end",
            "sizes": "the input's x `scale` (2 or 4), cropped to multiples of 128",
        }
    if spec.pipeline == "WanVACEPipeline":
        values["conditioning_scale"] = "1"
    if spec.pipeline == "WanAnimatePipeline":
        values["num_frames"] += " a segment; the output is as long as the pose video"
        values["default_size"] = "the pose video's"
        values["refert_num"] = "1"
    return {key: values[key] for key in SOURCE_FIELDS if key in values}


def default_rows(spec) -> list[tuple[str, str, str]]:
    """(field, default, source) for every default of `spec`."""
    return [(key, value, spec.sources.get(key, "")) for key, value in default_values(spec).items()]


def defaults_markdown(specs) -> str:
    """The table of docs/models.md: every model, each default and its source."""
    lines = ["| model | parameter | default | source |", "|---|---|---|---|"]
    for spec in specs:
        for key, value, source in default_rows(spec):
            lines.append(f"| {spec.name} | `{key}` | {value} | {source} |")
    return "\n".join(lines) + "\n"
