"""Synthetic fluorescence-like images with known truth, drawn with scikit-image.

Used by the tests, the benchmarks and the training walkthrough: nuclei-like ellipses of
varied size, shape and brightness, some touching, blurred and with shot and read noise.
"""

from __future__ import annotations

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["synthetic_nuclei"]


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    *,
    n_objects: int | None = None,
    radius: tuple[float, float] = (6.0, 16.0),
    touching: float = 0.3,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a fluorescence-like image of nuclei and its true label image.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)`` of the image, each at least 32.
    n_objects : int, optional
        Ellipses to draw; default about one per 12 radii² of area (a crowded field).
        Ellipses that would hide more than half of an earlier one are skipped, so the
        label image may hold fewer.
    radius : (float, float)
        Range of the ellipses' semi-axes in pixels.
    touching : float
        Fraction of ellipses placed against an earlier one (touching or slightly
        overlapping, the later drawn on top), in [0, 1].
    noise : float
        Standard deviation of the additive read noise, relative to the mean brightness.
    seed : int
        Everything is reproducible from it.

    Returns
    -------
    image : numpy.ndarray
        ``(H, W)`` uint16 image: dim background, ellipses of brightness varying 4×,
        blurred with a Gaussian of sigma 1.5 and with Poisson and Gaussian noise.
    labels : numpy.ndarray
        ``(H, W)`` int32 label image, ids ``1..N`` with no gaps.

    Examples
    --------
    >>> image, labels = synthetic_nuclei((128, 128), seed=1)
    >>> image.shape, image.dtype.name, labels.dtype.name
    ((128, 128), 'uint16', 'int32')
    >>> bool(labels.max() > 3)
    True
    """
    from skimage.draw import ellipse
    from skimage.filters import gaussian

    if len(shape) != 2 or min(shape) < 32:
        raise InvalidValueError(f"shape must be (H, W) with both at least 32, got {shape}")
    if not 0 < radius[0] <= radius[1]:
        raise InvalidValueError(f"radius must be (low, high) with 0 < low <= high, got {radius}")
    if not 0.0 <= touching <= 1.0:
        raise InvalidValueError(f"touching must be between 0 and 1, got {touching}")
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = max(1, int(shape[0] * shape[1] / (12.0 * np.mean(radius) ** 2)))
    labels = np.zeros(shape, np.int32)
    brightness = np.zeros(shape, np.float64)
    centers: list[tuple[float, float, float]] = []
    sizes = np.zeros(n_objects + 1, np.int64)
    n_drawn = 0
    for _ in range(n_objects):
        r_row, r_col = rng.uniform(*radius, size=2)
        if centers and rng.random() < touching:
            row0, col0, r0 = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            distance = 0.9 * (r0 + (r_row + r_col) / 2)
            row, col = row0 + distance * np.sin(angle), col0 + distance * np.cos(angle)
        else:
            row, col = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = ellipse(row, col, r_row, r_col, shape=shape, rotation=rng.uniform(0, np.pi))
        if rr.size < 20 or _hides_earlier(labels[rr, cc], sizes):
            continue
        ids, lost = np.unique(labels[rr, cc], return_counts=True)
        sizes[ids] -= lost
        n_drawn += 1
        labels[rr, cc] = n_drawn
        sizes[n_drawn] = rr.size
        brightness[rr, cc] = rng.uniform(1.0, 4.0) * rng.uniform(0.85, 1.15, size=rr.size)
        centers.append((row, col, (r_row + r_col) / 2))
    signal = gaussian(0.15 + brightness, sigma=1.5) * 2000.0
    counts = rng.poisson(signal) + rng.normal(0, noise * signal.mean(), size=shape)
    image = np.clip(counts + 100, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, _renumber(labels)


def _hides_earlier(covered: np.ndarray, sizes: np.ndarray) -> bool:
    ids, counts = np.unique(covered[covered > 0], return_counts=True)
    return bool(np.any(counts > 0.5 * sizes[ids]))


def _renumber(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.int32)
