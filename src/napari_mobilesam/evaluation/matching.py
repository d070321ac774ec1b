"""Predicted objects matched one-to-one to true objects by IoU, as Cellpose does.

At each IoU threshold ``t`` the matching has the most pairs with IoU >= t (an optimal
assignment, :func:`scipy.optimize.linear_sum_assignment`), ties broken by the largest sum
of their IoUs; only pairs with IoU >= t count as true positives. Only pairs of objects
that touch are ever considered, and the assignment is solved separately for each group of
objects linked by such pairs, so a label image with many thousands of objects needs no
dense objects-by-objects matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.overlap import (
    BLOCK_PIXELS,
    OverlapTable,
    check_label_images,
    overlap_table,
)
from napari_mobilesam.evaluation.results import (
    IOU_THRESHOLDS,
    MatchCounts,
    ObjectMatching,
    PlaneMatching,
)

__all__ = ["check_thresholds", "match_objects", "match_planes", "matching_from_table"]


def check_thresholds(thresholds: Sequence[float] | float) -> np.ndarray:
    """The thresholds as a sorted float64 array, each in (0, 1], without repeats."""
    values = np.unique(np.atleast_1d(np.asarray(thresholds, dtype=np.float64)))
    if values.size == 0 or values.ndim != 1 or not np.all((values > 0) & (values <= 1)):
        raise InvalidValueError(
            f"IoU thresholds must be one or more numbers in (0, 1], got {thresholds!r}"
        )
    return values


def match_objects(
    predicted: Any,
    true: Any,
    *,
    thresholds: Sequence[float] | float = IOU_THRESHOLDS,
    block_pixels: int = BLOCK_PIXELS,
) -> ObjectMatching:
    """Match the objects of a predicted label image to those of the ground truth.

    Objects span the whole array: a 3-D label image holds 3-D objects (a volume). To
    evaluate a stack plane by plane, use :func:`match_planes`.

    Parameters
    ----------
    predicted, true : array-like
        Integer label images of the same shape, 0 for background: numpy, dask or zarr
        arrays, read ``block_pixels`` at a time (see
        :func:`~napari_mobilesam.evaluation.overlap_table`).
    thresholds : float or sequence of float
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.95.
    block_pixels : int
        Pixels read at a time.

    Returns
    -------
    ObjectMatching
        TP, FP, FN per threshold (with precision, recall, F1, Cellpose's AP and mSA), the
        matched pairs, and each object's best-overlapping partner.

    Examples
    --------
    >>> from napari_mobilesam.evaluation import synthetic_nuclei
    >>> _, true = synthetic_nuclei((64, 64), seed=0)
    >>> result = match_objects(true, true)
    >>> result.msa, int(result.fp[0]), int(result.fn[0])
    (1.0, 0, 0)
    >>> match_objects(np.zeros_like(true), true).ap50
    0.0
    """
    thresholds = check_thresholds(thresholds)
    table = overlap_table(predicted, true, block_pixels=block_pixels)
    return matching_from_table(table, thresholds)


def match_planes(
    predicted: Any,
    true: Any,
    *,
    axis: int = 0,
    thresholds: Sequence[float] | float = IOU_THRESHOLDS,
    block_pixels: int = BLOCK_PIXELS,
) -> PlaneMatching:
    """Match the objects of each plane of a stack separately (2-D objects per plane).

    Parameters
    ----------
    predicted, true : array-like
        Integer label images of the same shape, at least 3-D (numpy, dask or zarr; read a
        plane at a time).
    axis : int
        The stack axis (Z or T) whose planes are evaluated one by one.
    thresholds, block_pixels
        As in :func:`match_objects`.

    Returns
    -------
    PlaneMatching
        Each plane's :class:`ObjectMatching`, and the total: counts summed over the
        planes, so its AP weighs every plane's objects alike.

    Examples
    --------
    >>> true = np.zeros((2, 8, 8), np.int32); true[:, 2:6, 2:6] = 1
    >>> predicted = true.copy(); predicted[1] = 0
    >>> result = match_planes(predicted, true)
    >>> [plane.ap50 for plane in result.planes], result.total.ap50
    ([1.0, 0.0], 0.5)
    """
    check_label_images(predicted, true)
    ndim = len(true.shape)
    if ndim < 3 or not -ndim <= axis < ndim:
        raise InvalidValueError(
            f"per-plane evaluation needs a stack of at least 3 dimensions and an axis "
            f"among them, got shape {tuple(true.shape)} and axis {axis}"
        )
    axis %= ndim
    thresholds = check_thresholds(thresholds)
    planes = []
    for index in range(int(true.shape[axis])):
        where = (slice(None),) * axis + (index,)
        table = overlap_table(predicted[where], true[where], block_pixels=block_pixels)
        planes.append(matching_from_table(table, thresholds))
    return PlaneMatching(axis=axis, planes=tuple(planes), total=MatchCounts.pooled(planes))


def matching_from_table(table: OverlapTable, thresholds: np.ndarray) -> ObjectMatching:
    """Match the objects of an :class:`OverlapTable` at each of ``thresholds`` (sorted,
    in (0, 1]; see :func:`check_thresholds`)."""
    ious = table.pair_ious
    matches = tuple(
        _match_at(table.pair_true, table.pair_pred, ious, float(t)) for t in thresholds
    )
    tp = np.array([len(pairs) for pairs in matches], np.int64)
    n_true, n_pred = len(table.true_ids), len(table.pred_ids)
    true_best = _best_partner(table.true_ids, table.pair_true, table.pair_pred, ious)
    pred_best = _best_partner(table.pred_ids, table.pair_pred, table.pair_true, ious)
    return ObjectMatching(
        thresholds=np.asarray(thresholds, np.float64),
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        n_true=n_true,
        n_pred=n_pred,
        true_ids=table.true_ids,
        true_best_pred=true_best[0],
        true_best_iou=true_best[1],
        pred_ids=table.pred_ids,
        pred_best_true=pred_best[0],
        pred_best_iou=pred_best[1],
        matches=matches,
    )


def _match_at(
    pair_true: np.ndarray, pair_pred: np.ndarray, ious: np.ndarray, threshold: float
) -> np.ndarray:
    """``(TP, 2)`` matched (true id, predicted id): the most pairs with IoU >= threshold,
    then the largest sum of their IoUs, solved per connected group of candidate pairs."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keep = ious >= threshold
    true_ids, pred_ids, weights = pair_true[keep], pair_pred[keep], ious[keep]
    if not true_ids.size:
        return np.zeros((0, 2), np.int64)
    true_unique, rows = np.unique(true_ids, return_inverse=True)
    _, cols = np.unique(pred_ids, return_inverse=True)
    n_rows = len(true_unique)
    nodes = n_rows + int(cols.max()) + 1
    graph = coo_matrix((np.ones(len(rows)), (rows, n_rows + cols)), shape=(nodes, nodes))
    group = connected_components(graph, directed=False)[1][rows]
    edges_in_group = np.bincount(group)[group]
    alone = edges_in_group == 1  # a pair whose objects have no other candidate
    found = [np.stack([true_ids[alone], pred_ids[alone]], axis=1)]
    shared = np.flatnonzero(~alone)
    order = shared[np.argsort(group[shared], kind="stable")]
    starts = np.flatnonzero(np.diff(group[order], prepend=-1))
    for edges in np.split(order, starts[1:]) if order.size else []:
        found.append(_assign(true_ids[edges], pred_ids[edges], weights[edges]))
    pairs = np.concatenate(found).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _assign(true_ids: np.ndarray, pred_ids: np.ndarray, ious: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    true_unique, rows = np.unique(true_ids, return_inverse=True)
    pred_unique, cols = np.unique(pred_ids, return_inverse=True)
    n_min = min(len(true_unique), len(pred_unique))
    # Each candidate pair is worth 1, plus its IoU as a tie-break worth less than one pair.
    cost = np.zeros((len(true_unique), len(pred_unique)))
    cost[rows, cols] = -(1.0 + ious / (2.0 * n_min))
    chosen_rows, chosen_cols = linear_sum_assignment(cost)
    candidate = cost[chosen_rows, chosen_cols] < 0
    return np.stack(
        [true_unique[chosen_rows[candidate]], pred_unique[chosen_cols[candidate]]], axis=1
    )


def _best_partner(
    ids: np.ndarray, pair_own: np.ndarray, pair_other: np.ndarray, ious: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    partner = np.zeros(len(ids), np.int64)
    best = np.zeros(len(ids), np.float64)
    if pair_own.size:
        order = np.lexsort((pair_other, -ious, pair_own))
        first = order[np.flatnonzero(np.diff(pair_own[order], prepend=-1))]
        where = np.searchsorted(ids, pair_own[first])
        partner[where] = pair_other[first]
        best[where] = ious[first]
    return partner, best
