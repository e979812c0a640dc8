"""Reading a job's media inputs at submission: file bytes, a `data:` URL, or an http(s) URL (fetched safely by
`media.fetch`). Each is size-capped and its bytes sniffed, so a bad input is a 4xx at submission, not a failed job.
Local paths are never accepted from clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wanserve.errors import InvalidRequestError, PayloadTooLargeError
from wanserve.media.fetch import FetchConfig, fetch_with_config
from wanserve.media.inputs import IMAGE_MIME_TYPES, VIDEO_MIME_TYPES, decode_data_url, describe_bytes, sniff_media_type

IMAGE_FIELDS = frozenset({"image", "last_image", "reference_images"})
# Every other media field is a video; a VACE or Animate `mask` too (the engine reads it frame by frame).


@dataclass(frozen=True)
class MediaLimits:
    """Limits on each media input."""

    max_bytes: int = 100 * 1024 * 1024
    """Largest input in bytes (upload, decoded data URL, or fetched body)."""
    fetch_timeout_s: float = 30.0
    allow_private_urls: bool = False
    """Let http(s) inputs point at private/loopback addresses (tests, intranets)."""


@dataclass(frozen=True)
class StoredInput:
    """One input's bytes, sniffed type, and how it is shown in the job's `params`."""

    data: bytes
    mime: str
    description: str


def load_input(field: str, value: Any, limits: MediaLimits) -> StoredInput:
    """The bytes of one media input, checked for size and type. `field` names it in every error."""
    base = field.split("[", 1)[0]
    if isinstance(value, bytes | bytearray | memoryview):
        data, origin = bytes(value), "upload"
    elif isinstance(value, str) and value.startswith("data:"):
        data, origin = decode_data_url(value, field, limits.max_bytes)[1], "data URL"
    elif isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        config = FetchConfig(
            max_bytes=limits.max_bytes,
            timeout_s=limits.fetch_timeout_s,
            allow_private_addresses=limits.allow_private_urls,
        )
        data, origin = fetch_with_config(value, field, config), value
    else:
        shown = value[:60] if isinstance(value, str) else type(value).__name__
        raise InvalidRequestError(
            field, f"`{field}` must be an uploaded file, a data: URL or an http(s) URL, got {shown!r}"
        )
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            field, f"`{field}` is {len(data)} bytes, more than the limit of {limits.max_bytes} bytes"
        )
    if not data:
        raise InvalidRequestError(field, f"`{field}` is empty")
    mime = sniff_media_type(data)
    image = base in IMAGE_FIELDS
    if mime not in (IMAGE_MIME_TYPES if image else VIDEO_MIME_TYPES):
        raise InvalidRequestError(
            field, f"`{field}` must be {'an image' if image else 'a video'}, got {describe_bytes(data)}"
        )
    return StoredInput(data, mime, f"{origin} ({mime}, {len(data)} bytes)")
