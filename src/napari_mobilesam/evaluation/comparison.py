"""A label image that shows what a matching found: matched, spurious and missed objects.

Its values are classes, not object ids: :data:`MATCHED` (1) marks the pixels of predicted
objects matched to a true object, :data:`SPURIOUS` (2) those of predicted objects that
match none (false positives), and :data:`MISSED` (3) the true objects that no prediction
matches (false negatives): their pixels that no predicted object covers, and their outline
on top, so a missed object split into spurious pieces shows as its outline around them.
Where two predicted objects touch, a 1-pixel line of background keeps them apart.
:data:`COMPARISON_COLORS` are the colours the napari widget gives them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.matching import check_thresholds, match_objects, match_planes
from napari_mobilesam.evaluation.overlap import check_label_images
from napari_mobilesam.evaluation.results import ObjectMatching, PlaneMatching

__all__ = ["COMPARISON_COLORS", "COMPARISON_NAMES", "MATCHED", "MISSED", "SPURIOUS",
           "comparison_image"]  # fmt: skip

MATCHED, SPURIOUS, MISSED = 1, 2, 3
#: Names of the classes, for legends.
COMPARISON_NAMES = {MATCHED: "matched", SPURIOUS: "spurious (FP)", MISSED: "missed (FN)"}
#: Colours (hex RGB) of the classes: green, magenta and amber, told apart with the common
#: colour-vision deficiencies by brightness as well as hue.
COMPARISON_COLORS = {MATCHED: "#33cc33", SPURIOUS: "#ff33ff", MISSED: "#ffb000"}


def comparison_image(
    predicted: Any,
    true: Any,
    *,
    threshold: float = 0.5,
    axis: int | None = None,
    matching: ObjectMatching | PlaneMatching | None = None,
) -> np.ndarray:
    """Classify the objects of a prediction and of the ground truth at one IoU threshold.

    Parameters
    ----------
    predicted, true : array-like
        Integer label images of the same shape (read whole into memory: this image is for
        display).
    threshold : float
        A predicted object is matched when its one-to-one partner (see
        :func:`match_objects`) has IoU >= ``threshold``.
    axis : int, optional
        Match the planes along this axis separately (as :func:`match_planes`); default:
        objects span the whole array (2-D images, 3-D volumes).
    matching : ObjectMatching or PlaneMatching, optional
        A matching already computed for these images with ``threshold`` among its
        thresholds (and the same ``axis``), to not compute it again.

    Returns
    -------
    numpy.ndarray
        uint8 image of the input's shape: 0 background, :data:`MATCHED`,
        :data:`SPURIOUS`, :data:`MISSED`.

    Examples
    --------
    >>> true = np.zeros((6, 12), np.int32); true[1:5, 1:5] = 1; true[1:5, 7:11] = 2
    >>> predicted = np.zeros_like(true); predicted[1:5, 1:5] = 9; predicted[0, 6] = 4
    >>> image = comparison_image(predicted, true)
    >>> int(image[2, 2]), int(image[0, 6]), int(image[2, 8]), int(image[0, 0])
    (1, 2, 3, 0)
    """
    check_label_images(predicted, true)
    threshold = float(check_thresholds(threshold)[0])
    predicted = np.asarray(predicted)
    true = np.asarray(true)
    if axis is None:
        found = (
            matching
            if matching is not None
            else match_objects(predicted, true, thresholds=threshold)
        )
        if not isinstance(found, ObjectMatching):
            raise InvalidValueError("with axis=None, matching must be an ObjectMatching")
        return _draw(predicted, true, found.matches_at(threshold))
    found = (
        matching
        if matching is not None
        else match_planes(predicted, true, axis=axis, thresholds=threshold)
    )
    if not isinstance(found, PlaneMatching) or len(found.planes) != true.shape[axis]:
        raise InvalidValueError(f"matching must be the PlaneMatching along axis {axis}")
    planes = [
        _draw(p, t, plane.matches_at(threshold))
        for p, t, plane in zip(
            np.moveaxis(predicted, axis, 0),
            np.moveaxis(true, axis, 0),
            found.planes,
            strict=True,
        )
    ]
    return np.moveaxis(np.stack(planes), 0, axis)


def _draw(predicted: np.ndarray, true: np.ndarray, matches: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    image = np.zeros(true.shape, np.uint8)
    has_pred = predicted > 0
    matched = np.isin(predicted, matches[:, 1]) & has_pred
    image[has_pred] = SPURIOUS
    image[matched] = MATCHED
    # a 1-pixel gap between touching predicted objects keeps them apart in one colour
    image[_touching(predicted)] = 0
    missed = (true > 0) & ~np.isin(true, matches[:, 0])
    image[missed & ~has_pred] = MISSED
    outline = find_boundaries(np.where(missed, true, 0), mode="inner") & missed
    image[outline] = MISSED
    return image


def _touching(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object next to another object (on one side of each border only)."""
    touching = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        before = [slice(None)] * labels.ndim
        after = [slice(None)] * labels.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        first, second = labels[tuple(before)], labels[tuple(after)]
        touching[tuple(after)] |= (first != second) & (first > 0) & (second > 0)
    return touching
