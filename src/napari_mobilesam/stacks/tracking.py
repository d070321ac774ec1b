"""How :func:`~napari_mobilesam.stacks.linking.link_slices` links objects: through laptrack.

laptrack (Fukai & Kawaguchi, Bioinformatics 2023) solves the linear assignment problems
of Jaqaman et al. (2008): frame-to-frame links, then gap closing, splitting and merging
between track segments. This module only gives it the objects and a cost:

- ``mode="t"``: ``(d / R)² + (1 - IoU)``, ``d`` the distance (in ``spacing`` units)
  between an object's centroid moved on by its velocity and the other object's centroid,
  ``R`` the search radius (pairs further apart cannot link), IoU the overlap of the two
  masks where they are. Velocities come from a first pass without them (each object's
  displacement from its predecessor, or to its successor for a track's first object), so a
  cell moving steadily by more than its size per frame is followed from its first link
  and two cells that cross keep their course.
- ``mode="z"``: ``1 - IoU`` for pairs whose IoU reaches ``iou_threshold`` or whose
  smaller mask lies ``min_contained`` inside the larger (the tip of an ellipsoid); other
  pairs cannot link.

Returns plain arrays: the segment of every object, and laptrack's split and merge pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Overlaps", "SlicedObjects", "laptrack_segments", "sliced_objects"]

_NO_LINK = 1e9


@dataclass(frozen=True)
class SlicedObjects:
    """The 2-D objects of a label stack, slice by slice.

    ``dense[s]`` numbers the objects of slice ``s`` 1..n_s (0 background), in the order of
    ``ids[s]`` (their ids in the input); ``centroids[s]`` (n_s, 2) and ``areas[s]`` (n_s,).
    """

    dense: np.ndarray
    ids: list[np.ndarray]
    centroids: list[np.ndarray]
    areas: list[np.ndarray]


def sliced_objects(stack: np.ndarray, progress=None) -> SlicedObjects:
    """Number the objects of each slice densely and measure them (``progress(done,
    total)`` after each slice)."""
    dense = np.zeros(stack.shape, np.int32)
    ids, centroids, areas = [], [], []
    rows, cols = np.indices(stack.shape[1:])
    for s, labels in enumerate(stack):
        values, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(labels.shape)
        if values[0] != 0:  # no background on this slice
            values, inverse = np.concatenate([[0], values]), inverse + 1
        dense[s] = inverse
        n = len(values) - 1
        area = np.bincount(inverse.ravel(), minlength=n + 1)[1:]
        sum_r = np.bincount(inverse.ravel(), rows.ravel(), minlength=n + 1)[1:]
        sum_c = np.bincount(inverse.ravel(), cols.ravel(), minlength=n + 1)[1:]
        ids.append(values[1:].astype(np.int64))
        areas.append(area.astype(np.int64))
        centroids.append(np.stack([sum_r, sum_c], axis=1) / np.maximum(area, 1)[:, None])
        if progress is not None:
            progress(s + 1, len(stack))
    return SlicedObjects(dense, ids, centroids, areas)


class Overlaps:
    """IoU and containment between the objects of two slices, computed once per pair."""

    def __init__(self, objects: SlicedObjects) -> None:
        self.objects = objects
        self.cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def pair(self, s1: int, s2: int) -> tuple[np.ndarray, np.ndarray]:
        if (s1, s2) not in self.cache:
            a, b = self.objects.dense[s1].ravel(), self.objects.dense[s2].ravel()
            n1, n2 = len(self.objects.ids[s1]), len(self.objects.ids[s2])
            both = (a > 0) & (b > 0)
            inter = np.bincount((a[both] - 1) * n2 + (b[both] - 1), minlength=n1 * n2).reshape(
                n1, n2
            )
            area1, area2 = self.objects.areas[s1], self.objects.areas[s2]
            union = area1[:, None] + area2[None, :] - inter
            smaller = np.minimum(area1[:, None], area2[None, :])
            self.cache[(s1, s2)] = (inter / np.maximum(union, 1), inter / np.maximum(smaller, 1))
        return self.cache[(s1, s2)]


def _coords(objects: SlicedObjects, velocities: list[np.ndarray] | None) -> list[np.ndarray]:
    """laptrack's points: ``(slice, index, row, col, v_row, v_col)`` per object."""
    out = []
    for s, centroid in enumerate(objects.centroids):
        n = len(centroid)
        v = velocities[s] if velocities is not None else np.zeros((n, 2))
        out.append(np.column_stack([np.full(n, s), np.arange(n), centroid, v]).astype(float))
    return out


def _metric(
    overlaps: Overlaps,
    mode: str,
    radius: float,
    spacing: np.ndarray,
    iou_threshold: float,
    min_contained: float | None,
):
    def cost(c1: np.ndarray, c2: np.ndarray) -> float:
        if c1[0] > c2[0]:
            c1, c2 = c2, c1
        s1, s2 = int(c1[0]), int(c2[0])
        iou_m, contained_m = overlaps.pair(s1, s2)
        iou, contained = iou_m[int(c1[1]), int(c2[1])], contained_m[int(c1[1]), int(c2[1])]
        if mode == "z":
            linkable = contained > 0 and (
                iou >= iou_threshold or (min_contained is not None and contained >= min_contained)
            )
            return 1.0 - iou if linkable else _NO_LINK
        shift = (c1[2:4] + c1[4:6] * (s2 - s1) - c2[2:4]) * spacing
        d2 = float(shift @ shift) / radius**2
        return d2 + 1.0 - iou if d2 <= 1.0 else _NO_LINK

    return cost


def laptrack_segments(
    objects: SlicedObjects,
    *,
    mode: str,
    radius: float,
    spacing: tuple[float, float],
    iou_threshold: float,
    min_contained: float | None,
    max_gap: int,
    splits: bool,
    merges: bool,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, Overlaps]:
    """Link the objects with laptrack.

    Returns ``segment[s]`` (the segment number of each object of slice ``s``, 0-based,
    numbered by laptrack), ``split_pairs`` (parent segment, child segment) and
    ``merge_pairs`` (incoming segment, merged segment), both (K, 2) int64, and the
    overlaps computed on the way.
    """
    overlaps = Overlaps(objects)
    velocities = None
    for _ in range(2 if mode == "t" else 1):
        tree = _track(
            objects, velocities, overlaps, mode, radius, np.asarray(spacing, float),
            iou_threshold, min_contained, max_gap, splits, merges,
        )  # fmt: skip
        velocities = _velocities(objects, tree)
    return (*_segments(objects, tree), overlaps)


def _track(objects, velocities, overlaps, mode, radius, spacing, iou_threshold,
           min_contained, max_gap, splits, merges):  # fmt: skip
    from laptrack import LapTrack

    metric = _metric(overlaps, mode, radius, spacing, iou_threshold, min_contained)
    cutoff = 2.0 + 1e-6 if mode == "t" else 1.0 + 1e-6
    tracker = LapTrack(
        metric=metric,
        cutoff=cutoff,
        gap_closing_metric=metric,
        gap_closing_cutoff=cutoff if max_gap > 0 else False,
        gap_closing_max_frame_count=max_gap + 1,
        splitting_metric=metric,
        splitting_cutoff=cutoff if splits else False,
        merging_metric=metric,
        merging_cutoff=cutoff if merges else False,
    )
    return tracker.predict(_coords(objects, velocities))


def _velocities(objects: SlicedObjects, tree) -> list[np.ndarray]:
    """Each object's displacement per slice from its predecessor on the tree (to its
    successor for a track's first object; 0 when alone)."""
    out = [np.zeros((len(c), 2)) for c in objects.centroids]
    for s, centroid in enumerate(objects.centroids):
        for k in range(len(centroid)):
            node = (s, k)
            before = list(tree.predecessors(node)) if node in tree else []
            after = list(tree.successors(node)) if node in tree else []
            other = before[0] if len(before) == 1 else after[0] if len(after) == 1 else None
            if other is not None:
                t, j = other
                out[s][k] = (centroid[k] - objects.centroids[t][j]) / (s - t)
    return out


def _segments(objects: SlicedObjects, tree) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    from laptrack.data_conversion import tree_to_dataframe

    segment = [np.full(len(c), -1, np.int64) for c in objects.centroids]
    if tree.number_of_nodes() == 0:
        empty = np.zeros((0, 2), np.int64)
        return segment, empty, empty
    track_df, split_df, merge_df = tree_to_dataframe(tree)
    track_df = track_df.reset_index()
    for s, k, track in track_df[["frame", "index", "track_id"]].to_numpy(np.int64):
        segment[s][k] = track
    next_id = int(track_df["track_id"].max()) + 1
    for s in range(len(segment)):  # objects laptrack left out of the tree (none expected)
        missing = segment[s] < 0
        segment[s][missing] = np.arange(next_id, next_id + missing.sum())
        next_id += int(missing.sum())

    def pairs(df) -> np.ndarray:
        if df.empty:
            return np.zeros((0, 2), np.int64)
        return df[["parent_track_id", "child_track_id"]].to_numpy(np.int64)

    return segment, pairs(split_df), pairs(merge_df)
