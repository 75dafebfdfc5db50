"""A small NRRD (version 4, attached header) writer and reader, for label maps.

Files are readable by 3D Slicer and pynrrd.  NRRD lists axes fastest first:
``sizes`` is (columns, rows, slices), which is exactly the memory order of a
C-ordered ``[slice, row, column]`` array, so the data is written as is.  Each
axis' ``space directions`` vector is the LPS step of one index along it (the
direction column times the spacing), and ``space origin`` is voxel [0, 0, 0].
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from gzip import GzipFile
from typing import IO, Any

import numpy as np

from clara_ray.context import OperatorContext
from clara_ray.operators.segmentation import segment_list
from clara_ray.volume import Volume

__all__ = ["read_nrrd", "write_label_map", "write_nrrd"]

_MAGIC = "NRRD0004"
_SPACE = "left-posterior-superior"
_GZIP_LEVEL = 6

# numpy dtype name -> NRRD type name written.
_NRRD_TYPES = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "float32": "float",
    "float64": "double",
}
# NRRD type names read (canonical and common aliases) -> numpy dtype name.
_NUMPY_TYPES = {
    **{nrrd: numpy for numpy, nrrd in _NRRD_TYPES.items()},
    "signed char": "int8",
    "uchar": "uint8",
    "unsigned char": "uint8",
    "short": "int16",
    "ushort": "uint16",
    "unsigned short": "uint16",
    "int": "int32",
    "uint": "uint32",
    "unsigned int": "uint32",
}


def _vector(values: Iterable[float]) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def _header(volume: Volume, dtype: np.dtype[Any], gzip: bool) -> str:
    affine = volume.affine()
    slices, rows, columns = volume.shape
    # NRRD axes are (column, row, slice): the affine's index columns reversed.
    directions = " ".join(_vector(affine[:3, axis]) for axis in (2, 1, 0))
    lines = [
        _MAGIC,
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {_NRRD_TYPES[dtype.name]}",
        "dimension: 3",
        f"space: {_SPACE}",
        f"sizes: {columns} {rows} {slices}",
        f"space directions: {directions}",
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {'gzip' if gzip else 'raw'}",
        f"space origin: {_vector(affine[:3, 3])}",
    ]
    return "\n".join(lines) + "\n\n"


def write_nrrd(stream: IO[bytes], volume: Volume, *, gzip: bool = True) -> None:
    """Write ``volume`` (numpy or cupy; bool is written as uint8) to ``stream`` as NRRD."""
    array = volume.to_numpy().array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.name not in _NRRD_TYPES:
        raise TypeError(
            f"write_nrrd volume dtype {array.dtype} is not supported; "
            f"expected one of {sorted(_NRRD_TYPES)} or bool"
        )
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    stream.write(_header(volume, data.dtype, gzip).encode("ascii"))
    raw = data.reshape(-1).view(np.uint8).data
    if gzip:
        with GzipFile(fileobj=stream, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as packed:
            packed.write(raw)
    else:
        stream.write(raw)


def _parse_vector(text: str) -> tuple[float, ...] | None:
    text = text.strip()
    if text == "none":
        return None
    return tuple(float(v) for v in text.strip("()").split(","))


def _parse_field(key: str, value: str) -> Any:
    if key == "dimension":
        return int(value)
    if key == "sizes":
        return [int(v) for v in value.split()]
    if key == "space directions":
        return [_parse_vector(v) for v in value.split()]
    if key == "space origin":
        return _parse_vector(value)
    return value.strip()


def _split_header(blob: bytes) -> tuple[dict[str, Any], bytes]:
    header: dict[str, Any] = {}
    end = blob.find(b"\n\n")
    if not blob.startswith(b"NRRD000") or end < 0:
        raise ValueError("not an NRRD file with an attached header (magic NRRD000x, blank line)")
    for line in blob[:end].decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ":=" in line.split(": ", 1)[0]:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            raise ValueError(f"NRRD header line {line!r} is not 'field: value'")
        header[key.strip()] = _parse_field(key.strip(), value)
    return header, blob[end + 2 :]


def read_nrrd(stream: IO[bytes]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an attached-header 3-D NRRD: the array as ``[slice, row, column]`` and its fields.

    Fields keep their NRRD names; ``dimension`` is an int, ``sizes`` a list of
    ints, ``space directions`` a list of float tuples (None for ``none``) and
    ``space origin`` a float tuple; the rest are strings.
    """
    header, payload = _split_header(stream.read())
    if header.get("dimension") != 3:
        raise ValueError(f"NRRD dimension {header.get('dimension')!r} is not supported; expected 3")
    type_name = header.get("type", "")
    if type_name not in _NUMPY_TYPES:
        raise ValueError(
            f"NRRD type {type_name!r} is not supported; expected {sorted(_NUMPY_TYPES)}"
        )
    encoding = header.get("encoding", "")
    if encoding in ("gzip", "gz"):
        payload = zlib.decompress(payload, wbits=16 + zlib.MAX_WBITS)
    elif encoding != "raw":
        raise ValueError(f"NRRD encoding {encoding!r} is not supported; expected raw or gzip")
    dtype = np.dtype(_NUMPY_TYPES[type_name])
    if header.get("endian", "little") == "big":
        dtype = dtype.newbyteorder(">")
    columns, rows, slices = header["sizes"]
    array = np.frombuffer(payload, dtype=dtype).reshape(slices, rows, columns)
    return array.astype(dtype.newbyteorder("=")), header


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
