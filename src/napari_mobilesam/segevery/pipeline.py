"""SegEvery: every object of an image as a label image, MobileSAMv2 style.

MobileSAMv2 (Zhang et al., 2023) replaces SAM's grid of point prompts with object
discovery: a YOLOv8 object-aware model proposes one box per object, and only those boxes are
decoded, all against the one image embedding. :func:`segment_everything` runs that pipeline
(or SAM's grid, as a baseline and a detector-free fallback) and merges the masks into one
label image, batch by batch, without ever holding all full-resolution masks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.imaging.convert import select_level, spatial_shape, to_rgb_uint8
from napari_mobilesam.imaging.label_canvas import LabelCanvas
from napari_mobilesam.imaging.tiling import (
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    TileGrid,
    needs_tiling,
)
from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.segany.predictor import SegAnyPredictor
from napari_mobilesam.segevery.box_decoders import BoxDecoder, load_box_decoder
from napari_mobilesam.segevery.boxes import MAX_DETECTIONS
from napari_mobilesam.segevery.candidates import (
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
    box_candidates,
    grid_candidates,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegEveryResult:
    """The objects found in an image.

    Attributes
    ----------
    labels : (H, W) int32
        0 is background, objects are 1..N in the order of ``boxes``.
    boxes : (N, 4) float32
        x0, y0, x1, y1 of the box that prompted each object (grid mode: the bounding box
        of its mask).
    scores : (N,) float32
        Predicted IoU of each object's mask.
    areas : (N,) int64
        Pixels of each object in ``labels`` (after overlaps are resolved).
    message : str
        A note for the user: why nothing was found, or that the boxes were decoded with
        ``mobile_sam.pt``'s decoder because the prompt-guided one is not available;
        empty otherwise.
    timings : dict
        Seconds spent in each stage: "discovery", "embedding", "decoding".
    decoder : str
        The decoder of the boxes: "prompt_guided", "mobile_sam" or a file path.
    tiles_encoded : int
        Image embeddings computed (1 untiled; one per tile and coarse view when tiled).
    """

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = "mobile_sam"
    tiles_encoded: int = 1

    @property
    def n_objects(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class _Options:
    """What one ``segment_everything`` call asks for, shared by its two paths."""

    detector: str | os.PathLike | Callable
    boxes: np.ndarray | Sequence | None
    box_decoder: BoxDecoder
    grid: bool
    conf: float
    iou: float
    max_objects: int
    min_area: int
    progress: ProgressCallback | None
    contrast_limits: Sequence[float] | None
    points_per_side: int


def segment_everything(
    image: np.ndarray,
    *,
    predictor: SegAnyPredictor | None = None,
    detector: str | os.PathLike | Callable = "auto",
    boxes: np.ndarray | Sequence | None = None,
    decoder: str | os.PathLike | PromptDecoder | None = "auto",
    conf: float = 0.4,
    iou: float = 0.9,
    max_objects: int = MAX_DETECTIONS,
    min_area: int = 0,
    progress: ProgressCallback | None = None,
    contrast_limits: Sequence[float] | None = None,
    points_per_side: int = 32,
    tiling: bool = True,
    tile_shape: int | Sequence[int] = DEFAULT_TILE_SHAPE,
    halo: int | Sequence[int] = DEFAULT_HALO,
    level: int | None = None,
    out: Any = None,
) -> SegEveryResult:
    """Segment every object of an image into a label image.

    Parameters
    ----------
    image : array-like or list of array-likes
        (H, W) or (H, W, C) with C in 1..4, any dtype: a numpy array or memory map, or a
        dask or zarr array (read one tile at a time when tiled). A list or tuple of them
        is a multiscale pyramid (napari's multiscale layer data), largest first; see
        ``level``.
    predictor : SegAnyPredictor, optional
        Reuse a loaded model and its embedding cache. None builds the default one (once
        per process).
    detector : str, path or callable
        How objects are discovered: "auto" (MobileSAMv2's ObjectAwareModel if available,
        else FastSAM-x), a path to any ultralytics YOLO detection or segmentation
        checkpoint, a registry name ("object_aware", "fastsam"), "grid" (SAM's automatic
        mask generation on a ``points_per_side`` grid) or a callable
        ``image -> (boxes, scores)``. Ignored when ``boxes`` is given.
    boxes : (N, 4) array, optional
        x0, y0, x1, y1 prompts; discovery is skipped. Inverted boxes are reordered,
        boxes are clipped to the image, and empty ones dropped.
    decoder : str, path or PromptDecoder
        What decodes the boxes, against the predictor's image embedding: "auto"
        (MobileSAMv2's prompt-guided decoder ``Prompt_guided_Mask_Decoder.pt`` if it is
        there or can be downloaded, else ``mobile_sam.pt``'s own decoder, and
        ``result.message`` says so), "prompt_guided" (that decoder, or an error),
        "mobile_sam" (the predictor's own decoder), or a file in the prompt-guided
        format. See :func:`napari_mobilesam.segevery.box_decoders.load_box_decoder`. The grid's
        point
        prompts always use the predictor's own decoder.
    conf, iou : float
        Detector confidence threshold and class-agnostic NMS IoU (MobileSAMv2: 0.4, 0.9).
    max_objects : int
        Most objects decoded, the most confident first (MobileSAMv2's detector returns
        at most 300).
    min_area : int
        Objects smaller than this many pixels are dropped, before and after overlaps are
        resolved.
    progress : callable, optional
        Called as ``progress(done, total)`` with prompts decoded so far. An exception it
        raises stops the run and propagates (that is how a GUI cancels).
    contrast_limits : (lo, hi), optional
        Display range of the image, see :func:`napari_mobilesam.to_rgb_uint8`.
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
    out : array-like, optional
        An (H, W) integer array of zeros to write the labels into, e.g. a zarr array:
        tiled, it is written one tile window at a time, so an image larger than memory
        can be segmented. ``result.labels`` is then ``out``.

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
    _check_fraction(conf, "conf")
    _check_fraction(iou, "iou")
    if not _is_whole(max_objects) or max_objects < 1:
        raise ValueError(f"max_objects must be a positive integer, got {max_objects!r}")
    if not _is_number(min_area) or min_area < 0:
        raise ValueError(f"min_area must be 0 or more pixels, got {min_area!r}")
    if not _is_whole(points_per_side) or points_per_side < 1:
        raise ValueError(f"points_per_side must be a positive integer, got {points_per_side!r}")

    image = select_level(image, level)
    shape = spatial_shape(image)
    tiles = TileGrid(shape, tile_shape, halo)
    if out is not None:
        _check_out(out, shape)
    grid = boxes is None and isinstance(detector, str) and detector == "grid"
    options = _Options(
        detector=detector,
        boxes=boxes,
        box_decoder=BoxDecoder(None, "mobile_sam") if grid else load_box_decoder(decoder),
        grid=grid,
        conf=conf,
        iou=iou,
        max_objects=max_objects,
        min_area=min_area,
        progress=progress,
        contrast_limits=contrast_limits,
        points_per_side=points_per_side,
    )
    if tiling and needs_tiling(shape) and not tiles.is_single:
        predictor = predictor if predictor is not None else default_predictor()
        return _segment_tiled(image, tiles, predictor, options, out)
    check_memory_untiled(image, shape, out is None)
    result = _segment_whole(image, predictor, options)
    if out is not None:
        out[...] = result.labels
        result = replace(result, labels=out)
    return result


def untiled_bytes(image: Any, shape: tuple[int, int], new_labels: bool = True) -> int:
    """Bytes that segmenting ``image`` untiled allocates besides the model: the image read
    into memory (unless it already is a numpy array), a float working copy (unless it is
    uint8 or bool), the RGB uint8 input and the int32 label image."""
    height, width = shape
    pixels = int(height) * int(width)
    dims = np.shape(image)
    channels = int(dims[2]) if len(dims) == 3 else 1
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    needed = 3 * pixels + (4 * pixels if new_labels else 0)
    if not isinstance(image, np.ndarray):
        needed += pixels * channels * dtype.itemsize
    if dtype not in (np.uint8, np.bool_):
        needed += pixels * min(channels, 3) * max(4, dtype.itemsize)
    return needed


def check_memory_untiled(image: Any, shape: tuple[int, int], new_labels: bool = True) -> None:
    """Raise ValueError, before anything is allocated, if segmenting ``image`` untiled needs
    more memory than the machine has available now (psutil's ``available``)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - napari depends on psutil
        return
    needed = untiled_bytes(image, shape, new_labels)
    available = int(psutil.virtual_memory().available)
    if needed > available:
        raise ValueError(
            f"Not enough memory to segment this {shape[0]} x {shape[1]} image untiled: it "
            f"needs about {needed / 2**30:.1f} GiB and {available / 2**30:.1f} GiB are "
            "available. Nothing was allocated. Use tiling=True (the default), which reads "
            "and segments one tile at a time and can write into an on-disk out= array, or "
            "a coarser level of a multiscale image."
        )


def _segment_whole(image: Any, predictor: SegAnyPredictor | None, o: _Options) -> SegEveryResult:
    """SegEvery on the whole image resized into the model's frame (one embedding)."""
    rgb = to_rgb_uint8(image, o.contrast_limits)
    shape = rgb.shape[:2]
    timings: dict[str, float] = {}
    predictor = predictor if predictor is not None else default_predictor()

    box_decoder = o.box_decoder
    start = time.perf_counter()
    if o.boxes is not None:
        from napari_mobilesam.segevery.boxes import clean_boxes

        prompt_boxes, _ = clean_boxes(o.boxes, shape)
        prompt_boxes = _unique_rows(prompt_boxes)[: o.max_objects]
    elif not o.grid:
        from napari_mobilesam.segevery.discovery import discover_objects

        prompt_boxes, _ = discover_objects(
            rgb, o.detector, conf=o.conf, iou=o.iou, max_objects=o.max_objects
        )
        prompt_boxes = _unique_rows(prompt_boxes)
    else:
        prompt_boxes = np.zeros((0, 4), np.float32)  # the grid prompts with points
    timings["discovery"] = time.perf_counter() - start

    if not o.grid and len(prompt_boxes) == 0:
        source = "the given boxes" if o.boxes is not None else f"the detector ({o.detector})"
        message = (
            f"No objects found: {source} proposed no box inside the image. "
            "Try a lower confidence threshold, another detector, or detector='grid'."
        )
        return _empty_result(shape, message, timings, box_decoder.name)

    if o.progress is not None:  # a cancel during discovery stops the run before encoding
        o.progress(0, o.points_per_side**2 if o.grid else len(prompt_boxes))
    start = time.perf_counter()
    predictor.set_image(rgb)
    timings["embedding"] = time.perf_counter() - start

    start = time.perf_counter()
    painter = LabelCanvas(shape, o.min_area)
    if o.grid:
        candidates = grid_candidates(predictor, o.points_per_side, o.progress)
        for c in candidates:
            painter.paste(c)
    else:
        for c in box_candidates(predictor, prompt_boxes, o.progress, box_decoder.decoder):
            painter.paste(c)
    timings["decoding"] = time.perf_counter() - start

    kept_boxes, kept_scores, areas = painter.finish()
    result = SegEveryResult(
        painter.labels,
        kept_boxes,
        kept_scores,
        areas,
        message=box_decoder.message,
        timings=timings,
        decoder=box_decoder.name,
    )
    if result.n_objects == 0:
        if o.grid and painter.n_pasted == 0:
            reason = (
                f"no mask of the {o.points_per_side}x{o.points_per_side} grid passed SAM's "
                f"quality filters (predicted IoU >= {PRED_IOU_THRESH}, stability >= "
                f"{STABILITY_SCORE_THRESH})"
            )
        else:
            reason = (
                f"none of the {painter.n_pasted or len(prompt_boxes)} decoded masks was kept "
                f"(empty, or under min_area={o.min_area} pixels after overlaps)"
            )
        message = _join(f"No objects found: {reason}.", box_decoder.message)
        return _empty_result(shape, message, timings, box_decoder.name)
    return result


def _segment_tiled(
    image: Any, tiles: TileGrid, predictor: SegAnyPredictor, o: _Options, out: Any
) -> SegEveryResult:
    """SegEvery tile by tile (see :mod:`napari_mobilesam.segevery.tiled`)."""
    from napari_mobilesam.segevery.boxes import clean_boxes
    from napari_mobilesam.segevery.tiled import TiledSegEvery

    box_decoder = o.box_decoder
    run = TiledSegEvery(
        image,
        tiles,
        predictor=predictor,
        box_decoder=box_decoder,
        contrast_limits=None if o.contrast_limits is None else tuple(o.contrast_limits),
        progress=o.progress,
    )
    canvas = LabelCanvas(tiles.shape, o.min_area, out)
    if o.grid:
        run.decode_grid(o.points_per_side, canvas)
    else:
        if o.boxes is not None:
            prompt_boxes, _ = clean_boxes(o.boxes, tiles.shape)
            prompt_boxes = _unique_rows(prompt_boxes)
        else:
            from napari_mobilesam.segevery.discovery import load_detector

            detect = load_detector(
                o.detector, conf=o.conf, iou=o.iou, max_det=max(MAX_DETECTIONS, o.max_objects)
            )
            prompt_boxes, _ = run.discover(detect, o.max_objects, o.iou)
            prompt_boxes = _unique_rows(prompt_boxes)
        run.decode(prompt_boxes, canvas)
    kept_boxes, kept_scores, areas = canvas.finish()
    message = _join(
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
        raise ValueError(
            f"out must be an array of the image's shape {tuple(shape)}; got "
            f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}"
        )
    if np.dtype(out.dtype).kind not in "iu":
        raise ValueError(f"out must have an integer dtype, got {out.dtype}")


@cache
def default_predictor() -> SegAnyPredictor:
    """The predictor ``segment_everything`` uses when given none: default weights, built
    once per process."""
    from napari_mobilesam.model import build_mobile_sam

    return SegAnyPredictor(build_mobile_sam())


# ----------------------------------------------------------------------------- helpers
def _empty_result(
    shape: tuple[int, int], message: str, timings: dict, decoder: str = "mobile_sam"
) -> SegEveryResult:
    logger.info(message)
    return SegEveryResult(
        labels=np.zeros(shape, dtype=np.int32),
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        areas=np.zeros(0, np.int64),
        message=message,
        timings=timings,
        decoder=decoder,
    )


def _join(*notes: str) -> str:
    return " ".join(note for note in notes if note)


def _unique_rows(boxes: np.ndarray) -> np.ndarray:
    """Drop repeated boxes, keeping the first of each (the order is kept)."""
    if len(boxes) == 0:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def _is_number(value: Any) -> bool:
    """True for a finite real number (NaN and infinity are not)."""
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _is_whole(value: Any) -> bool:
    """True for a finite number without a fractional part."""
    return _is_number(value) and int(value) == value


def _check_fraction(value: float, name: str) -> None:
    if not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
