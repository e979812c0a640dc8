"""Finding a model's weights on disk, reporting what is there, and loading them as diffusers components.

`load_components` reads both published layouts (see `engine/layouts.py`) offline and returns diffusers
component names, so the engine builds the same pipeline from either. Nothing is downloaded here
(`engine/download.py` does).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from wanserve.engine import original_loading
from wanserve.engine.config import WeightsConfig
from wanserve.engine.layouts import (
    DIFFUSERS,
    MODEL_INDEX,
    ORIGINAL,
    detect_layout,
    diffusers_components,
    expected_files,
    missing_files,
    transformer_folders,
)
from wanserve.engine.registry import ModelSpec
from wanserve.engine.requests import TaskKind
from wanserve.errors import CheckpointError, WeightsNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "WeightsStatus",
    "build_scheduler",
    "detect_layout",
    "load_components",
    "resolve_model_dir",
    "weights_status",
]


@dataclass(frozen=True)
class WeightsStatus:
    """What is on disk for one model. `complete`: every file the layout needs for this model is there."""

    name: str
    path: str | None
    layout: str | None
    present: bool
    complete: bool
    missing: tuple[str, ...]


def resolve_model_dir(spec: ModelSpec, weights: WeightsConfig) -> Path | None:
    """The directory holding `spec`'s weights, or None: the one rule every command uses.

    Order: the explicit path of `weights.model_paths` (returned even if it does not exist, so errors name it),
    `<models_dir>/<name>`, `<models_dir>/<hub repository name>` (the replaced services' `WAN_MODELS_ROOT` layout),
    then `weights.checkpoint_dir` when it holds this kind of model. Tiny models look only at `<models_dir>/<name>`.
    """
    explicit = weights.model_path(spec.name)
    if explicit:
        return Path(explicit).expanduser()
    root = Path(weights.models_dir).expanduser()
    ours = root / spec.name
    if spec.tiny:  # the checkpoint directory and hub names point at real models
        return ours if ours.is_dir() else None
    names = [spec.name] + [h.rsplit("/", 1)[-1] for h in _hub_ids(spec)]
    candidates = [(root / n, False) for n in dict.fromkeys(names)]
    if weights.checkpoint_dir:
        candidates.append((Path(weights.checkpoint_dir).expanduser(), True))
    for path, must_match in candidates:
        if not path.is_dir():
            continue
        if must_match and not _holds_model_kind(spec, path):
            logger.debug("%s holds another kind of model than %s; skipped", path, spec.name)
            continue
        return path
    return None


def weights_status(spec: ModelSpec, weights: WeightsConfig, path: str | Path | None = None) -> WeightsStatus:
    """What is on disk for `spec` at `path` (default: where `resolve_model_dir` finds it). Tiny models with no
    directory are complete: they are built in (random weights)."""
    resolved = Path(path).expanduser() if path is not None else resolve_model_dir(spec, weights)
    if spec.pipeline == "FlashVSR" and not spec.tiny:
        # One FlashVSR v1.1 directory of the official files (models/flashvsr/loading.py), not a Wan layout.
        from wanserve.models.flashvsr.loading import missing_files as flashvsr_missing
        from wanserve.models.flashvsr.loading import required_files

        if resolved is None or not resolved.is_dir():
            where = None if resolved is None else str(resolved)
            return WeightsStatus(spec.name, where, None, False, False, required_files(spec.variant))
        missing = tuple(flashvsr_missing(resolved, spec.variant))
        return WeightsStatus(spec.name, str(resolved), "flashvsr", True, not missing, missing)
    if resolved is None:
        if spec.tiny:
            return WeightsStatus(spec.name, None, None, True, True, ())
        return WeightsStatus(spec.name, None, None, False, False, expected_files(spec, preferred_layout(spec)))
    try:
        layout = detect_layout(resolved)
    except (WeightsNotFoundError, CheckpointError):
        return WeightsStatus(spec.name, str(resolved), None, False, False, expected_files(spec, preferred_layout(spec)))
    missing = missing_files(spec, resolved, layout)
    return WeightsStatus(spec.name, str(resolved), layout, True, not missing, missing)


def preferred_layout(spec: ModelSpec) -> str:
    """The layout `wanserve download` fetches by default: diffusers where it is published."""
    return DIFFUSERS if spec.hub.hf_diffusers or spec.hub.modelscope_diffusers or spec.tiny else ORIGINAL


def build_scheduler(spec: ModelSpec):
    """The flow-matching scheduler of the official sampler `spec.solver` with shift `spec.flow_shift` (UniPC,
    DPM++ or flow-match Euler, as engine/pipelines.py makes one per request)."""
    from wanserve.engine.pipelines import make_scheduler

    return make_scheduler(None, spec.solver, spec.flow_shift)


def load_components(
    spec: ModelSpec,
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    text_encoder_dtype: torch.dtype | None = None,
    image_encoder_dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype = torch.float32,
) -> dict:
    """Loads `spec`'s pipeline components from `path` (either layout), offline.

    Returns diffusers component names: tokenizer, text_encoder, vae, transformer, transformer_2 (two experts),
    image_encoder and image_processor (CLIP models), scheduler (from the spec). The transformers get `dtype`, the
    text and image encoders `text_encoder_dtype` and `image_encoder_dtype` (default `dtype`), the VAE `vae_dtype`
    (float32 by default, as the official code decodes).
    """
    path = Path(path).expanduser()
    layout = detect_layout(path)
    if layout == DIFFUSERS:
        _check_pipeline_class(spec, path)
    missing = missing_files(spec, path, layout)
    if missing:
        raise CheckpointError(f"{spec.name}: {path} ({layout} layout) is missing {', '.join(missing)}")
    dtypes = {
        "transformer": dtype,
        "text_encoder": text_encoder_dtype or dtype,
        "image_encoder": image_encoder_dtype or dtype,
        "vae": vae_dtype,
    }
    logger.info("loading %s from %s (%s layout)", spec.name, path, layout)
    if layout == DIFFUSERS:
        components = _load_diffusers(spec, path, dtypes)
    else:
        components = original_loading.load_original(spec, path, dtypes)
    components["scheduler"] = build_scheduler(spec)
    return components


def _load_diffusers(spec: ModelSpec, path: Path, dtypes: dict[str, torch.dtype]) -> dict:
    from diffusers import DiffusionPipeline

    by_component = {**dtypes, "transformer_2": dtypes["transformer"], "default": dtypes["transformer"]}
    given = {}
    try:
        if (path / "image_processor").is_dir():  # loaded with the class that needs no torchvision (no warning)
            from wanserve.models.wan_clip import clip_image_processor_class

            given["image_processor"] = clip_image_processor_class().from_pretrained(path / "image_processor")
        pipe = DiffusionPipeline.from_pretrained(path, dtype=by_component, local_files_only=True, **given)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{spec.name}: cannot load the diffusers layout in {path}: {exc}") from exc
    wanted = set(diffusers_components(spec)) - {"scheduler"}
    return {name: c for name, c in pipe.components.items() if name in wanted and c is not None}


def _check_pipeline_class(spec: ModelSpec, path: Path) -> None:
    try:
        index = json.loads((path / MODEL_INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / MODEL_INDEX}: cannot read JSON ({exc})") from exc
    if index.get("_class_name") != spec.pipeline:
        raise CheckpointError(
            f"{path / MODEL_INDEX}: `_class_name` is {index.get('_class_name')!r}, {spec.name} needs {spec.pipeline!r}"
        )


def _hub_ids(spec: ModelSpec) -> list[str]:
    hub = spec.hub
    ids = [hub.hf_diffusers, hub.hf_original, hub.modelscope_diffusers, hub.modelscope_original]
    return [i for i in ids if i]


def _holds_model_kind(spec: ModelSpec, path: Path) -> bool:
    """Whether `path` plausibly holds `spec`'s kind of model (pipeline, experts, original model type)."""
    try:
        layout = detect_layout(path)
        if layout == DIFFUSERS:
            index = json.loads((path / MODEL_INDEX).read_text())
            two = isinstance(index.get("transformer_2"), list) and index["transformer_2"][0] is not None
            return index.get("_class_name") == spec.pipeline and two == (spec.experts == 2)
        folder = next(iter(transformer_folders(spec).values()))
        config = json.loads((path / folder / "config.json").read_text())
    except (OSError, ValueError, CheckpointError, WeightsNotFoundError):
        return False
    if spec.pipeline == "WanFunControlPipeline":
        # VideoX-Fun's config: a `WanModel` whose input takes more channels than it outputs (the control latents)
        return int(config.get("in_dim", 0)) >= 2 * int(config.get("out_dim", 1))
    if spec.pipeline == "WanVACEPipeline":
        from wanserve.models.wan_transformer import is_vace

        return is_vace(config)  # Wan2.2-VACE-Fun's config says model_type 't2v'
    return config.get("model_type", "t2v") == _original_model_type(spec)


def _original_model_type(spec: ModelSpec) -> str:
    if spec.pipeline == "WanImageToVideoPipeline":
        return "flf2v" if TaskKind.FLF2V in spec.tasks else "i2v"
    return "ti2v" if spec.vae == "wan2.2" else "t2v"
