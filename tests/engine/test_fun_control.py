"""Wan2.2-Fun-5B-Control (VideoX-Fun): its original-layout checkpoint loads (the key names of VideoX-Fun's
`Wan2_2Transformer3DModel`, its `config.json` fields), the control video steers the output, stored slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wanserve.engine.loading import load_components
from wanserve.engine.registry import get_spec
from wanserve.engine.validation import resolve_request
from wanserve.errors import InvalidRequestError


def write_videox_fun_control(path, components) -> dict:
    """A tiny `Wan2.2-Fun-5B-Control` directory as VideoX-Fun publishes it: the DiT at the top (`config.json` +
    `diffusion_pytorch_model.safetensors`), `Wan2.2_VAE.pth`, the T5 `.pth` and `google/umt5-xxl/`.

    The DiT keys are those of VideoX-Fun's `Wan2_2Transformer3DModel` (videox_fun/models/wan_transformer3d.py at
    804a425: Wan's `WanModel` names, cross-attention without image keys, `img_emb` deleted, lines 1420-1530) plus
    its `ref_conv` (Conv2d(in_dim_ref_conv, dim, patch), lines 740-741). The config carries VideoX-Fun's fields
    (`in_dim` = latents 48 + control 48 + mask 4 + masked-video 48 = 148, `add_ref_conv`, `model_type` 'i2v' as its
    ComfyUI loader sets for in_dim != out_dim, comfyui/wan2_2/nodes.py:124-127)."""
    from tests.models.wan_original import write_original_layout

    spec = get_spec("tiny-fun-control")
    write_original_layout(spec, components, path, shards=1)
    weights = path / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    dim = tensors["patch_embedding.weight"].shape[0]
    generator = torch.Generator().manual_seed(3)
    tensors["ref_conv.weight"] = torch.randn(dim, 48, 2, 2, generator=generator)
    tensors["ref_conv.bias"] = torch.zeros(dim)
    save_file(tensors, str(weights))
    config = json.loads((path / "config.json").read_text())
    config.update(
        _class_name="Wan2_2Transformer3DModel",
        model_type="i2v",
        in_channels=config["in_dim"],
        hidden_size=config["dim"],
        add_control_adapter=False,
        add_ref_conv=True,
        in_dim_ref_conv=48,
        cross_attn_norm=True,
        qk_norm=True,
    )
    (path / "config.json").write_text(json.dumps(config))
    return tensors


@pytest.fixture(scope="module")
def tiny_components():
    from wanserve.engine.tiny import build_tiny_components

    return build_tiny_components(get_spec("tiny-fun-control"))


def test_videox_fun_checkpoint_converts_to_the_engine_transformer(tmp_path, tiny_components):
    real = get_spec("wan2.2-fun-5b-control")
    written = write_videox_fun_control(tmp_path / "Wan2.2-Fun-5B-Control", tiny_components)
    # The file carries VideoX-Fun's names, none of diffusers'.
    assert {"blocks.0.self_attn.q.weight", "blocks.1.cross_attn.o.bias", "blocks.0.ffn.2.weight", "head.head.weight",
            "head.modulation", "time_projection.1.weight", "ref_conv.weight"} <= set(written)  # fmt: skip
    assert not any(k.startswith(("condition_embedder", "proj_out")) or ".attn1." in k for k in written)
    assert written["patch_embedding.weight"].shape[1] == 148

    loaded = load_components(real, tmp_path / "Wan2.2-Fun-5B-Control", dtype=torch.float32)
    transformer = loaded["transformer"]
    assert transformer.config.in_channels == 148 and transformer.config.out_channels == 48
    ours = tiny_components["transformer"].state_dict()
    theirs = transformer.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # every tensor landed on its diffusers name
    assert torch.equal(theirs["blocks.0.attn1.to_q.weight"], written["blocks.0.self_attn.q.weight"])
    assert type(loaded["scheduler"]).__name__ == "FlowMatchEulerDiscreteScheduler"  # VideoX-Fun's 'Flow' sampler


def test_converted_checkpoint_generates_what_the_engine_generates(tmp_path, tiny_components, engine):
    """The DiT converted from the VideoX-Fun checkpoint, run in the engine's Fun-Control pipeline, gives the tiny
    model's frames (the other components as the tiny model's: their original-layout loading is tested elsewhere)."""
    from wanserve.engine.config import EngineConfig
    from wanserve.engine.engine import Engine

    write_videox_fun_control(tmp_path / "ckpt", tiny_components)
    loaded = load_components(get_spec("wan2.2-fun-5b-control"), tmp_path / "ckpt", dtype=torch.float32)
    adopted = Engine(EngineConfig(device="cpu"))
    adopted.adopt("tiny-fun-control", {**tiny_components, "transformer": loaded["transformer"]}, random_weights=True)
    request = resolve_request("tiny-fun-control", {"prompt": "a cat", "video": _control(seed=1), "seed": 4})
    assert np.array_equal(adopted.generate(request).frames, engine.generate(request).frames)


def _control(seed: int, size=(64, 64), frames: int = 9) -> bytes:
    import tempfile

    from wanserve.media.video import encode_mp4

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as directory:
        encode_mp4(rng.integers(0, 256, (frames, size[1], size[0], 3), dtype=np.uint8), f"{directory}/c.mp4", 8, 0)
        with open(f"{directory}/c.mp4", "rb") as file:
            return file.read()


def test_control_video_steers_output_and_is_required(engine):
    base = {"prompt": "a cat", "seed": 4, "num_inference_steps": 2}
    first = engine.generate(resolve_request("tiny-fun-control", {**base, "video": _control(1)})).frames
    second = engine.generate(resolve_request("tiny-fun-control", {**base, "video": _control(2)})).frames
    assert first.shape == (9, 64, 64, 3) and np.abs(first.astype(int) - second).max() > 1
    with pytest.raises(InvalidRequestError) as info:
        resolve_request("tiny-fun-control", base)
    assert info.value.field == "video" and "required for task 'control'" in str(info.value)
    for field, value in (("mask", _control(3)), ("reference_images", ["x"]), ("conditioning_scale", 0.5)):
        with pytest.raises(InvalidRequestError) as info:
            resolve_request("tiny-fun-control", {**base, "video": _control(1), field: value})
        assert info.value.field == field and "not used by task 'control'" in str(info.value)
