"""Label image files: compressed TIFF for what fits in memory, zarr for what does not.

Read and written by batch runs, evaluation and training alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = [
    "LABEL_FORMATS",
    "ZARR_PIXELS",
    "label_format_for",
    "open_labels",
    "open_zarr_labels",
    "read_labels",
    "write_labels",
]

LABEL_FORMATS = ("auto", "tiff", "zarr")
#: With ``label_format="auto"``, label images with more pixels than this are written as zarr.
ZARR_PIXELS = 2**26


def label_format_for(shape: Sequence[int], label_format: str = "auto") -> str:
    """``"tiff"`` or ``"zarr"``: the format of a label image of ``shape``."""
    if label_format not in LABEL_FORMATS:
        raise InvalidValueError(
            f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}"
        )
    if label_format != "auto":
        return label_format
    return "zarr" if int(np.prod(shape, dtype=np.int64)) > ZARR_PIXELS else "tiff"


def open_zarr_labels(path: Path, shape: Sequence[int]) -> Any:
    """A new int32 zarr array of zeros at ``path``, chunked one plane tile at a time."""
    import zarr

    chunks = (1,) * (len(shape) - 2) + tuple(min(1024, int(side)) for side in shape[-2:])
    return zarr.open_array(str(path), mode="w", shape=tuple(shape), chunks=chunks, dtype="i4")


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write ``labels`` as a compressed TIFF (``.tif``) or a zarr array (``.zarr``)."""
    path = Path(path)
    if path.suffix == ".zarr":
        array = open_zarr_labels(path, labels.shape)
        array[...] = labels
        return
    import tifffile

    tifffile.imwrite(
        path, np.asarray(labels, dtype=np.int32), compression="zlib", photometric="minisblack"
    )


def open_labels(path: str | os.PathLike[str]) -> Any:
    """A label image written by :func:`write_labels`, to index plane by plane: a zarr
    array read lazily, or a TIFF read whole."""
    path = Path(path)
    if path.suffix == ".zarr":
        import zarr

        return zarr.open_array(str(path), mode="r")
    import tifffile

    return tifffile.imread(path)


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label image written by :func:`write_labels`."""
    path = Path(path)
    if path.suffix == ".zarr":
        import zarr

        return np.asarray(zarr.open_array(str(path), mode="r")[...])
    import tifffile

    return tifffile.imread(path)
