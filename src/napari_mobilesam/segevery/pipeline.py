"""SegEvery: every object of an image as a label image, MobileSAMv2 style.

MobileSAMv2 (Zhang et al., 2023) replaces SAM's grid of point prompts with object
discovery: a YOLOv8 object-aware model proposes one box per object, and only those boxes are
decoded, all against the one image embedding. :func:`segment_everything` runs that pipeline
(or SAM's grid, as a baseline and a detector-free fallback) and merges the masks into one
label image, batch by batch, without ever holding all full-resolution masks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import select_level, spatial_shape
from napari_mobilesam.imaging.label_canvas import LabelCanvas
from napari_mobilesam.imaging.prepared_input import model_input
from napari_mobilesam.imaging.tiling import TileGrid, needs_tiling
from napari_mobilesam.segany.predictor import SegAnyPredictor
from napari_mobilesam.segevery.box_decoders import BoxDecoder, load_box_decoder
from napari_mobilesam.segevery.boxes import clean_boxes
from napari_mobilesam.segevery.candidates import (
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
    box_candidates,
    grid_candidates,
)
from napari_mobilesam.segevery.memory import check_memory_untiled, untiled_bytes
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.segevery.result import SegEveryResult, empty_result, join_notes

__all__ = [
    "SegEveryResult",
    "check_memory_untiled",
    "default_predictor",
    "segment_everything",
    "untiled_bytes",
]


@dataclass(frozen=True)
class _Call:
    """One ``segment_everything`` call: its options with the box decoder resolved, and
    what belongs to this image only."""

    options: SegEveryOptions
    box_decoder: BoxDecoder
    boxes: np.ndarray | Sequence | None
    progress: ProgressCallback | None
    contrast_limits: Sequence[float] | None

    @property
    def grid(self) -> bool:
        return self.boxes is None and self.options.grid


def segment_everything(
    image: Any,
    *,
    options: SegEveryOptions | None = None,
    predictor: SegAnyPredictor | None = None,
    boxes: np.ndarray | Sequence | None = None,
    progress: ProgressCallback | None = None,
    contrast_limits: Sequence[float] | None = None,
    out: Any = None,
    **settings: Any,
) -> SegEveryResult:
    """Segment every object of an image into a label image.

    Parameters
    ----------
    image : array-like or list of array-likes
        (H, W) or (H, W, C) with C in 1..4, any dtype: a numpy array or memory map, or a
        dask or zarr array (read one tile at a time when tiled). A list or tuple of them
        is a multiscale pyramid (napari's multiscale layer data), largest first; see
        ``level``.
    options : SegEveryOptions, optional
        Every setting below from ``detector`` to ``level``, checked once; keyword
        settings given as well replace its fields.
    predictor : SegAnyPredictor, optional
        Reuse a loaded model and its embedding cache. None builds the default one (once
        per process).
    boxes : (N, 4) array, optional
        x0, y0, x1, y1 prompts; discovery is skipped. Inverted boxes are reordered,
        boxes are clipped to the image, and empty ones dropped.
    progress : callable, optional
        Called as ``progress(done, total)`` with prompts decoded so far. An exception it
        raises stops the run and propagates (that is how a GUI cancels).
    contrast_limits : (lo, hi), optional
        Display range of the image, see :func:`napari_mobilesam.to_rgb_uint8`.
    out : array-like, optional
        An (H, W) integer array of zeros to write the labels into, e.g. a zarr array:
        tiled, it is written one tile window at a time, so an image larger than memory
        can be segmented. ``result.labels`` is then ``out``.
    **settings
        The fields of :class:`~napari_mobilesam.segevery.options.SegEveryOptions`:

    detector : str, path or callable
        How objects are discovered: "auto" (MobileSAMv2's ObjectAwareModel if available,
        else FastSAM-x), a path to any ultralytics YOLO detection or segmentation
        checkpoint, a registry name ("object_aware", "fastsam"), "grid" (SAM's automatic
        mask generation on a ``points_per_side`` grid) or a callable
        ``image -> (boxes, scores)``. Ignored when ``boxes`` is given.
    decoder : str, path or PromptDecoder
        What decodes the boxes, against the predictor's image embedding: "auto"
        (MobileSAMv2's prompt-guided decoder ``Prompt_guided_Mask_Decoder.pt`` if it is
        there or can be downloaded, else ``mobile_sam.pt``'s own decoder, and
        ``result.message`` says so), "prompt_guided" (that decoder, or an error),
        "mobile_sam" (the predictor's own decoder), or a file in the prompt-guided
        format. See :func:`napari_mobilesam.segevery.box_decoders.load_box_decoder`. The grid's
        point prompts always use the predictor's own decoder.
    conf, iou : float
        Detector confidence threshold and class-agnostic NMS IoU (MobileSAMv2: 0.4, 0.9).
    max_objects : int
        Most objects decoded, the most confident first (MobileSAMv2's detector returns
        at most 300).
    min_area : int
        Objects smaller than this many pixels are dropped, before and after overlaps are
        resolved.
    points_per_side : int
        Grid side for ``detector="grid"`` (per tile when tiled).
    tiling : bool
        True (default): an image with a side longer than the model's 1024-pixel input is
        cut into tiles, each encoded at full resolution (see
        :class:`napari_mobilesam.imaging.tiling.TileGrid`); an image that fits the model's input,
        or that one tile covers, gives exactly the untiled result whatever the tile
        settings. False: the whole image is resized into the model's 1024 pixels (coarse
        objects, one embedding).
    tile_shape, halo : int or (rows, columns)
        Tile size and the margin added on each side (defaults 768 and 128: each tile is
        encoded at exactly 1024 pixels). Objects up to ``2 * halo`` pixels across are
        never cut; larger ones that cross a seam are joined across tiles, and one larger
        than a tile with its halo is decoded on a coarser view (``result.message`` says
        so). Tiled, ``max_objects`` applies per tile and ``progress`` counts tiles.
    level : int, optional
        For a multiscale ``image``: the level to segment (0, the default, is full
        resolution; a coarser level suits large objects). Labels are at that level's size.

    Returns
    -------
    SegEveryResult
        ``labels`` (H, W) int32 and per-object ``boxes`` (image pixels), ``scores`` and
        ``areas``; ``decoder`` names the decoder used and ``tiles_encoded`` the number of
        embeddings computed.

    Notes
    -----
    Overlaps: each pixel goes to the smallest object covering it (as if larger masks
    were pasted first and smaller ones on top), so a nucleus inside a cell survives;
    among equal areas the earlier (more confident) prompt wins. An object left with no
    pixels, or fewer than ``min_area``, is dropped; its pixels become background.
    Identical boxes are decoded once.

    Examples
    --------
    >>> from napari_mobilesam import segment_everything
    >>> result = segment_everything(image, detector="nuclei_yolo.pt")  # doctest: +SKIP
    >>> result.labels.max() == result.n_objects  # doctest: +SKIP
    True
    """
    if options is None:
        options = SegEveryOptions(**settings)
    elif settings:
        options = replace(options, **settings)
    image = select_level(image, options.level)
    shape = spatial_shape(image)
    tiles = TileGrid(shape, options.tile_shape, options.halo)
    if out is not None:
        _check_out(out, shape)
    grid = boxes is None and options.grid
    box_decoder = BoxDecoder(None, "mobile_sam") if grid else _box_decoder(options.decoder)
    call = _Call(options, box_decoder, boxes, progress, contrast_limits)
    if options.tiling and needs_tiling(shape) and not tiles.is_single:
        predictor = predictor if predictor is not None else default_predictor()
        return _segment_tiled(image, tiles, predictor, call, out)
    check_memory_untiled(image, shape, out is None)
    result = _segment_whole(image, predictor, call)
    if out is not None:
        out[...] = result.labels
        result = replace(result, labels=out)
    return result


def _box_decoder(decoder: Any) -> BoxDecoder:
    """``decoder`` resolved (once per call; a BoxDecoder is already resolved)."""
    return decoder if isinstance(decoder, BoxDecoder) else load_box_decoder(decoder)


def _detector(options: SegEveryOptions, predictor: SegAnyPredictor) -> Any:
    """The detector of ``options`` for the tiles: loaded here, or on first use (a
    :class:`~napari_mobilesam.segevery.options.LazyDetector`, once per run)."""
    from napari_mobilesam.segevery.discovery import load_detector

    return load_detector(
        options.detector,
        conf=options.conf,
        iou=options.iou,
        max_det=options.max_det,
        engine=options.detector_engine(predictor),
    )


def _segment_whole(image: Any, predictor: SegAnyPredictor | None, c: _Call) -> SegEveryResult:
    """SegEvery on the whole image resized into the model's frame (one embedding)."""
    o = c.options
    prepared = model_input(image, c.contrast_limits)
    rgb, shape = prepared.rgb, prepared.shape
    timings: dict[str, float] = {}
    predictor = predictor if predictor is not None else default_predictor()
    box_decoder = c.box_decoder
    start = time.perf_counter()
    prompt_boxes = _whole_image_prompts(rgb, c, o.detector_engine(predictor))
    timings["discovery"] = time.perf_counter() - start

    if not c.grid and len(prompt_boxes) == 0:
        source = "the given boxes" if c.boxes is not None else f"the detector ({o.detector})"
        message = (
            f"No objects found: {source} proposed no box inside the image. "
            "Try a lower confidence threshold, another detector, or detector='grid'."
        )
        return empty_result(shape, message, timings, box_decoder.name)

    if c.progress is not None:  # a cancel during discovery stops the run before encoding
        c.progress(0, o.points_per_side**2 if c.grid else len(prompt_boxes))
    start = time.perf_counter()
    predictor.set_image(prepared)
    timings["embedding"] = time.perf_counter() - start

    start = time.perf_counter()
    painter = LabelCanvas(shape, o.min_area)
    if c.grid:
        candidates = grid_candidates(predictor, o.points_per_side, c.progress)
    else:
        candidates = box_candidates(predictor, prompt_boxes, c.progress, box_decoder.decoder)
    for candidate in candidates:
        painter.paste(candidate)
    timings["decoding"] = time.perf_counter() - start

    kept_boxes, kept_scores, areas = painter.finish()
    if len(kept_scores) == 0:
        message = join_notes(
            _why_nothing(c, painter.n_pasted or len(prompt_boxes)), box_decoder.message
        )
        return empty_result(shape, message, timings, box_decoder.name)
    return SegEveryResult(
        painter.labels,
        kept_boxes,
        kept_scores,
        areas,
        message=box_decoder.message,
        timings=timings,
        decoder=box_decoder.name,
    )


def _whole_image_prompts(rgb: np.ndarray, c: _Call, engine: str) -> np.ndarray:
    """The boxes to decode: the given ones, or the detector's (none for the grid)."""
    o = c.options
    if c.boxes is not None:
        prompt_boxes, _ = clean_boxes(c.boxes, rgb.shape[:2])
        return _unique_rows(prompt_boxes)[: o.max_objects]
    if c.grid:
        return np.zeros((0, 4), np.float32)  # the grid prompts with points
    from napari_mobilesam.segevery.discovery import discover_objects

    prompt_boxes, _ = discover_objects(
        rgb, o.detector, conf=o.conf, iou=o.iou, max_objects=o.max_objects, engine=engine
    )
    return _unique_rows(prompt_boxes)


def _why_nothing(c: _Call, n_decoded: int) -> str:
    """Why a run that decoded ``n_decoded`` masks kept none of them."""
    o = c.options
    if c.grid and n_decoded == 0:
        return (
            f"No objects found: no mask of the {o.points_per_side}x{o.points_per_side} grid "
            f"passed SAM's quality filters (predicted IoU >= {PRED_IOU_THRESH}, stability >= "
            f"{STABILITY_SCORE_THRESH})."
        )
    return (
        f"No objects found: none of the {n_decoded} decoded masks was kept "
        f"(empty, or under min_area={o.min_area} pixels after overlaps)."
    )


def _segment_tiled(
    image: Any, tiles: TileGrid, predictor: SegAnyPredictor, c: _Call, out: Any
) -> SegEveryResult:
    """SegEvery tile by tile (see :mod:`napari_mobilesam.segevery.tiled`)."""
    from napari_mobilesam.segevery.tiled import TiledSegEvery

    o = c.options
    box_decoder = c.box_decoder
    run = TiledSegEvery(
        image,
        tiles,
        predictor=predictor,
        box_decoder=box_decoder,
        contrast_limits=None if c.contrast_limits is None else tuple(c.contrast_limits),
        progress=c.progress,
    )
    canvas = LabelCanvas(tiles.shape, o.min_area, out)
    if c.grid:
        run.decode_grid(o.points_per_side, canvas)
    else:
        if c.boxes is not None:
            prompt_boxes, _ = clean_boxes(c.boxes, tiles.shape)
        else:
            prompt_boxes, _ = run.discover(_detector(o, predictor), o.max_objects, o.iou)
        run.decode(_unique_rows(prompt_boxes), canvas)
    kept_boxes, kept_scores, areas = canvas.finish()
    message = join_notes(
        "" if len(kept_scores) else "No objects found in any tile.",
        *run.notes,
        box_decoder.message,
    )
    return SegEveryResult(
        canvas.labels,
        kept_boxes,
        kept_scores,
        areas,
        message=message,
        timings=run.timings,
        decoder=box_decoder.name,
        tiles_encoded=run.tiles_encoded,
    )


def _check_out(out: Any, shape: tuple[int, int]) -> None:
    if tuple(getattr(out, "shape", ())) != tuple(shape):
        raise InvalidValueError(
            f"out must be an array of the image's shape {tuple(shape)}; got "
            f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}"
        )
    if np.dtype(out.dtype).kind not in "iu":
        raise InvalidValueError(f"out must have an integer dtype, got {out.dtype}")


@cache
def default_predictor() -> SegAnyPredictor:
    """The predictor ``segment_everything`` uses when given none: default weights, built
    once per process."""
    from napari_mobilesam.weights.build import build_mobile_sam

    return SegAnyPredictor(build_mobile_sam())


def _unique_rows(boxes: np.ndarray) -> np.ndarray:
    """Drop repeated boxes, keeping the first of each (the order is kept)."""
    if len(boxes) == 0:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]
