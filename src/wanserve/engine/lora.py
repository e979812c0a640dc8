"""LoRA per job: parsing the `loras` field, finding the files, and swapping adapters on a loaded model.

A job names its LoRAs as `[{"name": ..., "strength": ...}]` (a file in the configured LoRA directory) or
`[{"path": ..., "strength": ...}]` (a file under an allowed directory). The files are loaded with diffusers' Wan
LoRA loader (`WanLoraLoaderMixin.lora_state_dict`, which reads the diffusers, original Wan trainer / ComfyUI
(`diffusion_model.*`) and kohya / musubi (`lora_unet_*`) key formats) into the model's transformer(s) as PEFT
adapters. They stay loaded (a bounded cache, least recently used dropped first), and each job selects its own with
`set_adapters` (or turns LoRA off), so the base model is never reloaded between jobs.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanserve.errors import InvalidRequestError

if TYPE_CHECKING:
    from wanserve.engine.config import LoraConfig

logger = logging.getLogger(__name__)

MAX_LORAS = 8
"""LoRAs one job may stack."""
MAX_STRENGTH = 10.0
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class LoraRef:
    """One LoRA a job asks for: by `name` (in the LoRA directory) or by `path`, at `strength` (the adapter's
    weight: 0 turns it off, 1 is the trained strength)."""

    name: str | None = None
    path: str | None = None
    strength: float = 1.0

    @property
    def label(self) -> str:
        return self.name if self.name is not None else os.path.basename(self.path or "")

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in a job's `params`."""
        key = "name" if self.name is not None else "path"
        return {key: self.name if self.name is not None else self.path, "strength": self.strength}


def parse_loras(value: Any, field: str = "loras") -> tuple[LoraRef, ...]:
    """Checks the shape of a `loras` value (a list of `{"name" | "path", "strength"}` objects; a JSON string of
    one is accepted, as multipart forms send it). Files are found later (`resolve_lora_file`)."""
    import json

    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidRequestError(
                field, f"`{field}` must be a list of objects (JSON), got {value[:80]!r}"
            ) from None
    if not isinstance(value, list | tuple):
        raise InvalidRequestError(field, f"`{field}` must be a list of objects, got {type(value).__name__}")
    if len(value) > MAX_LORAS:
        raise InvalidRequestError(field, f"`{field}` may hold at most {MAX_LORAS} LoRAs, got {len(value)}")
    refs = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(item, LoraRef):
            item = item.as_dict()
        if not isinstance(item, Mapping):
            raise InvalidRequestError(where, f"`{where}` must be an object with `name` or `path`, got {item!r}")
        unknown = sorted(set(item) - {"name", "path", "strength"})
        if unknown:
            raise InvalidRequestError(f"{where}.{unknown[0]}", f"`{where}` has unknown field `{unknown[0]}`")
        name, path = item.get("name"), item.get("path")
        if (name is None) == (path is None):
            raise InvalidRequestError(where, f"`{where}` needs exactly one of `name` and `path`, got {dict(item)!r}")
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name):
            raise InvalidRequestError(
                f"{where}.name",
                f"`{where}.name` must be a file name in the LoRA directory (letters, digits, `._-`), got {name!r}",
            )
        if path is not None and (not isinstance(path, str) or not path.strip() or "\x00" in path):
            raise InvalidRequestError(f"{where}.path", f"`{where}.path` must be a non-empty path, got {path!r}")
        strength = item.get("strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, int | float | str):
            raise InvalidRequestError(f"{where}.strength", f"`{where}.strength` must be a number, got {strength!r}")
        try:
            strength = float(strength)
        except ValueError:
            raise InvalidRequestError(
                f"{where}.strength", f"`{where}.strength` must be a number, got {strength!r}"
            ) from None
        if not -MAX_STRENGTH <= strength <= MAX_STRENGTH:  # also refuses NaN
            raise InvalidRequestError(
                f"{where}.strength",
                f"`{where}.strength` must be between {-MAX_STRENGTH:g} and {MAX_STRENGTH:g}, got {strength!r}",
            )
        refs.append(LoraRef(name=name, path=path, strength=strength))
    return tuple(refs)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_lora_file(ref: LoraRef, config: LoraConfig, field: str) -> Path:
    """The file `ref` names: `<lora_dir>/<name>` (with or without one of `LORA_SUFFIXES`), or `path` when it lies
    (links resolved) inside the LoRA directory or an allowed directory. `InvalidRequestError` naming `field`."""
    if ref.name is not None:
        if config.lora_dir is None:
            raise InvalidRequestError(
                f"{field}.name", f"`{field}.name` {ref.name!r} needs a LoRA directory: set WANSERVE_LORA_DIR"
            )
        root = Path(config.lora_dir).expanduser().resolve()
        names = [ref.name] if ref.name.endswith(LORA_SUFFIXES) else [ref.name + s for s in LORA_SUFFIXES]
        for candidate in names:
            path = (root / candidate).resolve()
            if _inside(path, root) and path.is_file():
                return path
        available = sorted(p.stem for p in root.glob("*") if p.suffix in LORA_SUFFIXES)[:20] if root.is_dir() else []
        raise InvalidRequestError(
            f"{field}.name",
            f"`{field}.name` {ref.name!r} is not a LoRA in {root}; available: {', '.join(available) or 'none'}",
        )
    roots = [Path(d).expanduser().resolve() for d in config.search_dirs]
    if not roots:
        raise InvalidRequestError(
            f"{field}.path",
            f"`{field}.path` is not allowed: no LoRA directory is configured (WANSERVE_LORA_DIR, "
            "WANSERVE_LORA_ALLOWED_DIRS); use `name`",
        )
    path = Path(ref.path).expanduser()
    path = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(_inside(path, root) for root in roots):
        raise InvalidRequestError(
            f"{field}.path",
            f"`{field}.path` {ref.path!r} is outside the allowed LoRA directories ({', '.join(map(str, roots))})",
        )
    if path.suffix not in LORA_SUFFIXES or not path.is_file():
        raise InvalidRequestError(
            f"{field}.path",
            f"`{field}.path` {ref.path!r} is not a LoRA file ({', '.join(LORA_SUFFIXES)})",
        )
    return path


def resolve_loras(refs: Sequence[LoraRef], config: LoraConfig, field: str = "loras") -> list[Path]:
    """Every LoRA's file, in order (`resolve_lora_file` for each)."""
    return [resolve_lora_file(ref, config, f"{field}[{i}]") for i, ref in enumerate(refs)]


class LoraAdapters:
    """The LoRA adapters loaded on one model's transformer(s): at most `max_loaded` of them, the least recently
    used dropped first (`delete_adapters`). `loads` counts files loaded (tests and benchmarks read it)."""

    def __init__(self, transformers: Sequence[Any], max_loaded: int):
        self.transformers = list(transformers)
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple, str] = OrderedDict()
        self._active = False
        self._count = 0
        self.loads = 0

    def _adapter(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        # A changed file (mtime or size) is a new adapter; the old one ages out of the cache.
        self._count += 1
        name = f"lora_{self._count}"
        while len(self._loaded) >= self.max_loaded:
            _, old = self._loaded.popitem(last=False)
            for transformer in self.transformers:
                transformer.delete_adapters(old)
        _load_adapter(self.transformers, path, name)
        self.loads += 1
        self._loaded[key] = name
        return name

    def activate(
        self, refs: Sequence[LoraRef], files: Sequence[Path], fixed: Sequence[tuple[str, float, dict]] = ()
    ) -> list[dict[str, Any]]:
        """Selects `refs` (at their strengths) for the next generation; no refs turns LoRA off. Returns what ran.

        `fixed`: adapters loaded outside this cache (Animate's relighting LoRA, engine/relighting.py) to run as
        well, as (adapter name, strength, what to report)."""
        if not refs and not fixed:
            if self._active:
                for transformer in self.transformers:
                    transformer.disable_lora()
                self._active = False
            return []
        names = []
        for path in files:
            name = self._adapter(path)
            if name in names:
                raise InvalidRequestError("loras", f"`loras` names the file {path} twice")
            names.append(name)
        weights = [ref.strength for ref in refs] + [strength for _, strength, _ in fixed]
        for transformer in self.transformers:
            transformer.enable_lora()
            transformer.set_adapters(names + [name for name, _, _ in fixed], weights)
        self._active = True
        ran = [{**ref.as_dict(), "file": str(path)} for ref, path in zip(refs, files, strict=True)]
        return ran + [dict(report) for _, _, report in fixed]

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded.values())


def _load_adapter(transformers: Sequence[Any], path: Path, adapter_name: str) -> None:
    """Loads one LoRA file into every transformer through diffusers' Wan LoRA loader (key formats converted)."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    try:
        state_dict, metadata = WanLoraLoaderMixin.lora_state_dict(str(path), return_lora_metadata=True)
    except Exception as exc:
        raise InvalidRequestError("loras", f"`loras`: {path.name} could not be read as a LoRA: {exc}") from exc
    for transformer in transformers:
        expanded = WanLoraLoaderMixin._maybe_expand_t2v_lora_for_i2v(transformer, dict(state_dict))
        if not all("lora" in key for key in expanded):
            raise InvalidRequestError("loras", f"`loras`: {path.name} is not a LoRA (keys without `lora`)")
        try:
            with warnings.catch_warnings():  # "multiple adapters in the model": the cache holds several on purpose
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                WanLoraLoaderMixin.load_lora_into_transformer(
                    expanded, transformer=transformer, adapter_name=adapter_name, metadata=metadata
                )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise InvalidRequestError(
                "loras", f"`loras`: {path.name} does not fit this model's transformer: {exc}"
            ) from exc
    logger.info("loaded LoRA %s as adapter %s", path, adapter_name)
