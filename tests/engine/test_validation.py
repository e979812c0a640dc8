"""Bad requests fail with a message naming the field and the value; nothing is rounded."""

from __future__ import annotations

import pytest

from wanserve.engine.inputs import load_media
from wanserve.engine.validation import request_params, resolve_request
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
