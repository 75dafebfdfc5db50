"""PNG encoding of grey and RGB images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clara_ray.render.png import encode_png


@pytest.mark.parametrize("shape", [(17, 23), (17, 23, 3)])
def test_round_trip(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    png = encode_png(image)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == ("L" if len(shape) == 2 else "RGB")
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_non_contiguous_views_encode() -> None:
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)[::-1, ::2]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), image)


def test_rejects_other_dtypes_and_shapes() -> None:
    with pytest.raises(TypeError, match=r"encode_png image must be uint8, got dtype int16"):
        encode_png(np.zeros((4, 4), dtype=np.int16))
    with pytest.raises(ValueError, match=r"must be \(H, W\) or \(H, W, 3\), got shape \(4, 4, 4\)"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8))
