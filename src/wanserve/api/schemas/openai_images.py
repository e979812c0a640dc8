"""OpenAI images API shapes (`POST /v1/images/generations`) and their mapping onto a wanserve `t2i` job.

- `model`: a wanserve model that serves `t2i`; OpenAI's own image model names (`dall-e-2`, `dall-e-3`,
  `gpt-image-1`, ...) and no `model` mean the first served model that does.
- `prompt` -> `prompt`; `size` "WxH" -> `width`, `height` (checked by the model's rules; "auto" or none: the
  model's t2i default, 1024x1024 for Wan2.1-T2V-14B as the official `t2i-14B`).
- `n`: 1 (one job makes one image); more is refused.
- `response_format`: `b64_json` (the default here, as `gpt-image-1`) or `url` (the job's content URL, or a presigned
  storage URL when the deployment redirects downloads). `output_format`: `png` only.
- wanserve's own sampling fields (`negative_prompt`, `seed`, `num_inference_steps`, `guidance_scale`, `flow_shift`,
  `solver`, `max_sequence_length`) pass through (the `openai` client sends them with `extra_body`).
- OpenAI's other fields (`quality`, `style`, `background`, `moderation`, `output_compression`, `partial_images`,
  `stream`, `user`) are refused by name rather than ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from wanserve.errors import InvalidRequestError

OPENAI_IMAGE_MODEL_PREFIXES = ("dall-e-", "gpt-image-")
RESPONSE_FORMATS = ("b64_json", "url")
IMAGE_FIELDS = frozenset({"model", "prompt", "n", "size", "response_format", "output_format"})
PASS_THROUGH_FIELDS = frozenset(
    {
        "negative_prompt",
        "seed",
        "num_inference_steps",
        "guidance_scale",
        "flow_shift",
        "solver",
        "max_sequence_length",
        "loras",
    }
)
REFUSED_FIELDS = frozenset(
    {"quality", "style", "background", "moderation", "output_compression", "partial_images", "stream", "user"}
)


class ImageData(BaseModel):
    """One generated image: its PNG as base64, or a URL to it."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    """Always null: wanserve does not rewrite prompts."""


class ImagesResponse(BaseModel):
    """OpenAI's images response."""

    created: int
    """Unix seconds of the job's creation."""
    data: list[ImageData]
    output_format: str = "png"
    size: str


def is_openai_image_model_name(name: str) -> bool:
    """True for OpenAI's own image model names, which mean the server's default t2i model here."""
    return name.startswith(OPENAI_IMAGE_MODEL_PREFIXES)


def image_params(fields: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The native `t2i` job parameters of an images request, and its response format. Raises naming the field."""
    from wanserve.api.schemas.openai import parse_size

    for name in sorted(fields):
        if name in REFUSED_FIELDS and fields[name] is not None:
            raise InvalidRequestError(name, f"`{name}` is not supported by wanserve's images route; remove it")
        if name not in IMAGE_FIELDS | PASS_THROUGH_FIELDS | REFUSED_FIELDS:
            raise InvalidRequestError(name, f"unknown field `{name}`")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError("prompt", f"`prompt` is required and must be a non-empty string, got {prompt!r}")
    n = fields.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidRequestError("n", f"`n` must be 1 (one job makes one image), got {n!r}")
    response_format = fields.get("response_format") or "b64_json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequestError(
            "response_format", f"`response_format` must be b64_json or url, got {response_format!r}"
        )
    if fields.get("output_format") not in (None, "png"):
        raise InvalidRequestError(
            "output_format", f"`output_format` must be png (the images are PNGs), got {fields['output_format']!r}"
        )
    params: dict[str, Any] = {k: fields[k] for k in PASS_THROUGH_FIELDS if fields.get(k) is not None}
    params.update(prompt=prompt, task="t2i")
    if fields.get("size") not in (None, "", "auto"):
        params["width"], params["height"] = parse_size(fields["size"])
    return params, response_format
