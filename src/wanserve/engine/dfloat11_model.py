"""DFloat11 on a Wan transformer: compressing a diffusers-layout directory (`wanserve compress --format df11`) and
serving the compressed weights.

Served compressed (`attach_df11`): the Linear weights of each transformer block stay compressed on the device (or
on the CPU, pinned, with `cpu_offload`) and a forward pre-hook on the block decodes them all in one pass just before
the block runs; a post-hook drops them again. So the device holds the compressed model plus one block of bf16 weights,
and the output is bit-exact. Everything outside the blocks (embeddings, the output head, biases, norms) is decoded
once at load. `decompress_into` instead decodes everything at load (the plain bf16 model, loaded from a smaller file).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wanserve.engine.dfloat11 import (
    FILE_NAME,
    DF11Tensor,
    compress_state_dict,
    compressed_bytes,
    decompress,
    load_df11,
    save_df11,
)

logger = logging.getLogger(__name__)

TRANSFORMER_FOLDERS = ("transformer", "transformer_2")


def _component_dirs(src: Path) -> dict[str, Path]:
    """`{folder name: directory}` of the transformers to compress: `src` itself when it holds a transformer's
    config.json and safetensors, else its `transformer/` and `transformer_2/` folders."""
    if (src / "config.json").is_file() and any(src.glob("*.safetensors")):
        return {"": src}
    found = {name: src / name for name in TRANSFORMER_FOLDERS if (src / name / "config.json").is_file()}
    if not found:
        raise ValueError(
            f"`SRC` {src} holds no diffusers-layout transformer (config.json and *.safetensors, or transformer/ "
            "and transformer_2/ folders of them); convert an original-layout checkpoint with diffusers first"
        )
    return found


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        if shard.name != FILE_NAME:
            state.update(load_file(str(shard)))
    return state


def compress_directory(src: str | Path, dst: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Compresses the transformer(s) of `src` into `dst` (`<folder>/config.json` and `<folder>/` + `FILE_NAME`).
    Returns sizes per folder: `bf16_bytes`, `df11_bytes`, `ratio`."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    report: dict[str, Any] = {}
    for folder, directory in _component_dirs(src).items():
        state = _read_safetensors(directory)
        if not any(t.dtype == torch.bfloat16 for t in state.values()):
            raise ValueError(f"`SRC` {directory} has no bfloat16 weights: DFloat11 compresses bfloat16 only")
        original = sum(t.numel() * t.element_size() for t in state.values())
        compressed = compress_state_dict({k: v.to(device) for k, v in state.items()})
        out = dst / folder
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / "config.json", out / "config.json")
        save_df11(compressed, out / FILE_NAME)
        size = compressed_bytes(compressed)
        report[folder or "transformer"] = {"bf16_bytes": original, "df11_bytes": size, "ratio": size / original}
        logger.info("compressed %s: %.2f GiB -> %.2f GiB", directory, original / 2**30, size / 2**30)
    (dst / "df11.json").write_text(json.dumps({"format": "wanserve-df11", "source": str(src), **report}, indent=2))
    return report


def df11_file(directory: str | Path, folder: str) -> Path | None:
    """The DF11 file of transformer `folder` (`transformer`, `transformer_2`) under `directory`, if any (a directory
    holding the file itself counts as `transformer`)."""
    directory = Path(directory).expanduser()
    for candidate in (directory / folder / FILE_NAME, directory / FILE_NAME if folder == "transformer" else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def decompress_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor | DF11Tensor], device=None) -> None:
    """Loads every tensor of `state` into `module`, decoding compressed ones (one at a time) on `device`."""
    _assign(module, {name: _decoded(value, device) for name, value in state.items()})


def _decoded(value, device):
    return decompress([value], device)[0] if isinstance(value, DF11Tensor) else value.to(device or value.device)


def _assign(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(dict(tensors), strict=False, assign=True)
    if unexpected:
        raise ValueError(f"DF11 weights do not fit {type(module).__name__}: unexpected {unexpected[:5]}")


class _CompressedBlock:
    """The compressed Linear weights of one transformer block and the hooks that decode them around its forward."""

    def __init__(self, block: torch.nn.Module, weights: dict[str, DF11Tensor], device, cpu_offload: bool):
        self.block, self.device, self.cpu_offload = block, torch.device(device), cpu_offload
        self.names = list(weights)
        stored = [w.pin_memory() if cpu_offload and torch.cuda.is_available() else w for w in weights.values()]
        self.weights = [w if cpu_offload else w.to(self.device) for w in stored]
        for name in self.names:
            owner, attr = self._owner(name)
            del owner._parameters[attr]
            setattr(owner, attr, torch.empty(0, dtype=torch.bfloat16, device=self.device))
        block.register_forward_pre_hook(self.before)
        block.register_forward_hook(self.after)

    def _owner(self, name: str) -> tuple[torch.nn.Module, str]:
        path, _, attr = name.rpartition(".")
        owner = self.block.get_submodule(path) if path else self.block
        # A LoRA adapter loaded later wraps the Linear (peft's `base_layer` holds the weight).
        while hasattr(owner, "base_layer"):
            owner = owner.base_layer
        return owner, attr

    def before(self, module, args):
        weights = [w.to(self.device, non_blocking=True) for w in self.weights] if self.cpu_offload else self.weights
        for name, tensor in zip(self.names, decompress(weights, self.device), strict=True):
            owner, attr = self._owner(name)
            setattr(owner, attr, tensor)

    def after(self, module, args, output):
        for name in self.names:
            owner, attr = self._owner(name)
            setattr(owner, attr, torch.empty(0, dtype=torch.bfloat16, device=self.device))
        return output

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


def attach_df11(
    transformer: torch.nn.Module,
    state: Mapping[str, torch.Tensor | DF11Tensor],
    device,
    cpu_offload: bool = False,
) -> dict[str, Any]:
    """Serves `transformer` from the DF11 `state`: block weights stay compressed (on `device`, or pinned on the CPU
    with `cpu_offload`) and are decoded per block at run time; the rest is decoded now. Returns what it did."""
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(transformer).__name__} has no `blocks`: DF11 serving needs Wan's block list")
    per_block: dict[int, dict[str, DF11Tensor]] = {}
    eager: dict[str, torch.Tensor | DF11Tensor] = {}
    for name, value in state.items():
        parts = name.split(".")
        if isinstance(value, DF11Tensor) and parts[0] == "blocks" and parts[-1] == "weight":
            per_block.setdefault(int(parts[1]), {})[".".join(parts[2:])] = value
        else:
            eager[name] = value
    decompress_into(transformer, eager, device)
    # The hooks drop the blocks' bf16 parameters first, so moving the model never copies them to the device.
    hooks = [_CompressedBlock(blocks[i], weights, device, cpu_offload) for i, weights in sorted(per_block.items())]
    transformer.to(device)
    kept = sum(h.nbytes for h in hooks)
    logger.info(
        "DF11: %d blocks compressed (%.2f GiB)%s", len(hooks), kept / 2**30, ", on the CPU" if cpu_offload else ""
    )
    return {"dfloat11": "on the fly", "compressed_blocks": len(hooks), "compressed_gib": round(kept / 2**30, 3)}


def apply_df11_dir(components: dict[str, Any], directory: str | Path, device, cpu_offload: bool) -> dict[str, Any]:
    """Replaces the weights of each transformer in `components` that has a DF11 file under `directory`."""
    done = {}
    for folder in TRANSFORMER_FOLDERS:
        if folder not in components:
            continue
        path = df11_file(directory, folder)
        if path is None:
            from wanserve.engine.config import ConfigError

            raise ConfigError(
                "dfloat11_dir", f"`dfloat11_dir` has no DF11 weights for `{folder}` (expected {folder}/{FILE_NAME})"
            )
        done[folder] = attach_df11(components[folder], load_df11(path), device, cpu_offload)
    return done
