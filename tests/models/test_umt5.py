"""`models_t5_umt5-xxl-enc-bf16.pth` -> `UMT5EncoderModel`: keys, inferred config, and the official forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import UMT5Config, UMT5EncoderModel

from tests.models.wan_original import invert_keys, official_t5_keys
from wanserve.engine.original_loading import load_t5
from wanserve.errors import CheckpointError
from wanserve.models.umt5 import convert_umt5_state_dict, umt5_config_from_state_dict

# `umt5_xxl` in wan/modules/t5.py.
RELEASED = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)


def _random_official(vocab=40, dim=16, attn=16, ffn=24, heads=4, layers=2, buckets=8, seed=0) -> dict:
    """A random state dict with the official `T5Encoder`'s keys and shapes."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"token_embedding.weight": (vocab, dim), "norm.weight": (dim,)}
    for i in range(layers):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm2.weight": (dim,)})
        shapes.update({b + f"attn.{p}.weight": (attn, dim) for p in "qkv"})
        shapes[b + "attn.o.weight"] = (dim, attn)
        shapes[b + "pos_embedding.embedding.weight"] = (buckets, heads)
        shapes.update({b + "ffn.gate.0.weight": (ffn, dim), b + "ffn.fc1.weight": (ffn, dim)})
        shapes[b + "ffn.fc2.weight"] = (dim, ffn)
    return {
        k: torch.randn(s, generator=gen) * 0.5 + (1.0 if k.endswith("norm.weight") else 0.0) for k, s in shapes.items()
    }


def _official_forward(sd: dict, ids: torch.Tensor, heads: int, max_dist: int = 128) -> torch.Tensor:
    """The encoder forward of wan/modules/t5.py (`T5Encoder`, shared_pos=False), restated for the test."""

    def norm(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def bucket(rel, num_buckets):
        num_buckets //= 2  # bidirectional
        out = (rel > 0).long() * num_buckets
        rel = rel.abs()
        max_exact = num_buckets // 2
        large = (
            max_exact
            + (torch.log(rel.float() / max_exact) / math.log(max_dist / max_exact) * (num_buckets - max_exact)).long()
        )
        large = torch.min(large, torch.full_like(large, num_buckets - 1))
        return out + torch.where(rel < max_exact, rel, large)

    x = sd["token_embedding.weight"][ids]
    b, length = ids.shape
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(layers):
        p = f"blocks.{i}."
        table = sd[p + "pos_embedding.embedding.weight"]
        rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
        bias = table[bucket(rel, table.shape[0])].permute(2, 0, 1)[None]
        h = norm(x, sd[p + "norm1.weight"])
        q, k, v = (F.linear(h, sd[p + f"attn.{n}.weight"]).view(b, length, heads, -1) for n in "qkv")
        attn = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, dim=-1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attn, v).reshape(b, length, -1), sd[p + "attn.o.weight"])
        h = norm(x, sd[p + "norm2.weight"])
        gate = F.gelu(F.linear(h, sd[p + "ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"])
    return norm(x, sd["norm.weight"])


def test_convert_umt5_state_dict_maps_released_keys_onto_transformers_keys():
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**RELEASED, feed_forward_proj="gated-gelu"))
    # invert_keys asserts the exact key-set equality (both embedding names come from `token_embedding`).
    mapping = invert_keys(convert_umt5_state_dict, official_t5_keys(24), model.state_dict())
    assert mapping["encoder.embed_tokens.weight"] == mapping["shared.weight"] == "token_embedding.weight"


def test_umt5_config_from_state_dict_reads_released_sizes():
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**RELEASED, relative_attention_num_buckets=32))
    mapping = invert_keys(convert_umt5_state_dict, official_t5_keys(24), model.state_dict())
    original = {mapping[k]: v for k, v in model.state_dict().items()}
    config = umt5_config_from_state_dict(original)
    assert {k: getattr(config, k) for k in RELEASED} == RELEASED
    assert config.relative_attention_num_buckets == 32
    assert config.relative_attention_max_distance == 128
    assert (config.feed_forward_proj, config.dense_act_fn, config.is_gated_act) == ("gated-gelu", "gelu_new", True)


def test_load_t5_matches_official_forward(tmp_path):
    official = _random_official()
    torch.save(official, tmp_path / "t5.pth")
    model = load_t5(tmp_path / "t5.pth", torch.float32)
    ids = torch.randint(0, 40, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        actual = model(ids).last_hidden_state
    expected = _official_forward(official, ids, heads=4)
    assert (actual - expected).abs().max().item() <= 1e-4


def test_load_t5_casts_to_requested_dtype(tmp_path):
    torch.save(_random_official(), tmp_path / "t5.pth")
    model = load_t5(tmp_path / "t5.pth", torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.encoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()


def test_convert_umt5_state_dict_names_unexpected_key():
    official = _random_official()
    official["blocks.0.attn.relative_bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"t5.pth: unexpected key 'blocks.0.attn.relative_bias'"):
        convert_umt5_state_dict(official, source="t5.pth")


def test_umt5_config_from_state_dict_rejects_other_checkpoints():
    with pytest.raises(CheckpointError, match="no tensor 'token_embedding.weight'"):
        umt5_config_from_state_dict({"shared.weight": torch.zeros(2, 2)})
