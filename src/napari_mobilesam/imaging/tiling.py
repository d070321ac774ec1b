"""Tiles of a large image: each encoded at full resolution, each owning its inner region.

The model sees a 1024-pixel square. An image larger than that is resized to fit, which turns
a 12-pixel nucleus of a 4096² field into a 3-pixel dot, smaller than one 16-pixel patch of
the embedding. A :class:`TileGrid` cuts the image into tiles of ``tile_shape`` pixels (the
*inner* regions, which cover the image without overlap), each grown by ``halo`` pixels on
every side into the *outer* region that is encoded. With the defaults (768 + 2 × 128 =
1024) a tile is encoded at exactly the model's input size, one image pixel per model pixel.

An object belongs to the tile whose inner region holds its box centre, so halos give no
duplicates; an object up to ``halo`` pixels from its centre to its edge fits entirely in the
outer region of its owning tile.

Plain arrays in, plain arrays out; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.model_frame import MODEL_SIDE

__all__ = [
    "COARSE_CONTEXT",
    "COARSE_INDEX",
    "COARSE_MIN_CONTEXT",
    "DEFAULT_HALO",
    "DEFAULT_TILE_SHAPE",
    "Tile",
    "TileGrid",
    "coarse_window",
    "needs_tiling",
    "read_region",
]

DEFAULT_TILE_SHAPE = (768, 768)
"""Inner tile size (rows, columns): with the halo, the model's 1024-pixel input."""
DEFAULT_HALO = (128, 128)
"""Pixels added on each side of a tile: objects up to 256 pixels across are never cut."""

#: Grid index given to the window of a coarse view (it is not a tile of the grid).
COARSE_INDEX = (-1, -1)
#: A coarse view shows this fraction of its contents' longer side as context on each side ...
COARSE_CONTEXT = 0.1
#: ... and at least this many pixels.
COARSE_MIN_CONTEXT = 16.0


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`, in image pixels (end exclusive).

    Attributes
    ----------
    index : (row, column)
        Position in the grid.
    inner : (y0, y1, x0, x1)
        The region the tile owns: the inner regions of a grid cover the image exactly once.
    outer : (y0, y1, x0, x1)
        The inner region grown by the halo and clipped to the image: what is encoded.
    """

    index: tuple[int, int]
    inner: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def offset(self) -> tuple[int, int]:
        """(y0, x0) of the outer region: add it to tile coordinates to get image ones."""
        return self.outer[0], self.outer[2]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the outer region."""
        y0, y1, x0, x1 = self.outer
        return y1 - y0, x1 - x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the outer region."""
        y0, y1, x0, x1 = self.outer
        return slice(y0, y1), slice(x0, x1)


class TileGrid:
    """A regular grid of tiles with halos over an image of ``shape`` (H, W).

    Parameters
    ----------
    shape : (H, W)
        The image size in pixels.
    tile_shape : int or (rows, columns)
        Size of the inner regions; the last row and column of tiles may be smaller.
    halo : int or (rows, columns)
        Pixels added on each side; at most half the tile size, so that a box centre in
        the inner region is at least ``halo`` pixels from the outer edge.

    Raises
    ------
    ValueError
        A tile smaller than 16 pixels, a negative halo, or a halo larger than half the
        tile (the outer regions would then reach past the neighbouring tiles).

    Examples
    --------
    >>> grid = TileGrid((2000, 3000), tile_shape=768, halo=128)
    >>> grid.grid_shape, len(grid.tiles)
    ((3, 4), 12)
    >>> grid.tiles[5].inner, grid.tiles[5].outer
    ((768, 1536, 768, 1536), (640, 1664, 640, 1664))
    """

    def __init__(
        self,
        shape: Sequence[int],
        tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
        halo: int | Sequence[int] = DEFAULT_HALO,
    ) -> None:
        self.shape = _pair(shape, "shape", minimum=1)
        self.tile_shape = _pair(tile_shape, "tile_shape", minimum=16)
        self.halo = _pair(halo, "halo", minimum=0)
        for axis, name in enumerate(("rows", "columns")):
            tile, halo_side = self.tile_shape[axis], self.halo[axis]
            if 2 * halo_side > tile:
                raise InvalidValueError(
                    f"Expected a halo of at most half the tile ({tile // 2} {name} for a tile "
                    f"of {tile}); received halo {halo_side}. The halo is added on both "
                    "sides, and a larger one leaves tiles that mostly repeat each other."
                )
        rows = -(-self.shape[0] // self.tile_shape[0])
        cols = -(-self.shape[1] // self.tile_shape[1])
        self.grid_shape = (rows, cols)
        self.tiles = [self._tile(r, c) for r in range(rows) for c in range(cols)]

    def __repr__(self) -> str:
        return (
            f"TileGrid(shape={self.shape}, tile_shape={self.tile_shape}, halo={self.halo}, "
            f"{len(self.tiles)} tiles)"
        )

    def __len__(self) -> int:
        return len(self.tiles)

    def _tile(self, row: int, col: int) -> Tile:
        (height, width), (th, tw), (hy, hx) = self.shape, self.tile_shape, self.halo
        y0, x0 = row * th, col * tw
        y1, x1 = min(y0 + th, height), min(x0 + tw, width)
        outer = (max(y0 - hy, 0), min(y1 + hy, height), max(x0 - hx, 0), min(x1 + hx, width))
        return Tile((row, col), (y0, y1, x0, x1), outer)

    @property
    def is_single(self) -> bool:
        """True when one tile covers the whole image (tiling changes nothing)."""
        return len(self.tiles) == 1

    def tile_at(self, y: float, x: float) -> Tile:
        """The tile whose inner region holds the image point (y, x), clipped into the image."""
        row = min(max(int(y) // self.tile_shape[0], 0), self.grid_shape[0] - 1)
        col = min(max(int(x) // self.tile_shape[1], 0), self.grid_shape[1] - 1)
        return self.tiles[row * self.grid_shape[1] + col]

    def owners(self, boxes: np.ndarray) -> np.ndarray:
        """Index into :attr:`tiles` of the tile whose inner region holds each box centre.

        Parameters
        ----------
        boxes : (N, 4) x0, y0, x1, y1 in image pixels.

        Returns
        -------
        (N,) int64
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        rows = np.clip(np.floor(cy / self.tile_shape[0]), 0, self.grid_shape[0] - 1)
        cols = np.clip(np.floor(cx / self.tile_shape[1]), 0, self.grid_shape[1] - 1)
        return (rows * self.grid_shape[1] + cols).astype(np.int64)

    def margins(self, tile: Tile, boxes: np.ndarray) -> np.ndarray:
        """How far each box stays inside ``tile``'s outer region, in pixels.

        Image borders do not count as edges (nothing lies beyond them). Negative where a
        box sticks out of the outer region; ``inf`` when the tile is the whole image.

        Parameters
        ----------
        tile : Tile
        boxes : (N, 4) x0, y0, x1, y1 in image pixels.

        Returns
        -------
        (N,) float64
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        y0, y1, x0, x1 = tile.outer
        height, width = self.shape
        gaps = [
            boxes[:, 0] - x0 if x0 > 0 else np.full(len(boxes), np.inf),
            boxes[:, 1] - y0 if y0 > 0 else np.full(len(boxes), np.inf),
            x1 - boxes[:, 2] if x1 < width else np.full(len(boxes), np.inf),
            y1 - boxes[:, 3] if y1 < height else np.full(len(boxes), np.inf),
        ]
        return np.min(np.stack(gaps, axis=1), axis=1)

    def best_tiles(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each box, the tile that holds it whole with the most margin.

        Returns
        -------
        tiles : (N,) int64
            Index into :attr:`tiles`; for a box that no tile holds whole, the tile that
            holds most of it.
        whole : (N,) bool
            False for boxes that stick out of every tile (a coarser view is needed).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        margins = np.stack([self.margins(tile, boxes) for tile in self.tiles], axis=1)
        best = margins.argmax(axis=1)
        return best.astype(np.int64), margins[np.arange(len(boxes)), best] >= 0


def needs_tiling(shape: Sequence[int], model_side: int = MODEL_SIDE) -> bool:
    """True for images with a side longer than the model's input (they would be shrunk).

    Examples
    --------
    >>> needs_tiling((1024, 768)), needs_tiling((2048, 2048))
    (False, True)
    """
    return max(int(shape[0]), int(shape[1])) > model_side


def coarse_window(grid: TileGrid, bounds: np.ndarray | Sequence) -> Tile:
    """A window around ``bounds`` for prompts or a box that no tile holds whole.

    The bounds are grown by :data:`COARSE_CONTEXT` of their longer side (at least
    :data:`COARSE_MIN_CONTEXT` pixels) on each side and clipped to the image. The window is
    returned as a :class:`Tile` with index :data:`COARSE_INDEX` whose inner and outer
    regions are the window; the predictor resizes it into the model's input.

    Parameters
    ----------
    grid : TileGrid
    bounds : (4,) x0, y0, x1, y1 image pixels.

    Returns
    -------
    Tile

    Raises
    ------
    ValueError
        The bounds lie outside the image.

    Examples
    --------
    >>> grid = TileGrid((4096, 4096))
    >>> coarse_window(grid, [100, 200, 1100, 1200]).outer
    (100, 1300, 0, 1200)
    """
    height, width = grid.shape
    x0, y0, x1, y1 = (float(v) for v in np.asarray(bounds, dtype=np.float64).reshape(4))
    pad = max(COARSE_MIN_CONTEXT, COARSE_CONTEXT * max(x1 - x0, y1 - y0))
    window = (
        max(int(np.floor(y0 - pad)), 0),
        min(int(np.ceil(y1 + pad)), height),
        max(int(np.floor(x0 - pad)), 0),
        min(int(np.ceil(x1 + pad)), width),
    )
    if window[1] - window[0] < 2 or window[3] - window[2] < 2:
        raise InvalidValueError(
            f"The prompts {tuple(bounds)} lie outside the image of shape {grid.shape}."
        )
    return Tile(COARSE_INDEX, window, window)


def read_region(image: Any, tile: Tile) -> np.ndarray:
    """Read a tile's outer region of a 2-D or (H, W, C) array-like into memory.

    Works on numpy arrays and memory maps, dask arrays and zarr arrays: only the region
    is read (dask computes only the chunks it touches).
    """
    region = image[tile.slices]
    compute = getattr(region, "compute", None)
    if callable(compute):
        region = compute()
    return np.asarray(region)


def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2 or any(not float(v).is_integer() for v in value):  # type: ignore[union-attr]
            raise InvalidValueError(
                f"Expected {name} as one integer or two (rows, columns); received {value!r}."
            )
    if min(pair) < minimum:
        raise InvalidValueError(
            f"Expected {name} of at least {minimum} pixels; received {value!r}."
        )
    return pair
