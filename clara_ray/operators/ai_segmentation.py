"""AI liver segmentation of a CT volume with a TorchScript network (``liver-seg``).

The model is a 2-D MONAI UNet that works slice by slice on a fixed in-plane
*working grid* (:data:`WORKING_SIZE`, 128x128 pixels spanning the slice's
field of view): its input is a batch ``[N, 1, H, W]`` of float32 Hounsfield
units (HU windowing happens inside the model) and its output the liver
probability, same shape.  It is trained by ``pipelines/ct_liver_ai/train.py``
and stored in the model repository as ``models/liver-seg/1/model.pt``.

The work is split so that the source of predictions can change without
changing the math:

- :func:`liver_probability` and :func:`liver_mask` take any
  ``predict(batch: np.ndarray) -> np.ndarray`` callable: the local TorchScript
  model today, an inference client from ``ctx.services`` (Ray Serve or Triton)
  later.  They resize each slice to the working grid, run MONAI's
  ``sliding_window_inference`` over the whole volume with 2-D windows, and
  resize the probabilities back to the source grid.
- :func:`segment_liver` is the operator: it resolves and loads the model,
  picks the device and wraps the mask in a :class:`Volume` on the input grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from clara_ray.context import OperatorContext
from clara_ray.inference.torchscript import ModelNotFoundError, TorchScriptModel
from clara_ray.volume import Volume, array_module

__all__ = [
    "DEFAULT_MODEL_PATH",
    "LIVER",
    "SEGMENTS",
    "TRAIN_COMMAND",
    "WORKING_SIZE",
    "Predictor",
    "from_working_grid",
    "liver_mask",
    "liver_probability",
    "resolve_model_path",
    "segment_liver",
    "to_working_grid",
]

Predictor = Callable[[np.ndarray], np.ndarray]
"""Maps a float32 HU batch ``[N, 1, H, W]`` to liver probabilities of the same shape."""

LIVER = 1
SEGMENTS: tuple[dict[str, Any], ...] = ({"label": LIVER, "name": "liver"},)
"""The label map's legend, stored as ``metadata["segments"]``."""

WORKING_SIZE = (128, 128)
"""In-plane size (rows, columns) of the grid the model works on."""

DEFAULT_MODEL_PATH = "models/liver-seg/1/model.pt"
TRAIN_COMMAND = "python -m pipelines.ct_liver_ai.train --out models/liver-seg/1/model.pt --seed 0"

# Slices resized back to the source grid at a time (bounds the float32 temporary).
_RESIZE_CHUNK = 32

# The repository root: the parent of the `clara_ray` package directory.
_REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def resolve_model_path(model_path: str | Path) -> Path:
    """An existing model file for ``model_path``.

    A relative path is looked up in the current directory, then under the
    repository root (so the default works from a Ray worker whose current
    directory is elsewhere).  A missing file raises :class:`ModelNotFoundError`
    naming the places searched and the command that trains the model.
    """
    path = Path(model_path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(repr(str(c)) for c in candidates)
    raise ModelNotFoundError(
        f"segment_liver model_path {str(model_path)!r} not found (looked for {searched}). "
        f"Train the model with `{TRAIN_COMMAND}` from the repository root, "
        f"or pass model_path pointing at a TorchScript liver-seg model."
    )


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise ValueError(
            f"{name} must be a positive integer or two of them (rows, columns), got {value!r}"
        )
    return int(values[0]), int(values[1])


def to_working_grid(hu: np.ndarray, size: Sequence[int] = WORKING_SIZE) -> torch.Tensor:
    """``hu`` ``[slice, row, column]`` resized in-plane to ``size``: a float32 tensor ``[S, 1, h, w]``.

    Bilinear with antialiasing, so a downsampling averages the noise (as a
    lower-resolution acquisition would) instead of aliasing it.  The training
    script uses this same function.
    """
    x = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[:, None]
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def from_working_grid(
    probability: torch.Tensor, shape: Sequence[int], threshold: float
) -> np.ndarray:
    """Probabilities ``[S, 1, h, w]`` resized (bilinear) to ``shape`` in-plane and thresholded.

    Returns a boolean ``[S, rows, columns]`` array, ``True`` where the
    probability is at least ``threshold``; the slices are resized in chunks so
    a large volume never holds a full float32 copy.
    """
    rows, columns = int(shape[0]), int(shape[1])
    out = np.empty((probability.shape[0], rows, columns), dtype=bool)
    for start in range(0, probability.shape[0], _RESIZE_CHUNK):
        chunk = probability[start : start + _RESIZE_CHUNK].float()
        if tuple(chunk.shape[-2:]) != (rows, columns):
            chunk = F.interpolate(chunk, size=(rows, columns), mode="bilinear", align_corners=False)
        out[start : start + _RESIZE_CHUNK] = (chunk[:, 0] >= threshold).cpu().numpy()
    return out


def _window_predictor(predict: Predictor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adapt ``predict`` (2-D numpy batches) to the 3-D windows ``[B, 1, 1, h, w]`` MONAI hands out."""

    def run(windows: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = windows.shape
        batch = windows.reshape(b, 1, h, w).cpu().numpy().astype(np.float32, copy=False)
        out = np.asarray(predict(batch))
        if out.shape != batch.shape:
            raise ValueError(
                f"liver model returned shape {out.shape} for input {batch.shape}; "
                f"expected the same shape (one probability per pixel)"
            )
        return torch.from_numpy(out.astype(np.float32, copy=False)).reshape(b, 1, 1, h, w)

    return run


def liver_probability(
    hu: np.ndarray,
    predict: Predictor,
    working_size: Sequence[int] = WORKING_SIZE,
    roi_size: int | Sequence[int] = WORKING_SIZE,
    sw_batch_size: int = 16,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Liver probability of ``hu`` on the working grid: a float32 tensor ``[S, 1, h, w]``.

    The whole volume goes through ``sliding_window_inference`` as one 3-D
    image with windows of one slice by ``roi_size`` pixels, ``sw_batch_size``
    windows per ``predict`` call; ``overlap`` applies in-plane only.
    """
    size = _pair(tuple(working_size), "working_size")
    roi = _pair(roi_size, "roi_size")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}")
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D [slice, row, column], got shape {hu.shape}")
    image = to_working_grid(hu, size)  # [S, 1, h, w]
    volume = image.permute(1, 0, 2, 3)[None]  # [1, 1, S, h, w]
    with torch.inference_mode():
        prob = sliding_window_inference(
            volume,
            roi_size=(1, *roi),
            sw_batch_size=sw_batch_size,
            predictor=_window_predictor(predict),
            overlap=(0.0, overlap, overlap),
            mode="constant",
        )
    # One tensor comes out for a predictor that returns one tensor.
    return cast(torch.Tensor, prob)[0].permute(1, 0, 2, 3)  # [S, 1, h, w]


def liver_mask(
    hu: np.ndarray,
    predict: Predictor,
    threshold: float = 0.5,
    working_size: Sequence[int] = WORKING_SIZE,
    roi_size: int | Sequence[int] = WORKING_SIZE,
    sw_batch_size: int = 16,
    overlap: float = 0.25,
) -> np.ndarray:
    """Boolean liver mask of ``hu`` ``[slice, row, column]`` on ``hu``'s own grid."""
    if not 0 < threshold < 1:
        raise ValueError(
            f"threshold must be a probability strictly between 0 and 1, got {threshold!r}"
        )
    prob = liver_probability(hu, predict, working_size, roi_size, sw_batch_size, overlap)
    return from_working_grid(prob, hu.shape[1:], threshold)


def _device(ctx: OperatorContext) -> str:
    """``"cuda"`` when the run was given a GPU and torch sees CUDA, else ``"cpu"``.

    A run given a GPU that torch cannot use (a CPU-only torch build, no driver)
    logs a warning saying so and runs on the CPU.
    """
    if ctx.use_gpu and torch.cuda.is_available():
        return "cuda"
    if ctx.use_gpu:
        ctx.logger.warning(
            "segment_liver job=%s operator=%s: assigned GPU %s but torch sees no CUDA; running on CPU "
            "(torch %s, CUDA build %s: install a CUDA build of torch, and check the NVIDIA driver)",
            ctx.job_id,
            ctx.operator,
            list(ctx.gpu_ids),
            torch.__version__,
            torch.version.cuda or "none",
        )
    return "cpu"


def segment_liver(
    ctx: OperatorContext,
    volume: Volume,
    model_path: str = DEFAULT_MODEL_PATH,
    threshold: float = 0.5,
    roi_size: int | Sequence[int] = WORKING_SIZE,
    sw_batch_size: int = 16,
    overlap: float = 0.25,
    service: str = "",
) -> dict[str, Volume]:
    """Segment the liver of a CT volume with the ``liver-seg`` TorchScript model.

    Inputs: ``volume``, a CT :class:`Volume` in Hounsfield units (numpy or cupy).
    Outputs: ``labels``, a uint8 :class:`Volume` on the input's grid (same
    shape, spacing, origin, direction and source) with 0 = background and
    1 = liver, and ``metadata["segments"]`` set to :data:`SEGMENTS`.
    Args: ``model_path`` (TorchScript file; a relative path is looked up in
    the current directory, then the repository root), ``threshold`` (liver
    where the probability is at least this), ``roi_size`` (in-plane window on
    the 128x128 working grid; keep the default when the model is served with a
    fixed input shape), ``sw_batch_size`` (windows per model call),
    ``overlap`` (in-plane overlap of the windows), ``service`` (the name of a
    pipeline service, a Ray Serve deployment or a Triton server serving the
    same model; empty: run the TorchScript file in this task).
    Files: none.  Runs on CUDA when the run was given a GPU and torch sees one.
    """
    started = time.perf_counter()
    predict: Any
    device: Any
    path: Any
    if service:
        path, device = f"service '{service}'", "remote"
        predict = ctx.services[service].predict
        working_size = WORKING_SIZE
    else:
        path = resolve_model_path(model_path)
        device = _device(ctx)
        model = TorchScriptModel.load(path, device)
        working_size = tuple(model.metadata.get("working_size", WORKING_SIZE))
        predict = model

    xp = array_module(volume.array)
    hu = np.asarray(volume.to_numpy().array)
    mask = liver_mask(
        hu,
        predict,
        threshold=threshold,
        working_size=working_size,
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        overlap=overlap,
    )
    labels = xp.asarray(mask.astype(np.uint8) * np.uint8(LIVER))
    ctx.logger.info(
        "segment_liver job=%s operator=%s: model=%s device=%s shape=%s liver voxels=%d (%.2fs)",
        ctx.job_id,
        ctx.operator,
        path,
        device,
        volume.shape,
        int(mask.sum()),
        time.perf_counter() - started,
    )
    return {"labels": volume.with_array(labels, segments=[dict(s) for s in SEGMENTS])}
