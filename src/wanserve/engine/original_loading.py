"""Loading the original Wan layout (the Wan-Video repositories' files) as diffusers components.

Each model is built on the meta device from a config read off its checkpoint, then its converted tensors are
assigned in place, one shard at a time (peak memory: the model plus one shard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from wanserve.engine.layouts import (
    FUN_CONTROL_UNUSED,
    ORIGINAL_CLIP,
    ORIGINAL_T5,
    ORIGINAL_TOKENIZER_DIR,
    ORIGINAL_VAE,
    original_supported,
    transformer_folders,
    weight_files,
)
from wanserve.engine.registry import ModelSpec
from wanserve.errors import CheckpointError
from wanserve.models import umt5, wan_clip, wan_transformer, wan_vae

logger = logging.getLogger(__name__)


def load_original(spec: ModelSpec, path: Path, dtypes: Mapping[str, torch.dtype]) -> dict:
    """Every component of `spec` from an original-layout directory (the scheduler excepted).

    `dtypes` maps `transformer`, `text_encoder`, `image_encoder` and `vae` to the dtype each is loaded in."""
    from transformers import AutoTokenizer

    if not original_supported(spec):
        raise CheckpointError(f"{path}: the original layout of {spec.name} is not supported; use the diffusers layout")
    components = {
        "tokenizer": AutoTokenizer.from_pretrained(str(path / ORIGINAL_TOKENIZER_DIR), local_files_only=True),
        "text_encoder": load_t5(path / ORIGINAL_T5, dtypes["text_encoder"]),
        "vae": load_vae(path / ORIGINAL_VAE[spec.vae], dtypes["vae"]),
    }
    for name, folder in transformer_folders(spec).items():
        unused = FUN_CONTROL_UNUSED if spec.pipeline == "WanFunControlPipeline" else ()
        components[name] = load_transformer(path / folder if folder else path, dtypes["transformer"], unused)
    if spec.image_encoder:
        clip = load_clip(path / ORIGINAL_CLIP, dtypes["image_encoder"])
        components["image_encoder"], components["image_processor"] = clip
    return components


def load_transformer(folder: Path, dtype: torch.dtype, unused: tuple[str, ...] = ()):
    """A `WanModel` folder (`config.json` + `diffusion_pytorch_model*.safetensors`) as a diffusers
    transformer. Keys containing one of `unused` are left out (VideoX-Fun's branches wanserve does not run)."""
    import diffusers
    from safetensors import safe_open
    from safetensors.torch import load_file

    config_path = folder / "config.json"
    try:
        original_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: cannot read the transformer config ({exc})") from exc
    shards = weight_files(folder, "diffusion_pytorch_model")
    shapes = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    config = wan_transformer.diffusers_transformer_config(original_config, shapes, source=str(config_path))
    cls = getattr(diffusers, wan_transformer.transformer_class_name(original_config))
    model = _empty(lambda: cls.from_config(config))
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    ignored = tuple(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()) + tuple(unused)
    _assign(
        model,
        (wan_transformer.convert_transformer_state_dict(load_file(str(s))) for s in shards),
        source=str(folder),
        dtype_of=lambda key: torch.float32 if any(m in key.split(".") for m in keep_fp32) else dtype,
        ignored=ignored,
    )
    return model.eval()


def load_vae(path: Path, dtype: torch.dtype = torch.float32):
    """`Wan2.1_VAE.pth` or `Wan2.2_VAE.pth` as an `AutoencoderKLWan` (float32 by default, as the official code)."""
    from diffusers import AutoencoderKLWan

    state_dict = _torch_load(path)
    config = wan_vae.vae_config_from_state_dict(state_dict, source=str(path))
    model = _empty(lambda: AutoencoderKLWan(**config))
    converted = wan_vae.convert_vae_state_dict(state_dict, config, source=str(path))
    _assign(model, [converted], source=str(path), dtype_of=lambda key: dtype)
    return model.eval()


def load_t5(path: Path, dtype: torch.dtype):
    """`models_t5_umt5-xxl-enc-bf16.pth` as a transformers `UMT5EncoderModel`."""
    from transformers import UMT5EncoderModel

    state_dict = _torch_load(path)
    config = umt5.umt5_config_from_state_dict(state_dict, source=str(path))
    model = _empty(lambda: UMT5EncoderModel(config))
    converted = umt5.convert_umt5_state_dict(state_dict, source=str(path))
    _assign(model, [converted], source=str(path), dtype_of=lambda key: dtype)
    # `shared` and `encoder.embed_tokens` are one tied embedding in transformers.
    model.tie_weights()
    return model.eval()


def load_clip(path: Path, dtype: torch.dtype):
    """The CLIP `.pth` of Wan2.1 I2V / FLF2V as a `CLIPVisionModel` and the matching `CLIPImageProcessor`."""
    from transformers import CLIPVisionModel

    state_dict = _torch_load(path)
    config = wan_clip.clip_vision_config_from_state_dict(state_dict, source=str(path))
    model = _empty(lambda: CLIPVisionModel(config))
    converted = wan_clip.convert_clip_state_dict(state_dict, source=str(path))
    if not any(k.startswith("vision_model.") for k in model.state_dict()):
        # transformers 5 dropped the `vision_model.` level that checkpoints (and transformers 4) have.
        converted = {k.removeprefix("vision_model."): v for k, v in converted.items()}
    # transformers' CLIP registers `position_ids` as a buffer; it is not in the checkpoint.
    _assign(model, [converted], source=str(path), dtype_of=lambda key: dtype, optional=("position_ids",))
    return model.eval(), wan_clip.wan_clip_image_processor(config.image_size)


def _empty(build):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return build()


def _torch_load(path: Path) -> dict:
    try:
        try:
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files saved in the legacy (non-zip) format cannot be memory-mapped
            state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc})") from exc
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state_dict).__name__}")
    return state_dict


def _assign(
    model: torch.nn.Module,
    parts: Iterable[Mapping[str, torch.Tensor]],
    source: str,
    dtype_of,
    ignored: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """Assigns converted tensors into a meta-device `model`; raises `CheckpointError` naming
    missing/unexpected keys."""
    expected = model.state_dict()
    loaded: set[str] = set()
    unexpected: list[str] = []
    for part in parts:
        tensors = {}
        for key, value in part.items():
            if key not in expected:
                if not any(pattern in key for pattern in ignored):
                    unexpected.append(key)
                continue
            if tuple(value.shape) != tuple(expected[key].shape):
                raise CheckpointError(
                    f"{source}: tensor {key!r} has shape {list(value.shape)}, the model expects "
                    f"{list(expected[key].shape)}"
                )
            tensors[key] = value.to(dtype_of(key)) if value.is_floating_point() else value
        model.load_state_dict(tensors, strict=False, assign=True)
        loaded.update(tensors)
    missing = sorted(k for k in expected if k not in loaded and not k.endswith(optional))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: checkpoint does not fit the model: "
            f"missing keys {_few(missing)}; unexpected keys {_few(sorted(unexpected))}"
        )
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise CheckpointError(f"{source}: parameters not loaded: {_few(still_meta)}")


def _few(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
