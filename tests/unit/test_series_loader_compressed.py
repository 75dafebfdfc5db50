"""The series loader on the compressed files pydicom ships (decoded by the pylibjpeg plugins)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from clara_ray.operators.series_loader import read_series


def load(name: str):
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's test file {name} is missing"
    with open(path, "rb") as f:
        raw = f.read()
    volumes = read_series([(name, io.BytesIO(raw))])
    assert len(volumes) == 1
    return volumes[0], pydicom.dcmread(path)


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_pixels(name: str) -> None:
    reference, ref_ds = load("MR_small.dcm")
    volume, ds = load(name)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    assert volume.shape == reference.shape == (1, ref_ds.Rows, ref_ds.Columns)
    np.testing.assert_array_equal(volume.array, reference.array)
    assert volume.spacing == reference.spacing and volume.origin == reference.origin


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm", "JPEGLSNearLossless_16.dcm"])
def test_lossy_syntaxes_decode_with_rescale_applied(name: str) -> None:
    """These samples carry no patient geometry (a loader skips them); it is added here,
    while the pixel data stays as shipped: JPEG extended and JPEG 2000 codestreams."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's test file {name} is missing"
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = ds.get("PixelSpacing") or [1, 1]
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    volumes = read_series([(name, io.BytesIO(buffer.getvalue()))])
    assert len(volumes) == 1
    volume = volumes[0]
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    assert volume.shape == (1, ds.Rows, ds.Columns)
    stored = ds.pixel_array.astype(np.float64)
    expected = stored * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(volume.array[0], expected)
