"""Which tile of a large image decodes a prompt: the tile that holds all of it with the
most margin, or a coarse view around prompts that no tile holds whole."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.tiling import COARSE_INDEX, Tile, TileGrid, coarse_window

__all__ = ["describe_tile", "prompt_bounds", "route_boxes", "route_prompts"]


def prompt_bounds(
    point_coords: np.ndarray | Sequence | None = None,
    box: np.ndarray | Sequence | None = None,
) -> np.ndarray:
    """The bounding box of all prompt points and the box.

    Parameters
    ----------
    point_coords : (N, 2) array, optional
        (x, y) image pixels.
    box : (4,) array, optional
        x0, y0, x1, y1 image pixels.

    Returns
    -------
    (4,) float64
        x0, y0, x1, y1.

    Raises
    ------
    ValueError
        Neither points nor a box, or coordinates that are not finite.

    Examples
    --------
    >>> prompt_bounds([[10, 20], [30, 5]], [0, 0, 12, 12]).tolist()
    [0.0, 0.0, 30.0, 20.0]
    """
    corners = []
    if point_coords is not None:
        points = np.asarray(point_coords, dtype=np.float64)
        if points.size:
            if points.ndim != 2 or points.shape[1] != 2:
                raise InvalidValueError(
                    f"point_coords must have shape (N, 2) holding (x, y) pixels, got "
                    f"{points.shape}"
                )
            corners.append(points)
    if box is not None:
        box_arr = np.asarray(box, dtype=np.float64)
        if box_arr.shape not in ((4,), (1, 4)):
            raise InvalidValueError(
                f"box must be x0, y0, x1, y1 with shape (4,), got {box_arr.shape}"
            )
        corners.append(box_arr.reshape(2, 2))
    if not corners:
        raise InvalidValueError(
            "Give at least one prompt: point_coords with point_labels, or a box."
        )
    corners_arr = np.concatenate(corners)
    if not np.isfinite(corners_arr).all():
        raise InvalidValueError("Prompt coordinates must be finite numbers.")
    return np.concatenate([corners_arr.min(axis=0), corners_arr.max(axis=0)])


def route_prompts(
    grid: TileGrid,
    point_coords: np.ndarray | Sequence | None = None,
    box: np.ndarray | Sequence | None = None,
) -> tuple[Tile, bool]:
    """Where prompts are decoded: the tile that holds them whole with the most margin.

    Parameters
    ----------
    grid : TileGrid
    point_coords : (N, 2) array, optional
        (x, y) image pixels.
    box : (4,) array, optional
        x0, y0, x1, y1 image pixels.

    Returns
    -------
    tile : Tile
        A tile of ``grid``, or a coarse window (:func:`coarse_window`) when no tile holds
        the bounding box of the prompts whole.
    coarse : bool
        True for a coarse window.

    Examples
    --------
    >>> grid = TileGrid((2048, 2048))
    >>> tile, coarse = route_prompts(grid, point_coords=[[1000, 300]])
    >>> tile.index, coarse
    ((0, 1), False)
    >>> route_prompts(grid, box=[100, 100, 1500, 1500])[1]
    True
    """
    bounds = prompt_bounds(point_coords, box)
    best, whole = grid.best_tiles(bounds[None])
    if bool(whole[0]):
        return grid.tiles[int(best[0])], False
    return coarse_window(grid, bounds), True


def describe_tile(grid: TileGrid, tile: Tile) -> str:
    """Words for a status line, with 1-based grid positions.

    Examples
    --------
    >>> grid = TileGrid((4096, 4608))
    >>> describe_tile(grid, grid.tiles[8])
    'tile (2, 3) of 6×6'
    >>> describe_tile(grid, coarse_window(grid, [0, 0, 1000, 2000]))
    'a coarser view of 2200×1200 pixels (the prompts do not fit in one tile)'
    """
    if tuple(tile.index) == COARSE_INDEX:
        y0, y1, x0, x1 = tile.outer
        return f"a coarser view of {y1 - y0}×{x1 - x0} pixels (the prompts do not fit in one tile)"
    rows, cols = grid.grid_shape
    return f"tile ({tile.index[0] + 1}, {tile.index[1] + 1}) of {rows}×{cols}"


def route_boxes(grid: TileGrid, boxes: np.ndarray | Sequence) -> list[tuple[Tile, bool]]:
    """Where each box is decoded as its own object: as :func:`route_prompts` of that box.

    Parameters
    ----------
    grid : TileGrid
    boxes : (N, 4) x0, y0, x1, y1 image pixels.

    Returns
    -------
    list of (Tile, bool)
        One (tile, coarse) per box, in order.

    Examples
    --------
    >>> grid = TileGrid((2048, 2048))
    >>> [(tile.index, coarse) for tile, coarse in route_boxes(grid, [[10, 10, 50, 50]])]
    [((0, 0), False)]
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    best, whole = grid.best_tiles(boxes)
    routes = []
    for index, ok, box in zip(best, whole, boxes, strict=True):
        if ok:
            routes.append((grid.tiles[int(index)], False))
        else:
            routes.append((coarse_window(grid, prompt_bounds(box=box)), True))
    return routes
