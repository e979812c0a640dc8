"""Wan2.2-Animate's relighting LoRA: loaded once through diffusers' Wan LoRA loader, on in replace mode only.

The official file, `relighting_lora.ckpt` at the root of the Wan2.2-Animate-14B checkpoint, is a torch pickle
`{"state_dict": {...}}` of peft keys `blocks.<i>.<module>.lora_A.weight` / `lora_B.weight` over every Linear of
the DiT blocks except the face adapter and the modulation (Wan2.2 wan/animate.py `_configure_model`, rank 128,
alpha 128, so scale 1; wan/modules/animate/animate_utils.py `get_loraconfig`). Those are the original Wan module
names (`self_attn.q`, `cross_attn.k_img`, `ffn.0`), which diffusers' Wan LoRA converter maps onto its own
(`attn1.to_q`, `attn2.add_k_proj`, `ffn.net.0.proj`) when they carry the `diffusion_model.` prefix it expects.

The official code applies it to the model when started with `--use_relighting_lora` and recommends it for replace
mode; wanserve loads it when the file is there (the setting `WANSERVE_ANIMATE_RELIGHTING_LORA`, else the model
directory's `relighting_lora.ckpt`) and enables it for replace-mode generations only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from wanserve.engine.config import ConfigError

logger = logging.getLogger(__name__)

RELIGHTING_FILE = "relighting_lora.ckpt"
ADAPTER = "relighting"
_PREFIX = "diffusion_model."


def find_relighting_lora(configured: str | None, model_dir: str | None) -> Path | None:
    """The relighting LoRA file: the configured path (which must exist), else `<model dir>/relighting_lora.ckpt`
    when present, else None."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError("relighting_lora", f"`relighting_lora` {configured!r} is not a file")
        return path
    if model_dir:
        candidate = Path(model_dir) / RELIGHTING_FILE
        if candidate.is_file():
            return candidate
    return None


def read_relighting_lora(path: Path) -> dict[str, torch.Tensor]:
    """The LoRA's tensors, keyed as diffusers' Wan LoRA converter expects (`diffusion_model.blocks...`).

    Raises `ConfigError` naming the file when it is not a state dict of `lora_A` / `lora_B` weights under `blocks.`.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same configuration error
        raise ConfigError(
            "relighting_lora", f"`relighting_lora` {str(path)!r} is not a readable torch file: {exc}"
        ) from exc
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConfigError("relighting_lora", f"`relighting_lora` {str(path)!r} holds no state dict")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        if not (name.startswith("blocks.") and (".lora_A." in name or ".lora_B." in name)):
            raise ConfigError(
                "relighting_lora",
                f"`relighting_lora` {str(path)!r} has key {key!r}; expected peft keys `blocks.<i>.<module>.lora_A"
                ".weight` / `lora_B.weight` (the official relighting_lora.ckpt layout)",
            )
        if not isinstance(value, torch.Tensor):
            raise ConfigError("relighting_lora", f"`relighting_lora` {str(path)!r}: {key!r} is not a tensor")
        tensors[_PREFIX + name] = value
    return tensors


def load_relighting_lora(transformer, path: Path) -> None:
    """Loads the LoRA into `transformer` (Animate's) as adapter `relighting` through diffusers' Wan LoRA loader,
    as engine/lora.py loads a job's LoRAs; disabled until a replace-mode run selects it (with the job's own LoRAs,
    `LoraAdapters.activate`)."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    state_dict = WanLoraLoaderMixin.lora_state_dict(read_relighting_lora(path))
    WanLoraLoaderMixin.load_lora_into_transformer(state_dict, transformer=transformer, adapter_name=ADAPTER)
    transformer.disable_lora()
    logger.info("relighting LoRA loaded from %s (applied in replace mode)", path)


def relighting_adapter(loaded_file: str | None) -> list[tuple[str, float, dict]]:
    """The relighting adapter as `LoraAdapters.activate` takes a fixed adapter (none when no file was loaded); the
    job's result lists it with its LoRAs."""
    if not loaded_file:
        return []
    return [(ADAPTER, 1.0, {"name": ADAPTER, "strength": 1.0, "file": loaded_file})]
