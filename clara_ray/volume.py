"""The image volume passed between operators.

A :class:`Volume` is a 3-D array plus the geometry needed to put it back in
patient space, and the DICOM references that writers of derived objects (SEG,
SR) need.  It travels between operators through Ray's object store: its numpy
array is serialized out of band, so a reader on the same node gets it
zero-copy and read-only.  On a GPU node the array may be a cupy array; code
picks its array module with :func:`array_module`, and :func:`cuda_array_module`
gives cupy where it can run (the ``gpu`` extra, ``pip install 'clara-ray[gpu]'``,
installs it).

Axis convention: ``array`` is indexed ``[slice, row, column]``.  ``spacing``
is in millimetres in the same order.  ``origin`` is the patient-space (LPS)
position of voxel ``[0, 0, 0]``.  ``direction`` is a 3x3 matrix whose
*columns* are the unit vectors, in LPS, along increasing column index (DICOM
row direction cosine), increasing row index (DICOM column direction cosine)
and increasing slice index (the slice normal as the slices are ordered).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

from clara_ray.errors import ClaraError

__all__ = [
    "GPU_EXTRA",
    "CudaUnavailableError",
    "InstanceReference",
    "SeriesReference",
    "Volume",
    "array_module",
    "cuda_array_module",
]

GPU_EXTRA = "pip install 'clara-ray[gpu]'"
"""The command that installs cupy, for messages about a GPU that cannot be used."""


@dataclass(frozen=True)
class InstanceReference:
    """One source DICOM instance a slice of the volume came from.

    ``path`` is the file's path inside the job's payload (empty when unknown),
    so writers of derived objects can read the source header again.
    """

    sop_class_uid: str
    sop_instance_uid: str
    path: str = ""


@dataclass(frozen=True)
class SeriesReference:
    """DICOM identity of the series a volume was read from.

    ``instances`` is ordered like the volume's slices.  ``attributes`` keeps
    the patient/study-level attributes a derived object must copy (kept out of
    logs: they may hold patient data).
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    instances: tuple[InstanceReference, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    """A 3-D image (or label map) with its patient-space geometry."""

    array: Any
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )
    source: SeriesReference | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ndim = getattr(self.array, "ndim", None)
        if ndim != 3:
            raise ValueError(f"Volume array must be 3-D [slice, row, column], got ndim={ndim}")
        if len(self.spacing) != 3 or any(float(s) <= 0 for s in self.spacing):
            raise ValueError(f"Volume spacing must be three positive numbers, got {self.spacing}")
        if len(self.origin) != 3:
            raise ValueError(f"Volume origin must be three numbers, got {self.origin}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3):
            raise ValueError(f"Volume direction must be a 3x3 matrix, got shape {d.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        s = self.spacing
        return float(s[0]) * float(s[1]) * float(s[2])

    def affine(self) -> np.ndarray:
        """4x4 matrix mapping ``[slice, row, column, 1]`` indices to LPS millimetres."""
        d = np.asarray(self.direction, dtype=float)
        m = np.eye(4)
        # Index order is (slice, row, column); direction columns are (column, row, slice).
        axes = (d[:, 2], d[:, 1], d[:, 0])
        for i, (axis, step) in enumerate(zip(axes, self.spacing, strict=True)):
            m[:3, i] = axis * float(step)
        m[:3, 3] = np.asarray(self.origin, dtype=float)
        return m

    def with_array(self, array: Any, **metadata: Any) -> Volume:
        """A volume on the same grid holding ``array`` (a mask, a probability map)."""
        return replace(self, array=array, metadata={**self.metadata, **metadata})

    def to_numpy(self) -> Volume:
        """The same volume with its array on the host (a no-op for numpy)."""
        if isinstance(self.array, np.ndarray):
            return self
        return replace(self, array=self.array.get())


def array_module(array: Any) -> ModuleType:
    """``cupy`` for a cupy array, else ``numpy``: array code takes its module from its input."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


class CudaUnavailableError(ClaraError, RuntimeError):
    """cupy cannot run in this process; the message says what is missing and how to fix it."""


@functools.cache
def _cupy_status() -> tuple[ModuleType | None, str]:
    """``(cupy, "")`` when cupy imports and runs a kernel on a CUDA device, else ``(None, why)``."""
    try:
        import cupy
    except ImportError as exc:
        return None, f"cupy is not installed ({exc}); install the gpu extra: {GPU_EXTRA}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        if count < 1:
            return None, "cupy sees no CUDA device (CUDA_VISIBLE_DEVICES hides them, or no GPU)"
        if int((cupy.arange(4, dtype=cupy.int32) * 2).sum()) != 12:
            return None, "cupy computed a wrong result on the CUDA device"
    except Exception as exc:
        return None, (
            f"cupy {cupy.__version__} cannot run on a CUDA device ({type(exc).__name__}: {exc}); "
            f"it needs an NVIDIA driver and the CUDA 12 libraries (CUDA Toolkit 12, or "
            f"pip install 'cupy-cuda12x[ctk]')"
        )
    return cupy, ""


def cuda_array_module() -> ModuleType:
    """``cupy``, checked once per process to run on its current CUDA device.

    Raises :class:`CudaUnavailableError` naming what is missing: cupy itself
    (install the ``gpu`` extra), a device, or the driver and CUDA libraries.
    """
    module, why = _cupy_status()
    if module is None:
        raise CudaUnavailableError(why)
    return module
