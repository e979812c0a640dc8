"""Text-to-image (`t2i`): one frame of a text-to-video model, as Wan2.1's `t2i-14B` runs the T2V-14B checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from wanserve.engine.registry import get_spec
from wanserve.engine.requests import TaskKind
from wanserve.engine.validation import request_params, resolve_request
from wanserve.errors import InvalidRequestError


def test_t2i_defaults_follow_the_official_t2i_14b():
    request = resolve_request("wan2.1-t2v-14b", {"task": "t2i", "prompt": "a portrait", "seed": 0})

    assert (request.task, request.num_frames, request.width, request.height) == (TaskKind.T2I, 1, 1024, 1024)
    assert (request.num_inference_steps, request.guidance_scale, request.flow_shift) == (50, 5.0, 5.0)
    assert resolve_request("wan2.1-t2v-14b", {"prompt": "a clip", "seed": 0}).num_frames == 81  # t2v unchanged
    assert get_spec("wan2.1-t2v-1.3b").default_size_for(TaskKind.T2I) == (832, 480)
    assert "fps" not in request_params(request) and "crf" not in request_params(request)


@pytest.mark.parametrize(
    ("model", "params", "field"),
    [
        ("tiny-t2v", {"num_frames": 5}, "num_frames"),
        ("tiny-t2v", {"fps": 8}, "fps"),
        ("tiny-t2v", {"crf": 10}, "crf"),
        ("tiny-t2v", {"prompt": " "}, "prompt"),
        ("tiny-i2v", {}, "task"),
    ],
)
def test_t2i_refuses_what_it_would_ignore(model, params, field):
    with pytest.raises(InvalidRequestError) as info:
        resolve_request(model, {"task": "t2i", "prompt": "a cat", **params})
    assert info.value.field == field


def test_t2i_is_the_single_frame_text_to_video_path(engine):
    def frames(task: str, seed: int) -> np.ndarray:
        params = {"task": task, "prompt": "a cat", "seed": seed, "width": 96, "height": 64, "num_frames": 1}
        return engine.generate(resolve_request("tiny-t2v", params)).frames

    image = frames("t2i", 3)

    assert image.shape == (1, 64, 96, 3) and image.dtype == np.uint8
    assert np.array_equal(image, frames("t2v", 3))
    assert not np.array_equal(image, frames("t2i", 4))
