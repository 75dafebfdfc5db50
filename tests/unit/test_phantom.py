"""The synthetic CT phantom: shapes, HU per tissue, anatomy, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clara_ray.sample import LABELS, Phantom, generate_phantom


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(slices=40, rows=96, columns=96, spacing=(2.0, 1.5, 1.5), seed=3)


def test_shapes_dtypes_and_spacing(phantom: Phantom) -> None:
    assert phantom.hu.shape == (40, 96, 96)
    assert phantom.hu.dtype == np.int16
    assert phantom.spacing == (2.0, 1.5, 1.5)
    assert tuple(phantom.labels) == LABELS
    for mask in phantom.labels.values():
        assert mask.shape == phantom.hu.shape
        assert mask.dtype == bool
        assert mask.any()


def test_default_grid() -> None:
    p = generate_phantom(slices=2)
    assert p.hu.shape == (2, 512, 512)
    assert p.spacing == (2.5, 0.7, 0.7)


def test_arrays_are_read_only(phantom: Phantom) -> None:
    with pytest.raises(ValueError, match="read-only"):
        phantom.hu[0, 0, 0] = 0
    with pytest.raises(ValueError, match="read-only"):
        phantom.labels["liver"][0, 0, 0] = True


@pytest.mark.parametrize(
    ("label", "low", "high"),
    [("lungs", -950, -750), ("bone", 700, 1200), ("liver", 40, 80)],
)
def test_hu_range_per_label(phantom: Phantom, label: str, low: int, high: int) -> None:
    values = phantom.hu[phantom.labels[label]]
    assert low <= values.min() and values.max() <= high


def test_air_outside_and_soft_tissue_inside_the_body(phantom: Phantom) -> None:
    labels = phantom.labels
    assert np.all(phantom.hu[~labels["body"]] == -1000)
    organs = labels["lungs"] | labels["bone"] | labels["liver"]
    rest = phantom.hu[labels["body"] & ~organs]
    assert rest.min() >= -150 and rest.max() <= 120
    assert np.unique(rest).size > 20  # mild noise, not flat regions


def test_organ_labels_are_disjoint_and_inside_the_body(phantom: Phantom) -> None:
    labels = phantom.labels
    for a, b in itertools.combinations(("lungs", "bone", "liver"), 2):
        assert not np.any(labels[a] & labels[b]), (a, b)
    for name in ("lungs", "bone", "liver"):
        assert not np.any(labels[name] & ~labels["body"]), name


def test_anatomy_layout(phantom: Phantom) -> None:
    lungs, liver, bone = (phantom.labels[k] for k in ("lungs", "liver", "bone"))
    half = phantom.hu.shape[2] // 2
    # Two lungs, one on each side.
    assert lungs[:, :, :half].sum() > 0.3 * lungs.sum()
    assert lungs[:, :, half:].sum() > 0.3 * lungs.sum()
    # Liver on the patient's right (low column index), below the lungs (lower slice index).
    assert liver[:, :, :half].sum() > 0.9 * liver.sum()
    assert np.nonzero(liver)[0].mean() < np.nonzero(lungs)[0].mean()
    # The spine runs through (almost) every slice, posterior (high row index).
    slices_with_bone = bone.any(axis=(1, 2)).mean()
    assert slices_with_bone > 0.95
    assert np.nonzero(bone)[1].mean() > phantom.hu.shape[1] / 2


def test_same_seed_same_phantom() -> None:
    a = generate_phantom(slices=12, rows=48, columns=48, seed=7)
    b = generate_phantom(slices=12, rows=48, columns=48, seed=7)
    assert np.array_equal(a.hu, b.hu)
    for name in LABELS:
        assert np.array_equal(a.labels[name], b.labels[name])


def test_seed_varies_anatomy_and_noise() -> None:
    a = generate_phantom(slices=30, rows=64, columns=64, seed=1)
    b = generate_phantom(slices=30, rows=64, columns=64, seed=2)
    assert not np.array_equal(a.hu, b.hu)
    for name in LABELS:
        assert a.labels[name].sum() != b.labels[name].sum(), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slices": 0}, "slices must be at least 1, got 0"),
        ({"rows": 4}, "rows and columns must be at least 8, got 4x512"),
        ({"spacing": (2.5, 0.0, 0.7)}, r"spacing must be three positive millimetre values"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_phantom(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_full_size_phantom_has_the_benchmark_shape() -> None:
    p = generate_phantom(slices=300, rows=512, columns=512)
    assert p.hu.shape == (300, 512, 512)
    assert p.hu.min() >= -1024 and p.hu.max() > 300  # air outside, bone inside
