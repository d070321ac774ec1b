"""SAM-prompted corrections of one object: refine it with clicks, or split it in two.

The object's own pixels are the prompt: its mask becomes SAM's low-resolution mask input
(:func:`~napari_mobilesam.stacks.projection.mask_to_logits`) and its box (with the
foreground clicks) the box prompt, so a click refines *that* object, whoever made it
(SegAny, SegEvery, Cellpose, a brush). The predictor is a
:class:`~napari_mobilesam.segany.predictor.SegAnyPredictor` holding the 2-D image of the
labels (``set_image``), or a :class:`~napari_mobilesam.segany.tiled.TiledSegAnyPredictor`
for large images: the prompt is decoded on the one tile that holds it, where the mask
input is computed from the object's pixels on that tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_mobilesam.curation.objects import check_labels, present_ids
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.stacks.projection import DEFAULT_BOX_EXTENSION, mask_box, mask_to_logits

__all__ = ["object_prompt", "refine_object", "refined_mask", "split_object"]


def _points(coords: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    xy = np.zeros((0, 2)) if coords is None else np.asarray(coords, np.float64).reshape(-1, 2)
    kinds = np.ones(len(xy), np.int64) if labels is None else np.asarray(labels, np.int64)
    if kinds.shape != (len(xy),):
        raise InvalidValueError(f"point_labels must hold one 0/1 label per point ({len(xy)})")
    return xy, kinds.reshape(-1)


def object_prompt(
    mask: np.ndarray,
    input_size: tuple[int, int],
    point_coords: Any = None,
    point_labels: Any = None,
    *,
    use_mask: bool = True,
) -> dict[str, Any]:
    """The ``predictor.predict`` keyword arguments that make ``mask`` SAM's prompt.

    ``mask_input``: the mask's logits (``use_mask``); ``box``: its box widened by 5 %, grown
    to hold the foreground points; ``point_coords`` / ``point_labels``: the clicks.

    Examples
    --------
    >>> mask = np.zeros((64, 64), bool); mask[10:30, 20:40] = True
    >>> prompt = object_prompt(mask, (1024, 1024), [[50, 20]], [1])
    >>> prompt["box"].tolist(), prompt["mask_input"].shape
    ([19.0, 9.0, 51.0, 31.0], (1, 256, 256))
    """
    xy, kinds = _points(point_coords, point_labels)
    x0, y0, x1, y1 = mask_box(mask, DEFAULT_BOX_EXTENSION)
    fg = xy[kinds == 1]
    if len(fg):
        height, width = mask.shape
        x0, y0 = min(x0, max(0.0, fg[:, 0].min() - 1)), min(y0, max(0.0, fg[:, 1].min() - 1))
        x1 = max(x1, min(float(width), fg[:, 0].max() + 1))
        y1 = max(y1, min(float(height), fg[:, 1].max() + 1))
    prompt: dict[str, Any] = {"box": np.array([x0, y0, x1, y1]), "multimask_output": False}
    if len(xy):
        prompt["point_coords"], prompt["point_labels"] = xy, kinds
    if use_mask:
        prompt["mask_input"] = mask_to_logits(mask, input_size)
    return prompt


def _image_shape(predictor: Any) -> tuple[int, int]:
    if hasattr(predictor, "grid"):  # TiledSegAnyPredictor
        return tuple(predictor.image_shape)
    return tuple(predictor.original_size)


def refined_mask(
    predictor: Any,
    mask: np.ndarray,
    point_coords: Any = None,
    point_labels: Any = None,
    *,
    use_mask: bool = True,
) -> np.ndarray:
    """SAM's mask of the object ``mask`` given clicks: (H, W) bool, as ``mask``.

    The mask is kept within the prompt's box (the object's box widened by 5 % and grown to
    hold the foreground clicks): a click outside the object grows it there, and nothing
    far from the object is taken. On a tiled predictor the prompt is decoded on the tile
    that holds its box and points.
    """
    mask = np.asarray(mask, bool)
    shape = _image_shape(predictor)
    if mask.shape != shape:
        raise InvalidValueError(
            f"the labels {mask.shape} and the predictor's image {shape} differ in shape"
        )
    xy, kinds = _points(point_coords, point_labels)
    if len(xy) and not ((xy >= 0) & (xy < [shape[1], shape[0]])).all():
        raise InvalidValueError(f"points must lie in the image of shape {shape}, got {xy}")
    box = object_prompt(mask, (1024, 1024), xy, kinds, use_mask=False)["box"]
    out = np.zeros(shape, bool)
    if not hasattr(predictor, "grid"):
        prompt = object_prompt(mask, predictor.input_size, xy, kinds, use_mask=use_mask)
        out[...] = predictor.predict(**prompt)[0][0]
    else:
        tile, _ = predictor.route(xy if len(xy) else None, box)
        predictor.set_tile(tile)
        oy, ox = tile.offset
        inner = predictor.predictor
        local = object_prompt(
            mask[tile.slices], inner.input_size, xy - [ox, oy], kinds, use_mask=use_mask
        )
        out[tile.slices] = inner.predict(**local)[0][0]
    x0, y0, x1, y1 = box
    inside = np.zeros(shape, bool)
    inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
    return out & inside


def refine_object(
    labels: np.ndarray,
    label: int,
    predictor: Any,
    point_coords: Any = None,
    point_labels: Any = None,
) -> np.ndarray:
    """A copy of ``labels`` where object ``label`` is replaced by SAM's refinement of it.

    The object's mask and box are the prompt, with foreground (1) and background (0)
    clicks. The new mask takes the same id; pixels of other objects are never written.

    Parameters
    ----------
    labels : (H, W) int
    label : int
        The object to refine.
    predictor : SegAnyPredictor or TiledSegAnyPredictor
        Holding the labels' image.
    point_coords : (N, 2) (x, y) pixels, optional
    point_labels : (N,) 1 foreground, 0 background, optional

    Examples
    --------
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> fixed = refine_object(labels, 12, predictor, [[130, 48]], [1])  # doctest: +SKIP
    """
    labels = check_labels(labels, ndim=2)
    (label,) = present_ids(labels, [label])
    old = labels == label
    new = refined_mask(predictor, old, point_coords, point_labels)
    new &= (labels == 0) | old
    if not new.any():
        raise InvalidValueError(
            f"SAM's refinement of object {label} is empty; nothing was changed "
            "(to remove the object, delete it)"
        )
    out = labels.copy()
    out[old & ~new] = 0
    out[new] = label
    return out


def split_object(
    labels: np.ndarray,
    label: int,
    points: Sequence[Sequence[float]],
    predictor: Any,
    new_label: int | None = None,
) -> np.ndarray:
    """A copy of ``labels`` where object ``label`` is cut in two, one point on each part.

    SAM gives a mask for each point (that point foreground, the other background, the
    object's box); each is kept within the object's pixels. Pixels claimed by both masks or
    by neither go to the part they are connected to within the object, else the nearer one,
    so every pixel of the object ends in one of the two parts. The part of the first point
    keeps ``label``; the other gets ``new_label`` (default: the largest id + 1).

    Examples
    --------
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> halves = split_object(labels, 4, [[30, 40], [52, 41]], predictor)  # doctest: +SKIP
    """
    from skimage.segmentation import expand_labels, watershed

    labels = check_labels(labels, ndim=2)
    (label,) = present_ids(labels, [label])
    xy = np.asarray(points, np.float64)
    if xy.shape != (2, 2):
        raise InvalidValueError(f"split needs two (x, y) points, one on each part; got {xy}")
    pixels = [(int(y), int(x)) for x, y in xy]
    if pixels[0] == pixels[1]:
        raise InvalidValueError("the two points of a split must be on different pixels")
    for y, x in pixels:
        if not (0 <= y < labels.shape[0] and 0 <= x < labels.shape[1]) or labels[y, x] != label:
            raise InvalidValueError(f"point (x={x}, y={y}) is not on object {label}")
    new_label = int(labels.max()) + 1 if new_label is None else int(new_label)
    if new_label <= 0 or (new_label != label and (labels == new_label).any()):
        raise InvalidValueError(f"new_label {new_label} must be a positive id not in use")
    obj = labels == label
    first, second = (
        refined_mask(predictor, obj, xy, kinds, use_mask=False) & obj for kinds in ([1, 0], [0, 1])
    )
    seeds = np.zeros(labels.shape, np.int32)
    seeds[first & ~second] = 1
    seeds[second & ~first] = 2
    for part, (y, x) in enumerate(pixels, start=1):
        seeds[y, x] = part
    parts = watershed(np.zeros(labels.shape), seeds * obj, mask=obj)
    if (obj & (parts == 0)).any():  # pieces of the object not connected to a seed
        parts = np.where(obj, expand_labels(parts, max(labels.shape)), 0)
    out = labels.copy()
    out[obj & (parts == 2)] = new_label
    return out
