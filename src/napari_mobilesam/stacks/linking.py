"""Link the 2-D objects of a label stack into 3-D objects (Z) or tracks (T).

Each slice of a stack is segmented on its own (e.g. by SegEvery), so an object has a
different id on every slice. :func:`link_slices` gives it one id through the stack. The
linear assignment problems (frame to frame, gap closing, splitting, merging) are solved
by laptrack (:mod:`napari_mobilesam.stacks.tracking`); this module sets the costs and
turns the result into ids, a table and napari features.

Rules:

- **Z (3-D objects).** Neighbouring sections can link when they overlap and their
  centroids are within the median object radius ``r``, or their IoU is at least
  ``iou_threshold`` (0.5), or the smaller lies ``min_contained`` (0.8) inside the larger
  (the tip of an ellipsoid); the assignment minimises ``d² / r² + 1 - IoU``. A chain whose area (or
  summed intensity, with ``image``) falls to a neck below ``neck_ratio`` (0.5) of the
  peaks on both sides and rises again is cut in two: nuclei stacked in Z stay apart. Each
  part keeps two sections at least (with a voxel ``spacing``: a third of the height of a
  round object as wide as the part's largest section). At a split the branch
  overlapping most keeps the id (the other's ``parent`` names it); at a merge likewise
  (the other's ``merged_into`` names it).
- **T (tracks).** The cost is the squared distance between a cell moved on by its
  velocity and the candidate, over the squared median object radius (plus ``1 - IoU``
  while no velocity is known); pairs further apart than ``search_radius`` (default 3
  median radii) cannot link. Velocities come from a first linking pass, so fast steady
  motion and crossing paths are followed from the first link. A division ends the
  mother's track; both daughters get new ids with ``parent`` the mother (as in the Cell
  Tracking Challenge).
- **Gaps.** An object missed on up to ``max_gap`` (1) consecutive slices keeps its id.

Where it fails: a neck needs at least two sections on each side, so nuclei only one or two
slices thick stacked on each other stay joined; cells that change direction sharply while
moving by more than ``search_radius`` are lost; two cells that touch for several frames
and are segmented as one are recorded as a merge (and the split after it as a new track).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.stacks.link_assembly import (
    cut_necks,
    numbered_tracks,
    resolve_branches,
    slice_profiles,
)
from napari_mobilesam.stacks.link_options import LinkOptions
from napari_mobilesam.stacks.tracking import SlicedObjects, laptrack_segments, sliced_objects

MODES = ("z", "t")


@dataclass(frozen=True)
class LinkResult:
    """Objects linked through a stack.

    Attributes
    ----------
    labels : (S, H, W) int32
        One id per 3-D object or track, 1..N in order of first appearance (slice, then the
        object's id on that slice); 0 is background. The stack axis is where it was given.
    table : pandas.DataFrame
        One row per id, in id order, with columns ``label``, ``first_slice``,
        ``last_slice``, ``n_slices`` (slices the object is on), ``gaps`` (slices missed
        between its first and last), ``volume`` (pixels, summed over slices),
        ``mean_score`` (mean per-slice score; NaN without ``scores``), ``parent`` (the id
        it split from, 0 if none) and ``merged_into`` (the id it merged into, 0 if none).
        Usable as a napari Labels layer's ``features``.
    area_per_slice : (N, S) int64
        Pixels of each object on each slice (row ``label - 1``).
    score_per_slice : (N, S) float32
        Per-slice score of each object (e.g. SegEvery's predicted IoU), NaN where the
        object is absent or no scores were given.
    id_maps : list of S dicts
        For each slice, ``{id on that slice: linked id}``.
    """

    labels: np.ndarray
    table: Any
    area_per_slice: np.ndarray
    score_per_slice: np.ndarray
    id_maps: list[dict[int, int]] = field(default_factory=list)

    @property
    def n_objects(self) -> int:
        return int(self.area_per_slice.shape[0])


def link_slices(
    labels_stack: np.ndarray,
    *,
    axis: int = 0,
    mode: str = "z",
    iou_threshold: float = 0.5,
    min_contained: float | None = 0.8,
    max_gap: int = 1,
    scores: Sequence[Any] | None = None,
    progress: ProgressCallback | None = None,
    search_radius: float | None = None,
    spacing: Sequence[float] | None = None,
    divisions: bool = True,
    merges: bool = True,
    neck_ratio: float | None = 0.5,
    image: np.ndarray | None = None,
) -> LinkResult:
    """Give each object of a label stack one id through the stack.

    Parameters
    ----------
    labels_stack : (S, H, W) integer array
        One label image per slice (0 = background). Ids need not agree between slices:
        they may be reused on every slice or be unique across the stack.
    axis : int
        The stack axis (Z or T); the other two axes are Y, X.
    mode : {"z", "t"}
        "z" links the slices of a volume into 3-D objects; "t" links the frames of a
        time-lapse into tracks, following each cell's motion (see the module notes).
    iou_threshold : float
        ``mode="z"``: overlapping sections can be linked when their centroids are within
        the median object radius, or their IoU is at least this (0 < iou_threshold <= 1)...
    min_contained : float or None
        ``mode="z"``: ... or the smaller lies at least this fraction inside the larger
        (None: not this way).
    max_gap : int
        Slices an object may be missed on and keep its id (0: no gap closing).
    scores : sequence of S arrays or mappings, optional
        Per-slice scores of the objects: ``scores[s][id - 1]`` for arrays (SegEvery's
        ``result.scores``, whose objects are 1..N) or ``scores[s][id]`` for mappings.
    progress : callable, optional
        ``progress(done, total)`` after each slice is measured; an exception it raises
        aborts the call (nothing is returned).
    search_radius : float, optional
        ``mode="t"``: how far (in ``spacing`` units, after moving a cell on by its
        velocity) a cell may be from itself on the next frame. Default: 1.5 times the
        median object diameter.
    spacing : sequence of 2 or 3 floats, optional
        Pixel size (Y, X) or voxel size (stack, Y, X), e.g. a napari layer's ``scale``.
        Distances are measured in these units; in Z the voxel size tells how many slices
        a round object spans, and a neck cut leaves at least a third of that on each side.
    divisions : bool
        ``mode="t"``: find divisions (one track ending in two, whose ``parent`` it is).
        In Z a split is always looked for: the larger branch keeps the id.
    merges : bool
        Find merges: the merged object keeps the id of the branch it overlaps most; the
        other ends with ``merged_into`` naming it.
    neck_ratio : float or None
        ``mode="z"``: a chain of sections whose area (summed intensity with ``image``)
        falls below this fraction of the peaks on both sides, and rises again, is cut in
        two objects (0 < neck_ratio < 1; None: never).
    image : (S, H, W) array, optional
        The intensity image of the stack (same layout as ``labels_stack``), for the necks.

    Returns
    -------
    LinkResult
        ``labels`` (same shape as ``labels_stack``, int32), ``table`` and per-slice
        features.

    Examples
    --------
    >>> stack = np.zeros((3, 8, 8), np.int32)
    >>> stack[0, 2:6, 2:6] = 4
    >>> stack[1, 2:6, 3:7] = 9
    >>> stack[2, 1:5, 3:7] = 2
    >>> result = link_slices(stack)
    >>> np.unique(result.labels).tolist()
    [0, 1]
    >>> result.table[["label", "first_slice", "last_slice", "volume"]].values.tolist()
    [[1, 0, 2, 48]]
    """
    stack = _validate_labels_stack(labels_stack, axis)
    _validate_link_options(mode, iou_threshold, min_contained, max_gap)
    options = _validate_tracking_options(stack, search_radius, spacing, neck_ratio, image, axis)
    if scores is not None and len(scores) != stack.shape[0]:
        raise InvalidValueError(
            f"scores must hold one entry per slice ({stack.shape[0]}), got {len(scores)} entries"
        )
    objects = sliced_objects(stack, progress)
    size = _median_radius(objects, options["plane"])
    radius = (options["search_radius"] or 3.0 * size, size)
    segment, split_pairs, merge_pairs, overlaps = laptrack_segments(
        objects, mode=mode, radius=radius, spacing=options["plane"],
        iou_threshold=iou_threshold, min_contained=min_contained, max_gap=max_gap,
        splits=divisions or mode == "z", merges=merges,
    )  # fmt: skip
    track, parent, merged_into = resolve_branches(
        segment, split_pairs, merge_pairs, overlaps, divisions=mode == "t"
    )
    if mode == "z" and neck_ratio is not None:
        profile = slice_profiles(objects, options["image"])
        track = cut_necks(track, profile, neck_ratio, options["voxel"], objects.areas)
    track, order = numbered_tracks(track, objects)
    parents = {order[g]: order[p] for g, p in parent.items() if g in order and p in order}
    merged = {order[g]: order[m] for g, m in merged_into.items() if g in order and m in order}
    return _finish(objects, track, parents, merged, axis, scores)


def _validate_link_options(
    mode: str, iou_threshold: float, min_contained: float | None, max_gap: int
) -> None:
    if mode not in MODES:
        raise InvalidValueError(f"mode must be 'z' (3-D objects) or 't' (tracks), got {mode!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise InvalidValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if min_contained is not None and not 0.0 < float(min_contained) <= 1.0:
        raise InvalidValueError(f"min_contained must be in (0, 1] or None, got {min_contained!r}")
    LinkOptions(max_gap=max_gap)


def _validate_tracking_options(
    stack: np.ndarray,
    search_radius: float | None,
    spacing: Sequence[float] | None,
    neck_ratio: float | None,
    image: Any,
    axis: int,
) -> dict[str, Any]:
    LinkOptions(search_radius=search_radius, neck_ratio=neck_ratio)
    voxel = None
    plane = (1.0, 1.0)
    if spacing is not None:
        values = [float(v) for v in np.ravel(spacing)]
        if len(values) not in (2, 3) or not all(v > 0 for v in values):
            raise InvalidValueError(
                "spacing must be 2 (Y, X) or 3 (stack, Y, X) positive numbers, e.g. a "
                f"layer's scale; got {spacing!r}"
            )
        if len(values) == 3:  # given in the input's axis order: stack axis first here
            voxel = tuple(np.moveaxis(np.array(values), int(axis), 0).tolist())
            plane = voxel[1:]
        else:
            plane = tuple(values)
    if image is not None:
        image = np.asarray(image)
        image = np.moveaxis(image, int(axis), 0) if image.ndim == 3 else image
        if image.shape != stack.shape:
            raise InvalidValueError(
                f"image must have the label stack's shape {stack.shape}, got {image.shape}"
            )
    return {"search_radius": search_radius, "plane": plane, "voxel": voxel, "image": image}


def _median_radius(objects: SlicedObjects, plane: tuple[float, float]) -> float:
    """The median equivalent radius of the objects, in spacing units. The default search
    radius is 3 of them: steady motion up to about 1.5 radii per frame is within reach
    even before velocities are known."""
    areas = np.concatenate([a for a in objects.areas] + [np.zeros(0)])
    if len(areas) == 0:
        return 1.0
    return max(float(np.sqrt(np.median(areas) * plane[0] * plane[1] / np.pi)), 1e-6)


def _finish(
    objects: SlicedObjects,
    track: list[np.ndarray],
    parents: dict[int, int],
    merged_into: dict[int, int],
    axis: int,
    scores: Sequence[Any] | None,
) -> LinkResult:
    """Labels, per-slice features and the table, from each object's track (1..N)."""
    import pandas as pd

    n_slices = len(track)
    n = max((int(t.max()) for t in track if len(t)), default=0)
    out = np.zeros(objects.dense.shape, np.int32)
    area = np.zeros((n, n_slices), np.int64)
    score = np.full((n, n_slices), np.nan, np.float32)
    id_maps = []
    for s, t in enumerate(track):
        out[s] = np.concatenate([[0], t]).astype(np.int32)[objects.dense[s]]
        np.add.at(area[:, s], t - 1, objects.areas[s])
        id_maps.append({int(i): int(g) for i, g in zip(objects.ids[s], t, strict=True)})
        if scores is not None:
            for i, g in zip(objects.ids[s], t, strict=True):
                score[g - 1, s] = _score_of(scores[s], int(i), s)
    present = area > 0
    first = np.where(present.any(axis=1), present.argmax(axis=1), -1)
    last = np.where(present.any(axis=1), n_slices - 1 - present[:, ::-1].argmax(axis=1), -1)
    n_present = present.sum(axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_score = np.nanmean(score, axis=1) if scores is not None and n else np.full(n, np.nan)
    labels_1n = np.arange(1, n + 1, dtype=np.int64)
    table = pd.DataFrame(
        {
            "label": labels_1n,
            "first_slice": first.astype(np.int64),
            "last_slice": last.astype(np.int64),
            "n_slices": n_present.astype(np.int64),
            "gaps": (last - first + 1 - n_present).astype(np.int64),
            "volume": area.sum(axis=1),
            "mean_score": mean_score.astype(np.float32),
            "parent": np.array([parents.get(int(i), 0) for i in labels_1n], np.int64),
            "merged_into": np.array([merged_into.get(int(i), 0) for i in labels_1n], np.int64),
        }
    )
    labels = np.moveaxis(out, 0, axis) if axis % 3 != 0 else out
    return LinkResult(labels, table, area, score, id_maps)


def _score_of(entry: Any, label: int, s: int) -> float:
    try:
        if isinstance(entry, Mapping):
            return float(entry[label])
        values = np.asarray(entry, dtype=np.float64).ravel()
        return float(values[label - 1])
    except (KeyError, IndexError) as exc:
        raise InvalidValueError(
            f"scores[{s}] has no score for object {label} on slice {s} (arrays are indexed "
            "by id - 1, mappings by id)"
        ) from exc


def _validate_labels_stack(labels_stack: Any, axis: int) -> np.ndarray:
    stack = np.asarray(labels_stack)
    if stack.ndim != 3:
        raise InvalidValueError(
            "Expected a label stack of shape (S, H, W): one 2-D label image per slice; "
            f"received an array with {stack.ndim} dimensions, shape {stack.shape}."
        )
    if stack.dtype.kind not in "iub":
        raise InvalidTypeError(f"Expected integer labels; received dtype {stack.dtype}.")
    if isinstance(axis, bool) or int(axis) != axis or not -3 <= axis < 3:
        raise InvalidValueError(
            f"axis {axis!r} is not an axis of a 3-D label stack (use 0, 1 or 2)"
        )
    if stack.dtype.kind == "i" and stack.size and stack.min() < 0:
        raise InvalidValueError("Expected labels >= 0 (0 is background); found negative values.")
    return np.moveaxis(stack, int(axis), 0) if axis % 3 != 0 else stack


__all__ = ["LinkResult", "link_slices"]
