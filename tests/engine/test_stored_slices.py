"""Stored slices of the tiny models' output for every task kind, and one test per user-facing numeric parameter
showing that changing it changes the output (as diffusers' pipeline tests pin `expected_slice`).

The engine's frames are compared, never a decoded MP4 (the H.264 encode is not bit-reproducible). Frames are uint8;
a value may move by 1 where float reordering (another CPU, another thread count) crosses a rounding boundary, so
slices match within 1 and a parameter "changes the output" only where some value moves by more than that.
Every request names its parameters explicitly, so a change of a catalog default does not move these slices.

To re-pin after an intended change of the numerics: `python tests/engine/test_stored_slices.py` prints the table.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from PIL import Image

from tests.engine.test_engine import _with_media as with_media
from wanserve.engine.validation import resolve_request

TOLERANCE = 1
"""Largest difference (uint8 steps) a slice may show: one rounding step of float reordering."""

COMMON = {
    "prompt": "a cat walks on the grass",
    "negative_prompt": "blurry",
    "seed": 42,
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "num_inference_steps": 2,
    "guidance_scale": 5.0,
    "flow_shift": 5.0,
    "solver": "unipc",
    "max_sequence_length": 64,
}
ANIMATE = {"image": "png", "pose_video": "video", "face_video": "video2", "guidance_scale": 1.0, "negative_prompt": ""}
# The two-expert model with 4 steps at shift 1 (t = 999, 750, 500, 250): both experts run at boundary 0.875.
MOE = {
    "num_inference_steps": 4,
    "flow_shift": 1.0,
    "guidance_scale": 4.0,
    "guidance_scale_2": 3.0,
    "boundary_ratio": 0.875,
}

CASES: dict[str, tuple[str, dict]] = {
    "t2v": ("tiny-t2v", {}),
    "t2i": ("tiny-t2v", {"task": "t2i", "num_frames": 1}),
    "t2v-two-expert": ("tiny-t2v-moe", MOE),
    "i2v": ("tiny-i2v", {"image": "png"}),
    "flf2v": ("tiny-flf2v", {"image": "png", "last_image": "png2"}),
    "ti2v-text": ("tiny-ti2v", {"task": "ti2v"}),
    "ti2v-image": ("tiny-ti2v", {"task": "ti2v", "image": "png"}),
    "v2v": ("tiny-t2v", {"video": "video", "strength": 0.6, "num_inference_steps": 4}),
    "vace": ("tiny-vace", {"video": "video", "mask": "mask", "reference_images": ["png2"]}),
    "vace-two-expert": ("tiny-vace-moe", {**MOE, "video": "video", "mask": "mask", "reference_images": ["png2"]}),
    "fun-control": ("tiny-fun-control", {"video": "video", "guidance_scale": 6.0, "solver": "euler"}),
    "animate-animate": ("tiny-animate", {**ANIMATE, "animate_mode": "animate"}),
    "animate-replace": (
        "tiny-animate",
        {**ANIMATE, "animate_mode": "replace", "background_video": "video2", "mask": "mask"},
    ),
    # Fast modes (engine/fast.py): FP8 rounding emulated on the CPU; TeaCache skips steps 6-7 of 8.
    "t2v-fast": ("tiny-t2v", {"speed": "fast"}),
    "t2v-teacache": ("tiny-t2v", {"num_inference_steps": 8, "step_cache": "teacache"}),
    "t2v-firstblock": ("tiny-t2v", {"num_inference_steps": 8, "step_cache": "firstblock", "step_cache_threshold": 0.5}),
    "t2v-interval": ("tiny-t2v", {"num_inference_steps": 8, "step_cache": "interval", "step_cache_interval": 3}),
}

# Frames 0 and -1 (the same frame for t2i), rows 30-31, columns 30-31, RGB: 24 values per case.
# fmt: off
EXPECTED: dict[str, list[int]] = {
    "t2v": [138, 117, 128, 137, 119, 127, 139, 116, 131, 139, 116, 130, 48, 43, 85, 40, 102, 65, 20, 137, 111, 64, 122, 72],
    "t2i": [141, 111, 129, 150, 104, 129, 141, 111, 127, 149, 100, 132, 141, 111, 129, 150, 104, 129, 141, 111, 127, 149, 100, 132],
    "t2v-two-expert": [123, 120, 134, 121, 120, 137, 123, 119, 129, 122, 119, 130, 112, 81, 103, 96, 80, 101, 104, 83, 99, 142, 99, 120],
    "i2v": [137, 113, 128, 136, 111, 130, 136, 115, 129, 135, 113, 131, 99, 92, 185, 135, 69, 177, 75, 137, 145, 76, 133, 138],
    "flf2v": [135, 116, 128, 133, 115, 130, 135, 116, 129, 134, 116, 130, 106, 87, 156, 128, 84, 167, 66, 142, 149, 107, 142, 140],
    "ti2v-text": [118, 145, 101, 134, 147, 108, 132, 110, 132, 90, 115, 96, 130, 138, 63, 143, 132, 101, 82, 78, 72, 92, 127, 111],
    "ti2v-image": [100, 141, 105, 106, 143, 119, 123, 101, 124, 107, 126, 118, 63, 148, 35, 140, 105, 152, 128, 114, 149, 149, 123, 13],
    "v2v": [139, 118, 126, 135, 121, 126, 142, 117, 133, 139, 119, 129, 81, 31, 51, 59, 84, 64, 38, 123, 95, 72, 125, 48],
    "vace": [125, 123, 135, 127, 124, 134, 127, 120, 131, 129, 120, 130, 86, 67, 81, 110, 96, 109, 97, 101, 126, 89, 100, 83],
    "vace-two-expert": [125, 123, 136, 127, 125, 134, 128, 120, 133, 129, 120, 130, 96, 79, 124, 91, 108, 114, 122, 70, 112, 64, 102, 92],
    "fun-control": [93, 144, 108, 117, 153, 94, 122, 92, 117, 98, 122, 99, 88, 162, 120, 163, 154, 133, 97, 111, 161, 156, 129, 18],
    "animate-animate": [117, 123, 141, 118, 125, 140, 118, 122, 133, 122, 120, 133, 115, 83, 111, 123, 113, 122, 129, 85, 104, 94, 126, 62],
    "animate-replace": [120, 119, 131, 115, 127, 140, 120, 125, 128, 117, 125, 132, 133, 62, 96, 129, 63, 85, 85, 65, 131, 96, 87, 69],
    "t2v-fast": [138, 117, 128, 137, 119, 127, 139, 116, 131, 139, 116, 130, 80, 120, 104, 82, 85, 54, 60, 115, 100, 33, 104, 111],
    "t2v-teacache": [138, 114, 131, 142, 113, 129, 139, 114, 132, 142, 112, 132, 107, 85, 94, 136, 121, 80, 66, 49, 101, 66, 161, 68],
    "t2v-interval": [138, 114, 131, 142, 113, 129, 139, 114, 132, 142, 112, 132, 105, 83, 100, 139, 119, 83, 70, 45, 99, 69, 162, 72],
    "t2v-firstblock": [138, 114, 131, 141, 113, 129, 139, 114, 132, 142, 112, 132, 114, 81, 98, 137, 120, 78, 60, 57, 101, 71, 156, 65],
}
# fmt: on


@cache
def _media() -> dict[str, bytes]:
    """Inputs made from seeded noise. Videos are lossless H.264 (crf 0), so the frames the engine reads back are
    the same on every run even though the encoder's bytes are not."""
    import tempfile

    from wanserve.media.video import encode_mp4

    def png(seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    def mp4(frames: np.ndarray) -> bytes:
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/input.mp4"
            encode_mp4(frames, path, fps=8, crf=0)
            with open(path, "rb") as file:
                return file.read()

    rng = np.random.default_rng(5)
    mask = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    mask[:, :, 32:] = 255
    return {
        "png": png(1),
        "png2": png(2),
        "video": mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)),
        "video2": mp4(rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)),
        "mask": mp4(mask),
    }


def generate(engine, model: str, **params) -> np.ndarray:
    """The engine's uint8 frames [F, H, W, 3] for `model` with `COMMON` overridden by `params`."""
    merged = {**COMMON, **params}
    if model == "tiny-animate":  # Animate's size and length are the pose video's (64x64, 9 frames), never given
        merged = {k: v for k, v in merged.items() if k not in ("width", "height", "num_frames")}
    request = resolve_request(model, with_media(merged, _media()))
    return engine.generate(request).frames


def slice_of(frames: np.ndarray) -> list[int]:
    return frames[[0, -1], 30:32, 30:32, :].astype(int).ravel().tolist()


@pytest.mark.parametrize("case", list(CASES))
def test_stored_slice(engine, case):
    model, params = CASES[case]
    frames = generate(engine, model, **params)
    assert frames.shape == (params.get("num_frames", 9), 64, 64, 3) and frames.dtype == np.uint8
    actual = np.array(slice_of(frames))
    expected = np.array(EXPECTED[case])
    assert np.abs(actual - expected).max() <= TOLERANCE, f"{case}: {actual.tolist()}"


def _moves(a: np.ndarray, b: np.ndarray) -> int:
    """How many values differ by more than float reordering could explain."""
    return int((np.abs(a.astype(int) - b.astype(int)) > TOLERANCE).sum())


# (model, base parameters, parameter, changed value)
PARAMETER_CASES = {
    "boundary_ratio": ("tiny-t2v-moe", MOE, "boundary_ratio", 0.3),
    "guidance_scale_2": ("tiny-t2v-moe", MOE, "guidance_scale_2", 12.0),
    "flow_shift": ("tiny-t2v", {}, "flow_shift", 2.0),
    "strength": ("tiny-t2v", CASES["v2v"][1], "strength", 0.9),
    "guidance_scale": ("tiny-t2v", {}, "guidance_scale", 2.0),
    "num_inference_steps": ("tiny-t2v", {}, "num_inference_steps", 3),
    "seed": ("tiny-t2v", {}, "seed", 43),
    "max_sequence_length": ("tiny-t2v", {}, "max_sequence_length", 16),
    "solver": ("tiny-t2v", {}, "solver", "euler"),
    "negative_prompt": ("tiny-t2v", {}, "negative_prompt", "dark, noisy"),
    "speed": ("tiny-t2v", {}, "speed", "fast"),
    "fp8_gemm": ("tiny-t2v", {}, "fp8_gemm", True),
    "fp8_attention": ("tiny-t2v", {}, "fp8_attention", True),
    "step_cache": ("tiny-t2v", {"num_inference_steps": 8}, "step_cache", "teacache"),
    "step_cache_threshold": (
        "tiny-t2v",
        {"num_inference_steps": 8, "step_cache": "firstblock"},
        "step_cache_threshold",
        0.5,
    ),
    "conditioning_scale": ("tiny-vace", CASES["vace"][1], "conditioning_scale", 0.3),
    "boundary_ratio (vace)": ("tiny-vace-moe", CASES["vace-two-expert"][1], "boundary_ratio", 0.3),
}


@pytest.mark.parametrize("name", list(PARAMETER_CASES))
def test_changing_parameter_changes_output(engine, name):
    model, base, field, value = PARAMETER_CASES[name]
    before = generate(engine, model, **base)
    after = generate(engine, model, **{**base, field: value})
    assert _moves(before, after) > 0, f"`{field}` {base.get(field, COMMON.get(field))!r} -> {value!r} changed nothing"


def test_boundary_ratio_zero_runs_only_the_high_noise_expert(engine):
    """Boundary 0 puts every step (t >= 0) on the high-noise expert, so `guidance_scale_2` then has no effect: proof that
    the two parameters act through the expert switch, not by accident."""
    base = {**MOE, "boundary_ratio": 0.0}
    before = generate(engine, "tiny-t2v-moe", **base)
    after = generate(engine, "tiny-t2v-moe", **{**base, "guidance_scale_2": 12.0})
    assert _moves(before, after) == 0


if __name__ == "__main__":
    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine

    shared = Engine(EngineConfig(device="cpu"))
    for case, (model, params) in CASES.items():
        print(f'    "{case}": {slice_of(generate(shared, model, **params))},')
