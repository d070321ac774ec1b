"""SegAny on an image larger than the model's input: each prompt decoded on one tile.

The model sees a 1024-pixel square, so a plain :class:`~napari_mobilesam.SegAnyPredictor`
shrinks a 4096² field four times and small objects vanish. :class:`TiledSegAnyPredictor`
cuts the image into the tiles of a :class:`~napari_mobilesam.imaging.tiling.TileGrid` (by default
768 pixels plus a 128-pixel halo on each side: each tile is encoded at exactly 1024 pixels,
one image pixel per model pixel) and decodes a prompt on the tile that holds all of it
with the most margin. Only that tile is read and encoded, on first use; its embedding is
then kept in the predictor's cache, so the next prompt in the same region is instant.

The image may be a numpy array or memory map, a dask array or a zarr array: only the
tile's region is read. All tiles share one contrast range (``contrast_limits``, or
:func:`~napari_mobilesam.imaging.convert.display_range` of the whole image), so an object looks the
same to the model whichever tile it is decoded on.

Prompts that no tile holds whole (a box larger than a tile with its halo) are decoded on a
*coarse view*: a window around the prompts, grown by 10 % (at least 16 pixels), which the
predictor resizes into its 1024-pixel input.

numpy only at import; torch is loaded by the predictor when a tile is encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.imaging.convert import display_range, validate_contrast_limits
from napari_mobilesam.imaging.prepared_input import model_input
from napari_mobilesam.imaging.tiling import (
    COARSE_INDEX,
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    Tile,
    TileGrid,
    coarse_window,
    read_region,
)
from napari_mobilesam.segany.tile_routing import (
    describe_tile,
    prompt_bounds,
    route_boxes,
    route_prompts,
)
from napari_mobilesam.segany.tiled_prediction import TiledPrediction, combine_predictions

if TYPE_CHECKING:
    from napari_mobilesam.segany.predictor import SegAnyPredictor

__all__ = [
    "COARSE_INDEX",
    "TiledPrediction",
    "TiledSegAnyPredictor",
    "coarse_window",
    "combine_predictions",
    "describe_tile",
    "prompt_bounds",
    "route_boxes",
    "route_prompts",
]


class TiledSegAnyPredictor:
    """SegAny on images of any size: each prompt decoded on one tile, encoded on demand.

    Parameters
    ----------
    predictor : SegAnyPredictor
        Encodes tiles and decodes prompts; its embedding cache (``cache_size``) keeps the
        tiles encoded so far.
    tile_shape : int or (rows, columns)
        Inner tile size; default 768.
    halo : int or (rows, columns)
        Pixels added on each side of a tile; default 128, so that a tile is encoded at
        exactly the model's 1024-pixel input.

    Notes
    -----
    ``mask_input`` refinement is not offered: the logits of one call belong to the tile it
    was decoded on, and the next call may be routed to another tile. Call
    :meth:`SegAnyPredictor.predict` with :attr:`TiledPrediction.low_res_logits` after
    :meth:`set_tile` for that.

    When the image fits one tile (``grid.is_single``) and no ``contrast_limits`` are
    given, the whole image is encoded as :meth:`SegAnyPredictor.set_image` would: masks
    and scores equal :meth:`SegAnyPredictor.predict` on the whole image.

    Examples
    --------
    >>> tiled = TiledSegAnyPredictor(SegAnyPredictor(model))  # doctest: +SKIP
    >>> tiled.set_image(zarr.open("mosaic.zarr"))  # reads nothing yet  # doctest: +SKIP
    >>> result = tiled.predict([[5000, 3000]], [1])  # encodes one tile  # doctest: +SKIP
    >>> result.paste_into(labels, int(result.scores.argmax()), 1)  # doctest: +SKIP
    """

    def __init__(
        self,
        predictor: SegAnyPredictor,
        tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
        halo: int | Sequence[int] = DEFAULT_HALO,
    ) -> None:
        for attribute in ("set_image", "predict", "predict_boxes"):
            if not callable(getattr(predictor, attribute, None)):
                raise InvalidTypeError(
                    f"predictor must be a SegAnyPredictor, got {type(predictor).__name__}"
                )
        # Validate the tile settings now, not at the first image.
        probe = TileGrid((1, 1), tile_shape=tile_shape, halo=halo)
        self.predictor = predictor
        self.tile_shape = probe.tile_shape
        self.halo = probe.halo
        self.grid: TileGrid | None = None
        self.image: Any = None
        self.contrast_limits: tuple[float, float] | None = None
        self._encoded: dict[tuple[int, int, int, int], str] = {}

    def __repr__(self) -> str:
        return (
            f"TiledSegAnyPredictor(tile_shape={self.tile_shape}, halo={self.halo}, "
            f"grid={self.grid!r})"
        )

    # ------------------------------------------------------------------ image
    def set_image(self, image: Any, contrast_limits: Sequence[float] | None = None) -> None:
        """Use ``image``: build the grid and fix the contrast range; nothing is encoded.

        Parameters
        ----------
        image : array-like
            (H, W) or (H, W, C) with C in 1..4: numpy array or memory map, dask array,
            zarr array, or anything indexable by two slices with ``shape`` and ``dtype``.
            It is kept, not copied; tiles are read from it when first needed.
        contrast_limits : (lo, hi), optional
            The display range mapped to 0..255 for every tile. By default
            :func:`~napari_mobilesam.imaging.convert.display_range` of the whole image (read
            sparsely); for an image that fits one tile, the range
            :func:`~napari_mobilesam.imaging.convert.to_rgb_uint8` picks for it.
        """
        shape = tuple(int(side) for side in np.shape(image))
        if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4):
            raise InvalidValueError(
                "Expected a 2-D image of shape (H, W) or (H, W, C) with C in 1..4; received "
                f"shape {shape}. For a Z/T stack pass one 2-D slice, e.g. image[z]."
            )
        grid = TileGrid(shape[:2], tile_shape=self.tile_shape, halo=self.halo)
        if contrast_limits is not None:
            limits: tuple[float, float] | None = validate_contrast_limits(contrast_limits)
        elif grid.is_single:
            limits = None
        else:
            limits = display_range(image)
        self.image = image
        self.grid = grid
        self.contrast_limits = limits
        self._encoded = {}

    def reset_image(self) -> None:
        """Forget the image (the predictor's cache keeps the tiles' embeddings)."""
        self.image = None
        self.grid = None
        self.contrast_limits = None
        self._encoded = {}

    @property
    def is_image_set(self) -> bool:
        return self.grid is not None

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        return self._require_grid().shape

    def _require_grid(self) -> TileGrid:
        if self.grid is None:
            raise RuntimeError(
                "No image is set: call tiled.set_image(image) before predicting masks."
            )
        return self.grid

    # ---------------------------------------------------------------- routing
    def route(
        self,
        point_coords: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
    ) -> tuple[Tile, bool]:
        """The tile (or coarse window) prompts are decoded on; see :func:`route_prompts`."""
        return route_prompts(self._require_grid(), point_coords, box)

    def is_encoded(self, tile: Tile) -> bool:
        """Whether ``tile``'s region was encoded since :meth:`set_image` and is still cached.

        Encodes and reads nothing.
        """
        key = self._encoded.get(tuple(tile.outer))
        return key is not None and self.predictor.has_embedding(key)

    @property
    def encoded_tiles(self) -> list[tuple[int, int, int, int]]:
        """Outer regions (y0, y1, x0, x1) encoded since :meth:`set_image`, oldest first."""
        return list(self._encoded)

    def set_tile(self, tile: Tile) -> bool:
        """Make ``tile``'s region the predictor's current image, encoding it if needed.

        Returns
        -------
        bool
            True when the encoder ran (the region was not cached).
        """
        self._require_grid()
        outer = tuple(tile.outer)
        known = self._encoded.get(outer)
        if known is not None and self.predictor.current_key == known:
            return False
        prepared = model_input(read_region(self.image, tile), self.contrast_limits)
        encoded_now = not self.predictor.has_embedding(prepared.key)
        self.predictor.set_image(prepared)
        self._encoded.pop(outer, None)
        self._encoded[outer] = prepared.key
        return encoded_now

    # ---------------------------------------------------------------- prompts
    def predict(
        self,
        point_coords: np.ndarray | Sequence | None = None,
        point_labels: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
        multimask_output: bool = True,
    ) -> TiledPrediction:
        """Masks of one object from points and/or a box, in image pixels.

        Parameters
        ----------
        point_coords : (N, 2) array, optional
            (x, y) image pixels.
        point_labels : (N,) array, optional
            1 foreground, 0 background.
        box : (4,) array, optional
            x0, y0, x1, y1 image pixels.
        multimask_output : bool
            Three candidate masks (best for a single point), else one.

        Returns
        -------
        TiledPrediction
            Masks (C, h, w) over the tile's outer region, at :attr:`TiledPrediction.offset`.
        """
        tile, coarse = self.route(point_coords, box)
        encoded_now = self.set_tile(tile)
        oy, ox = tile.offset
        local_points = None
        if point_coords is not None:
            local_points = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2) - [ox, oy]
        local_box = None
        if box is not None:
            local_box = np.asarray(box, dtype=np.float64).reshape(4) - [ox, oy, ox, oy]
        masks, scores, low_res = self.predictor.predict(
            point_coords=local_points,
            point_labels=point_labels,
            box=local_box,
            multimask_output=multimask_output,
        )
        return TiledPrediction(masks, scores, low_res, tile, coarse, encoded_now)

    def predict_boxes(self, boxes: np.ndarray | Sequence) -> list[TiledPrediction]:
        """One mask per box, each box decoded on its own tile (boxes of a tile together).

        Parameters
        ----------
        boxes : (N, 4) x0, y0, x1, y1 image pixels.

        Returns
        -------
        list of TiledPrediction
            One per box, in order, each with a (1, h, w) mask. ``encoded_now`` is True for
            the boxes of a tile that this call encoded.
        """
        grid = self._require_grid()
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InvalidValueError(
                f"boxes must have shape (N, 4) holding x0, y0, x1, y1 pixels, got {boxes.shape}"
            )
        if not np.isfinite(boxes).all():
            raise InvalidValueError("boxes must be finite numbers")
        results: list[TiledPrediction | None] = [None] * len(boxes)
        routes = route_boxes(grid, boxes)
        whole = [tile for tile, coarse in routes if not coarse]
        for tile in dict.fromkeys(whole):
            rows = [row for row, route in enumerate(routes) if route == (tile, False)]
            encoded_now = self.set_tile(tile)
            oy, ox = tile.offset
            masks, scores, low_res = self.predictor.predict_boxes(boxes[rows] - [ox, oy, ox, oy])
            for i, row in enumerate(rows):
                results[row] = TiledPrediction(
                    masks[i : i + 1],
                    scores[i : i + 1],
                    low_res[i : i + 1],
                    tile,
                    False,
                    encoded_now,
                )
        for row, (_, coarse) in enumerate(routes):
            if coarse:
                results[row] = self.predict(box=boxes[row], multimask_output=False)
        return [result for result in results if result is not None]

    def describe(self, tile: Tile) -> str:
        """Words for a status line; see :func:`describe_tile`."""
        return describe_tile(self._require_grid(), tile)
