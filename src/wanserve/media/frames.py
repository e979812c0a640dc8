"""Frame arrays as the pipelines produce them, checked and converted to 8-bit RGB for the encoders."""

from __future__ import annotations

import numpy as np

from wanserve.errors import InvalidRequestError


def frame_to_uint8(frame: np.ndarray, field: str = "frames") -> np.ndarray:
    """One [H, W, 3] frame as contiguous uint8. Floats are read as 0..1 (clipped); NaN or inf is refused.

    Diffusers returns float frames in 0..1; a NaN there means the generation itself broke (for example fp16
    overflow), so it is reported instead of being written as a black video.
    """
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InvalidRequestError(field, f"`{field}` must be [height, width, 3] RGB frames, got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidRequestError(field, f"`{field}` contain NaN or infinite values")
        scaled = np.clip(array, 0.0, 1.0) * 255.0
        return np.ascontiguousarray(np.rint(scaled).astype(np.uint8))
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InvalidRequestError(field, f"`{field}` must be uint8 or float (0..1) values, got dtype {array.dtype}")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise InvalidRequestError(
            field, f"`{field}` integer values must be in 0..255, got {array.min()}..{array.max()}"
        )
    return np.ascontiguousarray(array.astype(np.uint8))
