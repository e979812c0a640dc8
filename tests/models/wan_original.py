"""Test support: the key names of the official Wan checkpoints, and writers of tiny original-layout
directories.

The `official_*_keys` functions list the state-dict keys that the official module definitions produce, written
from the Wan-Video repositories (Wan2.1 and Wan2.2 `wan/modules/model.py`, `vace_model.py`, `vae2_1.py`,
`vae2_2.py`, `t5.py`, `clip.py`, `xlm_roberta.py`), attribute by attribute. The writers turn tiny diffusers
components into original files by inverting wanserve's converters; `invert_keys` refuses unless the converter
maps exactly these official keys onto exactly the diffusers model's keys, so the files carry the real key
names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from wanserve.engine import layouts
from wanserve.engine.registry import ModelSpec
from wanserve.models import umt5, wan_transformer, wan_vae

# ---------------------------------------------------------------- official key names


def _linear(prefix: str, bias: bool = True) -> list[str]:
    return [f"{prefix}.weight"] + ([f"{prefix}.bias"] if bias else [])


def _wan_block(prefix: str, image_kv: bool) -> list[str]:
    # WanAttentionBlock: norm1/norm2 are WanLayerNorm(elementwise_affine=False) (no tensors); norm3 has
    # weights
    # (cross_attn_norm=True); WanSelfAttention q/k/v/o + WanRMSNorm norm_q/norm_k; WanI2VCrossAttention adds
    # k_img/v_img/norm_k_img; ffn = Sequential(Linear, GELU, Linear); modulation Parameter(1, 6, dim).
    keys = []
    for attn in ("self_attn", "cross_attn"):
        for proj in "qkvo":
            keys += _linear(f"{prefix}.{attn}.{proj}")
        keys += [f"{prefix}.{attn}.norm_q.weight", f"{prefix}.{attn}.norm_k.weight"]
    if image_kv:
        keys += _linear(f"{prefix}.cross_attn.k_img") + _linear(f"{prefix}.cross_attn.v_img")
        keys.append(f"{prefix}.cross_attn.norm_k_img.weight")
    keys += _linear(f"{prefix}.norm3") + _linear(f"{prefix}.ffn.0") + _linear(f"{prefix}.ffn.2")
    keys.append(f"{prefix}.modulation")
    return keys


def official_transformer_keys(
    model_type: str, num_layers: int, vace_layers: list[int] | None = None, wan22: bool = False
) -> list[str]:
    """`WanModel` (`VaceWanModel` for 'vace'); `wan22`: Wan2.2's model.py (no CLIP branch for i2v)."""
    image = model_type in ("i2v", "flf2v") and not wan22
    keys = _linear("patch_embedding")
    keys += _linear("text_embedding.0") + _linear("text_embedding.2")  # Sequential(Linear, GELU, Linear)
    keys += _linear("time_embedding.0") + _linear("time_embedding.2")  # Sequential(Linear, SiLU, Linear)
    keys += _linear("time_projection.1")  # Sequential(SiLU, Linear)
    for i in range(num_layers):
        keys += _wan_block(f"blocks.{i}", image)
    keys += _linear("head.head") + ["head.modulation"]  # Head: WanLayerNorm without weights, Linear, modulation
    if image:
        # MLPProj: Sequential(LayerNorm, Linear, GELU, Linear, LayerNorm); emb_pos only for flf2v.
        for i in (0, 1, 3, 4):
            keys += _linear(f"img_emb.proj.{i}")
        if model_type == "flf2v":
            keys.append("img_emb.emb_pos")
    if model_type == "vace":
        for n, layer in enumerate(vace_layers):
            keys += _wan_block(f"vace_blocks.{n}", False)
            if layer == 0:
                keys += _linear(f"vace_blocks.{n}.before_proj")
            keys += _linear(f"vace_blocks.{n}.after_proj")
        keys += _linear("vace_patch_embedding")
    return keys


def _residual(prefix: str, shortcut: bool) -> list[str]:
    # ResidualBlock.residual = Sequential(RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout,
    # CausalConv3d);
    # shortcut = CausalConv3d(in, out, 1) when in != out.
    keys = [
        f"{prefix}.residual.0.gamma",
        *_linear(f"{prefix}.residual.2"),
        f"{prefix}.residual.3.gamma",
        *_linear(f"{prefix}.residual.6"),
    ]
    return keys + (_linear(f"{prefix}.shortcut") if shortcut else [])


def _resample(prefix: str, temporal: bool) -> list[str]:
    # Resample.resample = Sequential(Upsample|ZeroPad2d, Conv2d); time_conv only in the *3d modes.
    return _linear(f"{prefix}.resample.1") + (_linear(f"{prefix}.time_conv") if temporal else [])


def _middle_and_head(side: str) -> list[str]:
    keys = _linear(f"{side}.conv1")
    keys += _residual(f"{side}.middle.0", False) + [f"{side}.middle.1.norm.gamma"]
    keys += _linear(f"{side}.middle.1.to_qkv") + _linear(f"{side}.middle.1.proj") + _residual(f"{side}.middle.2", False)
    return keys + [f"{side}.head.0.gamma", *_linear(f"{side}.head.2")]


def official_vae21_keys(dim: int, dim_mult: list[int], num_res_blocks: int, temporal: list[bool]) -> list[str]:
    """`WanVAE_` of wan/modules/vae2_1.py (flat `downsamples` / `upsamples` Sequentials)."""
    keys = _linear("conv1") + _linear("conv2") + _middle_and_head("encoder") + _middle_and_head("decoder")
    dims = [dim * u for u in [1] + dim_mult]
    j = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for _ in range(num_res_blocks):
            keys += _residual(f"encoder.downsamples.{j}", in_dim != out_dim)
            in_dim, j = out_dim, j + 1
        if i != len(dim_mult) - 1:
            keys += _resample(f"encoder.downsamples.{j}", temporal[i])
            j += 1
    dims = [dim * u for u in [dim_mult[-1]] + dim_mult[::-1]]
    j = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if i in (1, 2, 3):
            in_dim = in_dim // 2  # the previous upsample halved the channels
        for _ in range(num_res_blocks + 1):
            keys += _residual(f"decoder.upsamples.{j}", in_dim != out_dim)
            in_dim, j = out_dim, j + 1
        if i != len(dim_mult) - 1:
            keys += _resample(f"decoder.upsamples.{j}", temporal[::-1][i])
            j += 1
    return keys


def official_vae22_keys(
    dim: int, dec_dim: int, dim_mult: list[int], num_res_blocks: int, temporal: list[bool]
) -> list[str]:
    """`WanVAE_` of wan/modules/vae2_2.py (`Down_ResidualBlock` / `Up_ResidualBlock` stages; their AvgDown3D /
    DupUp3D shortcuts have no tensors)."""
    keys = _linear("conv1") + _linear("conv2") + _middle_and_head("encoder") + _middle_and_head("decoder")
    dims = [dim * u for u in [1] + dim_mult]
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for r in range(num_res_blocks):
            keys += _residual(f"encoder.downsamples.{i}.downsamples.{r}", in_dim != out_dim)
            in_dim = out_dim
        if i != len(dim_mult) - 1:
            keys += _resample(f"encoder.downsamples.{i}.downsamples.{num_res_blocks}", temporal[i])
    dims = [dec_dim * u for u in [dim_mult[-1]] + dim_mult[::-1]]
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for r in range(num_res_blocks + 1):
            keys += _residual(f"decoder.upsamples.{i}.upsamples.{r}", in_dim != out_dim)
            in_dim = out_dim
        if i != len(dim_mult) - 1:
            keys += _resample(f"decoder.upsamples.{i}.upsamples.{num_res_blocks + 1}", temporal[::-1][i])
    return keys


def official_t5_keys(num_layers: int) -> list[str]:
    """`T5Encoder` with shared_pos=False (`umt5_xxl(encoder_only=True)`): every `T5SelfAttention` block has
    its own `T5RelativeEmbedding`; bias-free Linears; `T5FeedForward.gate = Sequential(Linear, GELU)`."""
    keys = ["token_embedding.weight", "norm.weight"]
    for i in range(num_layers):
        b = f"blocks.{i}"
        keys += [f"{b}.norm1.weight", f"{b}.norm2.weight", f"{b}.pos_embedding.embedding.weight"]
        keys += [f"{b}.attn.{p}.weight" for p in "qkvo"]
        keys += [f"{b}.ffn.gate.0.weight", f"{b}.ffn.fc1.weight", f"{b}.ffn.fc2.weight"]
    return keys


def official_clip_keys(vision_layers: int, text_layers: int) -> list[str]:
    """`XLMRobertaCLIP` (`clip_xlm_roberta_vit_h_14`: vision_pool 'token', pre_norm on, so the patch conv has
    no bias), its `XLMRobertaWithHead` text tower and `log_scale`."""
    keys = [
        "log_scale",
        "visual.patch_embedding.weight",
        "visual.cls_embedding",
        "visual.pos_embedding",
        *_linear("visual.pre_norm"),
        *_linear("visual.post_norm"),
        "visual.head",
    ]
    for i in range(vision_layers):
        b = f"visual.transformer.{i}"
        keys += _linear(f"{b}.norm1") + _linear(f"{b}.attn.to_qkv") + _linear(f"{b}.attn.proj")
        keys += _linear(f"{b}.norm2") + _linear(f"{b}.mlp.0") + _linear(f"{b}.mlp.2")
    keys += [
        "textual.token_embedding.weight",
        "textual.type_embedding.weight",
        "textual.pos_embedding.weight",
    ]
    keys += _linear("textual.norm") + ["textual.head.0.weight", "textual.head.2.weight"]
    for i in range(text_layers):
        b = f"textual.blocks.{i}"
        keys += [k for p in "qkvo" for k in _linear(f"{b}.attn.{p}")]
        keys += _linear(f"{b}.norm1") + _linear(f"{b}.ffn.0") + _linear(f"{b}.ffn.2") + _linear(f"{b}.norm2")
    return keys


# ---------------------------------------------------------------- inverting the converters


def invert_keys(convert, official_keys: list[str], diffusers_keys) -> dict[str, str]:
    """diffusers key -> official key, from running `convert` on placeholder tensors named by the official
    keys. Asserts that the converter maps the official key set exactly onto `diffusers_keys`."""
    placeholders = {k: torch.tensor(float(i)) for i, k in enumerate(official_keys)}
    converted = convert(placeholders)
    assert set(converted) == set(diffusers_keys), (
        "converter output differs from the model: "
        f"missing {sorted(set(diffusers_keys) - set(converted))[:5]}, "
        f"extra {sorted(set(converted) - set(diffusers_keys))[:5]}"
    )
    return {new: official_keys[int(v.item())] for new, v in converted.items()}


def to_original(state_dict: dict, mapping: dict[str, str]) -> dict:
    return {mapping[k]: v.detach().clone().contiguous() for k, v in state_dict.items()}


def original_transformer_config(spec: ModelSpec, transformer) -> dict:
    """The `config.json` the official `WanModel.save_pretrained` writes (its `ignore_for_config` fields left
    out)."""
    c = transformer.config
    model_type = {"WanVACEPipeline": "vace", "WanImageToVideoPipeline": "i2v"}.get(spec.pipeline, "t2v")
    if "flf2v" in spec.name:
        model_type = "flf2v"
    if spec.vae == "wan2.2":
        model_type = "ti2v"
    config = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "model_type": model_type,
        "text_len": 512,
        "in_dim": c.in_channels,
        "dim": c.num_attention_heads * c.attention_head_dim,
        "ffn_dim": c.ffn_dim,
        "freq_dim": c.freq_dim,
        "out_dim": c.out_channels,
        "num_heads": c.num_attention_heads,
        "num_layers": c.num_layers,
        "eps": c.eps,
    }
    if model_type == "vace":
        config.update(vace_layers=list(c.vace_layers), vace_in_dim=c.vace_in_channels)
    return config


def transformer_to_original(spec: ModelSpec, transformer) -> tuple[dict, dict]:
    config = original_transformer_config(spec, transformer)
    # Wan2.2's I2V `WanModel` has no CLIP branch; the CLIP models are Wan2.1's.
    keys = official_transformer_keys(
        config["model_type"], config["num_layers"], config.get("vace_layers"), wan22=not spec.image_encoder
    )
    sd = transformer.state_dict()
    return config, to_original(sd, invert_keys(wan_transformer.convert_transformer_state_dict, keys, sd))


def vae_to_original(vae) -> dict:
    c = vae.config
    if c.is_residual:
        keys = official_vae22_keys(c.base_dim, c.decoder_base_dim, c.dim_mult, c.num_res_blocks, c.temperal_downsample)
    else:
        keys = official_vae21_keys(c.base_dim, c.dim_mult, c.num_res_blocks, c.temperal_downsample)
    config = dict(num_res_blocks=c.num_res_blocks, dim_mult=c.dim_mult, is_residual=c.is_residual)
    sd = vae.state_dict()
    return to_original(sd, invert_keys(lambda s: wan_vae.convert_vae_state_dict(s, config), keys, sd))


def t5_to_original(text_encoder) -> dict:
    sd = text_encoder.state_dict()
    keys = official_t5_keys(text_encoder.config.num_layers)
    mapping = invert_keys(umt5.convert_umt5_state_dict, keys, sd)
    return {mapping[k]: v.detach().clone() for k, v in sd.items() if k != "encoder.embed_tokens.weight"}


def clip_to_original(image_encoder, seed: int = 7) -> dict:
    """The visual tower from `image_encoder` plus a tiny seeded XLM-RoBERTa text tower, `head` and `log_scale`
    (present in the real file, unused by Wan)."""
    c = image_encoder.config
    sd = {k.removeprefix("vision_model."): v.detach().clone() for k, v in image_encoder.state_dict().items()}
    out = {
        "visual.patch_embedding.weight": sd["embeddings.patch_embedding.weight"],
        "visual.cls_embedding": sd["embeddings.class_embedding"].reshape(1, 1, -1),
        "visual.pos_embedding": sd["embeddings.position_embedding.weight"].unsqueeze(0),
    }
    for norm, new in (("pre_layrnorm", "pre_norm"), ("post_layernorm", "post_norm")):
        for p in ("weight", "bias"):
            out[f"visual.{new}.{p}"] = sd[f"{norm}.{p}"]
    for i in range(c.num_hidden_layers):
        a, b = f"encoder.layers.{i}.", f"visual.transformer.{i}."
        for p in ("weight", "bias"):
            out[b + f"attn.to_qkv.{p}"] = torch.cat([sd[a + f"self_attn.{n}_proj.{p}"] for n in "qkv"])
            for old, new in (
                ("layer_norm1", "norm1"),
                ("layer_norm2", "norm2"),
                ("self_attn.out_proj", "attn.proj"),
                ("mlp.fc1", "mlp.0"),
                ("mlp.fc2", "mlp.2"),
            ):
                out[b + f"{new}.{p}"] = sd[a + f"{old}.{p}"]
    gen = torch.Generator().manual_seed(seed)
    dim, text_dim, vocab, positions, text_layers = c.hidden_size, 8, 11, 6, 1
    shapes = {
        "log_scale": (),
        "visual.head": (dim, c.projection_dim),
        "textual.token_embedding.weight": (vocab, text_dim),
        "textual.type_embedding.weight": (1, text_dim),
        "textual.pos_embedding.weight": (positions, text_dim),
        "textual.norm.weight": (text_dim,),
        "textual.norm.bias": (text_dim,),
        "textual.head.0.weight": ((text_dim + c.projection_dim) // 2, text_dim),
        "textual.head.2.weight": (c.projection_dim, (text_dim + c.projection_dim) // 2),
    }
    for i in range(text_layers):
        b = f"textual.blocks.{i}."
        for p in "qkvo":
            shapes[b + f"attn.{p}.weight"], shapes[b + f"attn.{p}.bias"] = (text_dim, text_dim), (text_dim,)
        for n in ("norm1", "norm2"):
            shapes[b + f"{n}.weight"], shapes[b + f"{n}.bias"] = (text_dim,), (text_dim,)
        shapes[b + "ffn.0.weight"], shapes[b + "ffn.0.bias"] = (4 * text_dim, text_dim), (4 * text_dim,)
        shapes[b + "ffn.2.weight"], shapes[b + "ffn.2.bias"] = (text_dim, 4 * text_dim), (text_dim,)
    out.update({k: torch.randn(s, generator=gen) for k, s in shapes.items()})
    return out


# ---------------------------------------------------------------- writing directories


def write_diffusers_layout(spec: ModelSpec, components: dict, path: Path) -> Path:
    """`save_pretrained` of the pipeline built from `components` (what `Wan-AI/*-Diffusers` repositories
    hold)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, spec.pipeline)
    kwargs = {k: v for k, v in components.items() if k in inspect.signature(cls.__init__).parameters}
    if spec.boundary_ratio is not None:
        kwargs["boundary_ratio"] = spec.boundary_ratio
    cls(**kwargs).save_pretrained(path)
    return path


def write_transformer_folder(folder: Path, config: dict, state_dict: dict, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if shards == 1:
        save_file(state_dict, str(folder / layouts.TRANSFORMER_WEIGHTS))
        return
    keys = list(state_dict)
    weight_map = {}
    for n in range(shards):
        name = f"diffusion_pytorch_model-{n + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state_dict[k] for k in keys[n::shards]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / layouts.TRANSFORMER_INDEX).write_text(json.dumps(index, indent=2))


def write_original_layout(spec: ModelSpec, components: dict, path: Path, shards: int = 2) -> Path:
    """The files of an original Wan repository (`Wan-AI/Wan2.1-T2V-14B` etc.) at tiny sizes."""
    path.mkdir(parents=True, exist_ok=True)
    for name, folder in layouts.transformer_folders(spec).items():
        config, sd = transformer_to_original(spec, components[name])
        write_transformer_folder(path / folder if folder else path, config, sd, shards)
    torch.save(vae_to_original(components["vae"]), path / layouts.ORIGINAL_VAE[spec.vae])
    torch.save(t5_to_original(components["text_encoder"]), path / layouts.ORIGINAL_T5)
    components["tokenizer"].save_pretrained(path / layouts.ORIGINAL_TOKENIZER_DIR)
    if spec.image_encoder:
        torch.save(clip_to_original(components["image_encoder"]), path / layouts.ORIGINAL_CLIP)
    return path


def write_tiny_checkpoints(spec: ModelSpec, root: Path, shards: int = 2) -> tuple[dict, Path, Path]:
    """Tiny components of `spec` (tiny.py uses the official fixed hyper-parameters) and the diffusers and original directories holding
    them."""
    from wanserve.engine.tiny import build_tiny_components

    components = build_tiny_components(spec)
    diffusers_dir = write_diffusers_layout(spec, components, root / "diffusers")
    original_dir = write_original_layout(spec, components, root / "original", shards=shards)
    return components, diffusers_dir, original_dir
