"""apply_memory_options: real tiny Wan pipelines on the CPU, plus fake pipelines for the accelerator-only calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wanserve.engine.config import MemoryConfig
from wanserve.engine.memory import apply_memory_options, component_dtypes
from wanserve.engine.registry import get_spec
from wanserve.engine.tiny import build_tiny_components


def tiny_pipe():
    import diffusers

    return diffusers.WanPipeline(**build_tiny_components(get_spec("tiny-t2v")))


def generate(pipe) -> np.ndarray:
    return pipe(
        prompt="a cat",
        num_frames=9,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames[0]


@pytest.fixture(scope="module")
def baseline() -> np.ndarray:
    return generate(tiny_pipe())


class FakeModule(torch.nn.Module):
    """A component that records the diffusers calls made on it."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[str, dict]] = []

    def enable_group_offload(self, **kwargs):
        self.calls.append(("enable_group_offload", kwargs))

    def enable_tiling(self):
        self.calls.append(("enable_tiling", {}))


class FakePipe:
    """The pipeline surface apply_memory_options touches, recording calls instead of needing a GPU."""

    def __init__(self):
        self.transformer, self.text_encoder, self.vae = FakeModule(), FakeModule(), FakeModule()
        self.calls: list[tuple[str, dict]] = []

    @property
    def components(self):
        return {
            "text_encoder": self.text_encoder,
            "tokenizer": object(),
            "transformer": self.transformer,
            "vae": self.vae,
        }

    def enable_model_cpu_offload(self, **kwargs):
        self.calls.append(("enable_model_cpu_offload", kwargs))

    def enable_group_offload(self, **kwargs):
        self.calls.append(("enable_group_offload", kwargs))


def test_component_dtypes_maps_each_component():
    dtypes = component_dtypes(MemoryConfig(transformer_dtype="float16", text_encoder_dtype="float32"))

    assert dtypes["transformer"] is dtypes["transformer_2"] is torch.float16
    assert dtypes["text_encoder"] is torch.float32
    assert dtypes["vae"] is torch.float32
    assert dtypes["image_encoder"] is torch.float16  # as the official code runs CLIP


def test_apply_memory_options_vae_tiling_on_tiny_pipeline(baseline):
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(vae_tiling=True), "cpu")

    assert pipe.vae.use_tiling is True
    # 64x64 is below the default tile size, so tiling must not change the frames.
    assert np.array_equal(generate(pipe), baseline)


def test_apply_memory_options_none_keeps_text_encoder_on_cpu():
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(text_encoder_on_cpu=True), "meta")

    assert pipe.text_encoder.device.type == "cpu"
    assert pipe.transformer.device.type == "meta"
    assert pipe.vae.device.type == "meta"


def test_apply_memory_options_model_offload_calls_diffusers():
    pipe = FakePipe()

    apply_memory_options(pipe, MemoryConfig(offload="model"), "cuda:1")

    assert pipe.calls == [("enable_model_cpu_offload", {"device": "cuda:1"})]


def test_apply_memory_options_group_offload_calls_diffusers():
    pipe = FakePipe()
    memory = MemoryConfig(offload="group", group_offload_type="leaf_level", group_offload_use_stream=True)

    apply_memory_options(pipe, memory, "cuda:0")

    expected = {
        "onload_device": torch.device("cuda:0"),
        "offload_device": torch.device("cpu"),
        "offload_type": "leaf_level",
        "num_blocks_per_group": None,
        "use_stream": True,
    }
    for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
        assert module.calls[-1] == ("enable_group_offload", expected)


def test_apply_memory_options_group_offload_skips_pinned_text_encoder():
    pipe = FakePipe()
    memory = MemoryConfig(offload="group", group_offload_blocks=2, text_encoder_on_cpu=True, vae_tiling=True)

    apply_memory_options(pipe, memory, "cuda:1")

    assert pipe.calls == []
    assert pipe.text_encoder.calls == []
    assert pipe.vae.calls[0] == ("enable_tiling", {})
    for module in (pipe.transformer, pipe.vae):
        name, kwargs = module.calls[-1]
        assert name == "enable_group_offload"
        assert (kwargs["onload_device"], kwargs["offload_type"], kwargs["num_blocks_per_group"]) == (
            torch.device("cuda:1"),
            "block_level",
            2,
        )


def test_apply_memory_options_model_offload_text_encoder_stays_on_cpu_across_calls(baseline):
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(offload="model", text_encoder_on_cpu=True), "cpu")
    first = generate(pipe)
    second = generate(pipe)  # the pipeline re-applies offload after each call; the pin must survive it

    assert not hasattr(pipe.text_encoder, "_hf_hook")
    assert hasattr(pipe.transformer, "_hf_hook")
    assert pipe.text_encoder not in [hook.model for hook in pipe._all_hooks]
    assert np.array_equal(first, baseline) and np.array_equal(second, baseline)


def test_apply_memory_options_model_offload_execution_device_is_accelerator(monkeypatch):
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    # The meta device stands in for an accelerator; it has no cache to empty.
    monkeypatch.setattr(pipeline_utils, "empty_device_cache", lambda *args, **kwargs: None)
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(offload="model", text_encoder_on_cpu=True), "meta")

    assert pipe._execution_device.type == "meta"
    assert pipe.text_encoder.device.type == "cpu"


def test_apply_memory_options_group_offload_tiny_pipeline_matches(baseline):
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(offload="group", text_encoder_on_cpu=True), "cpu")

    assert hasattr(pipe.transformer, "_diffusers_hook")
    assert not hasattr(pipe.text_encoder, "_diffusers_hook")
    assert np.array_equal(generate(pipe), baseline)


def test_group_offload_streams_the_text_encoders_blocks_one_group_each(baseline):
    # diffusers' block-level offload streams only the ModuleLists directly under a module: UMT5's blocks lie under
    # `encoder`, and would otherwise move as one group (the whole 10.6 GiB encoder on the H200).
    pipe = tiny_pipe()

    apply_memory_options(pipe, MemoryConfig(offload="group"), "cpu")

    encoder = pipe.text_encoder.encoder
    blocks = encoder.block
    assert len(blocks) > 1
    groups = [block._diffusers_hook.get_hook("group_offloading").group for block in blocks]
    assert [group.modules for group in groups] == [[block] for block in blocks]
    assert hasattr(encoder, "_diffusers_hook")  # the embedding and final norm: one group, on while the encoder runs
    assert {p for p in pipe.text_encoder.parameters()} == {p for p in encoder.parameters()}  # `shared` is tied
    assert hasattr(pipe.transformer.blocks[0], "_diffusers_hook")
    assert np.array_equal(generate(pipe), baseline)
