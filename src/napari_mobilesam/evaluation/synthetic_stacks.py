"""Synthetic label stacks with known truth, for linking 3-D objects and tracks.

- :func:`stacked_nuclei`: a dense volume of touching nuclei (ellipsoids drawn with
  :func:`skimage.draw.ellipsoid`), in columns of one or two nuclei stacked in Z, and an
  intensity image (bright cores, dimmer rims, noise).
- :func:`per_slice_labels`: what a per-slice segmenter gives for a volume: every slice
  numbered on its own, optionally with one-pixel boundary noise and missed objects.
- :func:`moving_cells`: a time-lapse of round cells moving in straight lines (which cross),
  some of which divide, with the true lineage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CellMovie", "moving_cells", "per_slice_labels", "stacked_nuclei"]


def stacked_nuclei(
    shape: tuple[int, int, int] = (32, 96, 96),
    *,
    radius: float = 8.0,
    z_spacing: float = 2.0,
    stacked_fraction: float = 0.6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A volume of touching nuclei, many stacked two high in Z.

    Columns sit on a jittered grid ``1.8 * radius`` apart in Y and X (so neighbours touch);
    a fraction ``stacked_fraction`` of them holds two nuclei on top of each other, touching.
    Nucleus radii vary by ±20 %; ``z_spacing`` is the voxel size in Z over that in Y, X.

    Returns
    -------
    image : (Z, Y, X) float32
    truth : (Z, Y, X) int32, one id per nucleus

    Examples
    --------
    >>> image, truth = stacked_nuclei((24, 48, 48), seed=1)
    >>> truth.shape, int(truth.max()) > 4
    ((24, 48, 48), True)
    """
    from skimage.draw import ellipsoid
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    truth = np.zeros(shape, np.int32)
    weight = np.zeros(shape, np.float32)
    step = 1.8 * radius
    label = 0
    for cy in np.arange(radius, ny - radius / 2, step):
        for cx in np.arange(radius, nx - radius / 2, step):
            n_stack = 2 if rng.random() < stacked_fraction else 1
            radii = radius * rng.uniform(0.8, 1.2, n_stack)
            heights = 2 * radii / z_spacing
            z = rng.uniform(0, max(nz - heights.sum(), 0)) + heights[0] / 2
            y, x = cy + rng.uniform(-1.5, 1.5), cx + rng.uniform(-1.5, 1.5)
            for k in range(n_stack):
                label += 1
                r = radii[k]
                blob = ellipsoid(r / z_spacing, r, r, levelset=True)
                _paste(truth, weight, blob, (z, y, x), label)
                if k + 1 < n_stack:
                    z += heights[k] / 2 + heights[k + 1] / 2
    image = 100.0 + 80.0 * weight + rng.normal(0, 8, shape)
    image = gaussian(image, sigma=(0.5, 1, 1), preserve_range=True).astype(np.float32)
    return image, _renumbered(truth)


def _paste(truth, weight, levelset, centre, label) -> None:
    """Paint an ellipsoid (``levelset`` < 0 inside) where the volume is still free."""
    size = np.array(levelset.shape)
    start = np.rint(np.asarray(centre) - size / 2).astype(int)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, truth.shape)
    if (hi <= lo).any():
        return
    target = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    source = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
    inside = (levelset[source] < 0) & (truth[target] == 0)
    truth[target][inside] = label
    depth = np.clip(-levelset[source], 0, 1)  # 0 at the rim, 1 at the centre
    weight[target][inside] = 0.4 + 0.6 * np.sqrt(depth[inside])


def _renumbered(labels: np.ndarray) -> np.ndarray:
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32)


def per_slice_labels(
    truth: np.ndarray, *, boundary_noise: bool = False, missed: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Number every slice of a label stack on its own, as a per-slice segmenter would.

    With ``boundary_noise`` each section grows or shrinks by one pixel (at random, into
    free pixels only); a fraction ``missed`` of the sections is dropped.

    Examples
    --------
    >>> truth = np.zeros((2, 6, 6), np.int32)
    >>> truth[:, 1:4, 1:4] = 7
    >>> per_slice_labels(truth).max(axis=(1, 2)).tolist()
    [1, 1]
    """
    from scipy.ndimage import binary_dilation, binary_erosion
    from skimage.morphology import disk

    rng = np.random.default_rng(seed)
    out = np.zeros_like(truth, dtype=np.int32)
    for s, labels in enumerate(truth):
        ids = np.unique(labels)
        ids = ids[ids > 0]
        new_ids = rng.permutation(len(ids)) + 1
        for old, new in zip(ids, new_ids, strict=True):
            if rng.random() < missed:
                continue
            mask = labels == old
            if boundary_noise and mask.sum() > 12:
                grow = rng.random() < 0.5
                mask = (
                    binary_dilation(mask, disk(1).astype(bool)) & (labels == 0) | mask
                    if grow
                    else (binary_erosion(mask, disk(1).astype(bool)))
                )
            out[s][mask & (out[s] == 0)] = new
    return out


def _family(rng, n_before, divides, frames, split_at, shape, radius, speed) -> list[tuple]:
    """A cell with a random start and course; if it divides, its two daughters."""
    margin = radius + 2
    start = rng.uniform(margin, np.array(shape) - margin)
    angle = rng.uniform(0, 2 * np.pi)
    v = speed * radius * np.array([np.sin(angle), np.cos(angle)])
    mother = n_before + 1
    if not divides:
        return [(mother, start, v, 0, frames - 1, 0)]
    out = [(mother, start, v, 0, split_at - 1, 0)]
    away = np.array([-v[1], v[0]]) / max(np.hypot(*v), 1e-9)  # at right angles to the course
    for k, sign in enumerate((1, -1)):
        offset = sign * 1.1 * radius * away
        out.append((mother + 1 + k, start + v * split_at + offset, sign * away * np.hypot(*v),
                    split_at, frames - 1, mother))  # fmt: skip
    return out


def _path(cell: tuple, frames: int) -> np.ndarray:
    """Centre of a cell on every frame (nan where it does not exist)."""
    _, origin, v, first, last, _ = cell
    out = np.full((frames, 2), np.nan)
    t = np.arange(first, last + 1)
    out[first : last + 1] = origin + v * (t - first)[:, None]
    return out


@dataclass(frozen=True)
class CellMovie:
    """A synthetic time-lapse: ``labels`` (T, Y, X) int32 with one id per track, and its
    lineage ``tracks`` (K, 4): id, first frame, last frame, parent id (0: none)."""

    labels: np.ndarray
    tracks: np.ndarray


def moving_cells(
    frames: int = 12,
    *,
    shape: tuple[int, int] = (160, 160),
    n_cells: int = 16,
    radius: float = 6.0,
    speed: float = 1.0,
    divisions: int = 2,
    seed: int = 0,
) -> CellMovie:
    """Round cells moving in straight lines at ``speed`` radii per frame, some dividing.

    Cells start at random positions with random directions, so paths cross, but no two
    cells overlap on one frame (they are 2-D cells, not beads passing over each other); a
    cell leaving the image ends its track. ``divisions`` cells (which stay inside) divide
    halfway through: the mother ends, two daughters (new ids) move apart at right angles
    to its course.

    Examples
    --------
    >>> movie = moving_cells(6, n_cells=4, divisions=1, seed=2)
    >>> movie.labels.shape, int((movie.tracks[:, 3] > 0).sum())
    ((6, 160, 160), 2)
    """
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    labels = np.zeros((frames, *shape), np.int32)
    split_at = frames // 2
    cells: list[tuple] = []  # (id, position at `first`, velocity, first, last, parent)
    paths = np.full((0, frames, 2), np.nan)  # centre of every cell on every frame
    for i in range(n_cells):
        for _ in range(500):
            family = _family(
                rng, len(cells), i < divisions, frames, split_at, shape, radius, speed
            )
            family_paths = np.stack([_path(c, frames) for c in family])
            gaps = np.linalg.norm(family_paths[:, None] - paths[None], axis=-1)
            inside = (family_paths > radius) & (family_paths < np.array(shape) - radius)
            stays = i >= divisions or inside[~np.isnan(family_paths)].all()
            if stays and not (gaps < 2 * radius + 2).any():  # nan (absent) compares False
                break
        cells += family
        paths = np.concatenate([paths, family_paths])
    rows = []
    for label, origin, v, first, last, parent in cells:
        seen = []
        for t in range(first, last + 1):
            rr, cc = disk(tuple(origin + v * (t - first)), radius, shape=shape)
            free = labels[t, rr, cc] == 0
            if free.any():
                labels[t, rr[free], cc[free]] = label
                seen.append(t)
        if seen:
            rows.append([label, seen[0], seen[-1], parent])
    return CellMovie(labels, np.array(rows, np.int64).reshape(-1, 4))
