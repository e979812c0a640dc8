"""Images in (uploads, first/last frames, reference images) and JPEG thumbnails out, through Pillow."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wanserve.engine.requests import MediaInput
from wanserve.errors import InvalidRequestError
from wanserve.media.atomic import atomic_output
from wanserve.media.frames import frame_to_uint8
from wanserve.media.inputs import IMAGE_MIME_TYPES, describe_bytes, read_source_bytes, sniff_media_type

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest input image accepted (width x height): a 16-megapixel photo, far above any Wan resolution. Decoding
one this size takes about 50 MB; the limit is checked from the header, before any pixel is decoded."""

MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""Largest encoded input image accepted, in bytes."""

THUMBNAIL_MAX_SIDE = 512
"""Default longest side of a thumbnail, in pixels."""


def load_image(
    source: MediaInput,
    field: str,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> Image.Image:
    """Decodes an input image (bytes, local path or `data:` URL) into a fully loaded RGB image.

    The type comes from the bytes (PNG, JPEG, WebP, BMP, GIF), never from a file name. EXIF orientation is
    applied, so a phone photo comes out upright. Text, truncated or corrupt files and images over `max_pixels`
    raise `InvalidRequestError` naming `field`; inputs over `max_bytes` raise `PayloadTooLargeError`.
    """
    # 1. Read and sniff
    data = read_source_bytes(source, field, max_bytes)
    mime = sniff_media_type(data)
    if mime not in IMAGE_MIME_TYPES:
        found = mime or describe_bytes(data)
        raise InvalidRequestError(field, f"`{field}` must be a PNG, JPEG, WebP, BMP or GIF image, got {found}")

    # 2. Check the size from the header before decoding any pixels
    try:
        # Pillow's own bomb check (its MAX_IMAGE_PIXELS) stays as a second guard; ours runs first.
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidRequestError(
                field,
                f"`{field}` is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}",
            )
        if width < 1 or height < 1:
            raise InvalidRequestError(field, f"`{field}` has an empty size {width}x{height}")

        # 3. Decode fully now, so a truncated file fails here and not inside the pipeline
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = image.convert("RGB")
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidRequestError(field, f"`{field}` is too large to decode safely: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequestError(field, f"`{field}` is a corrupt or truncated {mime} image: {exc}") from None
    logger.debug("loaded %s %s %dx%d", field, mime, rgb.width, rgb.height)
    return rgb


def cover_and_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled (Lanczos) just enough to cover `width` x `height`, then centre-cropped to it: the aspect
    ratio is kept and the overflow cut (what Wan2.2 TI2V does to its first frame)."""
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    scaled = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def letterbox(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled (bilinear) to fit inside `width` x `height` and centred on black: the aspect ratio is kept
    and nothing is cut (what Wan2.2-Animate does to its reference image)."""
    if image.size == (width, height):
        return image
    if image.height / image.width > height / width:
        size = (int(height / image.height * image.width), height)
    else:
        size = (width, int(width / image.width * image.height))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def write_thumbnail(
    frame: np.ndarray | Image.Image,
    path: str | os.PathLike,
    quality: int = 85,
    max_side: int = THUMBNAIL_MAX_SIDE,
) -> tuple[int, int]:
    """Writes `frame` as a JPEG at `path`, scaled down (never up) so its longest side is at most `max_side`.

    `frame` is an [H, W, 3] array (uint8, or float in 0..1) or a PIL image. The file appears atomically: a
    failed write leaves nothing at `path`. Returns the thumbnail's (width, height).
    """
    if not 1 <= quality <= 95:
        raise InvalidRequestError("quality", f"`quality` must be in 1..95, got {quality}")
    if max_side < 1:
        raise InvalidRequestError("max_side", f"`max_side` must be at least 1, got {max_side}")
    image = frame.convert("RGB") if isinstance(frame, Image.Image) else Image.fromarray(frame_to_uint8(frame))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    with atomic_output(path, suffix=".jpg") as tmp:
        image.save(tmp, format="JPEG", quality=quality)
    return image.size


def write_png(frame: np.ndarray, path: str | os.PathLike) -> tuple[int, int]:
    """Writes `frame` ([H, W, 3], uint8 or float in 0..1) losslessly as a PNG at `path`, atomically (a failed write
    leaves nothing there). Returns its (width, height)."""
    image = Image.fromarray(frame_to_uint8(frame))
    with atomic_output(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return image.size
