"""Link the 2-D objects of a label stack into 3-D objects (Z) or tracks (T).

Each slice of a stack is segmented on its own (e.g. by SegEvery), so an object has a
different id on every slice. :func:`link_slices` gives it one id through the stack by
matching the objects of neighbouring slices on their mask overlap, with an optimal
one-to-one assignment (:func:`scipy.optimize.linear_sum_assignment` maximising the IoU).

numpy, scipy and pandas only: no model, no napari.

Rules (the same for ``mode="z"`` and ``mode="t"``, except where said):

- **Link.** An object on slice ``s`` continues the object it matches on slice ``s - 1``.
  A pair can match when their IoU is at least ``iou_threshold`` (default 0.5) *or* the
  smaller one lies at least ``min_contained`` (default 0.8) inside the larger one: the tip
  of an ellipsoid, a few pixels wide, sits inside the wider slice next to it with an IoU
  far below 0.5. Among the pairs that can match, the assignment makes as many links as
  possible and, among those, maximises the summed IoU; each object is matched at most once.
- **Gap tolerance.** An object missed on up to ``max_gap`` consecutive slices (default 1)
  keeps its id: objects left unmatched on slice ``s`` are matched (same rule) against the
  objects last seen on ``s - 2``, then ``s - 3`` ... ``s - 1 - max_gap``.
- **Split** (one object becomes two): the branch with the larger IoU keeps the id, the
  other starts a new id whose ``parent`` is the old one.
- **Merge** (two objects become one): the object keeps the id of the branch with the
  larger IoU; the other id ends there and its ``merged_into`` names the survivor.
- **Motion** (``mode="t"`` only): a track seen on two slices is shifted by its last
  centroid displacement (per slice elapsed) before the overlap is computed, so a cell
  moving steadily by more than its size per frame is still followed. ``mode="z"`` uses no
  shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.stacks.track_matching import Linker

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
        time-lapse into tracks and follows each track's motion (see the module notes).
    iou_threshold : float
        A pair of objects on neighbouring slices can be linked when their IoU is at least
        this (0 < iou_threshold <= 1).
    min_contained : float or None
        ... or when the smaller lies at least this fraction inside the larger (None: IoU
        only).
    max_gap : int
        Slices an object may be missed on and keep its id (0: no gap closing).
    scores : sequence of S arrays or mappings, optional
        Per-slice scores of the objects: ``scores[s][id - 1]`` for arrays (SegEvery's
        ``result.scores``, whose objects are 1..N) or ``scores[s][id]`` for mappings.
    progress : callable, optional
        ``progress(done, total)`` after each slice; an exception it raises aborts the
        call (nothing is returned).

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
    n_slices = stack.shape[0]
    if scores is not None and len(scores) != n_slices:
        raise InvalidValueError(
            f"scores must hold one entry per slice ({n_slices}), got {len(scores)} entries"
        )
    linker = Linker(stack, mode == "t", iou_threshold, min_contained, max_gap, scores)
    for s in range(n_slices):
        linker.link(s)
        if progress is not None:
            progress(s + 1, n_slices)
    return _finish(
        linker.out,
        axis,
        linker.per_track_areas,
        linker.per_track_scores,
        linker.parents,
        linker.merged_into,
        linker.id_maps,
        scores,
    )


def _validate_link_options(
    mode: str, iou_threshold: float, min_contained: float | None, max_gap: int
) -> None:
    if mode not in MODES:
        raise InvalidValueError(f"mode must be 'z' (3-D objects) or 't' (tracks), got {mode!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise InvalidValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if min_contained is not None and not 0.0 < float(min_contained) <= 1.0:
        raise InvalidValueError(f"min_contained must be in (0, 1] or None, got {min_contained!r}")
    if isinstance(max_gap, bool) or int(max_gap) != max_gap or max_gap < 0:
        raise InvalidValueError(f"max_gap must be an integer >= 0, got {max_gap!r}")


def _finish(
    out: np.ndarray,
    axis: int,
    per_track_areas: list[dict[int, int]],
    per_track_scores: list[dict[int, float]],
    parents: list[int],
    merged_into: dict[int, int],
    id_maps: list[dict[int, int]],
    scores: Sequence[Any] | None,
) -> LinkResult:
    """Track numbers are already in order of first appearance: build the features."""
    import pandas as pd

    n_slices = out.shape[0]
    n = len(per_track_areas)
    area = np.zeros((n, n_slices), np.int64)
    score = np.full((n, n_slices), np.nan, np.float32)
    for i in range(n):
        for s, a in per_track_areas[i].items():
            area[i, s] = a
        for s, v in per_track_scores[i].items():
            score[i, s] = v
    present = area > 0
    first = np.where(present.any(axis=1), present.argmax(axis=1), -1)
    last = np.where(present.any(axis=1), n_slices - 1 - present[:, ::-1].argmax(axis=1), -1)
    n_present = present.sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean_score = (
            np.nanmean(np.where(present, score, np.nan), axis=1)
            if scores is not None and n
            else np.full(n, np.nan)
        )
    table = pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.int64),
            "first_slice": first.astype(np.int64),
            "last_slice": last.astype(np.int64),
            "n_slices": n_present.astype(np.int64),
            "gaps": (last - first + 1 - n_present).astype(np.int64),
            "volume": area.sum(axis=1),
            "mean_score": mean_score.astype(np.float32),
            "parent": np.asarray(parents, np.int64).reshape(n),
            "merged_into": np.array(
                [merged_into.get(i, -1) + 1 for i in range(n)], np.int64
            ).reshape(n),
        }
    )
    labels = np.moveaxis(out, 0, axis) if axis != 0 else out
    return LinkResult(labels, table, area, score, id_maps)


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
