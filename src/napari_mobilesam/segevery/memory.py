"""Memory that segmenting an image untiled needs, checked before anything is allocated."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["check_memory_untiled", "untiled_bytes"]


def untiled_bytes(image: Any, shape: tuple[int, int], new_labels: bool = True) -> int:
    """Bytes that segmenting ``image`` untiled allocates besides the model: the image read
    into memory (unless it already is a numpy array), a float working copy (unless it is
    uint8 or bool), the RGB uint8 input and the int32 label image."""
    height, width = shape
    pixels = int(height) * int(width)
    dims = np.shape(image)
    channels = int(dims[2]) if len(dims) == 3 else 1
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    needed = 3 * pixels + (4 * pixels if new_labels else 0)
    if not isinstance(image, np.ndarray):
        needed += pixels * channels * dtype.itemsize
    if dtype not in (np.uint8, np.bool_):
        needed += pixels * min(channels, 3) * max(4, dtype.itemsize)
    return needed


def check_memory_untiled(image: Any, shape: tuple[int, int], new_labels: bool = True) -> None:
    """Raise ValueError, before anything is allocated, if segmenting ``image`` untiled needs
    more memory than the machine has available now (psutil's ``available``)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - napari depends on psutil
        return
    needed = untiled_bytes(image, shape, new_labels)
    available = int(psutil.virtual_memory().available)
    if needed > available:
        raise InvalidValueError(
            f"Not enough memory to segment this {shape[0]} x {shape[1]} image untiled: it "
            f"needs about {needed / 2**30:.1f} GiB and {available / 2**30:.1f} GiB are "
            "available. Nothing was allocated. Use tiling=True (the default), which reads "
            "and segments one tile at a time and can write into an on-disk out= array, or "
            "a coarser level of a multiscale image."
        )
