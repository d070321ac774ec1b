"""A mask on one slice as a prompt on the next: its box, its logits or points inside it."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE

__all__ = [
    "DEFAULT_BOX_EXTENSION",
    "PROJECTIONS",
    "interior_points",
    "mask_box",
    "mask_iou",
    "mask_to_logits",
    "project_prompt",
]

PROJECTIONS = ("mask", "box", "points")
DEFAULT_BOX_EXTENSION = 0.05
_LOGIT_EPS = 1e-3  # a user mask becomes logits of about +-6.9 (inverse sigmoid of 0.999)


def project_prompt(
    mask: np.ndarray,
    logits: np.ndarray | None,
    projection: str,
    *,
    input_size: tuple[int, int],
    box_extension: float = DEFAULT_BOX_EXTENSION,
    n_points: int = 3,
) -> dict[str, Any]:
    """The keyword arguments of ``predictor.predict`` that project ``mask`` onto a slice.

    Parameters
    ----------
    mask : (H, W) bool
        The object on the neighbouring slice (not empty).
    logits : (1, 256, 256) float or None
        That slice's low-resolution logits, if it was decoded; None converts ``mask``.
    projection : {"mask", "box", "points"}
    input_size : (h, w)
        The slice resized into the model's 1024 frame (``predictor.input_size``).

    Returns
    -------
    dict
        ``box`` (4,), ``mask_input`` (1, 256, 256), ``point_coords`` (N, 2) and
        ``point_labels`` (N,), as the mode needs, and ``multimask_output``.

    Examples
    --------
    >>> mask = np.zeros((64, 64), bool); mask[10:30, 20:40] = True
    >>> project_prompt(mask, None, "box", input_size=(1024, 1024))["box"].tolist()
    [19.0, 9.0, 41.0, 31.0]
    """
    if projection == "points":
        coords = interior_points(mask, n_points)
        return {
            "point_coords": coords,
            "point_labels": np.ones(len(coords), np.int64),
            "multimask_output": len(coords) == 1,
        }
    box = mask_box(mask, box_extension)
    kwargs: dict[str, Any] = {"box": box, "multimask_output": False}
    if projection == "mask":
        kwargs["mask_input"] = logits if logits is not None else mask_to_logits(mask, input_size)
    return kwargs


def mask_box(mask: np.ndarray, extension: float = 0.0) -> np.ndarray:
    """x0, y0, x1, y1 of a mask's pixels (pixel edges), widened by ``extension`` of its
    size on each side (at least 1 pixel when ``extension > 0``), clipped to the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise InvalidValueError("cannot take the box of an empty mask")
    y0, y1 = rows[0], rows[-1] + 1
    x0, x1 = cols[0], cols[-1] + 1
    if extension > 0:
        dy = max(1.0, extension * (y1 - y0))
        dx = max(1.0, extension * (x1 - x0))
        h, w = mask.shape
        x0, x1 = max(0.0, x0 - dx), min(float(w), x1 + dx)
        y0, y1 = max(0.0, y0 - dy), min(float(h), y1 + dy)
    return np.array([x0, y0, x1, y1], np.float64)


def interior_points(mask: np.ndarray, n_points: int = 3) -> np.ndarray:
    """Up to ``n_points`` (x, y) points deep inside a mask: the deepest pixel of its
    distance transform, then the deepest pixel at least its own depth from those chosen."""
    from scipy.ndimage import distance_transform_edt

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise InvalidValueError("cannot place points in an empty mask")
    r0, c0 = rows[0], cols[0]
    crop = np.pad(mask[r0 : rows[-1] + 1, c0 : cols[-1] + 1], 1)
    depth = distance_transform_edt(crop)
    yy, xx = np.indices(depth.shape)
    points = []
    for _ in range(n_points):
        flat = int(np.argmax(depth))
        best = depth.flat[flat]
        if best <= 0 or (points and best < 1):
            break
        y, x = divmod(flat, depth.shape[1])
        points.append((x - 1 + c0 + 0.5, y - 1 + r0 + 0.5))
        depth[(yy - y) ** 2 + (xx - x) ** 2 < max(best, 1.0) ** 2] = 0
    return np.array(points, np.float64)


def mask_to_logits(mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """A binary (H, W) mask as (1, 256, 256) low-resolution logits for ``mask_input``.

    The mask is resized (nearest) into the model's frame (``input_size``, top-left of
    1024 x 1024), averaged over 4 x 4 blocks, and mapped through the inverse sigmoid,
    clipped to +-6.9.
    """
    h, w = (int(v) for v in input_size)
    height, width = mask.shape
    side = 4 * LOW_RES_SIDE
    rows = np.minimum(((np.arange(h) + 0.5) * height / h).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * width / w).astype(np.int64), width - 1)
    frame = np.zeros((side, side), np.float32)
    frame[:h, :w] = mask[np.ix_(rows, cols)]
    fraction = frame.reshape(LOW_RES_SIDE, 4, LOW_RES_SIDE, 4).mean(axis=(1, 3))
    fraction = np.clip(fraction, _LOGIT_EPS, 1 - _LOGIT_EPS)
    return np.log(fraction / (1 - fraction)).astype(np.float32)[None]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0
