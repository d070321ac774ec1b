"""Checks of the prompts a :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`
decodes: shapes, labels and coordinate ranges, with messages that say what to give.

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE

__all__ = ["MAX_COORDINATE", "check_box", "check_boxes", "check_mask_input", "check_points"]

#: Largest prompt coordinate accepted, in pixels: larger ones overflow float32 once scaled.
MAX_COORDINATE = 1e9


def check_points(
    coords: np.ndarray | Sequence | None, labels: np.ndarray | Sequence | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points as (N, 2) float64 and labels as (N,) int64 of 0 and 1; (None, None) for none."""
    if coords is None and labels is None:
        return None, None
    if coords is None or labels is None:
        raise InvalidValueError("point_coords and point_labels must be given together")
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InvalidValueError(
            f"point_coords must have shape (N, 2) holding (x, y) pixels, got {coords.shape}"
        )
    if labels.shape != (coords.shape[0],):
        raise InvalidValueError(
            f"point_labels must have shape ({coords.shape[0]},) to match point_coords, "
            f"got {labels.shape}"
        )
    if not (np.abs(coords) <= MAX_COORDINATE).all():
        raise InvalidValueError(
            f"point_coords must be finite numbers of at most {MAX_COORDINATE:g} pixels in "
            "magnitude (points outside the image are allowed)"
        )
    if not np.isin(labels, (0, 1)).all():
        raise InvalidValueError("point_labels must be 1 (foreground) or 0 (background)")
    return coords, labels.astype(np.int64)


def check_box(box: np.ndarray | Sequence | None) -> np.ndarray | None:
    """A box as (1, 4) float64 x0, y0, x1, y1; None for none."""
    if box is None:
        return None
    box = np.asarray(box, dtype=np.float64)
    if box.shape not in ((4,), (1, 4)):
        raise InvalidValueError(f"box must be x0, y0, x1, y1 with shape (4,), got {box.shape}")
    return check_boxes(box.reshape(1, 4))


def check_boxes(boxes: np.ndarray | Sequence) -> np.ndarray:
    """Boxes as (N, 4) float64 x0, y0, x1, y1, each coordinate within ``MAX_COORDINATE``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidValueError(
            f"boxes must have shape (N, 4) holding x0, y0, x1, y1 pixels, got {boxes.shape}"
        )
    if not (np.abs(boxes) <= MAX_COORDINATE).all():
        raise InvalidValueError(
            f"boxes must be finite numbers of at most {MAX_COORDINATE:g} pixels in magnitude "
            "(boxes reaching outside the image are allowed)"
        )
    return boxes


def check_mask_input(mask_input: np.ndarray | None) -> np.ndarray | None:
    """Earlier low-resolution logits as (1, 256, 256) float32; None for none."""
    if mask_input is None:
        return None
    mask_input = np.asarray(mask_input, dtype=np.float32)
    if mask_input.shape == (LOW_RES_SIDE, LOW_RES_SIDE):
        mask_input = mask_input[None]
    if mask_input.shape != (1, LOW_RES_SIDE, LOW_RES_SIDE):
        raise InvalidValueError(
            "mask_input must be the (1, 256, 256) low-resolution logits of an earlier call, "
            f"got shape {mask_input.shape}"
        )
    return mask_input
