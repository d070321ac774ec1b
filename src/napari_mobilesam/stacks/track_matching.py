"""How :func:`~napari_mobilesam.stacks.linking.link_slices` matches objects slice by slice.

:class:`Linker` keeps the tracks seen so far and gives each object of the next slice a
track: the one it overlaps best (an optimal one-to-one assignment on IoU, or containment),
possibly across a gap, else a new one; splits and merges are noted. The rules are in the
notes of :mod:`napari_mobilesam.stacks.linking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["Linker"]


@dataclass
class _Track:
    index: int  # 0-based track number
    last_slice: int
    pixels: np.ndarray  # flat pixel indices on last_slice
    centroid: np.ndarray  # (row, col) on last_slice
    velocity: np.ndarray  # (row, col) per slice, 0 until seen twice


class Linker:
    """The tracks of one :func:`link_slices` call, extended slice by slice."""

    def __init__(
        self,
        stack: np.ndarray,
        follow_motion: bool,
        iou_threshold: float,
        min_contained: float | None,
        max_gap: int,
        scores: Sequence[Any] | None,
    ) -> None:
        self.stack = stack
        self.follow_motion = follow_motion
        self.iou_threshold = iou_threshold
        self.min_contained = min_contained
        self.max_gap = max_gap
        self.scores = scores
        self.tracks: list[_Track] = []
        self.per_track_areas: list[dict[int, int]] = []
        self.per_track_scores: list[dict[int, float]] = []
        self.parents: list[int] = []
        self.merged_into: dict[int, int] = {}
        self.id_maps: list[dict[int, int]] = []
        self.out = np.zeros(stack.shape, np.int32)  # 1-based track numbers for now

    def link(self, s: int) -> None:
        """Give each object of slice ``s`` a track: a continued one or a new one."""
        ids, pixel_groups = _objects(self.stack[s])
        areas = np.array([len(p) for p in pixel_groups], np.int64)
        assigned = np.full(len(ids), -1, np.int64)  # track index per object
        best_loser: dict[int, tuple[float, int]] = {}  # object -> (iou, track) it lost
        ended: set[int] = set()
        for gap in range(self.max_gap + 1):
            self._match(s, gap, ids, areas, assigned, best_loser, ended)
        id_map: dict[int, int] = {}
        for k, label in enumerate(ids):
            index = self._record(s, pixel_groups[k], int(assigned[k]), best_loser.get(k))
            self.per_track_areas[index][s] = int(areas[k])
            if self.scores is not None:
                self.per_track_scores[index][s] = _score_of(self.scores[s], int(label), s)
            id_map[int(label)] = index + 1
        self.id_maps.append(id_map)

    def _match(
        self,
        s: int,
        gap: int,
        ids: np.ndarray,
        areas: np.ndarray,
        assigned: np.ndarray,
        best_loser: dict[int, tuple[float, int]],
        ended: set[int],
    ) -> None:
        """Match the unassigned objects of slice ``s`` with the tracks last seen ``gap``
        slices before its neighbour; note splits and merges."""
        candidates = [
            t for t in self.tracks if t.last_slice == s - 1 - gap and t.index not in ended
        ]
        free = np.flatnonzero(assigned < 0)
        if not candidates or len(free) == 0:
            return
        iou, eligible = _pair_scores(
            candidates,
            self.stack[s],
            ids[free],
            areas[free],
            s,
            self.follow_motion,
            self.iou_threshold,
            self.min_contained,
        )
        if not eligible.any():
            return
        rows, cols = _assign(iou, eligible)
        matched_tracks = set()
        for r, c in zip(rows, cols, strict=True):
            assigned[free[c]] = candidates[r].index
            matched_tracks.add(r)
        # Eligible pairs that lost the assignment: splits and merges.
        for r, c in zip(*np.nonzero(eligible), strict=True):
            obj = free[c]
            track = candidates[r].index
            if assigned[obj] == track:
                continue
            if assigned[obj] < 0:  # a new branch of track r (a split)
                if obj not in best_loser or iou[r, c] > best_loser[obj][0]:
                    best_loser[obj] = (float(iou[r, c]), track)
            elif r not in matched_tracks and track not in self.merged_into:
                self.merged_into[track] = int(assigned[obj])  # track r merged into it
        for r in matched_tracks:
            ended.add(candidates[r].index)

    def _record(
        self, s: int, pixels: np.ndarray, assigned: int, lost_to: tuple[float, int] | None
    ) -> int:
        """Put an object of slice ``s`` on its track (a new one when ``assigned`` < 0);
        returns the track index."""
        width = self.stack.shape[2]
        centroid = np.stack(np.divmod(pixels, width)).astype(np.float64).mean(axis=1)
        if assigned < 0:
            index = len(self.tracks)
            self.tracks.append(_Track(index, s, pixels, centroid, np.zeros(2)))
            self.per_track_areas.append({})
            self.per_track_scores.append({})
            self.parents.append(lost_to[1] + 1 if lost_to is not None else 0)
        else:
            track = self.tracks[assigned]
            self.merged_into.pop(track.index, None)  # it went on after all
            elapsed = s - track.last_slice
            track.velocity = (centroid - track.centroid) / elapsed
            track.last_slice, track.pixels, track.centroid = s, pixels, centroid
            index = track.index
        self.out.reshape(self.stack.shape[0], -1)[s, pixels] = index + 1
        return index


def _objects(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ids > 0 of a label image and the flat pixel indices of each."""
    flat = labels.ravel()
    foreground = np.flatnonzero(flat)
    if len(foreground) == 0:
        return np.zeros(0, np.int64), []
    values = flat[foreground]
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ids, starts = np.unique(sorted_values, return_index=True)
    groups = np.split(foreground[order], starts[1:])
    return ids.astype(np.int64), groups


def _pair_scores(
    tracks: list[_Track],
    labels: np.ndarray,
    ids: np.ndarray,
    areas: np.ndarray,
    s: int,
    follow_motion: bool,
    iou_threshold: float,
    min_contained: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """IoU (tracks x objects) and which pairs may be linked."""
    height, width = labels.shape
    lookup = {int(label): k for k, label in enumerate(ids)}
    intersections = np.zeros((len(tracks), len(ids)), np.int64)
    track_areas = np.zeros(len(tracks), np.int64)
    for r, track in enumerate(tracks):
        pixels = track.pixels
        track_areas[r] = len(pixels)
        rows, cols = np.divmod(pixels, width)
        if follow_motion and track.velocity.any():
            shift = np.rint(track.velocity * (s - track.last_slice)).astype(np.int64)
            rows, cols = rows + shift[0], cols + shift[1]
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            rows, cols = rows[inside], cols[inside]
        hit = labels[rows, cols]
        hit = hit[hit > 0]
        if len(hit) == 0:
            continue
        values, counts = np.unique(hit, return_counts=True)
        for value, count in zip(values, counts, strict=True):
            k = lookup.get(int(value))
            if k is not None:
                intersections[r, k] = count
    union = track_areas[:, None] + areas[None, :] - intersections
    iou = intersections / np.maximum(union, 1)
    eligible = (intersections > 0) & (iou >= iou_threshold)
    if min_contained is not None:
        smaller = np.minimum(track_areas[:, None], areas[None, :])
        eligible |= (intersections > 0) & (intersections >= min_contained * smaller)
    return iou, eligible


def _assign(iou: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching maximising the summed IoU of eligible pairs."""
    from scipy.optimize import linear_sum_assignment

    rows_any = np.flatnonzero(eligible.any(axis=1))
    cols_any = np.flatnonzero(eligible.any(axis=0))
    # Eligible pairs weigh 1 + IoU so that the number of links is maximised first.
    weight = np.where(eligible, 1.0 + iou, 0.0)[np.ix_(rows_any, cols_any)]
    r, c = linear_sum_assignment(weight, maximize=True)
    keep = weight[r, c] > 0
    return rows_any[r[keep]], cols_any[c[keep]]


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
