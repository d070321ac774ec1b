"""SegEvery on an image larger than the model's input: discovery and decoding tile by tile.

Every tile of a :class:`~napari_mobilesam.imaging.tiling.TileGrid` is read from the image (numpy,
memory map, dask or zarr: one region at a time), shown to the detector at its working size,
and keeps the boxes whose centre lies in its inner region, so halos give no duplicates. A
box cut by a tile's outer edge (an object larger than the halo) is joined with the parts of
the same object that neighbouring tiles saw. Each box is then decoded against the embedding
of the tile that holds it whole with the most margin; a box that no tile holds whole is
decoded on a coarser view of its surroundings. Masks are pasted into the label image one
tile window at a time (:class:`~napari_mobilesam.imaging.label_canvas.LabelCanvas`), so memory does
not grow with the image beyond the label image, which may itself be a zarr array on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_mobilesam.imaging.convert import display_range, to_rgb_uint8
from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.imaging.tiling import Tile, TileGrid, read_region
from napari_mobilesam.segany.predictor import SegAnyPredictor
from napari_mobilesam.segevery import candidates as mask_candidates
from napari_mobilesam.segevery.box_decoders import BoxDecoder

__all__ = ["TiledSegEvery"]

#: Two cut boxes of neighbouring tiles are one object when they share this much of the
#: smaller one.
JOIN_OVERLAP = 0.25
#: No cap: discover_objects returns every box the detector gives.
_ALL = 2**31 - 1
#: A box decoded on a coarser view is shown with this much context on each side.
COARSE_CONTEXT = 0.1


class TiledSegEvery:
    """One tiled SegEvery run; see :func:`napari_mobilesam.segment_everything`.

    Parameters
    ----------
    image : array-like
        (H, W) or (H, W, C), read one tile region at a time.
    grid : TileGrid
    predictor : SegAnyPredictor
    box_decoder : BoxDecoder
    contrast_limits : (lo, hi) or None
        None: one display range for the whole image (:func:`display_range`).
    progress : callable, optional
        ``progress(done, total)`` in tiles: one step per tile for discovery and one per
        tile (or coarse view) decoded. An exception it raises stops the run.
    """

    def __init__(
        self,
        image: Any,
        grid: TileGrid,
        *,
        predictor: SegAnyPredictor,
        box_decoder: BoxDecoder,
        contrast_limits: tuple[float, float] | None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        self.image = image
        self.grid = grid
        self.predictor = predictor
        self.box_decoder = box_decoder
        self.limits = contrast_limits if contrast_limits is not None else display_range(image)
        self.progress = progress
        self.timings = {"discovery": 0.0, "embedding": 0.0, "decoding": 0.0}
        self.tiles_encoded = 0
        self.notes: list[str] = []
        self._done = 0
        self._total = 0

    # ------------------------------------------------------------------ steps
    def _step(self) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self._total)

    def _rgb(self, tile: Tile) -> np.ndarray:
        return to_rgb_uint8(read_region(self.image, tile), self.limits)

    # --------------------------------------------------------------- discovery
    def discover(
        self,
        detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        max_objects: int,
        iou: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of every object, in image pixels, each found once."""
        from napari_mobilesam.segevery.discovery import discover_objects

        self._total = 2 * len(self.grid)
        found_boxes, found_scores, cut, owner = [], [], [], []
        for number, tile in enumerate(self.grid.tiles):
            start = time.perf_counter()
            rgb = self._rgb(tile)
            # Every box the detector returns, then this tile's own, then the cap: halo
            # boxes, which belong to the neighbours, must not use up this tile's quota.
            boxes, scores = discover_objects(rgb, detect, iou=iou, max_objects=_ALL)
            self.timings["discovery"] += time.perf_counter() - start
            oy, ox = tile.offset
            boxes = shift_boxes(boxes, oy, ox)
            mine = self.grid.owners(boxes) == number
            boxes, scores = boxes[mine][:max_objects], scores[mine][:max_objects]
            found_boxes.append(boxes)
            found_scores.append(scores)
            cut.append(self._cut_by_outer_edge(tile, boxes))
            owner.append(np.full(len(boxes), number))
            self._step()
        boxes = np.concatenate(found_boxes) if found_boxes else np.zeros((0, 4))
        scores = np.concatenate(found_scores) if found_scores else np.zeros(0)
        return join_cut_boxes(boxes, scores, np.concatenate(cut), np.concatenate(owner))

    def _cut_by_outer_edge(self, tile: Tile, boxes: np.ndarray) -> np.ndarray:
        return self.grid.margins(tile, boxes) <= 1.0

    # ---------------------------------------------------------------- decoding
    def decode(self, boxes: np.ndarray, canvas: LabelCanvas) -> None:
        """Decode every box on its tile (or a coarser view) and paste it into ``canvas``."""
        tiles, whole = self.grid.best_tiles(boxes)
        coarse = np.flatnonzero(~whole)
        used = [i for i in range(len(self.grid)) if np.any((tiles == i) & whole)]
        self._total = self._done + len(used) + len(coarse)
        for i in used:
            rows = np.flatnonzero((tiles == i) & whole)
            self._decode_in(self.grid.tiles[i], boxes, rows, canvas)
            self._step()
        for row in coarse:
            self._decode_in(self._coarse_view(boxes[row]), boxes, np.array([row]), canvas)
            self._step()
        if len(coarse):
            self.notes.append(
                f"{len(coarse)} object(s) larger than a tile with its halo were decoded on a "
                "coarser view of their surroundings."
            )

    def decode_grid(self, points_per_side: int, canvas: LabelCanvas) -> None:
        """SAM's automatic mask generation in each tile; masks kept by their box centre."""
        self._total = len(self.grid)
        for number, tile in enumerate(self.grid.tiles):
            self._encode(tile)
            start = time.perf_counter()
            oy, ox = tile.offset
            with canvas.window(*tile.outer):
                for c in mask_candidates.grid_candidates(self.predictor, points_per_side, None):
                    box = shift_boxes(c.box, oy, ox)
                    if self.grid.owners(box)[0] == number:
                        canvas.paste(
                            Candidate(c.index, c.y0 + oy, c.x0 + ox, c.mask, c.score, box)
                        )
            self.timings["decoding"] += time.perf_counter() - start
            self._step()

    def _encode(self, tile: Tile) -> None:
        start = time.perf_counter()
        self.predictor.set_image(self._rgb(tile))
        self.timings["embedding"] += time.perf_counter() - start
        self.tiles_encoded += 1

    def _decode_in(
        self, tile: Tile, boxes: np.ndarray, rows: np.ndarray, canvas: LabelCanvas
    ) -> None:
        self._encode(tile)
        start = time.perf_counter()
        oy, ox = tile.offset
        local = shift_boxes(boxes[rows], -oy, -ox).astype(np.float32)
        with canvas.window(*tile.outer):
            for c in mask_candidates.box_candidates(
                self.predictor, local, None, self.box_decoder.decoder
            ):
                canvas.paste(
                    Candidate(
                        int(rows[c.index]),
                        c.y0 + oy,
                        c.x0 + ox,
                        c.mask,
                        c.score,
                        boxes[rows[c.index]],
                    )
                )
        self.timings["decoding"] += time.perf_counter() - start

    def _coarse_view(self, box: np.ndarray) -> Tile:
        height, width = self.grid.shape
        x0, y0, x1, y1 = box
        pad = max(16.0, COARSE_CONTEXT * max(x1 - x0, y1 - y0))
        outer = (
            max(int(np.floor(y0 - pad)), 0),
            min(int(np.ceil(y1 + pad)), height),
            max(int(np.floor(x0 - pad)), 0),
            min(int(np.ceil(x1 + pad)), width),
        )
        return Tile((-1, -1), outer, outer)


def join_cut_boxes(
    boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Join boxes that neighbouring tiles found for one object cut by their edges.

    Two boxes are joined when both are cut by the outer edge of their tile, they come from
    different tiles, and their intersection covers at least :data:`JOIN_OVERLAP` of the
    smaller one. A joined object gets the union of the boxes and the highest score.

    Parameters
    ----------
    boxes : (N, 4) x0, y0, x1, y1 in image pixels.
    scores : (N,)
    cut : (N,) bool
    tile : (N,) int, the tile each box comes from.

    Returns
    -------
    boxes : (M, 4) float32, sorted by decreasing score.
    scores : (M,) float32

    Examples
    --------
    >>> boxes = np.array([[700, 10, 900, 60], [640, 12, 1000, 58], [5, 5, 20, 20]], float)
    >>> join_cut_boxes(boxes, np.array([0.9, 0.8, 0.7]), np.array([1, 1, 0], bool),
    ...                np.array([0, 1, 0]))[0]
    array([[ 640.,   10., 1000.,   60.],
           [   5.,    5.,   20.,   20.]], dtype=float32)
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    parent = np.arange(len(boxes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    candidates = np.flatnonzero(cut)
    for a_pos, a in enumerate(candidates):
        for b in candidates[a_pos + 1 :]:
            if tile[a] == tile[b]:
                continue
            if _shared_fraction(boxes[a], boxes[b]) >= JOIN_OVERLAP:
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    joined = np.array(
        [
            [boxes[g, 0].min(), boxes[g, 1].min(), boxes[g, 2].max(), boxes[g, 3].max()]
            for g in groups.values()
        ]
    ).reshape(-1, 4)
    best = np.array([scores[g].max() for g in groups.values()])
    order = np.argsort(-best, kind="stable")
    return joined[order].astype(np.float32), best[order].astype(np.float32)


def shift_boxes(boxes: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """(..., 4) x0, y0, x1, y1 boxes moved by (dy, dx), as float64."""
    return np.asarray(boxes, dtype=np.float64) + np.array([dx, dy, dx, dy])


def _shared_fraction(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller) if smaller > 0 else 0.0
