"""End-to-end generation with the tiny models: every task kind, determinism, progress and stopping.

The engine returns frames; determinism is asserted on them (the H.264 encode is not bit-reproducible, see
tests/media/test_outputs.py for the writer)."""

from __future__ import annotations

import numpy as np
import pytest

from wanserve.engine.requests import Stage
from wanserve.engine.validation import resolve_request
from wanserve.errors import GenerationCancelled


def _generate(engine, model, events=None, should_stop=None, **params):
    params.setdefault("prompt", "a cat")
    params.setdefault("seed", 7)
    request = resolve_request(model, params)
    return engine.generate(request, on_progress=events.append if events is not None else None, should_stop=should_stop)


CASES = {
    "t2v": ("tiny-t2v", {}),
    "t2v-moe": ("tiny-t2v-moe", {}),
    "i2v": ("tiny-i2v", {"image": "png"}),
    "flf2v": ("tiny-flf2v", {"image": "png", "last_image": "png2"}),
    "ti2v-text": ("tiny-ti2v", {}),
    "ti2v-image": ("tiny-ti2v", {"image": "png"}),
    "v2v": ("tiny-t2v", {"video": "video", "strength": 0.5, "num_inference_steps": 4}),
    "vace": ("tiny-vace", {"video": "video", "mask": "mask", "reference_images": ["png"]}),
    "animate": ("tiny-animate", {"image": "png", "pose_video": "video", "face_video": "video"}),
}


@pytest.fixture
def media(png_bytes, png_bytes_2, input_video, mask_video):
    return {"png": png_bytes, "png2": png_bytes_2, "video": input_video, "mask": mask_video}


def _with_media(params: dict, media: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, list):
            out[key] = [media[v] for v in value]
        elif isinstance(value, str) and value in media:
            out[key] = media[value]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_generate_task_kind_returns_frames(engine, media, case):
    model, params = CASES[case]
    events = []
    result = _generate(engine, model, events, **_with_media(params, media))
    assert result.frames.shape == (9, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 0  # not a blank video
    assert (result.num_frames, result.width, result.height) == (9, 64, 64)
    assert result.random_weights is True
    stages = [e.stage for e in events]
    assert stages[0] == Stage.LOADING and stages[-1] == Stage.DECODING
    steps = [e.step for e in events if e.stage == Stage.DENOISING and e.step > 0]
    assert steps == list(range(1, len(steps) + 1)) and steps


def test_generate_same_seed_gives_identical_frames(engine):
    first = _generate(engine, "tiny-t2v", seed=123)
    second = _generate(engine, "tiny-t2v", seed=123)
    other = _generate(engine, "tiny-t2v", seed=124)
    a, b, c = (r.frames for r in (first, second, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generate_reports_stages_in_order(engine):
    events = []
    _generate(engine, "tiny-t2v", events, num_inference_steps=3)
    stages = []
    for event in events:
        if not stages or stages[-1] != event.stage:
            stages.append(event.stage)
    assert stages == [
        Stage.LOADING,
        Stage.ENCODING_TEXT,
        Stage.DENOISING,
        Stage.DECODING,
    ]  # a text-only task has no image stage
    denoise = [(e.step, e.steps) for e in events if e.stage == Stage.DENOISING]
    assert denoise == [(0, 3), (1, 3), (2, 3), (3, 3)]

    # Before denoising the events say 0 of 3 (loading included); after it, 3 of 3 (a finished job keeps its counts).
    assert [(e.step, e.steps) for e in events if e.stage in (Stage.LOADING, Stage.ENCODING_TEXT)] == [(0, 3), (0, 3)]
    assert [(e.step, e.steps) for e in events if e.stage == Stage.DECODING] == [(3, 3)]
    assert all(
        e.step_time_s is not None and e.step_time_s >= 0 for e in events if e.stage == Stage.DENOISING and e.step
    )


def test_generate_with_image_reports_encoding_image_stage(engine, png_bytes):
    events = []
    _generate(engine, "tiny-i2v", events, image=png_bytes, num_inference_steps=1)
    stages = list(dict.fromkeys(e.stage for e in events))
    assert stages[:4] == [Stage.LOADING, Stage.ENCODING_TEXT, Stage.ENCODING_IMAGE, Stage.DENOISING]


def test_generate_stop_during_step_2_stops_before_step_3(engine):
    events = []

    def should_stop() -> bool:
        return any(e.stage == Stage.DENOISING and e.step == 2 for e in events)

    with pytest.raises(GenerationCancelled):
        _generate(engine, "tiny-t2v", events, should_stop=should_stop, num_inference_steps=4)
    steps = [e.step for e in events if e.stage == Stage.DENOISING]
    assert max(steps) == 2
    assert Stage.DECODING not in {e.stage for e in events}


def test_generate_moe_uses_both_experts(engine):
    """With boundary 0.875 and 4 steps, the high-noise expert runs first and the low-noise expert after."""
    loaded = engine.load("tiny-t2v-moe")
    calls = []
    hooks = [
        loaded.components[name].register_forward_pre_hook(lambda m, a, name=name: calls.append(name))
        for name in ("transformer", "transformer_2")
    ]
    try:
        _generate(engine, "tiny-t2v-moe", num_inference_steps=4)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls[0] == "transformer" and calls[-1] == "transformer_2"


def test_generate_animate_counts_steps_over_segments(engine, tmp_path, png_bytes, tmp_path_factory):
    """A 17-frame pose video in segments of 9 (1 conditioning frame) is 2 segments: 2 x 2 steps, counted without
    restarting; the output is as long as the pose video."""
    from wanserve.media.video import encode_mp4

    rng = np.random.default_rng(5)
    pose = tmp_path_factory.mktemp("animate") / "pose.mp4"
    encode_mp4(rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8), str(pose), fps=8)
    events = []
    result = _generate(
        engine, "tiny-animate", events, image=png_bytes, pose_video=str(pose), face_video=str(pose),
    )  # fmt: skip
    steps = [(e.step, e.steps, e.segment, e.segments) for e in events if e.stage == Stage.DENOISING]
    assert steps == [(0, 4, 0, 2), (1, 4, 1, 2), (2, 4, 1, 2), (3, 4, 2, 2), (4, 4, 2, 2)]  # step, then its segment
    assert result.frames.shape[0] == 17


def test_generate_text_encoder_on_cpu_matches_default(engine):
    """`text_encoder_on_cpu` (T5_CPU) encodes on the CPU; on a CPU-only machine the frames must be identical."""
    from wanserve.engine.config import EngineConfig, MemoryConfig
    from wanserve.engine.engine import Engine

    t5_cpu = Engine(EngineConfig(device="cpu", memory=MemoryConfig(text_encoder_on_cpu=True, vae_tiling=True)))
    first = _generate(engine, "tiny-t2v", seed=5)
    second = _generate(t5_cpu, "tiny-t2v", seed=5)
    assert np.array_equal(first.frames, second.frames)
    assert t5_cpu.load("tiny-t2v").components["vae"].use_tiling


def test_generate_two_pipelines_of_one_model_share_modules(engine, png_bytes):
    """TI2V runs the text and the image pipeline over the same modules; memory options are applied once."""
    _generate(engine, "tiny-ti2v")
    _generate(engine, "tiny-ti2v", image=png_bytes)
    loaded = engine.load("tiny-ti2v")
    pipes = list(loaded.pipelines.values())
    assert len(pipes) == 2 and pipes[0].transformer is pipes[1].transformer
    assert loaded.memory_applied


def test_the_negative_prompt_is_encoded_once_per_model_and_gives_the_same_frames(engine):
    """Classifier-free guidance needs the negative prompt's embeddings every job; most jobs share the model's default
    negative prompt, so the text encoder runs it once (stored slices pin the frames of the first, uncached job)."""
    encoder = engine.load("tiny-t2v").components["text_encoder"]
    calls = []
    handle = encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        first = _generate(engine, "tiny-t2v", negative_prompt="blurry", guidance_scale=5.0).frames
        assert len(calls) == 2  # the prompt and the negative prompt
        again = _generate(engine, "tiny-t2v", negative_prompt="blurry", guidance_scale=5.0).frames
        assert len(calls) == 3  # the prompt only
        other = _generate(engine, "tiny-t2v", negative_prompt="dark", guidance_scale=5.0).frames
        assert len(calls) == 5
        _generate(engine, "tiny-t2v", guidance_scale=1.0)  # no guidance: no negative prompt to encode
        assert len(calls) == 6
    finally:
        handle.remove()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # the negative prompt still matters


def test_an_out_of_memory_error_in_the_decode_leaves_no_features_in_the_vae_and_the_next_run_matches(engine):
    # The Wan VAE keeps its causal convolutions' features on the module until its next decode clears them: after a
    # failure half way through a decode they held 2.6 GiB on the H200 (benchmarks/oom_recovery.py).
    import torch

    from wanserve.errors import OutOfMemoryError

    expected = _generate(engine, "tiny-t2v", num_inference_steps=2).frames
    vae = engine.load("tiny-t2v").components["vae"]
    blocks = [m for m in vae.decoder.modules() if type(m).__name__ == "WanResidualBlock"]
    calls = []

    def out_of_memory_once(module, inputs):
        calls.append(1)
        if len(calls) == len(blocks):  # the last residual block: the earlier ones have cached their features
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 586.00 MiB")

    handles = [block.register_forward_pre_hook(out_of_memory_once) for block in blocks]
    try:
        with pytest.raises(OutOfMemoryError):
            _generate(engine, "tiny-t2v", num_inference_steps=2)
        assert len(calls) == len(blocks)
        assert all(feature is None for feature in vae._feat_map)
    finally:
        for handle in handles:
            handle.remove()
    np.testing.assert_array_equal(_generate(engine, "tiny-t2v", num_inference_steps=2).frames, expected)


def test_a_stop_between_decode_chunks_leaves_no_features_in_the_vae(engine):
    vae = engine.load("tiny-t2v").components["vae"]
    decoded = []
    # The decoder runs once per latent frame; the streamed decode checks for a stop between those chunks.
    handle = vae.decoder.register_forward_hook(lambda module, inputs, output: decoded.append(1))
    request = resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 7, "num_inference_steps": 2})
    try:
        with pytest.raises(GenerationCancelled):
            engine.generate(request, should_stop=lambda: bool(decoded), write_video=lambda frames, n: list(frames))
    finally:
        handle.remove()
    assert len(decoded) == 1  # stopped after the first chunk, with its features cached
    assert all(feature is None for feature in vae._feat_map)
