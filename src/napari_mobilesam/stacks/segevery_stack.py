"""Linked SegEvery: every object of every slice of a Z or T stack, one id per 3-D object or track.

:func:`segment_everything_stack` runs :func:`napari_mobilesam.segment_everything` on each
slice (:func:`napari_mobilesam.stacks.planes.segment_planes`: one options object, the
detector loaded once, one contrast range for the whole stack), then links
the objects of neighbouring slices with :func:`napari_mobilesam.stacks.linking.link_slices`:
optimal one-to-one matching on mask IoU, with gap tolerance, split and merge rules
documented there.

With ``prefetch=True`` a background thread encodes the next slice while the main thread
discovers and decodes the objects of the current one (slices up to the model's 1024
pixels a side; larger slices are tiled and encoded tile by tile as usual).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.planes import (
    PlaneSkipped,
    SegmentedPlane,
    check_link_mode,
    link_planes,
    segment_planes,
)
from napari_mobilesam.stacks.slices import StackSlices


@dataclass(frozen=True)
class StackSegEveryResult:
    """The linked objects of a stack.

    Attributes
    ----------
    labels : int32 array
        One id per 3-D object (``mode="z"``) or track (``mode="t"``), in the stack's
        layout without channels, e.g. (S, H, W). 0 is background.
    table : pandas.DataFrame
        Per object: ``label``, ``first_slice``, ``last_slice``, ``n_slices``, ``gaps``,
        ``volume`` (pixels), ``mean_score``, ``parent``, ``merged_into`` (see
        :class:`napari_mobilesam.stacks.linking.LinkResult`).
    area_per_slice, score_per_slice : (N, S) arrays
        Pixels and SegEvery's predicted IoU of each object on each slice (NaN: absent).
    slice_labels : (S, H, W) int32
        SegEvery's own labels of each slice, before linking (ids 1..n_s per slice).
    messages : list of str
        SegEvery's message for each slice (why nothing was found, ...).
    timings : dict
        Seconds summed over slices: "discovery", "embedding" (main thread: encoding or
        waiting for the background thread), "decoding", "linking", "wait", "background".
    """

    labels: np.ndarray
    table: Any
    area_per_slice: np.ndarray
    score_per_slice: np.ndarray
    slice_labels: np.ndarray
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return int(self.area_per_slice.shape[0])


def segment_everything_stack(
    stack: Any,
    *,
    axis: int = 0,
    predictor: Any = None,
    mode: str = "z",
    iou_threshold: float = 0.5,
    min_contained: float | None = 0.8,
    max_gap: int = 1,
    boxes: Sequence[Any] | Mapping[int, Any] | None = None,
    rgb: bool | None = None,
    contrast_limits: Sequence[float] | None = None,
    prefetch: bool = False,
    progress: ProgressCallback | None = None,
    **segevery_options: Any,
) -> StackSegEveryResult:
    """SegEvery on every slice of a stack, then link the objects into 3-D objects or tracks.

    Parameters
    ----------
    stack : array-like
        (S, H, W) or (S, H, W, C) (``rgb``); more leading axes are allowed when all but
        ``axis`` have size 1. numpy, dask or zarr.
    axis : int
        The stack axis (Z or T).
    predictor : SegAnyPredictor, optional
        None builds the default one (once per process).
    mode : {"z", "t"}
        3-D objects or tracks (tracks follow each object's motion); see
        :func:`napari_mobilesam.stacks.linking.link_slices`.
    iou_threshold, min_contained, max_gap
        The linking rule and gap tolerance, see
        :func:`~napari_mobilesam.stacks.linking.link_slices`.
    boxes : sequence of S (N_s, 4) arrays or mapping {slice: (N, 4)}, optional
        Box prompts per slice (discovery is skipped on those slices; a slice missing from
        a mapping uses the detector).
    rgb, contrast_limits
        See :class:`napari_mobilesam.stacks.propagation.StackSlices`; by default one display
        range (0.1st-99.9th percentiles) for the whole stack.
    prefetch : bool
        Encode the next slice in a background thread while this one is decoded.
    progress : callable, optional
        ``progress(done, total)`` with slices done out of ``S``; it is also called during a
        slice (with the same ``done``) so that an exception it raises aborts promptly.
        An abort returns nothing.
    **segevery_options
        Passed to :func:`napari_mobilesam.segment_everything`: ``detector``, ``decoder``,
        ``conf``, ``iou``, ``max_objects``, ``min_area``, ``points_per_side``, ``tiling``...

    Returns
    -------
    StackSegEveryResult

    Examples
    --------
    >>> result = segment_everything_stack(volume, detector="nuclei.pt")  # doctest: +SKIP
    >>> result.table[["label", "first_slice", "last_slice", "volume"]]  # doctest: +SKIP
    """
    from napari_mobilesam.segevery.pipeline import default_predictor

    for name in ("image", "contrast_limits", "progress", "predictor", "boxes", "out", "level"):
        if name in segevery_options:
            raise InvalidTypeError(f"segment_everything_stack got an unexpected option {name!r}")
    options = SegEveryOptions(**segevery_options)
    slices = StackSlices(stack, axis, rgb=rgb, contrast_limits=contrast_limits)
    per_slice_boxes = _validate_boxes(boxes, slices.n)
    check_link_mode(mode, ("z", "t"))
    predictor = predictor if predictor is not None else default_predictor()
    labels, scores, messages, timings = _segment_slices(
        slices, options, predictor, per_slice_boxes, prefetch, progress
    )
    start = time.perf_counter()
    linked = link_planes(
        labels,
        mode,
        scores,
        iou_threshold=iou_threshold,
        min_contained=min_contained,
        max_gap=max_gap,
    )
    timings["linking"] = time.perf_counter() - start
    return StackSegEveryResult(
        labels=slices.to_stack_layout(linked.labels),
        table=linked.table,
        area_per_slice=linked.area_per_slice,
        score_per_slice=linked.score_per_slice,
        slice_labels=labels,
        messages=messages,
        timings=timings,
    )


def _segment_slices(
    slices: StackSlices,
    options: SegEveryOptions,
    predictor: Any,
    boxes: list[np.ndarray | None],
    prefetch: bool,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray, list[np.ndarray], list[str], dict[str, float]]:
    """SegEvery's labels (ids 1..n_s on each slice), scores and message of every slice,
    and the time spent in each stage."""
    tiled = options.tiling and max(slices.shape_yx) > 1024
    # The prefetched slice must not push the one being decoded out of the cache.
    cached = getattr(predictor, "cache_size", 0) >= 2 and hasattr(predictor, "precompute")
    feed = _Feed(predictor, slices) if prefetch and cached and not tiled else None
    n = slices.n
    labels = np.zeros((n, *slices.shape_yx), np.int32)
    scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    messages: list[str] = [""] * n

    def read_slice(s: int) -> tuple[Any, Sequence[float] | None]:
        if feed is not None:
            feed.ready(s)  # slice s is encoded (or being encoded) by the thread
            feed.start(s + 1)  # the next slice encodes while this one is decoded
        image = slices.raw(s)
        if slices.is_blank(image):
            raise PlaneSkipped(f"slice {s} is blank (no contrast): nothing to segment")
        return image, slices.contrast_limits

    def keep(plane: SegmentedPlane) -> None:
        scores[plane.number], messages[plane.number] = plane.scores, plane.message
        if progress is not None:
            progress(plane.number + 1, n)

    try:
        summary = segment_planes(
            read_slice,
            n,
            options,
            sink=keep,
            predictor=predictor,
            out=labels.__getitem__,
            boxes=boxes,
            number_ids=False,
            progress=None if progress is None else lambda s, done, total: progress(s, n),
        )
    finally:
        if feed is not None:
            feed.close()
    timings = dict(summary.timings)
    if feed is not None:
        timings["wait"] = feed.wait
        timings["background"] = feed.background
    return labels, scores, messages, timings


def _validate_boxes(
    boxes: Sequence[Any] | Mapping[int, Any] | None, n: int
) -> list[np.ndarray | None]:
    if boxes is None:
        return [None] * n
    if isinstance(boxes, Mapping):
        out: list[np.ndarray | None] = [None] * n
        for key, value in boxes.items():
            if not 0 <= int(key) < n:
                raise InvalidValueError(
                    f"boxes given for slice {key}; the stack has slices 0..{n - 1}"
                )
            out[int(key)] = np.asarray(value, np.float64).reshape(-1, 4)
        return out
    if len(boxes) != n:
        raise InvalidValueError(
            f"boxes must hold one (N, 4) array per slice ({n}), got {len(boxes)}"
        )
    return [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]


class _Feed:
    """A background thread that encodes the next slice into the predictor's cache.

    :meth:`SegAnyPredictor.precompute` is thread-safe and does not change the current
    image, so ``segment_everything``'s own ``set_image`` of a prefetched slice finds its
    embedding in the cache and skips the encoder. One slice is encoded at a time.
    """

    def __init__(self, predictor: Any, slices: StackSlices) -> None:
        self.predictor = predictor
        self.slices = slices
        self.wait = 0.0
        self.background = 0.0
        self._thread: threading.Thread | None = None
        self._encoding: int | None = None

    def start(self, z: int) -> None:
        """Encode slice ``z`` in the background (after the slice being encoded, if any)."""
        if not 0 <= z < self.slices.n:
            return
        self.join()

        def work() -> None:
            start = time.perf_counter()
            try:
                rgb = self.slices.rgb_slice(z)
                if rgb is not None:
                    self.predictor.precompute(rgb)
            except Exception:  # the main thread encodes the slice again and reports
                pass
            self.background += time.perf_counter() - start

        self._encoding = z
        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def ready(self, z: int) -> None:
        """Wait for the thread if it is encoding slice ``z`` (which is about to be used)."""
        if self._encoding == z:
            start = time.perf_counter()
            self.join()
            self.wait += time.perf_counter() - start

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self._thread, self._encoding = None, None

    close = join


__all__ = ["StackSegEveryResult", "segment_everything_stack"]
