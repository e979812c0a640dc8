"""The original Wan text encoder (`models_t5_umt5-xxl-enc-bf16.pth`) as a transformers `UMT5EncoderModel`.

The `.pth` holds the state dict of the official `T5Encoder` (wan/modules/t5.py, `umt5_xxl(encoder_only=True)`,
`shared_pos=False`: every block has its own relative position embedding, which is UMT5's layout). No config is
stored: the sizes come from the tensor shapes, the fixed parts from the official code (gated GELU with the
tanh approximation, 128 as the relative position max distance, layer-norm epsilon 1e-6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wanserve.errors import CheckpointError

# Fixed in the official `T5RelativeEmbedding(max_dist=128)` and `T5LayerNorm(eps=1e-6)`; not stored in the
# file.
RELATIVE_ATTENTION_MAX_DISTANCE = 128
LAYER_NORM_EPSILON = 1e-6

_BLOCK_RENAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    # The official feed-forward is fc1(x) * gelu(gate(x)); transformers' is wi_1(x) * gelu(wi_0(x)).
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def umt5_config_from_state_dict(state_dict: Mapping, source: str = "T5 checkpoint"):
    """The `UMT5Config` of the official encoder that has these tensors."""
    from transformers import UMT5Config

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"{source}: no tensor {key!r}; this is not an official Wan T5 encoder state dict")
        return tuple(state_dict[key].shape)

    vocab_size, d_model = shape("token_embedding.weight")
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"{source}: the encoder blocks are not numbered 0..n-1: {sorted(layers)}")
    num_buckets, num_heads = shape("blocks.0.pos_embedding.embedding.weight")
    inner_dim = shape("blocks.0.attn.q.weight")[0]
    if inner_dim % num_heads:
        raise CheckpointError(f"{source}: attention width {inner_dim} is not divisible by {num_heads} heads")
    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner_dim // num_heads,
        d_ff=shape("blocks.0.ffn.fc1.weight")[0],
        num_layers=len(layers),
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=RELATIVE_ATTENTION_MAX_DISTANCE,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def convert_umt5_state_dict(state_dict: Mapping, source: str = "T5 checkpoint") -> dict:
    """Renames official `T5Encoder` keys to `UMT5EncoderModel` keys."""
    converted = {}
    for key, value in state_dict.items():
        if key == "token_embedding.weight":
            converted["shared.weight"] = value
            converted["encoder.embed_tokens.weight"] = value
            continue
        if key == "norm.weight":
            converted["encoder.final_layer_norm.weight"] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if not m or m.group(2) not in _BLOCK_RENAMES:
            raise CheckpointError(f"{source}: unexpected key {key!r} for the official Wan T5 encoder")
        converted[f"encoder.block.{m.group(1)}.{_BLOCK_RENAMES[m.group(2)]}"] = value
    return converted
