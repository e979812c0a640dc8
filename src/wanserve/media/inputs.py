"""Where media inputs come from: file bytes, a local path or a `data:` URL; and what their bytes really are.

Every check that accepts an upload calls `sniff_media_type` on the bytes themselves: a file name or a declared
content type says nothing about what a client actually sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import urllib.parse
from pathlib import Path
from typing import BinaryIO

import filetype

from wanserve.engine.requests import MediaInput
from wanserve.errors import InvalidRequestError, PayloadTooLargeError

logger = logging.getLogger(__name__)

IMAGE_MIME_TYPES = frozenset({"image/png", "image/apng", "image/jpeg", "image/webp", "image/bmp", "image/gif"})
"""Image types `load_image` accepts (an animated PNG or GIF gives its first frame)."""

VIDEO_MIME_TYPES = frozenset(
    {
        "video/mp4",
        "video/x-m4v",
        "video/quicktime",
        "video/3gpp",
        "video/webm",
        "video/x-matroska",
        "video/x-msvideo",
        "image/gif",
    }
)
"""Video types `load_video` accepts. An animated GIF is a video too."""

SNIFF_BYTES = 8192
"""How many leading bytes `sniff_media_type` looks at."""


def sniff_media_type(data: bytes) -> str | None:
    """The image or video MIME type of `data` from its leading bytes (`"image/png"`, `"video/mp4"`, ...).

    `None` when the bytes are not an image or video type known here (text, archives, empty input).
    Only the first `SNIFF_BYTES` bytes are read.
    """
    head = bytes(data[:SNIFF_BYTES])
    if not head:
        return None
    kind = filetype.guess(head)
    if kind is None:
        return None
    mime = kind.mime
    if mime.startswith(("image/", "video/")):
        return mime
    return None


def describe_bytes(data: bytes) -> str:
    """A short human description of what some bytes look like, for error messages."""
    head = bytes(data[:SNIFF_BYTES])
    if not head:
        return "empty input"
    kind = filetype.guess(head)
    if kind is not None:
        return f"a {kind.mime} file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text, not an image or video"


def decode_data_url(url: str, field: str, max_bytes: int | None = None) -> tuple[str, bytes]:
    """Decodes a `data:[<type>][;base64],<payload>` URL into (declared type, bytes).

    Raises `InvalidRequestError` naming `field` when the URL is malformed, and `PayloadTooLargeError` when the
    decoded payload would exceed `max_bytes`. The declared type is returned as given; callers sniff the bytes.
    """
    if not url.startswith("data:"):
        raise InvalidRequestError(field, f"`{field}` is not a data URL (it must start with `data:`), got {url[:40]!r}")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InvalidRequestError(field, f"`{field}` data URL has no `,` between its header and its payload")
    params = header.split(";")
    declared_type = params[0].strip().lower() or "text/plain"
    is_base64 = any(p.strip().lower() == "base64" for p in params[1:])
    if max_bytes is not None:
        # Base64 expands 3 bytes to 4 characters; refuse before decoding a payload that is too large anyway.
        estimate = len(payload) * 3 // 4 if is_base64 else len(payload) // 3
        if estimate > max_bytes:
            raise PayloadTooLargeError(
                field,
                f"`{field}` data URL holds about {estimate} bytes, more than the limit of {max_bytes} bytes",
            )
    if is_base64:
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError(field, f"`{field}` data URL has an invalid base64 payload: {exc}") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLargeError(
            field, f"`{field}` data URL holds {len(data)} bytes, more than the limit of {max_bytes} bytes"
        )
    if not data:
        raise InvalidRequestError(field, f"`{field}` data URL has an empty payload")
    return declared_type, data


def resolve_local_path(source: str | os.PathLike, field: str, max_bytes: int | None = None) -> Path:
    """Checks that `source` is an existing regular file no larger than `max_bytes`; returns it as a `Path`."""
    path = Path(source)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InvalidRequestError(field, f"`{field}` file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise InvalidRequestError(field, f"`{field}` file {str(path)!r} cannot be read: {exc.strerror}") from None
    if not path.is_file():
        raise InvalidRequestError(field, f"`{field}` path {str(path)!r} is not a regular file")
    if max_bytes is not None and stat.st_size > max_bytes:
        raise PayloadTooLargeError(
            field,
            f"`{field}` file {str(path)!r} is {stat.st_size} bytes, more than the limit of {max_bytes} bytes",
        )
    if stat.st_size == 0:
        raise InvalidRequestError(field, f"`{field}` file {str(path)!r} is empty")
    return path


def _check_string_source(source: str, field: str) -> None:
    scheme = urllib.parse.urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme:
        raise InvalidRequestError(
            field,
            f"`{field}` must be file bytes, a local path or a `data:` URL; {scheme}:// URLs are fetched "
            f"by the service that accepted the request, got {source[:60]!r}",
        )
    if not source.strip():
        raise InvalidRequestError(field, f"`{field}` is an empty string")


def read_source_bytes(source: MediaInput, field: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a media input (bytes, local path or `data:` URL), with the size limit enforced."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if max_bytes is not None and len(data) > max_bytes:
            raise PayloadTooLargeError(
                field, f"`{field}` is {len(data)} bytes, more than the limit of {max_bytes} bytes"
            )
        if not data:
            raise InvalidRequestError(field, f"`{field}` is empty")
        return data
    if isinstance(source, os.PathLike):
        return resolve_local_path(source, field, max_bytes).read_bytes()
    if not isinstance(source, str):
        raise InvalidRequestError(
            field, f"`{field}` must be bytes, a local path or a `data:` URL, got {type(source).__name__}"
        )
    if source.startswith("data:"):
        return decode_data_url(source, field, max_bytes)[1]
    _check_string_source(source, field)
    return resolve_local_path(source, field, max_bytes).read_bytes()


def open_source(source: MediaInput, field: str, max_bytes: int | None = None) -> tuple[BinaryIO | str, bytes]:
    """Something a decoder can open (a path string, or an in-memory file) plus the input's leading bytes.

    A local path stays a path so a large video is streamed from disk instead of read into memory.
    """
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and source.startswith("data:")):
        if isinstance(source, str):
            _check_string_source(source, field)
        path = resolve_local_path(source, field, max_bytes)
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
        return str(path), head
    data = read_source_bytes(source, field, max_bytes)
    return io.BytesIO(data), data[:SNIFF_BYTES]
