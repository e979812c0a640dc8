"""EngineConfig / MemoryConfig validation: every message names the field(s) and the bad value(s)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from wanserve.engine.config import (
    ConfigError,
    EngineConfig,
    MemoryConfig,
    WeightsConfig,
    parse_device_string,
    torch_dtype,
)


def test_memory_config_defaults_are_valid():
    memory = MemoryConfig()

    assert (memory.offload, memory.text_encoder_on_cpu, memory.vae_tiling) == ("none", False, False)
    assert (memory.transformer_dtype, memory.vae_dtype) == ("bfloat16", "float32")


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"offload": "sequential"}, "offload", "`offload` must be one of none, model, group, got 'sequential'"),
        ({"transformer_dtype": "bf16"}, "transformer_dtype", "one of bfloat16, float16, float32, got 'bf16'"),
        ({"vae_dtype": "float8"}, "vae_dtype", "`vae_dtype` must be one of"),
        ({"offload": "group", "group_offload_type": "layer"}, "group_offload_type", "got 'layer'"),
        ({"offload": "group", "group_offload_blocks": 0}, "group_offload_blocks", "at least 1, got 0"),
    ],
)
def test_memory_config_bad_value_names_field(kwargs, field, text):
    with pytest.raises(ConfigError) as err:
        MemoryConfig(**kwargs)

    assert err.value.field == field
    assert text in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (
            {"offload": "model", "group_offload_use_stream": True},
            "`group_offload_use_stream`=True needs `offload`='group', got `offload`='model'",
        ),
        ({"group_offload_blocks": 2}, "`group_offload_blocks`=2 needs `offload`='group', got `offload`='none'"),
        (
            {"offload": "group", "group_offload_type": "leaf_level", "group_offload_blocks": 2},
            "`group_offload_blocks`=2 needs `group_offload_type`='block_level', got `group_offload_type`='leaf_level'",
        ),
    ],
)
def test_memory_config_conflict_names_both_values(kwargs, text):
    with pytest.raises(ConfigError) as err:
        MemoryConfig(**kwargs)

    assert str(err.value) == text


def test_memory_config_blocks_per_group():
    assert MemoryConfig(offload="group").blocks_per_group == 1
    assert MemoryConfig(offload="group", group_offload_blocks=4).blocks_per_group == 4
    assert MemoryConfig(offload="group", group_offload_type="leaf_level").blocks_per_group is None


def test_weights_config_model_paths_frozen_hashable_picklable():
    config = WeightsConfig(model_paths={"wan2.1-t2v-14b": "/models/14b", "wan2.1-t2v-1.3b": "/models/1.3b"})

    assert config.model_paths == (("wan2.1-t2v-1.3b", "/models/1.3b"), ("wan2.1-t2v-14b", "/models/14b"))
    assert config.model_path("wan2.1-t2v-14b") == "/models/14b"
    assert config.model_path("wan2.2-ti2v-5b") is None
    assert hash(config) == hash(pickle.loads(pickle.dumps(config)))
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.models_dir = "/elsewhere"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(EngineConfig(weights=config))).weights == config


@pytest.mark.parametrize(
    ("paths", "text"),
    [
        ({"wan9-t2v": "/m"}, "`model_paths` names 'wan9-t2v', which is not a known model; known: wan2.1-t2v-1.3b"),
        ({"tiny-t2v": "/m"}, "`model_paths` names 'tiny-t2v', a tiny model with built-in random weights"),
        ({"wan2.1-t2v-14b": " "}, "`model_paths` entry 'wan2.1-t2v-14b' needs a non-empty path, got ' '"),
        ((("wan2.1-t2v-14b", "/a"), ("wan2.1-t2v-14b", "/b")), "`model_paths` names 'wan2.1-t2v-14b' twice"),
    ],
)
def test_weights_config_bad_model_paths_names_entry(paths, text):
    with pytest.raises(ConfigError) as err:
        WeightsConfig(model_paths=paths)

    assert err.value.field == "model_paths"
    assert text in str(err.value)


def test_engine_config_cpu_device_with_offload_names_both():
    with pytest.raises(ConfigError) as err:
        EngineConfig(device="cpu", memory=MemoryConfig(offload="model"))

    assert err.value.field == "memory.offload"
    assert "`memory.offload`='model'" in str(err.value) and "`device`='cpu'" in str(err.value)


@pytest.mark.parametrize("device", [None, "auto", "cpu", "cuda", "cuda:1", "npu:0", "mps", "xpu:3"])
def test_engine_config_device_forms_accepted(device):
    assert EngineConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:a", "cpu:1", "mps:2"])
def test_engine_config_bad_device_names_it(device):
    with pytest.raises(ConfigError) as err:
        EngineConfig(device=device)

    assert err.value.field == "device"
    assert f"`device` {device!r} is not a device" in str(err.value)


def test_parse_device_string_splits_type_and_index():
    assert parse_device_string("cuda:1") == ("cuda", 1)
    assert parse_device_string(" NPU ") == ("npu", None)


def test_torch_dtype_maps_names():
    assert torch_dtype("bfloat16") is torch.bfloat16
    assert torch_dtype("float16") is torch.float16
    assert torch_dtype("float32") is torch.float32


def test_torch_dtype_unknown_names_field():
    with pytest.raises(ConfigError, match=r"`vae_dtype` must be one of bfloat16, float16, float32, got 'fp32'"):
        torch_dtype("fp32", "vae_dtype")
