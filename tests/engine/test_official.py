"""The official Wan code's defaults and rules, per catalog model (docs/models.md): sources, sizes, negative
prompts, shifts, Animate, VACE and the generated docs table."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wanserve.engine.official import SOURCE_FIELDS, default_rows, default_values, defaults_markdown
from wanserve.engine.registry import CATALOG, WAN_NEGATIVE_PROMPT, get_spec, real_models, tiny_models
from wanserve.engine.validation import resolve_request
from wanserve.errors import InvalidRequestError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# -- The official arithmetic, restated from the official code (not imported from wanserve) -----------------------
def official_max_area(image_w: int, image_h: int, max_area: int, vae_stride: int = 8, patch: int = 2):
    """Wan2.1 wan/image2video.py:184-193 (and first_last_frame2video.py, Wan2.2 image2video.py): latent
    height = round(sqrt(max_area * h / w) // stride // patch * patch), width likewise with w / h."""
    ratio = image_h / image_w
    lat_h = round(np.sqrt(max_area * ratio) // vae_stride // patch * patch)
    lat_w = round(np.sqrt(max_area / ratio) // vae_stride // patch * patch)
    return lat_w * vae_stride, lat_h * vae_stride


def official_best_output_size(w: int, h: int, dw: int, dh: int, expected_area: int):
    """Wan2.2 wan/utils/utils.py:202-225: width-first and height-first roundings, the closer aspect ratio wins
    (height-first on a tie)."""
    ratio = w / h
    ow = (expected_area * ratio) ** 0.5
    oh = expected_area / ow
    ow1 = int(ow // dw * dw)
    oh1 = int(expected_area / ow1 // dh * dh)
    oh2 = int(oh // dh * dh)
    ow2 = int(expected_area / oh2 // dw * dw)
    if max(ratio / (ow1 / oh1), (ow1 / oh1) / ratio) < max(ratio / (ow2 / oh2), (ow2 / oh2) / ratio):
        return ow1, oh1
    return ow2, oh2


# -- Acceptance 4: sizes of image-conditioned tasks --------------------------------------------------------------
@pytest.mark.parametrize("model", ["wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.2-i2v-a14b"])
def test_i2v_1000x600_image_at_832x480_makes_official_max_area_size(model):
    request = resolve_request(model, {"prompt": "a cat", "image": png(1000, 600), "width": 832, "height": 480})
    assert (request.width, request.height) == official_max_area(1000, 600, 832 * 480) == (800, 480)


def test_flf2v_size_follows_first_frame_aspect():
    request = resolve_request(
        "wan2.1-flf2v-14b-720p",
        {"prompt": "a bird", "image": png(600, 1000), "last_image": png(64, 64), "width": 720, "height": 1280},
    )
    assert (request.width, request.height) == official_max_area(600, 1000, 720 * 1280)


def test_ti2v_image_makes_official_best_output_size():
    request = resolve_request("wan2.2-ti2v-5b", {"prompt": "a cat", "image": png(1000, 600)})
    assert (request.width, request.height) == official_best_output_size(1000, 600, 32, 32, 1280 * 704)
    assert (request.width, request.height) == (1216, 736)


@pytest.mark.parametrize(("image", "area"), [((1000, 600), 832 * 480), ((333, 777), 1280 * 720), ((64, 64), 4096)])
def test_size_rules_match_official_arithmetic(image, area):
    from wanserve.engine.sizes import best_output_size, max_area_size

    assert max_area_size(*image, area, 8) == official_max_area(*image, area)
    assert best_output_size(*image, 32, 32, area) == official_best_output_size(*image, 32, 32, area)


def test_text_task_size_is_output_size():
    request = resolve_request("wan2.2-ti2v-5b", {"prompt": "a cat", "width": 704, "height": 1280})
    assert (request.width, request.height) == (704, 1280)


def test_tiny_i2v_job_reports_fitted_size_at_submission_and_engine_makes_it(db_url, make_service, engine, tmp_path):
    """A 100x60 image at the area 96x64: the job shows 96x48 before it runs, and the engine makes 96x48."""
    from wanserve.jobs.service import JobSubmission

    service = make_service(db_url)
    params = {"prompt": "a cat", "width": 96, "height": 64, "num_inference_steps": 2, "seed": 3}
    view, _ = service.create_job(JobSubmission(params=params, model="tiny-i2v", inputs={"image": png(100, 60)}))
    expected = official_max_area(100, 60, 96 * 64)
    assert expected == (96, 48)
    assert (view.params["width"], view.params["height"]) == expected and view.status == "queued"
    job = service.store.get(view.id)
    request = service.generation_request(job, service.files.fetch_inputs(job.inputs, tmp_path))
    assert (request.width, request.height) == expected
    result = engine.generate(request)
    assert result.frames.shape[1:3] == (48, 96)


def test_image_too_narrow_for_area_refused():
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-i2v", {"prompt": "x", "image": png(400, 8)})
    assert info.value.field == "image" and "400x8" in str(info.value)


# -- Trained sizes ------------------------------------------------------------------------------------------------
def test_untrained_size_refused_lists_trained_sizes():
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("wan2.1-t2v-1.3b", {"prompt": "a cat", "width": 1280, "height": 720})
    message = str(info.value)
    assert info.value.field == "width"
    assert "1280x720" in message and "trained: 832x480, 480x832" in message and "`allow_untrained_size`" in message
    request = resolve_request(
        "wan2.1-t2v-1.3b", {"prompt": "a cat", "width": 1280, "height": 720, "allow_untrained_size": True}
    )
    assert (request.width, request.height, request.allow_untrained_size) == (1280, 720, True)


def test_size_the_official_code_accepts_runs_without_flag():
    # generate.py accepts all four sizes for i2v-14B with either checkpoint (SUPPORTED_SIZES).
    request = resolve_request("wan2.1-i2v-14b-480p", {"prompt": "a cat", "image": png(1280, 720), "width": 1280,
                                                      "height": 720})  # fmt: skip
    assert (request.width, request.height, request.flow_shift) == (1280, 720, 5.0)


def test_tiny_models_keep_their_trained_sizes():
    assert (resolve_request("tiny-t2v", {"prompt": "x", "width": 96, "height": 64}).width) == 96
    with pytest.raises(InvalidRequestError, match="trained: 64x64, 96x64, 64x96"):
        resolve_request("tiny-t2v", {"prompt": "x", "width": 128, "height": 64})


def test_vace_fun_takes_any_size():
    request = resolve_request("wan2.2-vace-fun-a14b", {"prompt": "x", "task": "t2v", "width": 1024, "height": 576})
    assert (request.width, request.height) == (1024, 576)


# -- Defaults -----------------------------------------------------------------------------------------------------
def test_t2v_1_3b_recommended_guidance_and_shift():
    request = resolve_request("wan2.1-t2v-1.3b", {"prompt": "a cat"})
    assert (request.guidance_scale, request.flow_shift) == (6.0, 8.0)


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        ("wan2.1-i2v-14b-480p", "镜头晃动，"),
        ("wan2.1-i2v-14b-720p", "镜头晃动，"),
        ("wan2.1-flf2v-14b-720p", "镜头切换，镜头晃动，"),
        ("wan2.2-i2v-a14b", ""),
        ("wan2.1-t2v-14b", ""),
    ],
)
def test_negative_prompt_prefix_when_none_given(model, prefix):
    params = {"prompt": "a cat"}
    if "i2v" in model or "flf2v" in model:
        params["image"] = png(1280, 720)
    if "flf2v" in model:
        params["last_image"] = png(1280, 720)
    assert resolve_request(model, params).negative_prompt == prefix + WAN_NEGATIVE_PROMPT
    assert resolve_request(model, {**params, "negative_prompt": "blur"}).negative_prompt == "blur"


@pytest.mark.parametrize(
    ("model", "size", "shift"),
    [
        ("wan2.1-i2v-14b-480p", (832, 480), 3.0),
        ("wan2.1-i2v-14b-480p", (480, 832), 3.0),
        ("wan2.1-i2v-14b-720p", (832, 480), 3.0),
        ("wan2.1-i2v-14b-720p", (1280, 720), 5.0),
        ("wan2.1-i2v-14b-480p", (720, 1280), 5.0),
    ],
)
def test_wan21_i2v_shift_follows_requested_size(model, size, shift):
    params = {"prompt": "a cat", "image": png(1000, 600), "width": size[0], "height": size[1]}
    assert resolve_request(model, params).flow_shift == shift
    assert resolve_request(model, {**params, "flow_shift": 7.0}).flow_shift == 7.0


def test_vace_fun_defaults():
    request = resolve_request("wan2.2-vace-fun-a14b", {"prompt": "a cat", "task": "t2v"})
    assert (request.num_inference_steps, request.guidance_scale, request.guidance_scale_2) == (50, 5.0, 5.0)
    assert (request.solver, request.flow_shift, request.boundary_ratio) == ("euler", 12.0, 0.875)
    assert (request.width, request.height, request.num_frames, request.fps) == (480, 832, 81, 16)


def test_clip_runs_in_float16_by_default():
    import torch

    from wanserve.engine.config import MemoryConfig
    from wanserve.engine.memory import component_dtypes
    from wanserve.engine.tiny import build_tiny_clip

    assert component_dtypes(MemoryConfig())["image_encoder"] is torch.float16
    # The encoder takes float32 pixels in float16 weights (transformers casts them); on this CPU too.
    model, processor = build_tiny_clip()
    pixels = processor(images=Image.open(io.BytesIO(png(64, 64))), return_tensors="pt")
    full = model(**pixels, output_hidden_states=True).hidden_states[-2]
    half = model.to(torch.float16)(**pixels, output_hidden_states=True).hidden_states[-2]
    assert half.dtype is torch.float16 and torch.allclose(half.float(), full, atol=2e-2)


# -- VACE conditioning_scale --------------------------------------------------------------------------------------
def test_conditioning_scale_changes_vace_output(engine, input_video, mask_video):
    params = {"prompt": "a cat", "video": input_video, "mask": mask_video, "seed": 2}
    default = engine.generate(resolve_request("tiny-vace", params)).frames
    assert resolve_request("tiny-vace", params).conditioning_scale == 1.0
    off = engine.generate(resolve_request("tiny-vace", {**params, "conditioning_scale": 0.0})).frames
    assert not np.array_equal(default, off)


def test_conditioning_scale_refused_outside_vace():
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-t2v", {"prompt": "x", "conditioning_scale": 0.5})
    assert info.value.field == "conditioning_scale" and "applies to: vace" in str(info.value)


# -- Animate ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pose_17(tmp_path_factory) -> str:
    from wanserve.media.video import encode_mp4

    path = tmp_path_factory.mktemp("pose") / "pose.mp4"
    encode_mp4(np.random.default_rng(5).integers(0, 256, (17, 64, 64, 3), dtype=np.uint8), str(path), fps=8)
    return str(path)


def _animate(pose: str, **extra) -> dict:
    return {"image": png(48, 64), "pose_video": pose, "face_video": pose, "seed": 1, **extra}


def test_animate_length_and_size_from_pose_video(pose_17):
    request = resolve_request("tiny-animate", _animate(pose_17))
    assert (request.width, request.height, request.num_frames) == (64, 64, 17)
    assert request.prompt == "视频中的人在做动作" and request.refert_num == 1


@pytest.mark.parametrize("field", ["width", "height", "num_frames"])
def test_animate_refuses_shape_fields(pose_17, field):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-animate", _animate(pose_17, **{field: 64}))
    assert info.value.field == field and "pose video" in str(info.value)


def test_animate_pose_video_outside_trained_sizes(tmp_path):
    from wanserve.media.video import encode_mp4

    path, face = tmp_path / "wide.mp4", tmp_path / "face.mp4"
    encode_mp4(np.zeros((5, 32, 80, 3), dtype=np.uint8), str(path), fps=8)
    encode_mp4(np.zeros((5, 16, 16, 3), dtype=np.uint8), str(face), fps=8)
    with pytest.raises(InvalidRequestError, match="80x32 is not a trained size of tiny-animate"):
        resolve_request("tiny-animate", _animate(str(path), face_video=str(face)))
    request = resolve_request("tiny-animate", _animate(str(path), face_video=str(face), allow_untrained_size=True))
    assert (request.width, request.height, request.num_frames) == (80, 32, 5)
    with pytest.raises(InvalidRequestError, match="`refert_num` must be 1 or 5, got 3"):
        resolve_request("tiny-animate", _animate(str(path), face_video=str(face), refert_num=3))


def test_animate_segments_follow_official_valid_len():
    """Wan2.2 animate.py get_valid_len (215-223): padded to (clip_len - refert_num) steps past refert_num."""
    from wanserve.engine.inputs import animate_segments

    for clip_len in (77, 81, 5):
        for frames, refert in ((77, 1), (78, 1), (153, 1), (154, 1), (100, 5), (77, 5)):
            if clip_len - refert <= refert:
                continue
            step = clip_len - refert
            extra = (step - (frames - refert) % step) % step
            assert animate_segments(clip_len, frames, refert) == (frames + extra - refert) // step


def test_animate_refert_num_reaches_pipeline(pose_17):
    """`refert_num` is diffusers' `prev_segment_conditioning_frames`; the real model's 77-frame segments take 5."""
    from wanserve.engine.inputs import effective_steps, pipeline_inputs

    spec = get_spec("wan2.2-animate-14b")
    request = resolve_request("tiny-animate", _animate(pose_17)).replace(refert_num=5, clip_len=77)
    assert pipeline_inputs(spec, request)["prev_segment_conditioning_frames"] == 5
    # 150 frames: 2 segments carrying 1 frame (1 + 2 x 76 >= 150), 3 carrying 5 (5 + 2 x 72 < 150).
    assert effective_steps(spec, request.replace(num_frames=150, refert_num=1)) == 2 * request.num_inference_steps
    assert effective_steps(spec, request.replace(num_frames=150, refert_num=5)) == 3 * request.num_inference_steps


def test_animate_refert_num_longer_than_tiny_segment_refused(pose_17):
    """tiny-animate's 9-frame segments make 4 new frames each, fewer than 5 carried: diffusers would count one
    segment too many and fail, so it is refused; a `clip_len` of 13 (8 new frames a segment) runs it."""
    with pytest.raises(InvalidRequestError, match="segments longer than 10 frames; `clip_len` is 9") as info:
        resolve_request("tiny-animate", _animate(pose_17, refert_num=5))
    assert info.value.field == "refert_num"
    request = resolve_request("tiny-animate", _animate(pose_17, refert_num=5, clip_len=13))
    assert (request.refert_num, request.clip_len, request.num_frames) == (5, 13, 17)


@pytest.mark.parametrize("clip_len", [8, 1, 37, "x"])
def test_animate_clip_len_must_be_4k_plus_1_within_limits(pose_17, clip_len):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-animate", _animate(pose_17, clip_len=clip_len))
    assert info.value.field == "clip_len" and repr(clip_len) in str(info.value) or str(clip_len) in str(info.value)


def test_animate_clip_len_sets_segments(pose_17):
    """17 frames in segments of 5 carrying 1 frame: 1 + 4 x 4 = 17, 4 segments (official `get_valid_len`)."""
    from wanserve.engine.inputs import effective_steps, pipeline_inputs

    spec = get_spec("tiny-animate")
    request = resolve_request("tiny-animate", _animate(pose_17, clip_len=5, num_inference_steps=2))
    assert request.clip_len == 5 and effective_steps(spec, request) == 4 * 2
    assert pipeline_inputs(spec, request)["segment_frame_length"] == 5


# -- Sources and the docs table -----------------------------------------------------------------------------------
def test_every_default_has_a_source():
    for spec in CATALOG.values():
        for key, value, source in default_rows(spec):
            assert source, f"{spec.name}: `{key}` ({value}) has no source"
            official = source.startswith(
                ("Wan2.1@9737cba ", "Wan2.2@42bf4cf ", "VideoX-Fun@804a425 ", "FlashVSR@ccac0ac ")
            )
            assert official or source.startswith(("our choice: ", "as ")), (spec.name, key, source)
        assert set(default_values(spec)) <= set(SOURCE_FIELDS)


def test_tiny_defaults_sourced_as_counterpart_equal_it():
    fields = {"guidance_scale": "guidance_scale", "guidance_scale_2": "guidance_scale_2", "solver": "solver",
              "boundary_ratio": "boundary_ratio", "flow_shift": "flow_shift", "image_sizing": "image_sizing",
              "prompt": "default_prompt"}  # fmt: skip
    for tiny in tiny_models():
        real = get_spec(tiny.real_counterpart)
        for key, attribute in fields.items():
            if tiny.sources.get(key) == f"as {real.name}":
                tiny_value, real_value = getattr(tiny, attribute), getattr(real, attribute)
                if key == "flow_shift":
                    real_value = real.default_flow_shift(*real.default_size)
                assert tiny_value == real_value, (tiny.name, key)


def test_real_models_cite_official_code_for_the_rules():
    for spec in real_models():
        for key in ("num_inference_steps", "guidance_scale", "flow_shift", "solver"):
            if key in default_values(spec):  # FlashVSR has no sampler options to set
                assert not spec.sources[key].startswith("our choice"), (spec.name, key)


def test_docs_table_equals_catalog():
    text = DOCS.read_text()
    begin = text.index("-->\n", text.index("<!-- BEGIN defaults table")) + 4
    end = text.index("<!-- END defaults table -->")
    assert text[begin:end] == defaults_markdown(CATALOG.values()), "regenerate the table in docs/models.md"


def test_models_cli_shows_sources():
    from typer.testing import CliRunner

    from wanserve.cli.main import app

    result = CliRunner().invoke(app, ["models", "--sources"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "wan2.1-t2v-1.3b" in result.stdout and "t2v_1.3B_singleGPU.py" in result.stdout
