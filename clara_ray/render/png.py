"""PNG encoding of rendered images, tuned for speed over size (zlib level 1)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["COMPRESS_LEVEL", "encode_png"]

COMPRESS_LEVEL = 1
"""zlib level: 1 encodes a 512x512 slice several times faster than the default 6."""


def encode_png(image: Any) -> bytes:
    """PNG bytes of a uint8 image, grey ``(H, W)`` or RGB ``(H, W, 3)``, numpy or cupy."""
    array = image.get() if hasattr(image, "get") and not isinstance(image, np.ndarray) else image
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"encode_png image must be uint8, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"encode_png image must be (H, W) or (H, W, 3), got shape {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(
        buffer, format="PNG", compress_level=COMPRESS_LEVEL
    )
    return buffer.getvalue()
