"""Masks merged into one label image: each pixel goes to the smallest mask covering it.

:class:`LabelCanvas` pastes cropped masks one at a time, as if larger masks were pasted
first and smaller ones on top (MobileSAMv2's ``Inference.py`` draws them so), so a nucleus
inside a cell survives; on equal areas the earlier mask wins. It never holds more than the
label image itself: the area that owns a pixel is looked up from the label there, and the
label image may be any array that supports slicing, such as a zarr array on disk, written
one window at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError

__all__ = ["Candidate", "LabelCanvas"]

_NO_OWNER = np.iinfo(np.int64).max


@dataclass
class Candidate:
    """One decoded mask, cropped to its bounding box, in image pixels."""

    index: int  # prompt order; earlier wins ties
    y0: int
    x0: int
    mask: np.ndarray  # (h, w) bool, the mask inside its bounding box
    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1 of the prompt

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class LabelCanvas:
    """Paste masks into a label image under provisional ids 1, 2, ... in paste order.

    Parameters
    ----------
    shape : (H, W)
        Size of the label image.
    min_area : int
        Masks with fewer pixels are not pasted; objects left with fewer visible pixels
        after overlaps are dropped by :meth:`finish`.
    out : array-like, optional
        An (H, W) integer array to paint into (numpy, or a zarr array written window by
        window); it must be zero. None: a new int32 numpy array.
    """

    def __init__(self, shape: tuple[int, int], min_area: int, out: Any = None) -> None:
        if out is None:
            out = np.zeros(shape, dtype=np.int32)
        elif tuple(out.shape) != tuple(shape):
            raise InvalidValueError(
                f"Expected out of shape {tuple(shape)}, the image's; received {tuple(out.shape)}."
            )
        self.labels = out
        self.shape = tuple(shape)
        self.min_area = max(int(min_area), 1)
        self.boxes: list[np.ndarray] = []
        self.scores: list[float] = []
        self._area = np.full(1, _NO_OWNER, dtype=np.int64)  # by provisional id; 0: background
        self._visible = np.zeros(1, dtype=np.int64)
        self._window: tuple[int, int, np.ndarray] | None = None

    @property
    def n_pasted(self) -> int:
        return len(self.scores)

    @contextmanager
    def window(self, y0: int, y1: int, x0: int, x1: int) -> Iterator[None]:
        """Paste into an in-memory copy of a region, written back once at the end.

        Every mask pasted inside the ``with`` block must lie in the region. For a numpy
        label image the region is a view and nothing is copied.
        """
        region = self.labels[y0:y1, x0:x1]
        in_memory = isinstance(self.labels, np.ndarray)
        self._window = (y0, x0, region if in_memory else np.asarray(region))
        try:
            yield
        finally:
            _, _, data = self._window
            self._window = None
            if not in_memory:
                self.labels[y0:y1, x0:x1] = data

    def paste(self, candidate: Candidate) -> None:
        """Paste one mask where it is smaller than the mask that owns each pixel now."""
        area = candidate.area
        if area < self.min_area:
            return
        h, w = candidate.mask.shape
        if self._window is not None:
            wy, wx, data = self._window
            region = data[
                candidate.y0 - wy : candidate.y0 - wy + h,
                candidate.x0 - wx : candidate.x0 - wx + w,
            ]
            if region.shape != (h, w):
                raise InvalidValueError("a pasted mask must lie inside the open window")
        elif isinstance(self.labels, np.ndarray):
            region = self.labels[candidate.y0 : candidate.y0 + h, candidate.x0 : candidate.x0 + w]
        else:
            with self.window(candidate.y0, candidate.y0 + h, candidate.x0, candidate.x0 + w):
                self.paste(candidate)
            return
        new_id = self.n_pasted + 1
        take = candidate.mask & (area < self._area[region])
        lost_ids, lost = np.unique(region[take], return_counts=True)
        self._grow(new_id)
        self._visible[lost_ids] -= lost
        self._visible[new_id] = int(take.sum())
        self._area[new_id] = area
        region[take] = new_id
        self.boxes.append(np.asarray(candidate.box, dtype=np.float32))
        self.scores.append(float(candidate.score))

    def _grow(self, new_id: int) -> None:
        if new_id < len(self._area):
            return
        size = max(2 * len(self._area), new_id + 1)
        self._area = np.concatenate([self._area, np.zeros(size - len(self._area), np.int64)])
        self._visible = np.concatenate(
            [self._visible, np.zeros(size - len(self._visible), np.int64)]
        )

    def finish(self, block_pixels: int = 2**24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Drop objects under ``min_area`` visible pixels and renumber the rest 1..N.

        Returns
        -------
        boxes : (N, 4) float32
        scores : (N,) float32
        areas : (N,) int64
            Visible pixels of each kept object; ``labels`` is renumbered in place (a zarr
            label image in blocks of whole rows of about ``block_pixels`` pixels).
        """
        n = self.n_pasted
        visible = self._visible[: n + 1]
        keep = visible >= self.min_area
        keep[0] = False
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        if not np.array_equal(lut, np.arange(n + 1)):
            if isinstance(self.labels, np.ndarray):
                self.labels[...] = lut[self.labels]
            else:
                block = max(1, block_pixels // self.shape[1])
                for start in range(0, self.shape[0], block):
                    rows = slice(start, min(start + block, self.shape[0]))
                    self.labels[rows] = lut[np.asarray(self.labels[rows])]
        kept = np.flatnonzero(keep)
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32)
        return boxes[kept - 1], scores[kept - 1], visible[kept].astype(np.int64)
