"""The masks of one object decoded on a tile (or coarse window) of a large image.

:class:`TiledPrediction` holds them over the tile's outer region and places them in the
whole image; :func:`combine_predictions` puts several into the one window holding them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.tiling import Tile

__all__ = ["TiledPrediction", "combine_predictions"]


@dataclass(frozen=True)
class TiledPrediction:
    """Masks of one object, decoded on one tile (or a coarse window) of a large image.

    Attributes
    ----------
    masks : (C, h, w) bool
        The candidate masks over the tile's outer region ``tile.outer`` (the window).
    scores : (C,) float32
        Predicted IoU of each mask.
    low_res_logits : (C, 256, 256) float32
        The decoder's logits, for ``mask_input`` of :meth:`SegAnyPredictor.predict` on
        the same tile only.
    tile : Tile
        Where the masks were decoded; ``tile.index`` is :data:`COARSE_INDEX` for a coarse
        window.
    coarse : bool
        True when no tile held the prompts whole and a coarse window was used.
    encoded_now : bool
        True when this call ran the image encoder (the region was not cached).
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    tile: Tile
    coarse: bool
    encoded_now: bool

    @property
    def offset(self) -> tuple[int, int]:
        """(y0, x0) of the masks in image pixels."""
        return self.tile.offset

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the masks in image pixels (end exclusive)."""
        return self.tile.outer

    def full_masks(self, shape: Sequence[int]) -> np.ndarray:
        """The masks placed in an image of ``shape`` (H, W): (C, H, W) bool.

        Memory grows with the image: prefer :meth:`paste_into` or :attr:`window` for large
        images.
        """
        height, width = (int(side) for side in tuple(shape)[:2])
        y0, y1, x0, x1 = self.window
        if y1 > height or x1 > width:
            raise InvalidValueError(
                f"The masks reach ({y1}, {x1}), outside an image of shape {(height, width)}."
            )
        full = np.zeros((len(self.masks), height, width), dtype=bool)
        full[:, y0:y1, x0:x1] = self.masks
        return full

    def paste_into(self, labels: Any, candidate: int, value: int, overwrite: bool = False) -> int:
        """Write mask ``candidate`` into ``labels`` as ``value``, in image coordinates.

        Parameters
        ----------
        labels : (H, W) integer array
            numpy, memory map or zarr: only the window is read and written.
        candidate : int
            Index into :attr:`masks` (not a rank).
        value : int
            The label to write.
        overwrite : bool
            False (default): only pixels that are 0 are written, so labels already there
            are kept. True: every pixel of the mask is written.

        Returns
        -------
        int
            How many pixels were written.
        """
        if len(np.shape(labels)) != 2:
            raise InvalidValueError(
                f"labels must be a 2-D (H, W) array, got shape {tuple(np.shape(labels))}"
            )
        if not -len(self.masks) <= candidate < len(self.masks):
            raise InvalidValueError(
                f"candidate must index one of the {len(self.masks)} masks, got {candidate}"
            )
        y0, y1, x0, x1 = self.window
        if y1 > labels.shape[0] or x1 > labels.shape[1]:
            raise InvalidValueError(
                f"The masks reach ({y1}, {x1}), outside labels of shape {labels.shape}."
            )
        region = np.array(labels[y0:y1, x0:x1])
        pixels = self.masks[candidate] if overwrite else self.masks[candidate] & (region == 0)
        written = int(pixels.sum())
        if written:
            region[pixels] = value
            labels[y0:y1, x0:x1] = region
        return written


def combine_predictions(
    predictions: Sequence[TiledPrediction],
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Put the masks of several predictions into the one window that holds them all.

    Parameters
    ----------
    predictions : sequence of TiledPrediction
        For example one per box from :meth:`TiledSegAnyPredictor.predict_boxes`.

    Returns
    -------
    masks : (sum of C, h, w) bool
        Every mask of every prediction, in order, over the window.
    window : (y0, y1, x0, x1)
        The smallest region holding every prediction's window, in image pixels.
    """
    if not predictions:
        raise InvalidValueError("combine_predictions needs at least one prediction")
    windows = np.array([p.window for p in predictions])
    window = (
        int(windows[:, 0].min()),
        int(windows[:, 1].max()),
        int(windows[:, 2].min()),
        int(windows[:, 3].max()),
    )
    count = sum(len(p.masks) for p in predictions)
    masks = np.zeros((count, window[1] - window[0], window[3] - window[2]), dtype=bool)
    row = 0
    for p in predictions:
        y0, y1, x0, x1 = p.window
        rows = slice(row, row + len(p.masks))
        masks[rows, y0 - window[0] : y1 - window[0], x0 - window[2] : x1 - window[2]] = p.masks
        row += len(p.masks)
    return masks, window
