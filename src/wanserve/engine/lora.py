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


SLOT = "wanserve_slot"
SLOT_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj", "ffn.net.2")  # fmt: skip
"""The block layers a hot-swap slot covers (Wan LoRAs train these; the image key/value projections exist on I2V)."""


class LoraSlot:
    """LoRA for compiled blocks: one adapter (`SLOT`) of rank `rank` on every block layer of `SLOT_TARGETS`, made
    with diffusers' `enable_lora_hotswap` before the blocks first run, whose weights each job overwrites in place
    (`load_lora_adapter(..., hotswap=True)`). The compiled code sees the same modules, shapes and scaling tensors
    every time, so switching LoRAs, strengths or none never recompiles. A job's LoRAs are summed into the slot:
    their down-projections stacked, their up-projections side by side with the strength folded in (so the ranks
    add up, at most `rank`). No LoRA is an all-zero slot: the base model's output."""

    def __init__(self, transformers: Sequence[Any], rank: int, max_cached: int):
        import torch

        self.transformers, self.rank = list(transformers), rank
        self._files: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._max_cached = max_cached
        self._current: tuple = ("empty",)
        self.loads = 0
        for transformer in self.transformers:
            targets = {}
            for name, module in transformer.named_modules():
                parts = name.split(".", 2)
                if parts[0] == "blocks" and len(parts) == 3 and parts[2] in SLOT_TARGETS:
                    targets[f"transformer.{name}"] = module
            zeros = {}
            for key, module in targets.items():
                zeros[f"{key}.lora_A.weight"] = torch.zeros(1, module.in_features, dtype=module.weight.dtype)
                zeros[f"{key}.lora_B.weight"] = torch.zeros(module.out_features, 1, dtype=module.weight.dtype)
            transformer.enable_lora_hotswap(target_rank=rank)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                transformer.load_lora_adapter(zeros, adapter_name=SLOT, prefix="transformer")

    def _state(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._files:
            from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

            try:
                state = WanLoraLoaderMixin.lora_state_dict(str(path))
            except Exception as exc:
                raise InvalidRequestError("loras", f"`loras`: {path.name} could not be read as a LoRA: {exc}") from exc
            self._files[key] = state
            self.loads += 1
            while len(self._files) > self._max_cached:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return self._files[key]

    def activate(self, refs: Sequence[LoraRef], files: Sequence[Path], fixed: Sequence = ()) -> list[dict[str, Any]]:
        """Writes the sum of `refs` (at their strengths) into the slot; no refs empties it. Returns what ran."""
        import torch

        if fixed:  # the engine gives a model with fixed adapters (Animate's relighting) plain adapters instead
            raise RuntimeError("a LoRA hot-swap slot cannot run fixed adapters besides it")

        wanted = tuple((str(path), ref.strength) for ref, path in zip(refs, files, strict=True) if ref.strength != 0)
        if wanted != self._current:
            states = [(self._state(path), ref.strength) for ref, path in zip(refs, files, strict=True)]
            downs: dict[str, list] = {}
            ups: dict[str, list] = {}
            for state, strength in states:
                if strength == 0:
                    continue
                for key, value in state.items():
                    if key.endswith(".lora_A.weight"):
                        module = key[: -len(".lora_A.weight")]
                        downs.setdefault(module, []).append(value)
                        ups.setdefault(module, []).append(state[f"{module}.lora_B.weight"] * strength)
            rank = max((sum(a.shape[0] for a in parts) for parts in downs.values()), default=0)
            if rank > self.rank:
                raise InvalidRequestError(
                    "loras", f"`loras`: their ranks add up to {rank}, more than the hot-swap slot's {self.rank} "
                    "(WANSERVE_LORA_HOTSWAP_RANK)",
                )  # fmt: skip
            combined = {}
            for module, parts in downs.items():
                down, up = torch.cat(parts, 0), torch.cat(ups[module], 1)
                pad = rank - down.shape[0]  # modules some LoRAs leave out: zero rows and columns
                combined[f"{module}.lora_A.weight"] = torch.nn.functional.pad(down, (0, 0, 0, pad))
                combined[f"{module}.lora_B.weight"] = torch.nn.functional.pad(up, (0, pad))
            self._swap(combined)
            self._current = wanted
        return [{**ref.as_dict(), "file": str(path)} for ref, path in zip(refs, files, strict=True)]

    def _swap(self, combined: dict[str, Any]) -> None:
        import torch

        if not combined:  # nothing to add: every slot weight zero
            with torch.no_grad():
                for transformer in self.transformers:
                    for name, param in transformer.named_parameters():
                        if f".{SLOT}" in name and "lora_" in name:
                            param.zero_()
            return
        for transformer in self.transformers:
            state = _expand_for_i2v(transformer, combined)
            try:
                transformer.load_lora_adapter(state, adapter_name=SLOT, prefix="transformer", hotswap=True)
            except (RuntimeError, ValueError) as exc:
                raise InvalidRequestError(
                    "loras", f"`loras`: cannot be hot-swapped into the compiled model's LoRA slot: {exc}"
                ) from exc

    @property
    def loaded(self) -> list[str]:
        return [SLOT]


def _expand_for_i2v(transformer: Any, state: dict[str, Any]) -> dict[str, Any]:
    """diffusers' zero image key/value adapters for a text-to-video LoRA on an image-to-video model."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    return WanLoraLoaderMixin._maybe_expand_t2v_lora_for_i2v(transformer, dict(state))
