"""Tests of clara_ray.operators.ai_segmentation and the TorchScript runner it uses (no Ray).

The math (resize, sliding window, back to the source grid, threshold) is
checked with hand-written predictors; the operator's contract (grid,
geometry, legend, errors) with the committed ``liver-seg`` model.  How well
that model segments is measured in test_liver_model_dice.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from clara_ray.context import OperatorContext
from clara_ray.inference.torchscript import (
    METADATA_FILE,
    ModelNotFoundError,
    TorchScriptModel,
    save_torchscript,
    select_device,
)
from clara_ray.operators.ai_segmentation import (
    DEFAULT_MODEL_PATH,
    SEGMENTS,
    TRAIN_COMMAND,
    liver_mask,
    liver_probability,
    resolve_model_path,
    segment_liver,
)
from clara_ray.sample.phantom import generate_phantom
from clara_ray.volume import InstanceReference, SeriesReference, Volume
from tests.contexts import operator_context

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / DEFAULT_MODEL_PATH


def make_context(tmp_path: Path, gpu_ids: tuple[int, ...] = ()) -> OperatorContext:
    return operator_context(tmp_path, "segment", pipeline="ct-liver-ai", gpu_ids=gpu_ids)


def phantom_volume(shape: tuple[int, int, int], seed: int) -> Volume:
    phantom = generate_phantom(slices=shape[0], rows=shape[1], columns=shape[2], seed=seed)
    source = SeriesReference(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        frame_of_reference_uid="1.2.3.5",
        modality="CT",
        instances=tuple(
            InstanceReference("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.4.{i}") for i in range(shape[0])
        ),
    )
    return Volume(
        phantom.hu,
        spacing=(3.0, 1.4, 1.1),
        origin=(-120.0, -90.0, 40.0),
        direction=((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
        source=source,
        metadata={"series_description": "phantom"},
    )


# --- the math, with hand-written predictors -------------------------------------------------


def test_constant_predictor_gives_the_source_grid_and_obeys_the_threshold() -> None:
    hu = np.zeros((5, 37, 61), dtype=np.int16)
    calls: list[tuple[int, ...]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.full(batch.shape, 0.7, dtype=np.float32)

    assert liver_mask(hu, predict, threshold=0.5).shape == (5, 37, 61)
    assert liver_mask(hu, predict, threshold=0.5).all()
    assert not liver_mask(hu, predict, threshold=0.8).any()
    assert all(shape[1:] == (1, 128, 128) and shape[0] <= 16 for shape in calls)


def test_sliding_window_tiles_the_working_grid_and_maps_back() -> None:
    # A predictor that marks dense voxels: the result must follow the input's geometry.
    hu = np.full((3, 200, 150), -1000, dtype=np.int16)
    hu[:, 40:120, 30:90] = 100

    def predict(batch: np.ndarray) -> np.ndarray:
        return (batch > 0).astype(np.float32)

    prob = liver_probability(hu, predict, roi_size=(64, 48), sw_batch_size=5, overlap=0.5)
    assert tuple(prob.shape) == (3, 1, 128, 128)
    mask = liver_mask(hu, predict, roi_size=64, sw_batch_size=5, overlap=0.5)
    truth = hu > 0
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.97


def test_predictor_returning_the_wrong_shape_is_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"returned shape \(2, 1, 64, 64\).*expected the same shape"
    ):
        liver_mask(np.zeros((2, 32, 32)), lambda b: np.zeros((2, 1, 64, 64)), sw_batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold must be a probability strictly between 0 and 1, got 0.0"),
        ({"threshold": 1.5}, "threshold must be .* got 1.5"),
        (
            {"roi_size": (0, 64)},
            r"roi_size must be a positive integer or two of them .* got \(0, 64\)",
        ),
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\), got 1.0"),
        ({"sw_batch_size": 0}, "sw_batch_size must be a positive integer, got 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        liver_mask(np.zeros((2, 32, 32)), lambda b: b, **kwargs)


# --- the operator with the committed model ------------------------------------------------


def test_output_is_a_uint8_liver_label_map_on_the_input_grid(tmp_path: Path) -> None:
    volume = phantom_volume((12, 160, 160), seed=2001)
    labels = segment_liver(make_context(tmp_path), volume)["labels"]
    assert isinstance(labels, Volume)
    assert labels.shape == volume.shape
    assert labels.array.dtype == np.uint8
    assert set(np.unique(labels.array).tolist()) <= {0, 1}
    assert labels.array.any()
    assert labels.spacing == volume.spacing
    assert labels.origin == volume.origin
    assert labels.direction == volume.direction
    assert labels.source is volume.source
    assert (
        labels.metadata["segments"]
        == [{"label": 1, "name": "liver"}]
        == [dict(s) for s in SEGMENTS]
    )
    assert labels.metadata["series_description"] == "phantom"


def test_non_square_odd_sized_volume(tmp_path: Path) -> None:
    volume = phantom_volume((9, 141, 97), seed=2002)
    truth = generate_phantom(slices=9, rows=141, columns=97, seed=2002).labels["liver"]
    mask = segment_liver(make_context(tmp_path), volume)["labels"].array.astype(bool)
    assert mask.shape == (9, 141, 97)
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.9


def test_threshold_moves_the_boundary(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    volume = phantom_volume((6, 128, 128), seed=2003)
    counts = [
        int(segment_liver(ctx, volume, threshold=t)["labels"].array.sum())
        for t in (0.05, 0.5, 0.95)
    ]
    assert counts[0] > counts[1] > counts[2] > 0


def test_relative_model_path_resolves_against_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path(DEFAULT_MODEL_PATH) == MODEL
    local = tmp_path / DEFAULT_MODEL_PATH
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")
    assert resolve_model_path(DEFAULT_MODEL_PATH) == local  # the current directory comes first


def test_missing_model_names_the_path_and_the_training_command(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "liver-seg" / "9" / "model.pt"
    volume = Volume(np.zeros((2, 16, 16), dtype=np.int16))
    with pytest.raises(ModelNotFoundError, match=r"model\.pt") as info:
        segment_liver(make_context(tmp_path), volume, model_path=str(missing))
    assert str(missing) in str(info.value)
    assert TRAIN_COMMAND in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_gpu_assigned_without_cuda_runs_on_cpu_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the operator would use it")
    ctx = make_context(tmp_path, gpu_ids=(0,))
    with caplog.at_level(logging.INFO, logger="clara_ray.operator"):
        segment_liver(ctx, phantom_volume((2, 64, 64), seed=2004))
    assert "torch sees no CUDA; running on CPU" in caplog.text
    assert "device=cpu" in caplog.text


# --- the TorchScript runner -----------------------------------------------------------------


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_torchscript_model_round_trip_with_metadata(tmp_path: Path) -> None:
    path = save_torchscript(
        torch.jit.script(_Double()), tmp_path / "m" / "1" / "model.pt", {"working_size": [8, 8]}
    )
    model = TorchScriptModel.load(path, "cpu")
    assert model.metadata == {"working_size": [8, 8]}
    assert model.device == torch.device("cpu")
    batch = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(model(batch), batch * 2)
    big = np.random.default_rng(0).random((10, 3), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(big, max_batch_size=3), big * 2)
    assert METADATA_FILE == "clara_ray.json"


def test_torchscript_model_without_metadata_and_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(_Double()), str(path))
    model = TorchScriptModel.load(path)
    assert model.metadata == {}
    with pytest.raises(TypeError, match="model input must be a numpy array, got list"):
        model([1.0])  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match=r"nope\.pt' does not exist"):
        TorchScriptModel.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="could not be loaded"):
        TorchScriptModel.load(tmp_path / "junk.pt")


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match='Got "tpu" for device'):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
