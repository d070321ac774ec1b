"""Features of each object (scikit-image's ``regionprops``) and filters on their ranges.

Columns of :func:`object_features`: ``label``, ``area`` (pixels, or voxels of a 3-D
object), ``mean_intensity`` (with an image), ``solidity``, ``eccentricity`` (2-D only;
NaN for 3-D objects) and ``score`` (when scores are given; NaN for objects without one).
An object whose value of a filtered feature is NaN (unknown) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_mobilesam.curation.objects import check_labels
from napari_mobilesam.errors import InvalidValueError

__all__ = ["FEATURES", "check_ranges", "filter_objects", "object_features", "objects_within"]

#: The features a filter may use, in the order the widget and the CLI show them.
FEATURES = ("area", "solidity", "eccentricity", "mean_intensity", "score")

Range = tuple[float | None, float | None]


def object_features(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    scores: Mapping[int, float] | None = None,
) -> dict[str, np.ndarray]:
    """One row per object of ``labels``: its id and features, as columns.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int
    image : array of the same shape (or with a trailing channel axis, averaged), optional
        Gives ``mean_intensity``.
    scores : mapping of id to score, optional
        Gives ``score`` (SegEvery's predicted IoU, for example).

    Returns
    -------
    dict of str to (N,) arrays
        ``label`` (sorted), ``area``, ``solidity``, ``eccentricity``, and
        ``mean_intensity`` / ``score`` when given.

    Examples
    --------
    >>> labels = np.zeros((20, 20), int); labels[2:6, 2:12] = 1; labels[10:15, 10:15] = 2
    >>> table = object_features(labels, scores={1: 0.9})
    >>> table["label"].tolist(), table["area"].tolist(), table["score"].tolist()
    ([1, 2], [40.0, 25.0], [0.9, nan])
    """
    from skimage.measure import regionprops_table

    labels = check_labels(labels)
    if labels.ndim not in (2, 3):
        raise InvalidValueError(f"labels must be 2-D or 3-D, got shape {labels.shape}")
    intensity = None
    if image is not None:
        intensity = np.asarray(image, dtype=np.float64)
        if intensity.ndim == labels.ndim + 1:
            intensity = intensity.mean(axis=-1)
        if intensity.shape != labels.shape:
            raise InvalidValueError(
                f"image must have the labels' shape {labels.shape}, got {np.shape(image)}"
            )
    names = ["label", "area", "solidity"]
    if labels.ndim == 2:
        names.append("eccentricity")
    if intensity is not None:
        names.append("intensity_mean")
    table = regionprops_table(labels, intensity, properties=names)
    count = len(table["label"])
    out = {"label": np.asarray(table["label"], np.int64)}
    out["area"] = np.asarray(table["area"], np.float64)
    out["solidity"] = np.asarray(table["solidity"], np.float64)
    out["eccentricity"] = np.asarray(table.get("eccentricity", np.full(count, np.nan)), float)
    if intensity is not None:
        out["mean_intensity"] = np.asarray(table["intensity_mean"], np.float64)
    if scores is not None:
        out["score"] = np.array([scores.get(int(i), np.nan) for i in out["label"]], float)
    return out


def check_ranges(ranges: Mapping[str, Range]) -> dict[str, Range]:
    """``ranges`` checked: known features, numbers or None, low <= high."""
    checked: dict[str, Range] = {}
    for name, bounds in ranges.items():
        if name not in FEATURES:
            raise InvalidValueError(f"unknown feature {name!r}: filters use one of {FEATURES}")
        try:
            low, high = bounds
            low = None if low is None else float(low)
            high = None if high is None else float(high)
        except (TypeError, ValueError):
            raise InvalidValueError(
                f"the range of {name} must be (low, high) numbers or None, got {bounds!r}"
            ) from None
        if any(v is not None and not np.isfinite(v) for v in (low, high)):
            raise InvalidValueError(f"the range of {name} must be finite, got {bounds!r}")
        if low is not None and high is not None and low > high:
            raise InvalidValueError(f"the range of {name} is empty: {low} > {high}")
        if (low, high) != (None, None):
            checked[name] = (low, high)
    return checked


def objects_within(features: Mapping[str, Any], ranges: Mapping[str, Range]) -> np.ndarray:
    """The ids (``features["label"]``) whose features lie in every range (ends included).

    Examples
    --------
    >>> features = {"label": np.array([1, 2, 3]), "area": np.array([5.0, 50.0, 500.0])}
    >>> objects_within(features, {"area": (10, None)}).tolist()
    [2, 3]
    """
    ranges = check_ranges(ranges)
    ids = np.asarray(features["label"])
    keep = np.ones(len(ids), bool)
    for name, (low, high) in ranges.items():
        if name not in features:
            raise InvalidValueError(
                f"there is no {name} to filter on"
                + (": give the image" if name == "mean_intensity" else "")
                + (": give the scores" if name == "score" else "")
            )
        values = np.asarray(features[name], dtype=np.float64)
        known = ~np.isnan(values)
        if low is not None:
            keep &= ~known | (values >= low)
        if high is not None:
            keep &= ~known | (values <= high)
    return ids[keep]


def filter_objects(
    labels: np.ndarray, features: Mapping[str, Any], ranges: Mapping[str, Range]
) -> np.ndarray:
    """A copy of ``labels`` keeping only the objects whose features lie in ``ranges``.

    Parameters
    ----------
    labels : int array
    features : mapping
        From :func:`object_features` of these labels.
    ranges : mapping of feature name to (low, high)
        None for an open end; ends included.

    Examples
    --------
    >>> labels = np.zeros((20, 20), int); labels[2:6, 2:12] = 1; labels[10:12, 10:12] = 2
    >>> kept = filter_objects(labels, object_features(labels), {"area": (10, None)})
    >>> np.unique(kept).tolist()
    [0, 1]
    """
    labels = check_labels(labels)
    keep = objects_within(features, ranges)
    out = labels.copy()
    out[(labels != 0) & ~np.isin(labels, keep)] = 0
    return out
