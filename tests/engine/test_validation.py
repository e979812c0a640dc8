"""Bad requests fail with a message naming the field and the value; nothing is rounded."""

from __future__ import annotations

import pytest

from wanserve.engine.inputs import load_media
from wanserve.engine.validation import MEDIA_FIELDS, request_from_params, request_params, resolve_request
from wanserve.errors import InvalidRequestError, UnknownModelError


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"num_frames": 80}, "num_frames", "got 80"),
        ({"width": 833}, "width", "got 833"),
        ({"num_inference_steps": 0}, "num_inference_steps", "got 0"),
        ({"num_frames": -5}, "num_frames", "got -5"),
        ({"guidance_scale": "lots"}, "guidance_scale", "'lots'"),
        ({"seed": 1.5}, "seed", "1.5"),
        ({"bogus": 1}, "bogus", "`bogus`"),
        ({"image": b"x"}, "image", "not used by task 't2v'"),
        ({"guidance_scale_2": 3.0}, "guidance_scale_2", "two-expert"),
        ({"solver": "ddim"}, "solver", "'ddim'"),
    ],
)
def test_resolve_request_rejects_bad_field(params, field, text):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("wan2.1-t2v-1.3b", {"prompt": "a cat", **params})
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)
    assert text in str(info.value)


def test_resolve_request_unknown_model_names_it():
    with pytest.raises(UnknownModelError) as info:
        resolve_request("wan9-t2v", {"prompt": "a cat"})
    assert info.value.field == "model" and "'wan9-t2v'" in str(info.value) and "tiny-t2v" in str(info.value)


def test_resolve_request_i2v_without_image_names_image():
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("wan2.1-i2v-14b-480p", {"prompt": "a cat"})
    assert info.value.field == "image" and "required" in str(info.value)


def test_load_media_unreadable_image_names_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-i2v", {"prompt": "a cat", "image": str(bad)})  # probed for the output size
    assert info.value.field == "image" and "`image`" in str(info.value)
    request = resolve_request("tiny-i2v", {"prompt": "a cat", "image": str(bad)}, probe_inputs=False)
    with pytest.raises(InvalidRequestError) as info:
        load_media(request)
    assert info.value.field == "image" and "`image`" in str(info.value)


def test_resolve_request_fills_official_defaults():
    request = resolve_request("wan2.2-t2v-a14b", {"prompt": "a cat", "seed": 1})
    assert (request.width, request.height, request.num_frames) == (1280, 720, 81)
    assert (request.num_inference_steps, request.guidance_scale, request.guidance_scale_2) == (40, 4.0, 3.0)
    assert (request.boundary_ratio, request.flow_shift, request.fps) == (0.875, 12.0, 16)
    assert request.negative_prompt  # the official Wan negative prompt
    params = request_params(request)
    assert params["task"] == "t2v" and params["seed"] == 1 and "output_path" not in params


def test_resolve_request_infers_task_from_inputs(png_bytes):
    assert resolve_request("tiny-flf2v", {"prompt": "x", "image": png_bytes, "last_image": png_bytes}).task == "flf2v"
    assert resolve_request("tiny-ti2v", {"prompt": "x", "image": png_bytes}).task == "ti2v"
    assert resolve_request("tiny-ti2v", {"prompt": "x"}).task == "ti2v"


def test_resolve_request_without_seed_picks_and_records_one():
    request = resolve_request("tiny-t2v", {"prompt": "x"})
    assert 0 <= request.seed < 2**32


@pytest.mark.parametrize(
    ("model", "params", "field", "text"),
    [
        ("tiny-t2v", {"strength": 0.5}, "strength", "not used by task 't2v' (it applies to: v2v)"),
        ("tiny-t2v", {"animate_mode": "replace"}, "animate_mode", "not used by task 't2v'"),
        ("tiny-t2v", {"boundary_ratio": 0.5}, "boundary_ratio", "two-expert"),
        ("tiny-t2v", {"pose_video": b"x"}, "pose_video", "not used by task 't2v'"),
        ("tiny-i2v", {"image": b"x", "strength": 0.5}, "strength", "not used by task 'i2v'"),
        ("tiny-t2v", {"guidance_scale": 1.0, "negative_prompt": "blur"}, "negative_prompt", "above 1"),
        ("tiny-t2v-moe", {"guidance_scale": 1.0, "guidance_scale_2": 3.0}, "guidance_scale_2", "above 1"),
        ("tiny-t2v-moe", {"boundary_ratio": 1.5}, "boundary_ratio", "got 1.5"),
        (
            "tiny-animate",
            {"image": b"x", "pose_video": b"x", "face_video": b"x", "mask": b"x"},
            "mask",
            "only with animate_mode 'replace'",
        ),
        (
            "tiny-animate",
            {"image": b"x", "pose_video": b"x", "face_video": b"x", "animate_mode": "replace", "mask": b"x"},
            "background_video",
            "needs `background_video` and `mask`",
        ),
    ],
)
def test_resolve_request_refuses_field_its_task_does_not_use(model, params, field, text):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request(model, {"prompt": "a cat", **params})
    assert info.value.field == field
    assert text in str(info.value)


def test_request_params_show_only_the_task_s_parameters(png_bytes):
    t2v = request_params(resolve_request("tiny-t2v", {"prompt": "a cat", "seed": 1}))
    assert not {"strength", "animate_mode", "guidance_scale_2", "boundary_ratio", "image", "video"} & set(t2v)
    assert {"guidance_scale", "flow_shift", "solver", "seed", "max_sequence_length", "fps", "crf"} <= set(t2v)
    v2v = request_params(resolve_request("tiny-t2v", {"prompt": "a cat", "video": b"x", "strength": 0.4}))
    assert v2v["task"] == "v2v" and v2v["strength"] == 0.4 and "animate_mode" not in v2v
    moe = request_params(resolve_request("tiny-t2v-moe", {"prompt": "a cat", "boundary_ratio": 0.5}))
    assert moe["boundary_ratio"] == 0.5 and moe["guidance_scale_2"] == 3.0


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("tiny-t2v-moe", {"boundary_ratio": 0.5, "guidance_scale_2": 2.0, "solver": "euler"}),
        ("tiny-t2v", {"video": "in.mp4", "strength": 0.3, "max_sequence_length": 64}),
        ("tiny-vace", {"video": "v.mp4", "reference_images": ["a.png", "b.png"]}),
        ("tiny-animate", {"image": "a.png", "pose_video": "p.mp4", "face_video": "f.mp4"}),
    ],
)
def test_request_from_params_rebuilds_the_resolved_request(model, params):
    # The placeholder paths are not read (the job service fits the size to the inputs itself).
    request = resolve_request(model, {"prompt": "a cat", "seed": 3, **params}, probe_inputs=False)
    stored = request_params(request)
    inputs = {name: value for name, value in params.items() if name in MEDIA_FIELDS}
    assert request_from_params(stored, inputs) == request
