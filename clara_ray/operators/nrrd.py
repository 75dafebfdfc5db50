"""Label maps as NRRD files for 3D Slicer, written and read with pynrrd.

NRRD lists axes fastest first: ``sizes`` is (columns, rows, slices), which is
the memory order of a C-ordered ``[slice, row, column]`` array, so the data is
written with ``index_order="C"``.  Each axis' ``space directions`` vector is
the LPS step of one index along it (the direction column times the spacing),
and ``space origin`` is voxel [0, 0, 0].
"""

from __future__ import annotations

from typing import IO, Any

import nrrd
import numpy as np

from clara_ray.context import OperatorContext
from clara_ray.operators.segmentation import segment_list
from clara_ray.volume import Volume

__all__ = ["read_nrrd", "write_label_map", "write_nrrd"]

_SPACE = "left-posterior-superior"
_GZIP_LEVEL = 6
_DTYPES = frozenset(
    ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
)


def write_nrrd(stream: IO[bytes], volume: Volume, *, gzip: bool = True) -> None:
    """Write ``volume`` (numpy or cupy; bool is written as uint8) to ``stream`` as NRRD."""
    array = volume.to_numpy().array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.name not in _DTYPES:
        raise TypeError(
            f"write_nrrd volume dtype {array.dtype} is not supported; "
            f"expected one of {sorted(_DTYPES)} or bool"
        )
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    affine = volume.affine()
    header = {
        "space": _SPACE,
        # NRRD axes are (column, row, slice): the affine's index columns reversed.
        "space directions": affine[:3, 2::-1].T,
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip" if gzip else "raw",
        "space origin": affine[:3, 3],
    }
    nrrd.write(stream, data, header, compression_level=_GZIP_LEVEL, index_order="C")


def read_nrrd(stream: IO[bytes]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an attached-header 3-D NRRD: the array as ``[slice, row, column]`` and its header.

    The header is pynrrd's: fields keep their NRRD names, ``sizes`` and
    ``space origin`` are arrays and ``space directions`` is one row per axis.
    """
    header = nrrd.read_header(stream)
    if header.get("dimension") != 3:
        raise ValueError(f"NRRD dimension {header.get('dimension')!r} is not supported; expected 3")
    return nrrd.read_data(header, stream, index_order="C"), dict(header)


def write_label_map(
    ctx: OperatorContext, labels: Volume, filename: str = "labels.nrrd"
) -> dict[str, str]:
    """Save a label map as a gzip NRRD (for 3D Slicer) with its legend beside it.

    Inputs: ``labels``, an integer label map :class:`Volume` (numpy or cupy).
    Outputs: ``label_map``, the storage path of the NRRD file written.
    Args: ``filename``, the NRRD file's name in the results folder (ends in ``.nrrd``).
    Files: ``<filename>`` and the legend ``<filename stem>.json``:
    ``{"label_map": filename, "segments": [{"label", "name"}, ...]}``.
    """
    if not filename.endswith(".nrrd"):
        raise ValueError(f"write_label_map arg filename must end in .nrrd, got {filename!r}")
    if labels.array.dtype.kind not in ("b", "i", "u"):
        raise TypeError(
            f"write_label_map input labels must hold integers, got dtype {labels.array.dtype}"
        )
    with ctx.results.open_output(filename) as out:
        write_nrrd(out, labels)
    legend = {"label_map": filename, "segments": segment_list(labels)}
    ctx.results.write_json(filename.removesuffix(".nrrd") + ".json", legend)
    ctx.logger.info(
        "write_label_map job=%s operator=%s: wrote %s with %d segments",
        ctx.job_id,
        ctx.operator,
        filename,
        len(legend["segments"]),
    )
    return {"label_map": ctx.results.path(filename)}
