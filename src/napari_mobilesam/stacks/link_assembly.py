"""From laptrack's segments to :func:`~napari_mobilesam.stacks.linking.link_slices`' ids.

- :func:`resolve_branches` turns segments, splits and merges into tracks: at a merge the
  merged object continues the incoming branch it overlaps most (the other gets
  ``merged_into``); at a split in Z the branch that overlaps most continues the object (the
  other gets ``parent``); at a split in T (a division) both daughters are new tracks whose
  ``parent`` is the mother, as in the Cell Tracking Challenge.
- :func:`cut_necks` (Z) cuts a track where its profile falls to a neck and rises again.
- :func:`numbered_tracks` numbers the tracks 1..N in order of first appearance.
"""

from __future__ import annotations

import itertools

import numpy as np

from napari_mobilesam.stacks.tracking import SlicedObjects
from napari_mobilesam.stacks.z_necks import expected_slices, neck_cuts

__all__ = ["cut_necks", "numbered_tracks", "resolve_branches"]


def _ends(segment: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first slice, index) and (last slice, index) of each segment."""
    first = np.full((n, 2), np.iinfo(np.int64).max, np.int64)
    last = np.full((n, 2), -1, np.int64)
    for s, seg in enumerate(segment):
        for k, g in enumerate(seg):
            if s < first[g, 0]:
                first[g] = (s, k)
            if s > last[g, 0]:
                last[g] = (s, k)
    return first, last


def resolve_branches(
    segment: list[np.ndarray],
    splits: np.ndarray,
    merges: np.ndarray,
    overlaps,
    divisions: bool,
) -> tuple[list[np.ndarray], dict[int, int], dict[int, int]]:
    """Tracks from segments: ``(track[s], parent, merged_into)``, the last two mapping a
    track to a track (0-based, absent when none)."""
    n = 1 + max((int(seg.max()) for seg in segment if len(seg)), default=-1)
    first, last = _ends(segment, n)
    joined = np.arange(n)  # segment -> the segment whose track it continues

    def root(g: int) -> int:
        while joined[g] != g:
            g = int(joined[g])
        return g

    def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
        return float(overlaps.pair(int(a[0]), int(b[0]))[0][int(a[1]), int(b[1])])

    parent: dict[int, int] = {}
    merged_into: dict[int, int] = {}
    for into in np.unique(merges[:, 1]) if len(merges) else []:
        incoming = merges[merges[:, 1] == into, 0]
        best = max(incoming, key=lambda g: iou(last[g], first[into]))
        joined[into] = best
        for g in incoming:
            if g != best:
                merged_into[int(g)] = int(into)
    for mother in np.unique(splits[:, 0]) if len(splits) else []:
        children = splits[splits[:, 0] == mother, 1]
        best = None if divisions else max(children, key=lambda g: iou(last[mother], first[g]))
        for g in children:
            if g == best:
                joined[g] = mother
            else:
                parent[int(g)] = int(mother)
    roots = [root(g) for g in range(n)]
    track = [np.array([roots[g] for g in seg], np.int64) for seg in segment]
    parent = {roots[g]: roots[p] for g, p in parent.items()}
    merged_into = {roots[g]: roots[m] for g, m in merged_into.items() if roots[g] != roots[m]}
    return track, parent, merged_into


def cut_necks(
    track: list[np.ndarray],
    profile: list[np.ndarray],
    ratio: float,
    spacing: tuple[float, float, float] | None,
    areas: list[np.ndarray],
) -> list[np.ndarray]:
    """Give the part of a track after each neck a new track number (Z stacks)."""
    n = 1 + max((int(t.max()) for t in track if len(t)), default=-1)
    slices: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for s, t in enumerate(track):
        for k, g in enumerate(t):
            slices[g].append((s, k))
    out = [t.copy() for t in track]
    next_id = n
    for members in slices:
        if len(members) < 4:
            continue
        values = np.array([profile[s][k] for s, k in members])
        min_slices = 2
        if spacing is not None:  # each part at least a third of a round object's height
            peak = max(areas[s][k] for s, k in members)
            min_slices = max(2, round(expected_slices(peak, spacing) / 3))
        cuts = neck_cuts(values, ratio, min_slices)
        bounds = [*cuts, len(members)]
        for start, stop in itertools.pairwise(bounds):
            for s, k in members[start:stop]:
                out[s][k] = next_id
            next_id += 1
    return out


def slice_profiles(objects: SlicedObjects, image: np.ndarray | None) -> list[np.ndarray]:
    """Per object: its area, or its summed intensity above the image's 1st percentile."""
    if image is None:
        return [a.astype(np.float64) for a in objects.areas]
    floor = float(np.percentile(image, 1))
    out = []
    for s, dense in enumerate(objects.dense):
        n = len(objects.ids[s])
        above = np.clip(image[s].astype(np.float64) - floor, 0, None)
        out.append(np.bincount(dense.ravel(), above.ravel(), minlength=n + 1)[1:])
    return out


def numbered_tracks(
    track: list[np.ndarray], objects: SlicedObjects
) -> tuple[list[np.ndarray], dict[int, int]]:
    """Renumber tracks 1..N in order of first appearance (slice, then input id)."""
    order: dict[int, int] = {}
    for s, t in enumerate(track):
        for k in np.argsort(objects.ids[s], kind="stable"):
            order.setdefault(int(t[k]), len(order) + 1)
    return [np.array([order[int(g)] for g in t], np.int64) for t in track], order
