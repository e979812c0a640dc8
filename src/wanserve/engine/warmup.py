"""Warm-up at start-up: one short generation per configured size, so regional `torch.compile`, cuDNN's algorithm
search and the allocator pay their first-call cost before a user's job waits on them.

The deployment names the sizes (`WANSERVE_WARMUP`: `WxHxF` for every served model, `MODEL:WxHxF` for one); each
is validated at start-up with the same rules as a request of that size (`resolve_request`), and a size a model
cannot run refuses to start, naming the setting and the entry. The warm-up request runs the whole job path (text
encode, the denoising step with classifier-free guidance as the model's default guidance has it, VAE decode) with
no output written; compiled code and the caches it fills stay for every later job of that shape.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from wanserve.engine.config import ConfigError
from wanserve.engine.registry import get_spec
from wanserve.engine.requests import GenerationRequest, TaskKind
from wanserve.errors import InvalidRequestError

SETTING = "WANSERVE_WARMUP"
_ENTRY_RE = re.compile(r"^(?:(?P<model>[^:\s]+):)?(?P<w>\d+)x(?P<h>\d+)x(?P<f>\d+)$")

WARMUP_TASKS = (TaskKind.T2V, TaskKind.TI2V, TaskKind.I2V, TaskKind.FLF2V)
"""Tasks a warm-up can run without real inputs: text only, or images made up here (a VACE model runs its
text-only form, through the same pipeline)."""


@dataclass(frozen=True)
class WarmupSize:
    """One entry of the setting: a size, for every served model (`model` None) or for one."""

    width: int
    height: int
    num_frames: int
    model: str | None = None

    def __str__(self) -> str:
        size = f"{self.width}x{self.height}x{self.num_frames}"
        return f"{self.model}:{size}" if self.model else size


def parse_warmup(entries: Sequence[str], setting: str = SETTING) -> tuple[WarmupSize, ...]:
    """The entries of `setting` (`832x480x81`, `wan2.1-t2v-14b:1280x720x81`); `ConfigError` naming a bad one."""
    sizes = []
    for entry in entries:
        match = _ENTRY_RE.match(entry.strip())
        if match is None:
            raise ConfigError(
                setting,
                f"`{setting}` entries are WIDTHxHEIGHTxFRAMES or MODEL:WIDTHxHEIGHTxFRAMES (e.g. 832x480x81), "
                f"got {entry!r}",
            )
        size = WarmupSize(int(match["w"]), int(match["h"]), int(match["f"]), match["model"])
        if size in sizes:
            raise ConfigError(setting, f"`{setting}` names {entry!r} twice")
        sizes.append(size)
    return tuple(sizes)


def warmup_requests(
    models: Sequence[str], sizes: Sequence[WarmupSize], setting: str = SETTING
) -> tuple[tuple[str, GenerationRequest], ...]:
    """(model, request) for every size that applies to a served model, in the setting's order per model.

    Raises `ConfigError` naming `setting` and the entry when an entry names a model not served, when a model's task
    needs input videos (a warm-up makes up images, never videos), or when the model cannot run the size (the
    request's own validation, whose message is included)."""
    for size in sizes:
        if size.model is not None and size.model not in models:
            raise ConfigError(
                setting,
                f"`{setting}` entry {str(size)!r} names {size.model!r}, which is not served ({', '.join(models)})",
            )
    plan = []
    for model in models:
        for size in sizes:
            if size.model not in (None, model):
                continue
            plan.append((model, warmup_request(model, size, setting)))
    return tuple(plan)


def warmup_request(model: str, size: WarmupSize, setting: str = SETTING) -> GenerationRequest:
    """The request that warms `model` up at `size`: the model's default task (its text-only form where it has
    one), one denoising step (two for a two-expert model, one per expert), the default guidance, a fixed seed."""
    from wanserve.engine.validation import resolve_request

    spec = get_spec(model)
    task = spec.default_task
    if task not in WARMUP_TASKS:
        task = next((t for t in (TaskKind.T2V, TaskKind.TI2V) if t in spec.tasks), task)
    if task not in WARMUP_TASKS:
        raise ConfigError(
            setting,
            f"`{setting}` entry {str(size)!r}: {model} serves task {task.value!r}, which needs input videos a "
            "warm-up does not have; warm up other models only (MODEL:WxHxF)",
        )
    params: dict = {
        "task": task.value,
        "prompt": "warm-up",
        "width": size.width,
        "height": size.height,
        "num_frames": size.num_frames,
        "num_inference_steps": 2 if spec.experts > 1 else 1,
        "seed": 0,
    }
    if spec.experts > 1:
        # Two steps, the first above the switch and the second below it, so both experts run (and compile).
        params["boundary_ratio"] = 0.99
    if task in (TaskKind.I2V, TaskKind.FLF2V):
        params["image"] = _gray_png(size.width, size.height)
    if task == TaskKind.FLF2V:
        params["last_image"] = params["image"]
    try:
        return resolve_request(model, params)
    except InvalidRequestError as exc:
        raise ConfigError(setting, f"`{setting}` entry {str(size)!r}: {model} cannot run it: {exc}") from None


def _gray_png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
