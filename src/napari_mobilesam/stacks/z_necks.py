"""Where a chain of per-slice masks is two objects stacked in Z: the neck rule.

Two nuclei that sit on top of each other are linked into one chain by overlap alone: the
last slice of the lower one overlaps the first slice of the upper one as much as two
slices of one nucleus do. What tells them apart is the profile along the chain, the area
(or the summed intensity above background, when the image is given) of each slice: it
rises, falls to a neck and rises again. :func:`neck_cuts` finds those necks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["expected_slices", "neck_cuts"]


def neck_cuts(profile: np.ndarray, ratio: float, min_slices: int = 2) -> list[int]:
    """Positions ``i`` where a profile is cut into two objects (between ``i - 1`` and ``i``).

    A position ``m`` is a neck when its value is below ``ratio`` times the smaller of the
    peaks on either side; the deepest neck (relative to those peaks) is cut first, then
    each part is searched again. Every part keeps at least ``min_slices`` values. The neck
    value stays with the side of its larger neighbour (the tip of an object shrinks
    towards its end).

    Examples
    --------
    >>> neck_cuts(np.array([50, 120, 200, 120, 40, 50, 130, 200, 130, 60]), 0.5)
    [5]
    >>> neck_cuts(np.array([50, 120, 200, 180, 120, 60]), 0.5)
    []
    """
    values = np.asarray(profile, np.float64)
    best, best_depth = None, ratio
    for m in range(1, len(values) - 1):
        left, right = values[:m].max(), values[m + 1 :].max()
        depth = values[m] / max(min(left, right), 1e-12)
        if depth < best_depth:
            cut = m + 1 if values[m - 1] >= values[m + 1] else m
            if min(cut, len(values) - cut) >= min_slices:
                best, best_depth = cut, depth
    if best is None:
        return []
    left = neck_cuts(values[:best], ratio, min_slices)
    right = neck_cuts(values[best:], ratio, min_slices)
    return left + [best] + [best + c for c in right]


def expected_slices(max_area: float, spacing: tuple[float, float, float]) -> float:
    """Slices a roughly round object spans, from its largest section and the voxel size.

    Examples
    --------
    >>> round(expected_slices(np.pi * 10**2, (2.0, 1.0, 1.0)), 1)
    10.0
    """
    dz, dy, dx = spacing
    diameter = 2.0 * np.sqrt(max_area * dy * dx / np.pi)
    return float(diameter / dz)
