"""SegEvery on an image larger than the model's input: discovery and decoding tile by tile.

Every tile of a :class:`~napari_mobilesam.imaging.tiling.TileGrid` is read from the image (numpy,
memory map, dask or zarr: one region at a time), converted to the model's input and hashed
once (:func:`~napari_mobilesam.imaging.prepared_input.model_input`), shown to the detector, and
keeps the boxes whose centre lies in its inner region, so halos give no duplicates. A box
cut by a tile's outer edge (an object larger than the halo) is joined with the parts of the
same object that neighbouring tiles saw. Each box is then decoded against the embedding of
the tile that holds it whole with the most margin; a box that no tile holds whole is decoded
on a coarser view of its surroundings. The converted tiles are kept from discovery to
decoding (up to :data:`KEPT_INPUT_BYTES`), so a lazy image is read once per run. Masks are
pasted into the label image one tile window at a time
(:class:`~napari_mobilesam.imaging.label_canvas.LabelCanvas`), so the label image, which may
itself be a zarr array on disk, is never held whole beyond one window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_mobilesam.imaging.convert import display_range
from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.imaging.prepared_input import ModelInput, content_key, model_input
from napari_mobilesam.imaging.tiling import Tile, TileGrid, coarse_window, read_region
from napari_mobilesam.segany.predictor import SegAnyPredictor
from napari_mobilesam.segevery import candidates as mask_candidates
from napari_mobilesam.segevery.box_decoders import BoxDecoder

__all__ = ["TiledSegEvery", "join_cut_boxes", "shift_boxes"]

#: Two cut boxes of neighbouring tiles are one object when they share this much of the
#: smaller one.
JOIN_OVERLAP = 0.25
#: Cut boxes compared with all the others at once when joining (bounds the memory used).
JOIN_BLOCK = 1024
#: No cap: discover_objects returns every box the detector gives.
_ALL = 2**31 - 1
#: Model inputs of tiles kept from discovery for decoding (1024² RGB tiles: about 170);
#: the tiles beyond it are read again when they are decoded.
KEPT_INPUT_BYTES = 512 * 2**20


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
        tile (or coarse view) decoded; ``total`` is first twice the tiles, and is set to
        the tiles plus the decoding steps (one call, before the first) once the boxes are
        known. An exception it raises stops the run.
    kept_input_bytes : int
        Most bytes of converted tiles kept from discovery for decoding.
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
        kept_input_bytes: int = KEPT_INPUT_BYTES,
    ) -> None:
        self.image = image
        self.grid = grid
        self.predictor = predictor
        self.box_decoder = box_decoder
        self.limits = contrast_limits if contrast_limits is not None else display_range(image)
        self.progress = progress
        self.kept_input_bytes = kept_input_bytes
        self.timings = {"discovery": 0.0, "embedding": 0.0, "decoding": 0.0}
        self.tiles_encoded = 0
        self.notes: list[str] = []
        self._kept: dict[int, ModelInput] = {}
        self._kept_bytes = 0
        self._done = 0
        self._total = 0

    # ------------------------------------------------------------------ steps
    def _step(self) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self._total)

    def _read(self, tile: Tile) -> ModelInput:
        """The model's input of a tile (or window): read, converted and hashed once."""
        return model_input(read_region(self.image, tile), self.limits)

    def _keep(self, number: int, prepared: ModelInput) -> None:
        if self._kept_bytes + prepared.rgb.nbytes <= self.kept_input_bytes:
            self._kept[number] = prepared
            self._kept_bytes += prepared.rgb.nbytes

    def _tile_input(self, number: int) -> ModelInput:
        """Tile ``number``'s input, as kept from discovery or else read now."""
        kept = self._kept.get(number)
        return kept if kept is not None else self._read(self.grid.tiles[number])

    def _window_input(self, window: Tile) -> ModelInput:
        """A coarse view's input, put together from the kept tiles that cover it.

        The conversion maps each pixel on its own (one display range for all tiles), so
        the pieces of the tiles' inputs equal the window's own input. A window that a tile
        no longer kept covers is read.
        """
        y0, y1, x0, x1 = window.outer
        (th, tw), (_, cols) = self.grid.tile_shape, self.grid.grid_shape
        numbers = [
            row * cols + col
            for row in range(y0 // th, (y1 - 1) // th + 1)
            for col in range(x0 // tw, (x1 - 1) // tw + 1)
        ]
        if not numbers or any(number not in self._kept for number in numbers):
            return self._read(window)
        rgb = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for number in numbers:
            tile, kept = self.grid.tiles[number], self._kept[number]
            iy0, iy1 = max(tile.inner[0], y0), min(tile.inner[1], y1)
            ix0, ix1 = max(tile.inner[2], x0), min(tile.inner[3], x1)
            oy, ox = tile.offset
            rgb[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = kept.rgb[
                iy0 - oy : iy1 - oy, ix0 - ox : ix1 - ox
            ]
        return ModelInput(rgb, content_key(rgb))

    # --------------------------------------------------------------- discovery
    def discover(
        self,
        detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        max_objects: int,
        iou: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of every object, in image pixels, each found once.

        Each tile's input is kept (see ``kept_input_bytes``) for :meth:`decode`.
        """
        from napari_mobilesam.segevery.discovery import discover_objects

        self._total = 2 * len(self.grid)
        found_boxes, found_scores, cut, owner = [], [], [], []
        for number, tile in enumerate(self.grid.tiles):
            start = time.perf_counter()
            prepared = self._read(tile)
            # Every box the detector returns, then this tile's own, then the cap: halo
            # boxes, which belong to the neighbours, must not use up this tile's quota.
            boxes, scores = discover_objects(prepared.rgb, detect, iou=iou, max_objects=_ALL)
            self.timings["discovery"] += time.perf_counter() - start
            self._keep(number, prepared)
            oy, ox = tile.offset
            boxes = shift_boxes(boxes, oy, ox)
            mine = self.grid.owners(boxes) == number
            boxes, scores = boxes[mine][:max_objects], scores[mine][:max_objects]
            found_boxes.append(boxes)
            found_scores.append(scores)
            cut.append(self.grid.margins(tile, boxes) <= 1.0)
            owner.append(np.full(len(boxes), number))
            self._step()
        boxes = np.concatenate(found_boxes) if found_boxes else np.zeros((0, 4))
        scores = np.concatenate(found_scores) if found_scores else np.zeros(0)
        return join_cut_boxes(boxes, scores, np.concatenate(cut), np.concatenate(owner))

    # ---------------------------------------------------------------- decoding
    def decode(self, boxes: np.ndarray, canvas: LabelCanvas) -> None:
        """Decode every box on its tile (or a coarser view) and paste it into ``canvas``.

        Tiles kept by :meth:`discover` are not read again; they are let go at the end.
        """
        tiles, whole = self.grid.best_tiles(boxes)
        coarse = np.flatnonzero(~whole)
        used = [i for i in range(len(self.grid)) if np.any((tiles == i) & whole)]
        self._total = self._done + len(used) + len(coarse)
        if self.progress is not None:  # the decoding total, known from here on
            self.progress(self._done, self._total)
        try:
            for i in used:
                rows = np.flatnonzero((tiles == i) & whole)
                self._decode_in(self.grid.tiles[i], self._tile_input(i), boxes, rows, canvas)
                self._step()
            for row in coarse:
                window = coarse_window(self.grid, boxes[row])
                prepared = self._window_input(window)
                self._decode_in(window, prepared, boxes, np.array([row]), canvas)
                self._step()
        finally:
            self._kept.clear()
            self._kept_bytes = 0
        if len(coarse):
            self.notes.append(
                f"{len(coarse)} object(s) larger than a tile with its halo were decoded on a "
                "coarser view of their surroundings."
            )

    def decode_grid(self, points_per_side: int, canvas: LabelCanvas) -> None:
        """SAM's automatic mask generation in each tile; masks kept by their box centre."""
        self._total = len(self.grid)
        for number, tile in enumerate(self.grid.tiles):
            self._encode(self._read(tile))
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

    def _encode(self, prepared: ModelInput) -> None:
        """Make ``prepared`` the predictor's image; counted when the encoder runs (a tile
        in the predictor's cache, e.g. one SegAny encoded, is not encoded again)."""
        start = time.perf_counter()
        encoded_now = not self.predictor.has_embedding(prepared.key)
        self.predictor.set_image(prepared)
        self.timings["embedding"] += time.perf_counter() - start
        self.tiles_encoded += int(encoded_now)

    def _decode_in(
        self,
        tile: Tile,
        prepared: ModelInput,
        boxes: np.ndarray,
        rows: np.ndarray,
        canvas: LabelCanvas,
    ) -> None:
        self._encode(prepared)
        start = time.perf_counter()
        oy, ox = tile.offset
        local = shift_boxes(boxes[rows], -oy, -ox).astype(np.float32)
        with canvas.window(*tile.outer):
            for c in mask_candidates.box_candidates(
                self.predictor, local, None, self.box_decoder.decoder
            ):
                row = int(rows[c.index])
                canvas.paste(Candidate(row, c.y0 + oy, c.x0 + ox, c.mask, c.score, boxes[row]))
        self.timings["decoding"] += time.perf_counter() - start


def join_cut_boxes(
    boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Join boxes that neighbouring tiles found for one object cut by their edges.

    Two boxes are joined when both are cut by the outer edge of their tile, they come from
    different tiles, and their intersection covers at least :data:`JOIN_OVERLAP` of the
    smaller one; joins chain (connected components of that relation). A joined object
    gets the union of the boxes and the highest score.

    Parameters
    ----------
    boxes : (N, 4) x0, y0, x1, y1 in image pixels.
    scores : (N,)
    cut : (N,) bool
    tile : (N,) int, the tile each box comes from.

    Returns
    -------
    boxes : (M, 4) float32, sorted by decreasing score (ties: in the order of their
        first box).
    scores : (M,) float32

    Examples
    --------
    >>> boxes = np.array([[700, 10, 900, 60], [640, 12, 1000, 58], [5, 5, 20, 20]], float)
    >>> join_cut_boxes(boxes, np.array([0.9, 0.8, 0.7]), np.array([1, 1, 0], bool),
    ...                np.array([0, 1, 0]))[0]
    array([[ 640.,   10., 1000.,   60.],
           [   5.,    5.,   20.,   20.]], dtype=float32)
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(boxes)
    first, second = _joined_pairs(boxes, np.asarray(cut, bool), np.asarray(tile))
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    # Number the groups in the order of their first box.
    _, first_box, group = np.unique(group, return_index=True, return_inverse=True)
    group = np.argsort(np.argsort(first_box))[group]
    count = len(first_box)
    joined = np.concatenate([np.full((count, 2), np.inf), np.full((count, 2), -np.inf)], 1)
    np.minimum.at(joined[:, :2], group, boxes[:, :2])
    np.maximum.at(joined[:, 2:], group, boxes[:, 2:])
    best = np.full(count, -np.inf)
    np.maximum.at(best, group, scores)
    order = np.argsort(-best, kind="stable")
    return joined[order].astype(np.float32), best[order].astype(np.float32)


def _joined_pairs(
    boxes: np.ndarray, cut: np.ndarray, tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of the pairs of cut boxes of different tiles that are one object."""
    candidates = np.flatnonzero(cut)
    cut_boxes, cut_tiles = boxes[candidates], tile[candidates]
    area = (cut_boxes[:, 2] - cut_boxes[:, 0]) * (cut_boxes[:, 3] - cut_boxes[:, 1])
    first, second = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(candidates), JOIN_BLOCK):
        block = slice(start, start + JOIN_BLOCK)
        a = cut_boxes[block, None]
        w = np.minimum(a[..., 2], cut_boxes[:, 2]) - np.maximum(a[..., 0], cut_boxes[:, 0])
        h = np.minimum(a[..., 3], cut_boxes[:, 3]) - np.maximum(a[..., 1], cut_boxes[:, 1])
        shared = np.clip(w, 0, None) * np.clip(h, 0, None)
        smaller = np.minimum(area[block, None], area)
        fraction = np.divide(shared, smaller, out=np.zeros_like(shared), where=smaller > 0)
        joined = (fraction >= JOIN_OVERLAP) & (cut_tiles[block, None] != cut_tiles)
        rows, cols = np.nonzero(joined)
        first.append(candidates[rows + start])
        second.append(candidates[cols])
    return np.concatenate(first), np.concatenate(second)


def shift_boxes(boxes: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """(..., 4) x0, y0, x1, y1 boxes moved by (dy, dx), as float64."""
    return np.asarray(boxes, dtype=np.float64) + np.array([dx, dy, dx, dy])
