"""Which files a model directory holds in each checkpoint layout, and which of them are missing.

Two layouts are published for Wan models:
- `diffusers`: `model_index.json` and one folder per pipeline component (`Wan-AI/*-Diffusers`).
- `original`: the Wan-Video repositories' files: a `WanModel` folder (`config.json` +
  `diffusion_pytorch_model*` safetensors; `high_noise_model/` and `low_noise_model/` for the two-expert Wan2.2
  A14B models), the VAE, T5 and CLIP `.pth` files and the `google/umt5-xxl` tokenizer folder. Pure file-system
  checks: nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from wanserve.engine.registry import ModelSpec
from wanserve.errors import CheckpointError, WeightsNotFoundError

DIFFUSERS = "diffusers"
ORIGINAL = "original"
LAYOUTS = (DIFFUSERS, ORIGINAL)

MODEL_INDEX = "model_index.json"
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMER_INDEX = "diffusion_pytorch_model.safetensors.index.json"
ORIGINAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_TOKENIZER_DIR = "google/umt5-xxl"
ORIGINAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
ORIGINAL_VAE = {"wan2.1": "Wan2.1_VAE.pth", "wan2.2": "Wan2.2_VAE.pth"}
# Wan2.2 A14B: the high-noise expert runs first (diffusers `transformer`), the low-noise one after the
# boundary.
EXPERT_DIRS = {"transformer": "high_noise_model", "transformer_2": "low_noise_model"}

_NON_MODEL_COMPONENTS = {
    "scheduler": "scheduler_config.json",
    "image_processor": "preprocessor_config.json",
    "feature_extractor": "preprocessor_config.json",
}
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
_ORIGINAL_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline", "WanVACEPipeline", "WanFunControlPipeline")
FUN_CONTROL_UNUSED = ("ref_conv.", "control_adapter.")
"""VideoX-Fun Fun-Control weights wanserve does not run: the reference-image and camera branches (not offered)."""


def original_supported(spec: ModelSpec) -> bool:
    """Whether wanserve loads `spec` from the original layout (Animate: diffusers layout only). Wan2.2-VACE-Fun
    is published in that layout only: VideoX-Fun's `high_noise_model/` and `low_noise_model/` folders."""
    return spec.pipeline in _ORIGINAL_PIPELINES


def detect_layout(path: str | Path) -> str:
    """`diffusers` when `path` has `model_index.json`, `original` when it has original Wan files."""
    path = Path(path)
    if not path.is_dir():
        raise WeightsNotFoundError(f"model directory {path} does not exist")
    if (path / MODEL_INDEX).is_file():
        return DIFFUSERS
    markers = [
        "config.json",
        *(f"{d}/config.json" for d in EXPERT_DIRS.values()),
        ORIGINAL_T5,
        *ORIGINAL_VAE.values(),
    ]
    if any((path / m).exists() for m in markers):
        return ORIGINAL
    raise CheckpointError(
        f"{path} is neither a diffusers layout (no {MODEL_INDEX}) nor an original Wan layout "
        f"(none of {', '.join(markers)})"
    )


def diffusers_components(spec: ModelSpec) -> tuple[str, ...]:
    """The diffusers component folders `spec`'s pipeline needs."""
    names = ["scheduler", "tokenizer", "text_encoder", "vae", "transformer"]
    if spec.experts == 2:
        names.append("transformer_2")
    if spec.image_encoder:
        names += ["image_encoder", "image_processor"]
    return tuple(names)


def transformer_folders(spec: ModelSpec) -> dict[str, str]:
    """Original layout: diffusers component name -> folder (relative, `""` for the top) of each `WanModel`."""
    return dict(EXPERT_DIRS) if spec.experts == 2 else {"transformer": ""}


def expected_files(spec: ModelSpec, layout: str) -> tuple[str, ...]:
    """The files `spec` needs in `layout`, as patterns for people (`*` stands for shard numbers)."""
    if layout == DIFFUSERS:
        files = [MODEL_INDEX]
        for name in diffusers_components(spec):
            if name in _NON_MODEL_COMPONENTS:
                files.append(f"{name}/{_NON_MODEL_COMPONENTS[name]}")
            elif name == "tokenizer":
                files += ["tokenizer/tokenizer_config.json", "tokenizer/tokenizer.json or spiece.model"]
            elif name in ("text_encoder", "image_encoder"):
                files += [f"{name}/config.json", f"{name}/model*.safetensors"]
            else:
                files += [f"{name}/config.json", f"{name}/diffusion_pytorch_model*.safetensors"]
        return tuple(files)
    if layout != ORIGINAL:
        raise ValueError(f"`layout` must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not original_supported(spec):
        return ()
    files = []
    for folder in transformer_folders(spec).values():
        prefix = f"{folder}/" if folder else ""
        files += [
            f"{prefix}config.json",
            f"{prefix}diffusion_pytorch_model*.safetensors (+ {TRANSFORMER_INDEX})",
        ]
    files += [
        ORIGINAL_VAE[spec.vae],
        ORIGINAL_T5,
        f"{ORIGINAL_TOKENIZER_DIR}/tokenizer_config.json",
        f"{ORIGINAL_TOKENIZER_DIR}/tokenizer.json or spiece.model",
    ]
    if spec.image_encoder:
        files.append(ORIGINAL_CLIP)
    return tuple(files)


def weight_files(folder: Path, stem: str) -> list[Path]:
    """The weight files of one model folder: the shards its `<stem>.safetensors.index.json` lists, or the
    single `<stem>.safetensors` (or `.bin`). Raises `CheckpointError` naming the missing files."""
    missing = missing_weight_files(folder, stem)
    if missing:
        raise CheckpointError(f"{folder}: missing {', '.join(missing)}")
    index = _weights_index(folder, stem)
    if index is not None:
        return [folder / name for name in _shards(index)]
    return [next(folder / f"{stem}{s}" for s in (".safetensors", ".bin") if (folder / f"{stem}{s}").is_file())]


def missing_weight_files(folder: Path, stem: str) -> list[str]:
    """Weight files of one model folder that are not there (names relative to `folder`)."""
    index = _weights_index(folder, stem)
    if index is not None:
        shards = _shards(index)
        if not shards:
            return [f"{index.name} (lists no shards)"]
        return [s for s in shards if not (folder / s).is_file()]
    if any((folder / f"{stem}{s}").is_file() for s in (".safetensors", ".bin")):
        return []
    return [f"{stem}.safetensors (or {stem}.safetensors.index.json and its shards)"]


def _weights_index(folder: Path, stem: str) -> Path | None:
    for index in (folder / f"{stem}.safetensors.index.json", folder / f"{stem}.bin.index.json"):
        if index.is_file():
            return index
    return None


def _shards(index: Path) -> list[str]:
    return sorted(set(_read_json(index).get("weight_map", {}).values()))


def missing_files(spec: ModelSpec, path: str | Path, layout: str) -> tuple[str, ...]:
    """The files `spec` needs in `layout` that `path` lacks, relative to `path` (empty when complete)."""
    path = Path(path)
    if layout == DIFFUSERS:
        return tuple(_missing_diffusers(spec, path))
    if not original_supported(spec):
        return (f"(the original layout of {spec.name} is not supported: use the diffusers layout)",)
    missing = []
    for folder in transformer_folders(spec).values():
        base, prefix = path / folder, f"{folder}/" if folder else ""
        if not (base / "config.json").is_file():
            missing.append(f"{prefix}config.json")
        missing += [prefix + m for m in missing_weight_files(base, "diffusion_pytorch_model")]
    missing += [f for f in (ORIGINAL_VAE[spec.vae], ORIGINAL_T5) if not (path / f).is_file()]
    if spec.image_encoder and not (path / ORIGINAL_CLIP).is_file():
        missing.append(ORIGINAL_CLIP)
    missing += [f"{ORIGINAL_TOKENIZER_DIR}/{m}" for m in _missing_tokenizer(path / ORIGINAL_TOKENIZER_DIR)]
    return tuple(missing)


def _missing_tokenizer(folder: Path) -> list[str]:
    missing = [] if (folder / "tokenizer_config.json").is_file() else ["tokenizer_config.json"]
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(" or ".join(_TOKENIZER_FILES))
    return missing


def _missing_diffusers(spec: ModelSpec, path: Path) -> list[str]:
    if not (path / MODEL_INDEX).is_file():
        return list(expected_files(spec, DIFFUSERS))
    index = _read_json(path / MODEL_INDEX)
    listed = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None}
    missing = [f"{MODEL_INDEX}: component {name!r}" for name in diffusers_components(spec) if name not in listed]
    for name in sorted(listed):
        folder = path / name
        if name in _NON_MODEL_COMPONENTS:
            if not (folder / _NON_MODEL_COMPONENTS[name]).is_file():
                missing.append(f"{name}/{_NON_MODEL_COMPONENTS[name]}")
        elif name == "tokenizer":
            missing += [f"{name}/{m}" for m in _missing_tokenizer(folder)]
        else:
            if not (folder / "config.json").is_file():
                missing.append(f"{name}/config.json")
            stem = "model" if name in ("text_encoder", "image_encoder") else "diffusion_pytorch_model"
            missing += [f"{name}/{m}" for m in missing_weight_files(folder, stem)]
    return missing


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc
