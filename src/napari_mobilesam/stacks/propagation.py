"""SegAny in 3-D: propagate one object's mask from annotated slices through a Z or T stack.

The object is segmented on the annotated slices (from points, a box or a mask given there),
then slice by slice outwards: the mask of the previous slice is *projected* into the next
slice as a prompt, and the model segments the object there. Between two annotated slices
the gap is filled from both ends.

Projection modes (what the previous slice's mask becomes on the next slice):

- ``"box"``: its bounding box, widened by ``box_extension`` of its size on every side;
- ``"mask"`` (default): that box plus the previous call's low-resolution logits as
  ``mask_input`` (a mask given by the user is turned into logits first). This is what
  micro-sam calls ``"mask"`` (box + mask) and uses in its volumetric evaluations;
- ``"points"``: up to ``n_points`` positive points placed deep inside it (the maxima of
  its distance transform, each at least its own depth away from the others).

Stopping rule (outwards from the annotated range only): propagation stops at the first
slice whose mask is empty, whose IoU with the previous slice's mask is below
``iou_threshold`` (default 0.5, micro-sam's default), or, when ``min_score`` is given,
whose predicted IoU is below ``min_score``. That slice is visited but not kept. Between
two annotated slices nothing stops: the annotations say the object spans the gap.

Embeddings are computed when a slice is first needed and kept for the call (and by the
predictor's own cache, by content); ``prefetch=k`` encodes the next ``k`` slices in a
background thread while the main thread decodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.stacks.projection import DEFAULT_BOX_EXTENSION, PROJECTIONS
from napari_mobilesam.stacks.propagation_walks import PropagationWalks
from napari_mobilesam.stacks.slices import SliceEmbeddings, StackSlices

DEFAULT_PROJECTION = "mask"
DEFAULT_IOU_THRESHOLD = 0.5
_PROMPT_KEYS = ("point_coords", "point_labels", "box", "mask")


@dataclass(frozen=True)
class PropagationResult:
    """One object segmented through a stack.

    Attributes
    ----------
    mask : bool array
        The object on every slice, in the stack's layout without channels: (S, H, W) for
        an (S, H, W) or (S, H, W, C) stack.
    slices : (K,) int64
        Sorted slices where the mask is not empty (the slices the object covers).
    annotated : (A,) int64
        The slices that had prompts.
    visited : (V,) int64
        Slices decoded by propagation, in order (annotated slices not included); the
        slice where a walk stopped is visited but not kept.
    stops : dict
        Why each outward walk ended: ``{"lower": ..., "upper": ...}``, e.g.
        ``"IoU 0.31 < 0.5 at slice 12"``, ``"empty mask at slice 3"``, ``"reached slice 0"``,
        ``"bound 10"``.
    scores : dict
        Predicted IoU of the mask on each decoded slice (annotated ones included).
    ious : dict
        IoU between each propagated slice's mask and the mask it was prompted from.
    timings : dict
        Seconds: "embedding" (encoding or waiting for it), "decoding", "wait", "background".
    """

    mask: np.ndarray
    slices: np.ndarray
    annotated: np.ndarray
    visited: np.ndarray
    stops: dict[str, str]
    scores: dict[int, float] = field(default_factory=dict)
    ious: dict[int, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def paint_into(self, labels: np.ndarray, label: int) -> int:
        """Write ``label`` into ``labels`` (same layout as ``mask``) wherever the object is.

        Returns the number of pixels written. Nothing else is changed.
        """
        if tuple(np.shape(labels)) != self.mask.shape:
            raise InvalidValueError(
                f"labels must have the mask's shape {self.mask.shape}, got {np.shape(labels)}"
            )
        labels[self.mask] = label
        return int(self.mask.sum())


def propagate_mask(
    predictor: Any,
    stack: Any,
    prompts: Mapping[int, Mapping[str, Any] | np.ndarray],
    *,
    axis: int = 0,
    projection: str = DEFAULT_PROJECTION,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_score: float | None = None,
    box_extension: float = DEFAULT_BOX_EXTENSION,
    n_points: int = 3,
    bounds: tuple[int | None, int | None] = (None, None),
    rgb: bool | None = None,
    contrast_limits: Sequence[float] | None = None,
    prefetch: int = 0,
    embeddings: SliceEmbeddings | None = None,
    progress: ProgressCallback | None = None,
) -> PropagationResult:
    """Segment one object on every slice of a Z or T stack it spans, from prompts on some.

    Parameters
    ----------
    predictor : SegAnyPredictor
        The model (anything with its ``set_image``, ``set_embedding``, ``predict`` and
        ``input_size``).
    stack : array-like
        (S, H, W), or (S, H, W, C) with ``rgb``; more leading axes are allowed when all
        but ``axis`` have size 1. numpy, dask or zarr (slices are read when needed).
    prompts : mapping {slice: prompt}
        At least one slice. A prompt is a mapping with SegAny's ``point_coords`` (N, 2)
        (x, y pixels), ``point_labels`` (N,) and/or ``box`` (4,) x0, y0, x1, y1, which
        is segmented on that slice (one point alone: the best of three masks); or a
        ``mask`` (H, W) bool, the object as already segmented there (used as it is); or
        an (H, W) bool array, short for ``{"mask": array}``.
    axis : int
        The stack axis to walk along.
    projection : {"mask", "box", "points"}
        How a slice's mask prompts the next slice (see the module notes).
    iou_threshold : float
        Outward walks stop at the first slice whose mask has an IoU below this with the
        previous slice's mask (0 disables the test; empty masks always stop).
    min_score : float, optional
        Outward walks also stop where the predicted IoU is below this.
    box_extension : float
        Projected boxes are widened by this fraction of their size on each side.
    n_points : int
        Points per projection in "points" mode.
    bounds : (lo, hi)
        Never visit slices outside lo..hi (inclusive); None is the stack's end. Bounds
        equal to the lowest and highest annotated slices fill between them only.
    rgb, contrast_limits
        See :class:`StackSlices`; by default one display range for the whole stack.
    prefetch : int
        Slices to encode ahead in a background thread (0: none).
    embeddings : SliceEmbeddings, optional
        Reuse the embeddings of an earlier call on the same stack (``prefetch`` and
        ``contrast_limits`` are then its own).
    progress : callable, optional
        ``progress(done, total)`` after each decoded slice (``total`` is the number of
        slices within bounds, an upper limit); an exception it raises aborts the call and
        nothing is returned.

    Returns
    -------
    PropagationResult
        ``mask`` in the stack's layout and ``slices`` it covers, with the visiting order,
        why each walk stopped, scores and timings.

    Raises
    ------
    ValueError
        A stack with no axis to walk along (a 2-D image), an axis that is not a stack
        axis, no prompt, a prompt on a slice outside the stack, or an empty prompt mask.

    Examples
    --------
    >>> prompts = {20: {"box": [40, 50, 90, 110]}}
    >>> result = propagate_mask(predictor, volume, prompts)  # doctest: +SKIP
    >>> labels[result.mask] = 7  # one id through the stack  # doctest: +SKIP
    >>> result.slices  # doctest: +SKIP
    array([14, 15, ..., 27])
    """
    _validate_options(projection, iou_threshold, box_extension, n_points)
    if embeddings is not None:
        slices = embeddings.slices
        if tuple(np.shape(stack)) != slices.full_shape:
            raise InvalidValueError("embeddings belong to a stack of another shape")
    else:
        slices = StackSlices(stack, axis, rgb=rgb, contrast_limits=contrast_limits)
    seeds = _validate_prompts(prompts, slices)
    lo, hi = _validate_bounds(bounds, slices.n, seeds)

    own = embeddings is None
    encoder = embeddings if not own else SliceEmbeddings(predictor, slices, prefetch)
    run = PropagationWalks(
        predictor,
        slices,
        encoder,
        projection=projection,
        iou_threshold=float(iou_threshold),
        min_score=min_score,
        box_extension=float(box_extension),
        n_points=int(n_points),
        progress=progress,
        total=hi - lo + 1,
    )
    try:
        run.run(seeds, lo, hi)
    finally:
        if own:
            encoder.close()
    masks = run.masks
    covered = np.flatnonzero(masks.reshape(slices.n, -1).any(axis=1))
    timings = dict(encoder.timings)
    timings["decoding"] = run.decode_seconds
    return PropagationResult(
        mask=slices.to_stack_layout(masks),
        slices=covered.astype(np.int64),
        annotated=np.array(sorted(seeds), np.int64),
        visited=np.array(run.visited, np.int64),
        stops=run.stops,
        scores=run.scores,
        ious=run.ious,
        timings=timings,
    )


def _validate_options(
    projection: str, iou_threshold: float, box_extension: float, n_points: int
) -> None:
    if projection not in PROJECTIONS:
        raise InvalidValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise InvalidValueError(f"iou_threshold must be between 0 and 1, got {iou_threshold!r}")
    if box_extension < 0:
        raise InvalidValueError(f"box_extension must be >= 0, got {box_extension!r}")
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 1:
        raise InvalidValueError(f"n_points must be a positive integer, got {n_points!r}")


def _validate_prompts(
    prompts: Mapping[int, Mapping[str, Any] | np.ndarray], slices: StackSlices
) -> dict[int, Mapping[str, Any]]:
    if not isinstance(prompts, Mapping):
        raise InvalidTypeError(
            "prompts must be a mapping {slice index: prompt}, e.g. {12: {'box': [x0, y0, "
            f"x1, y1]}}; got {type(prompts).__name__}"
        )
    if len(prompts) == 0:
        raise InvalidValueError(
            "prompts are on no slice: give at least one slice with points, a box or a mask "
            "of the object, e.g. {12: {'point_coords': [[x, y]], 'point_labels': [1]}}"
        )
    seeds: dict[int, Mapping[str, Any]] = {}
    for key, prompt in prompts.items():
        if isinstance(key, bool) or int(key) != key:
            raise InvalidValueError(f"prompt slice indices must be integers, got {key!r}")
        z = int(key)
        if z < 0:
            z += slices.n
        if not 0 <= z < slices.n:
            raise InvalidValueError(
                f"prompt on slice {key}, but the stack axis {slices.axis} has slices "
                f"0..{slices.n - 1}"
            )
        if z in seeds:
            raise InvalidValueError(f"two prompts for slice {z}")
        if not isinstance(prompt, Mapping):
            prompt = {"mask": prompt}
        unknown = set(prompt) - set(_PROMPT_KEYS)
        if unknown:
            raise InvalidValueError(
                f"unknown prompt keys {sorted(unknown)} on slice {z}; use {list(_PROMPT_KEYS)}"
            )
        if "mask" in prompt:
            mask = np.asarray(prompt["mask"])
            if mask.shape != slices.shape_yx:
                raise InvalidValueError(
                    f"the mask on slice {z} has shape {mask.shape}; slices are {slices.shape_yx}"
                )
            mask = mask.astype(bool)
            if not mask.any():
                raise InvalidValueError(f"the mask prompt on slice {z} is empty")
            prompt = {"mask": mask}
        elif prompt.get("box") is None and prompt.get("point_coords") is None:
            raise InvalidValueError(f"the prompt on slice {z} has no points, box or mask")
        seeds[z] = prompt
    return seeds


def _validate_bounds(
    bounds: tuple[int | None, int | None], n: int, seeds: Mapping[int, Any]
) -> tuple[int, int]:
    try:
        lo, hi = bounds
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"bounds must be (lo, hi), got {bounds!r}") from exc
    lo = 0 if lo is None else int(lo)
    hi = n - 1 if hi is None else int(hi)
    lo, hi = max(lo, 0), min(hi, n - 1)
    if not lo <= min(seeds) <= max(seeds) <= hi:
        raise InvalidValueError(
            f"bounds ({lo}, {hi}) must contain every annotated slice {sorted(seeds)}"
        )
    return lo, hi


__all__ = ["DEFAULT_PROJECTION", "PropagationResult", "propagate_mask"]
