"""DFloat11 (engine/dfloat11.py): bfloat16 weights round-trip bit-exactly through the compressed format, a tiny
transformer compressed with `wanserve compress --format df11` gives the same output bit for bit when served
compressed, and the format is smaller than bfloat16."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from wanserve.cli.main import app as cli_app
from wanserve.engine.dfloat11 import (
    FILE_NAME,
    LANE,
    code_lengths,
    compress_tensor,
    decompress,
    decompress_state_dict,
    load_df11,
)
from wanserve.engine.dfloat11_model import attach_df11
from wanserve.engine.registry import get_spec
from wanserve.engine.tiny import _transformer_class, tiny_transformer_config


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16)


def test_bf16_tensor_round_trips_bit_exactly_with_special_values():
    torch.manual_seed(0)
    weight = (torch.randn(97, 3 * LANE + 5) * 0.02).to(torch.bfloat16)
    weight.view(-1)[:6] = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 1e-40])
    compressed = compress_tensor(weight)

    assert torch.equal(_bits(decompress([compressed])[0]), _bits(weight))
    assert compressed.nbytes * 8 / weight.numel() < 11.5  # ~8 bits of sign+mantissa, ~3 of exponent, offsets


def test_tensors_decoded_together_equal_each_alone():
    torch.manual_seed(1)
    weights = [(torch.randn(n) * s).to(torch.bfloat16) for n, s in ((LANE * 4 + 1, 0.02), (300, 1.0), (LANE, 5.0))]
    together = decompress([compress_tensor(w) for w in weights])
    assert all(torch.equal(_bits(a), _bits(w)) for a, w in zip(together, weights, strict=True))


def test_code_lengths_are_limited_and_prefix_free():
    counts = [2**i for i in range(40)] + [0] * 216  # a geometric distribution: unlimited Huffman needs 39 bits
    lengths = code_lengths(counts, limit=16)
    assert max(lengths) == 16 and lengths[39] == 1 and all(lengths[i] == 0 for i in range(40, 256))
    assert sum(2.0**-n for n in lengths if n) <= 1.0  # Kraft: a prefix code exists


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory):
    """The tiny t2v transformer in bfloat16, saved in the diffusers layout."""
    spec = get_spec("tiny-t2v")
    torch.manual_seed(5)
    model = _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
    src = tmp_path_factory.mktemp("bf16") / "transformer"
    model.save_pretrained(src)
    return spec, model, src.parent


def _forward(model):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=gen).to(torch.bfloat16)
    text = torch.randn(1, 7, 32, generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        return model(latents, timestep=torch.tensor([500]), encoder_hidden_states=text, return_dict=False)[0]


def test_compress_cli_and_serving_compressed_give_the_bf16_output_bit_for_bit(tiny_bf16, tmp_path):
    spec, model, src = tiny_bf16
    dst = tmp_path / "df11"
    result = CliRunner().invoke(cli_app, ["compress", "--format", "df11", str(src), str(dst), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["transformer"]["bf16_bytes"] == sum(t.numel() * 2 for t in model.state_dict().values())

    state = load_df11(dst / "transformer" / FILE_NAME)
    original = model.state_dict()
    restored = decompress_state_dict(state)
    assert set(restored) == set(original)
    assert all(torch.equal(restored[k].view(torch.uint8), original[k].view(torch.uint8)) for k in original)

    torch.manual_seed(99)  # other random weights, all replaced by the DF11 ones
    served = _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
    info = attach_df11(served, state, "cpu")
    assert info["compressed_blocks"] == 2
    assert all(p.numel() == 0 for b in served.blocks for p in [b.attn1.to_q.weight, b.ffn.net[2].weight])
    assert torch.equal(_bits(_forward(served)), _bits(_forward(model)))
    assert served.blocks[0].attn1.to_q.weight.numel() == 0  # decoded weights dropped after the block ran


def test_compress_refuses_a_bad_format_and_a_directory_without_a_transformer(tmp_path):
    bad = CliRunner().invoke(cli_app, ["compress", "--format", "gguf", str(tmp_path), str(tmp_path / "o")])
    assert bad.exit_code == 2 and "`--format` must be one of df11" in bad.output
    empty = CliRunner().invoke(cli_app, ["compress", str(tmp_path), str(tmp_path / "o")])
    assert empty.exit_code == 2 and "holds no diffusers-layout transformer" in empty.output


def test_the_animate_backends_dfloat11_variables_reach_the_engine_config(tmp_path, monkeypatch):
    from wanserve.config import Settings

    monkeypatch.setenv("WAN_USE_DFLOAT11", "true")
    monkeypatch.setenv("WAN_DFLOAT11_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("WAN_DFLOAT11_MAX_MEMORY", '{"0": "19GiB", "1": "20000MiB"}')
    monkeypatch.setenv("WAN_DFLOAT11_CPU_OFFLOAD", "true")
    settings = Settings(_env_file=None)

    memory = settings.engine_config("cuda:1").memory
    assert (memory.dfloat11_dir, memory.dfloat11_cpu_offload) == (str(tmp_path), True)
    assert memory.max_memory_gib == pytest.approx(20000 / 1024)
    assert settings.engine_config("cuda:0").memory.max_memory_gib == 19.0
    assert settings.engine_config("cuda:2").memory.max_memory_gib is None

    monkeypatch.setenv("WAN_USE_DFLOAT11", "false")  # the backend's off switch: the directory is not read
    assert Settings(_env_file=None).engine_config("cuda:0").memory.dfloat11_dir is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WAN_USE_DFLOAT11": "true"}, "WAN_DFLOAT11_LOCAL_DIR"),
        ({"WAN_DFLOAT11_MAX_MEMORY": "lots"}, "sizes look like 19GiB"),
        ({"WAN_DFLOAT11_MAX_MEMORY": '{"0": "-1GiB"}'}, "sizes look like"),
    ],
)
def test_bad_dfloat11_settings_are_refused(monkeypatch, env, message):
    from pydantic import ValidationError

    from wanserve.config import Settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None)


def test_a_lora_on_a_transformer_served_compressed_gives_the_bf16_output(tiny_bf16, tmp_path):
    from tests.engine.test_lora import lora_factors, write_lora
    from wanserve.engine.dfloat11 import compress_state_dict
    from wanserve.engine.lora import LoraAdapters, LoraRef

    spec, model, _ = tiny_bf16
    write_lora(tmp_path / "style.safetensors", lora_factors(1), "kohya")
    served = _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
    attach_df11(served, compress_state_dict(model.state_dict()), "cpu")
    reference = _transformer_class(spec)(**tiny_transformer_config(spec)).eval().to(torch.bfloat16)
    reference.load_state_dict(model.state_dict())
    for transformer in (served, reference):
        LoraAdapters([transformer], 2).activate([LoraRef(name="style")], [tmp_path / "style.safetensors"])

    out = _forward(served)
    assert torch.equal(_bits(out), _bits(_forward(reference)))
    assert not torch.equal(_bits(out), _bits(_forward(model)))  # the LoRA is in both


def test_dfloat11_memory_options_are_checked():
    from wanserve.engine.config import ConfigError, MemoryConfig

    with pytest.raises(ConfigError, match="needs `offload`='none'"):
        MemoryConfig(dfloat11_dir="/df11", offload="model")
    with pytest.raises(ConfigError, match="needs `dfloat11_dir`"):
        MemoryConfig(dfloat11_cpu_offload=True)
    with pytest.raises(ConfigError, match="transformer_dtype"):
        MemoryConfig(dfloat11_dir="/df11", transformer_dtype="float16")
