"""How a set of point and box prompts becomes decoder calls: the one prompt rule of SegAny.

- No box: the points make one object. One point alone is ambiguous (whole, part or
  sub-part), so it gives three candidate masks; several points give one mask.
- One box: it and the points make one object (one mask).
- Several boxes: each box is its own object (one mask each, decoded in one batch); the
  points are not used.

:class:`PromptSet` holds the prompts of one image; :func:`decode_prompts` decodes them with
a :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`,
:func:`decode_prompts_tiled` with a
:class:`~napari_mobilesam.segany.tiled.TiledSegAnyPredictor`, and :func:`prompt_tiles` says
which tiles of a large image that reads, before anything is encoded.

numpy only at import.

Examples
--------
>>> prompts = PromptSet(point_coords=[[120, 80]], point_labels=[1])
>>> prompts.multimask, prompts.separate_objects
(True, False)
>>> PromptSet(boxes=[[0, 0, 10, 10], [20, 20, 40, 40]]).separate_objects
True
>>> decoded = decode_prompts(predictor, prompts)  # doctest: +SKIP
>>> best = decoded.masks[decoded.scores.argmax()]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segany.tiled import route_boxes, route_prompts

if TYPE_CHECKING:
    from napari_mobilesam.imaging.tiling import Tile, TileGrid
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.segany.tiled import TiledPrediction, TiledSegAnyPredictor

__all__ = [
    "PromptMasks",
    "PromptSet",
    "decode_prompts",
    "decode_prompts_tiled",
    "predict_object",
    "prompt_tiles",
]


def _rows(values: Any, width: int, name: str) -> np.ndarray:
    """``values`` as an (N, width) float64 array; None is no rows."""
    if values is None:
        return np.zeros((0, width))
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, width))
    if array.ndim == 1 and array.shape[0] == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise InvalidValueError(f"{name} must have shape (N, {width}), got {array.shape}")
    return array


@dataclass(frozen=True, eq=False)
class PromptSet:
    """The point and box prompts on one image, in its pixel coordinates.

    Parameters
    ----------
    point_coords : (K, 2) array, optional
        (x, y) pixels.
    point_labels : (K,) array, optional
        1 for a foreground point, 0 for a background point; by default every point is
        foreground.
    boxes : (B, 4) array, optional
        x0, y0, x1, y1 pixels; a single (4,) box is accepted.

    Examples
    --------
    >>> prompts = PromptSet(point_coords=[[5, 6], [7, 8]], boxes=[0, 0, 9, 9])
    >>> prompts.point_labels.tolist(), prompts.boxes.shape, prompts.multimask
    ([1, 1], (1, 4), False)
    >>> sorted(prompts.one_object())
    ['box', 'point_coords', 'point_labels']
    """

    point_coords: np.ndarray | Sequence | None = None
    point_labels: np.ndarray | Sequence | None = None
    boxes: np.ndarray | Sequence | None = None

    def __post_init__(self) -> None:
        coords = _rows(self.point_coords, 2, "point_coords")
        if self.point_labels is None:
            labels = np.ones(len(coords), dtype=np.int64)
        else:
            labels = np.asarray(self.point_labels).astype(np.int64).reshape(-1)
        if len(labels) != len(coords):
            raise InvalidValueError(
                f"point_labels must have one label per point ({len(coords)}), got {len(labels)}"
            )
        object.__setattr__(self, "point_coords", coords)
        object.__setattr__(self, "point_labels", labels)
        object.__setattr__(self, "boxes", _rows(self.boxes, 4, "boxes"))

    @classmethod
    def from_prompt(cls, prompt: Mapping[str, Any]) -> PromptSet:
        """The prompts of a mapping with ``point_coords``, ``point_labels`` and/or ``box``
        (the prompt of one slice of
        :func:`~napari_mobilesam.stacks.propagation.propagate_mask`)."""
        return cls(prompt.get("point_coords"), prompt.get("point_labels"), prompt.get("box"))

    @property
    def empty(self) -> bool:
        """No point and no box."""
        return len(self.point_coords) == 0 and len(self.boxes) == 0

    @property
    def separate_objects(self) -> bool:
        """Several boxes: each is its own object."""
        return len(self.boxes) > 1

    @property
    def points_ignored(self) -> bool:
        """Points are not used when several boxes each make their own object."""
        return self.separate_objects and len(self.point_coords) > 0

    @property
    def multimask(self) -> bool:
        """One point and no box: three candidate masks of the one object."""
        return len(self.boxes) == 0 and len(self.point_coords) == 1

    def one_object(self) -> dict[str, np.ndarray]:
        """The prompt of the one object: ``point_coords`` and ``point_labels`` when there
        are points, ``box`` when there is a box.

        Raises
        ------
        ValueError
            Several boxes (several objects).
        """
        if self.separate_objects:
            raise InvalidValueError(
                f"{len(self.boxes)} boxes are {len(self.boxes)} objects, not one: keep one box."
            )
        prompt: dict[str, np.ndarray] = {}
        if len(self.point_coords):
            prompt["point_coords"] = self.point_coords
            prompt["point_labels"] = self.point_labels
        if len(self.boxes):
            prompt["box"] = self.boxes[0]
        return prompt


@dataclass(frozen=True)
class PromptMasks:
    """Masks decoded from a :class:`PromptSet` on a whole image.

    Attributes
    ----------
    masks : (C, H, W) bool
    scores : (C,) float32
        Predicted IoU of each mask.
    separate_objects : bool
        True: one mask per box, each its own object. False: candidate masks of one object.
    """

    masks: np.ndarray
    scores: np.ndarray
    separate_objects: bool


def predict_object(predictor: SegAnyPredictor | TiledSegAnyPredictor, prompts: PromptSet) -> Any:
    """``predictor.predict`` of the one object of ``prompts`` (three candidates for one
    point alone); returns what the predictor returns."""
    return predictor.predict(**prompts.one_object(), multimask_output=prompts.multimask)


def decode_prompts(predictor: SegAnyPredictor, prompts: PromptSet) -> PromptMasks:
    """Decode ``prompts`` on the predictor's current image by the rule in the module notes.

    Examples
    --------
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> decode_prompts(predictor, PromptSet(boxes=boxes)).masks.shape  # doctest: +SKIP
    (2, 512, 512)
    """
    if prompts.separate_objects:
        masks, scores, _ = predictor.predict_boxes(prompts.boxes)
        return PromptMasks(masks, scores, separate_objects=True)
    masks, scores, _ = predict_object(predictor, prompts)
    return PromptMasks(masks, scores, separate_objects=False)


def decode_prompts_tiled(
    tiled: TiledSegAnyPredictor, prompts: PromptSet
) -> tuple[list[TiledPrediction], bool]:
    """Decode ``prompts`` on a large image, each object on its own tile.

    Returns
    -------
    predictions : list of TiledPrediction
        One per box for several boxes, else one (the candidates of the one object).
    separate_objects : bool
        As :attr:`PromptMasks.separate_objects`.
    """
    if prompts.separate_objects:
        return tiled.predict_boxes(prompts.boxes), True
    return [predict_object(tiled, prompts)], False


def prompt_tiles(grid: TileGrid, prompts: PromptSet) -> tuple[Tile, ...]:
    """The tiles (or coarse windows) :func:`decode_prompts_tiled` decodes ``prompts`` on,
    each once, without reading or encoding anything.

    Examples
    --------
    >>> from napari_mobilesam.imaging.tiling import TileGrid
    >>> grid = TileGrid((2048, 2048))
    >>> [tile.index for tile in prompt_tiles(grid, PromptSet([[1000, 300]]))]
    [(0, 1)]
    """
    if prompts.separate_objects:
        return tuple(dict.fromkeys(tile for tile, _ in route_boxes(grid, prompts.boxes)))
    prompt = prompts.one_object()
    tile, _ = route_prompts(grid, prompt.get("point_coords"), prompt.get("box"))
    return (tile,)
