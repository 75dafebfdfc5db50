"""Window/level to uint8 and the parsing of window parameters."""

from __future__ import annotations

import numpy as np
import pytest

from clara_ray.render.windowing import (
    BONE,
    BRAIN,
    LUNG,
    PRESETS,
    SOFT_TISSUE,
    Window,
    apply_window,
    parse_window,
)


def test_presets_are_the_standard_ct_windows() -> None:
    assert (LUNG.width, LUNG.level) == (1500, -600)
    assert (BONE.width, BONE.level) == (2000, 300)
    assert (SOFT_TISSUE.width, SOFT_TISSUE.level) == (400, 40)
    assert (BRAIN.width, BRAIN.level) == (80, 40)
    assert set(PRESETS) == {"lung", "bone", "soft_tissue", "brain"}


def test_linear_between_clamped_ends() -> None:
    # W 400 L 40: black at and below -160, white above 240, 255/400 grey levels per HU between.
    hu = np.array([-1000, -161, -160, 40, 239, 240, 241, 3000], dtype=np.int16)
    out = apply_window(hu, SOFT_TISSUE)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 128, 254, 255, 255, 255]


def test_matches_the_formula_for_every_int16_value_in_range() -> None:
    hu = np.arange(-1100, 1100, dtype=np.int16).reshape(40, 55)
    lower = LUNG.level - LUNG.width / 2
    expected = np.clip(np.floor((hu - lower) / LUNG.width * 255 + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_window(hu, LUNG), expected)
    np.testing.assert_array_equal(apply_window(hu.astype(np.float32), LUNG), expected)


def test_parse_window_from_preset_or_numbers() -> None:
    assert parse_window("lung") is LUNG
    assert parse_window(width="350", level="50") == Window(350.0, 50.0)
    assert parse_window(width=0.5, level=-10) == Window(0.5, -10.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0, "level": 40}, r"window width must be > 0, got 0"),
        ({"width": -5, "level": 40}, r"window width must be > 0"),
        ({"width": "wide", "level": 40}, r"window width must be a number, got 'wide'"),
        ({"width": "nan", "level": 40}, r"window width must be a finite number"),
        ({"width": 400, "level": "inf"}, r"window level must be a finite number"),
        ({"width": 400}, r"needs a preset .* or both width and level"),
        (
            {"preset": "liver"},
            r"window preset must be one of \['bone', 'brain', 'lung', 'soft_tissue'\], got 'liver'",
        ),
        ({"preset": "lung", "width": 400}, r"preset excludes width and level"),
    ],
)
def test_parse_window_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(**kwargs)  # type: ignore[arg-type]


def test_window_itself_checks_width() -> None:
    with pytest.raises(ValueError, match=r"window width must be a finite number > 0, got 0"):
        Window(0, 40)
