"""Scores for linked stacks: tracks kept whole, divisions found, and a stitching baseline.

- :func:`track_scores`: the fraction of true tracks that keep one predicted id from their
  first to their last frame, and of true divisions found (both daughters' ids name the
  mother's id as ``parent``).
- :func:`stitch_by_iou`: the per-slice rule of Cellpose's ``stitch3D``, written here from
  its documentation (not Cellpose's code) as the reference baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["TrackScores", "stitch_by_iou", "track_scores"]


@dataclass(frozen=True)
class TrackScores:
    """``kept``: fraction of true tracks under one predicted id on all their frames, an id
    no other true track has;
    ``divisions_found``: fraction of true divisions found (nan without any)."""

    kept: float
    divisions_found: float
    n_tracks: int
    n_divisions: int


def _best_ids(predicted: np.ndarray, truth: np.ndarray, label: int) -> dict[int, int]:
    """Per frame of true track ``label``: the predicted id covering most of it with IoU
    >= 0.5 (0 when none)."""
    out = {}
    for t in np.flatnonzero((truth == label).any(axis=(1, 2))):
        mask = truth[t] == label
        ids, counts = np.unique(predicted[t][mask], return_counts=True)
        best, inter = int(ids[np.argmax(counts)]), int(counts.max())
        union = mask.sum() + (predicted[t] == best).sum() - inter if best else 1
        out[int(t)] = best if best and inter / union >= 0.5 else 0
    return out


def track_scores(
    predicted: np.ndarray, truth: np.ndarray, true_tracks: np.ndarray, parents: Any
) -> TrackScores:
    """Score linked (T, Y, X) labels against a true time-lapse.

    Parameters
    ----------
    predicted, truth : (T, Y, X) integer arrays
        Linked labels and true labels (one id per track).
    true_tracks : (K, 4) array
        The truth's lineage: id, first frame, last frame, parent id (0: none).
    parents : mapping or pandas.DataFrame
        Predicted id -> parent id (``link_slices``' table with ``label`` and ``parent``).

    Examples
    --------
    >>> truth = np.zeros((3, 8, 8), np.int32)
    >>> truth[:, 2:5, 2:5] = 1
    >>> track_scores(truth, truth, np.array([[1, 0, 2, 0]]), {1: 0}).kept
    1.0
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise InvalidValueError(
            f"predicted and truth must be (T, Y, X) of one shape, got {predicted.shape} "
            f"and {truth.shape}"
        )
    if hasattr(parents, "columns"):
        parents = dict(zip(parents["label"], parents["parent"], strict=True))
    best = {int(row[0]): _best_ids(predicted, truth, int(row[0])) for row in true_tracks}
    owners: dict[int, int] = {}  # predicted id -> how many true tracks it covers
    for b in best.values():
        for v in set(b.values()):
            owners[v] = owners.get(v, 0) + 1
    kept = [
        len(set(b.values())) == 1 and 0 not in b.values() and owners[next(iter(b.values()))] == 1
        for b in best.values()
        if b
    ]
    found = []
    for label, first, _, parent in np.asarray(true_tracks).reshape(-1, 4):
        if parent == 0 or label not in best or parent not in best:
            continue
        mother_last = [v for t, v in best[int(parent)].items() if t < first]
        daughter = best[int(label)].get(int(first), 0)
        found.append(
            bool(mother_last)
            and mother_last[-1] > 0
            and daughter > 0
            and int(parents.get(daughter, 0)) == mother_last[-1]
        )
    return TrackScores(
        kept=float(np.mean(kept)) if kept else float("nan"),
        divisions_found=float(np.mean(found)) if found else float("nan"),
        n_tracks=len(kept),
        n_divisions=len(found),
    )


def stitch_by_iou(stack: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """Cellpose's ``stitch3D`` rule, re-implemented from its documentation.

    Slice by slice, each object takes the id of the object on the (already stitched)
    previous slice it overlaps with the highest IoU, if that IoU is at least ``threshold``
    and it is that object's best match too; otherwise it gets a new id.

    Examples
    --------
    >>> stack = np.zeros((2, 6, 6), np.int32)
    >>> stack[0, 1:4, 1:4] = 5
    >>> stack[1, 1:4, 2:5] = 3
    >>> np.unique(stitch_by_iou(stack)).tolist()
    [0, 1]
    """
    stack = np.asarray(stack)
    out = np.zeros(stack.shape, np.int32)
    next_id = 1
    for s, labels in enumerate(stack):
        ids, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(labels.shape)
        if ids[0] != 0:
            ids, inverse = np.concatenate([[0], ids]), inverse + 1
        new = np.zeros(len(ids), np.int32)
        if s > 0 and len(ids) > 1:
            prev = out[s - 1]
            prev_ids, prev_inv = np.unique(prev, return_inverse=True)
            inter = np.zeros((len(ids), len(prev_ids)), np.int64)
            np.add.at(inter, (inverse.ravel(), prev_inv.ravel()), 1)
            area, prev_area = inter.sum(axis=1), inter.sum(axis=0)
            iou = inter / np.maximum(area[:, None] + prev_area[None, :] - inter, 1)
            iou[0, :], iou[:, 0] = 0, 0
            iou[iou < threshold] = 0
            iou[iou < iou.max(axis=0, keepdims=True)] = 0  # each old id: its best match only
            take = iou.max(axis=1) > 0
            new[take] = prev_ids[iou.argmax(axis=1)[take]]
        fresh = np.flatnonzero((new == 0)[1:]) + 1
        new[fresh] = np.arange(next_id, next_id + len(fresh))
        next_id += len(fresh)
        new[0] = 0
        out[s] = new[inverse]
    return out
