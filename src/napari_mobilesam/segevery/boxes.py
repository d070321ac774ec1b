"""Object boxes as prompts: border snapping, cleaning, non-maximum suppression, capping.

Plain arrays in, plain arrays out: ``(N, 4)`` x0, y0, x1, y1 boxes in pixels and ``(N,)``
scores. Used by object discovery (:mod:`napari_mobilesam.segevery.discovery`) and by tiled
SegEvery.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "BORDER_SNAP_PIXELS",
    "MAX_DETECTIONS",
    "cap_by_confidence",
    "clean_boxes",
    "nms_boxes",
    "snap_to_border",
]

BORDER_SNAP_PIXELS = 20
"""Box edges closer than this to the border of the detector's input frame are snapped."""
MAX_DETECTIONS = 300
"""The most boxes a detector returns per image (ultralytics' and MobileSAMv2's ``max_det``),
and the default number of objects SegEvery decodes."""


def snap_to_border(
    boxes: ArrayLike, frame_shape: Sequence[int], threshold: float = BORDER_SNAP_PIXELS
) -> np.ndarray:
    """Move box edges that are closer than ``threshold`` to the frame border onto the border.

    ``x0 < threshold`` becomes 0, ``y0 < threshold`` becomes 0, ``x1 > W - threshold``
    becomes W and ``y1 > H - threshold`` becomes H, as MobileSAMv2 (and FastSAM) do with
    detector boxes, so that objects cut by the border are prompted up to it.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` x0, y0, x1, y1.
    frame_shape : sequence of int
        ``(H, W)`` or ``(H, W, C)`` of the frame the boxes are in.
    threshold : float
        Distance to the border, in the boxes' pixels; 0 changes nothing.

    Returns
    -------
    numpy.ndarray
        A new ``(N, 4)`` float32 array.

    Examples
    --------
    >>> snap_to_border([[5, 30, 90, 95]], (100, 100), threshold=20)
    array([[  0.,  30., 100., 100.]], dtype=float32)
    """
    snapped = _as_box_array(boxes, "boxes").astype(np.float32)
    height, width = _frame_size(frame_shape)
    if not (np.isfinite(threshold) and threshold >= 0):
        raise InvalidValueError(f"Expected threshold to be a number >= 0; received {threshold!r}.")
    snapped[snapped[:, 0] < threshold, 0] = 0
    snapped[snapped[:, 1] < threshold, 1] = 0
    snapped[snapped[:, 2] > width - threshold, 2] = width
    snapped[snapped[:, 3] > height - threshold, 3] = height
    return snapped


def clean_boxes(boxes: ArrayLike, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Make boxes usable as prompts: order corners, clip to the image, drop empty boxes.

    Inverted coordinates (``x1 < x0`` or ``y1 < y0``) are swapped, boxes are clipped to
    ``[0, W] x [0, H]``, and boxes with a non-finite coordinate or without area after
    clipping (entirely outside the image, or zero width or height) are dropped.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` x0, y0, x1, y1 in image pixels; an empty sequence means no boxes.
    image_shape : sequence of int
        ``(H, W)`` or ``(H, W, C)`` of the image.

    Returns
    -------
    boxes : numpy.ndarray
        ``(M, 4)`` float32, the boxes that were kept, in their input order.
    valid : numpy.ndarray
        ``(N,)`` bool, True for the input rows that were kept; use it to select their
        scores.

    Examples
    --------
    >>> kept, valid = clean_boxes([[30, 20, 10, 5], [-5, 0, 40, 200], [50, 50, 50, 60]],
    ...                           (100, 100))
    >>> kept
    array([[ 10.,   5.,  30.,  20.],
           [  0.,   0.,  40., 100.]], dtype=float32)
    >>> valid
    array([ True,  True, False])
    """
    array = _as_box_array(boxes, "boxes")
    height, width = _frame_size(image_shape)
    finite = np.isfinite(array).all(axis=1)
    x = np.clip(np.sort(array[:, 0::2], axis=1), 0, width)
    y = np.clip(np.sort(array[:, 1::2], axis=1), 0, height)
    # Checked after the cast to float32: a width of 1e-100 pixels is no width at all.
    cleaned = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)
    valid = finite & (cleaned[:, 2] > cleaned[:, 0]) & (cleaned[:, 3] > cleaned[:, 1])
    return cleaned[valid], valid


def nms_boxes(boxes: ArrayLike, scores: ArrayLike, iou: float) -> np.ndarray:
    """Class-agnostic non-maximum suppression (:func:`torchvision.ops.nms`).

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` finite x0, y0, x1, y1 with ``x0 <= x1`` and ``y0 <= y1``.
    scores : array_like
        ``(N,)`` finite scores.
    iou : float
        Of two boxes overlapping with an IoU above this, in [0, 1], the lower-scoring one
        is dropped. 1 keeps every box.

    Returns
    -------
    numpy.ndarray
        int64 indices of the kept boxes, by decreasing score.

    Examples
    --------
    >>> nms_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], [0.5, 0.9, 0.7], 0.5)
    array([1, 2])
    """
    import torch
    import torchvision

    array = _as_box_array(boxes, "boxes")
    values = _as_scores(scores, len(array))
    check_fraction(iou, "iou")
    if not np.isfinite(array).all():
        raise InvalidValueError("Expected finite boxes; use clean_boxes to drop non-finite ones.")
    if len(array) == 0:
        return np.empty(0, dtype=np.int64)
    keep = torchvision.ops.nms(
        torch.from_numpy(array.astype(np.float32)),
        torch.from_numpy(values.astype(np.float32)),
        float(iou),
    )
    return keep.numpy().astype(np.int64)


def cap_by_confidence(
    boxes: ArrayLike, scores: ArrayLike, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort boxes by decreasing score and keep the first ``max_objects``.

    Equal scores keep their input order.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` boxes.
    scores : array_like
        ``(N,)`` finite scores.
    max_objects : int
        The most boxes kept, at least 1.

    Returns
    -------
    boxes : numpy.ndarray
        ``(min(N, max_objects), 4)`` float32.
    scores : numpy.ndarray
        ``(min(N, max_objects),)`` float32, non-increasing.

    Examples
    --------
    >>> cap_by_confidence([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], [0.2, 0.9, 0.5], 2)
    (array([[2., 2., 3., 3.],
           [4., 4., 5., 5.]], dtype=float32), array([0.9, 0.5], dtype=float32))
    """
    array = _as_box_array(boxes, "boxes")
    values = _as_scores(scores, len(array))
    check_positive_int(max_objects, "max_objects")
    order = np.argsort(-values, kind="stable")[:max_objects]
    return array[order].astype(np.float32), values[order].astype(np.float32)


def _as_box_array(boxes: ArrayLike, what: str) -> np.ndarray:
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidTypeError(
            f"Expected {what} as an (N, 4) array of numbers x0, y0, x1, y1; "
            f"received {type(boxes).__name__} that is not numeric ({error})."
        ) from error
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise InvalidValueError(
            f"Expected {what} of shape (N, 4) as x0, y0, x1, y1; received shape {array.shape}."
        )
    return array


def _as_scores(scores: ArrayLike, count: int) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (count,):
        raise InvalidValueError(
            f"Expected one score per box, shape ({count},); received shape {values.shape}."
        )
    if not np.isfinite(values).all():
        raise InvalidValueError("Expected finite scores; received NaN or infinite values.")
    return values


def _frame_size(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) not in (2, 3) or not all(int(side) > 0 for side in shape[:2]):
        raise InvalidValueError(
            f"Expected an image shape (H, W) or (H, W, C) with H, W > 0; received {shape!r}."
        )
    return int(shape[0]), int(shape[1])


def check_fraction(value: float, name: str) -> None:
    """Raise unless ``value`` is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise InvalidTypeError(f"Expected {name} to be a number in [0, 1]; received {value!r}.")
    if not 0 <= value <= 1:
        raise InvalidValueError(f"Expected {name} in [0, 1]; received {value}.")


def check_positive_int(value: int, name: str) -> None:
    """Raise unless ``value`` is an integer >= 1 (bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidTypeError(f"Expected {name} to be a positive integer; received {value!r}.")
    if value < 1:
        raise InvalidValueError(f"Expected {name} to be a positive integer; received {value}.")
