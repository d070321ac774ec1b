"""How :func:`~napari_mobilesam.stacks.linking.link_slices` links objects: through laptrack.

laptrack (Fukai & Kawaguchi, Bioinformatics 2023) solves the linear assignment problems
of Jaqaman et al. (2008): frame-to-frame links, then gap closing, splitting and merging
between track segments. This module only gives it the objects and a cost:

- ``mode="t"``: ``d² / r²``, ``d`` the distance (in ``spacing`` units) between the two
  objects after moving each towards the other by its velocity, ``r`` the median object
  radius; ``+ (1 - IoU)`` when neither velocity is known yet; pairs further apart than
  the search radius cannot link. Velocities come from a first pass without them: the
  median displacement over up to 3 links before an object (for the earlier object of a
  pair) and after it (for the later one), so a link never decides its own velocity. A
  cell moving steadily by more than its size per frame is followed, and two cells whose
  paths cross keep their course.
- ``mode="z"``: ``d² / r² + (1 - IoU)`` (the first term at most 1) for overlapping
  sections whose centroids are within ``r`` of each other, or whose IoU reaches
  ``iou_threshold``, or whose smaller mask lies ``min_contained`` inside the larger (the
  tip of an ellipsoid); other pairs cannot link.

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
    """laptrack's points: ``(slice, index, row, col)`` and the velocities towards the
    object (from its predecessor) and away from it (to its successor), each
    ``(v_row, v_col, known)``."""
    out = []
    for s, centroid in enumerate(objects.centroids):
        n = len(centroid)
        v = velocities[s] if velocities is not None else np.zeros((n, 6))
        out.append(np.column_stack([np.full(n, s), np.arange(n), centroid, v]).astype(float))
    return out


def _predicted_distance2(c1: np.ndarray, c2: np.ndarray, spacing: np.ndarray) -> float:
    """Squared distance between two objects, each moved on towards the other by the
    velocity it has from its other neighbour on its track (the mean of the two when both
    are known): a link never decides its own velocity."""
    dt = c2[0] - c1[0]
    errors = []
    if c1[6]:  # c1 moved forward by its velocity from its predecessor
        errors.append((c1[2:4] + c1[4:6] * dt - c2[2:4]) * spacing)
    if c2[9]:  # c2 moved back by its velocity to its successor
        errors.append((c2[2:4] - c2[7:9] * dt - c1[2:4]) * spacing)
    if not errors:
        errors.append((c1[2:4] - c2[2:4]) * spacing)
    return float(np.mean([e @ e for e in errors]))


def _metric(
    overlaps: Overlaps,
    mode: str,
    radius: tuple[float, float],
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
            shift = (c1[2:4] - c2[2:4]) * spacing
            d2 = float(shift @ shift) / radius[1] ** 2
            linkable = contained > 0 and (
                d2 <= 1.0
                or iou >= iou_threshold
                or (min_contained is not None and contained >= min_contained)
            )
            return min(d2, 1.0) + 1.0 - iou if linkable else _NO_LINK
        d2 = _predicted_distance2(c1, c2, spacing)
        if d2 > radius[0] ** 2:
            return _NO_LINK
        moving = c1[6] or c2[9]  # with a velocity, the overlap of unmoved masks says little
        return d2 / radius[1] ** 2 + (0.0 if moving else 1.0 - iou)

    return cost


def laptrack_segments(
    objects: SlicedObjects,
    *,
    mode: str,
    radius: tuple[float, float],
    spacing: tuple[float, float],
    iou_threshold: float,
    min_contained: float | None,
    max_gap: int,
    splits: bool,
    merges: bool,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, Overlaps]:
    """Link the objects with laptrack.

    ``radius`` is (search radius, median object radius). Returns ``segment[s]`` (the
    segment number of each object of slice ``s``, 0-based, numbered by laptrack),
    ``split_pairs`` (parent segment, child segment) and
    ``merge_pairs`` (incoming segment, merged segment), both (K, 2) int64, and the
    overlaps computed on the way.
    """
    overlaps = Overlaps(objects)
    if sum(len(c) for c in objects.centroids) == 0:
        empty = np.zeros((0, 2), np.int64)
        return [np.zeros(0, np.int64) for _ in objects.centroids], empty, empty, overlaps
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
    cutoff = (radius[0] / radius[1]) ** 2 + 1.0 + 1e-6 if mode == "t" else 2.0 + 1e-6
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


def _velocities(objects: SlicedObjects, tree, window: int = 3) -> list[np.ndarray]:
    """Per object, ``(v_row, v_col, known)`` twice: the median displacement per slice over
    up to ``window`` links of its track before it, and over as many after it. The median
    ignores one link distorted by an occlusion where two cells cross."""
    out = [np.zeros((len(c), 6)) for c in objects.centroids]
    for s, centroid in enumerate(objects.centroids):
        for k in range(len(centroid)):
            for column, neighbours in ((0, tree.predecessors), (3, tree.successors)):
                chain = [(s, k)]
                while len(chain) <= window and chain[-1] in tree:
                    nxt = list(neighbours(chain[-1]))
                    if len(nxt) != 1:
                        break
                    chain.append(nxt[0])
                if len(chain) > 1:
                    points = np.array([objects.centroids[t][j] for t, j in chain])
                    frames = np.array([t for t, _ in chain], np.float64)
                    moves = np.diff(points, axis=0) / np.diff(frames)[:, None]
                    out[s][k, column : column + 2] = np.median(moves, axis=0)
                    out[s][k, column + 2] = 1.0
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
