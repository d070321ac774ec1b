"""SegEvery plane by plane: the one loop behind stacks, the SegEvery widget and batch runs.

:func:`segment_planes` runs :func:`napari_mobilesam.segment_everything` on each plane of a
stack with one :class:`~napari_mobilesam.segevery.options.SegEveryOptions`, one detector
(loaded on first use) and one box decoder (resolved before the first plane). Each finished
plane, its ids numbered past those of the planes before it, goes to a caller's ``sink``
(which writes it, or fills a layer) and is then forgotten here. :func:`link_planes` links
the planes' objects into 3-D objects or tracks; that needs every plane's labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segevery.box_decoders import BoxDecoder, load_box_decoder
from napari_mobilesam.segevery.options import LazyDetector, SegEveryOptions
from napari_mobilesam.stacks.linking import LinkResult, link_slices

__all__ = [
    "LINK_MODES",
    "PlaneRun",
    "PlaneSkipped",
    "PlanesSummary",
    "SegmentedPlane",
    "check_link_mode",
    "link_planes",
    "segment_planes",
]

#: How the objects of a stack's planes are linked: not at all, into 3-D objects, or tracks.
LINK_MODES = ("off", "z", "t")
STAGES = ("discovery", "embedding", "decoding")


def check_link_mode(mode: str, modes: Sequence[str] = LINK_MODES) -> None:
    """Raise ValueError unless ``mode`` is among ``modes`` (by default :data:`LINK_MODES`;
    a batch run also takes "auto": tracks along a T axis, 3-D objects otherwise)."""
    if mode not in modes:
        raise InvalidValueError(
            f"link mode must be one of {', '.join(map(repr, modes))}, got {mode!r}"
        )


class PlaneSkipped(Exception):
    """Raised by a ``read_plane`` function: this plane is not segmented, for the reason given."""


@dataclass(frozen=True)
class SegmentedPlane:
    """One plane's objects, as :func:`segment_planes` hands them to its sink.

    Attributes
    ----------
    number : int
        The plane's position in the run (0-based).
    labels : (H, W) int array or None
        The plane's labels, ids ``first_id .. first_id + n - 1`` (0 is background); the
        caller's ``out`` array when one was given. None for a skipped plane.
    scores, areas : (N,) arrays
        Predicted IoU and pixels of each object, in id order.
    boxes : (N, 4) array
        The box that prompted each object.
    first_id : int
        The id of the plane's first object.
    message : str
        SegEvery's note for the plane, or why it was skipped.
    skipped : bool
        The plane was not segmented (blank, or unreadable as an image).
    tiles_encoded : int
        Embeddings computed for the plane.
    """

    number: int
    labels: Any
    scores: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    first_id: int = 1
    message: str = ""
    skipped: bool = False
    tiles_encoded: int = 0

    @property
    def ids(self) -> np.ndarray:
        """The plane's object ids, in the order of ``scores``."""
        return np.arange(self.first_id, self.first_id + len(self.scores), dtype=np.int64)


@dataclass
class PlanesSummary:
    """What a :func:`segment_planes` run did, over all its planes."""

    n_objects: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    tiles_encoded: int = 0
    box_decoder: BoxDecoder | None = None


def segment_planes(
    read_plane: Callable[[int], tuple[Any, Sequence[float] | None]],
    n_planes: int,
    options: SegEveryOptions,
    *,
    sink: Callable[[SegmentedPlane], None],
    **run: Any,
) -> PlanesSummary:
    """SegEvery on planes ``0 .. n_planes - 1``, each handed to ``sink`` when done.

    Parameters
    ----------
    read_plane : callable
        ``read_plane(number) -> (image, contrast_limits)``: the plane (2-D, or 2-D with
        channels; numpy, dask or zarr) and its display range (None: its own). It raises
        :class:`PlaneSkipped` to skip the plane, or anything else to stop the run.
    n_planes : int
        How many planes.
    options : SegEveryOptions
        The settings of every plane. Its ``level`` is not used: planes are single arrays.
    sink : callable
        Called with each :class:`SegmentedPlane`, skipped ones included, in order.
    **run
        ``predictor``, ``out``, ``boxes``, ``number_ids``, ``progress``, ``detector``,
        ``box_decoder`` of :class:`PlaneRun`.

    Returns
    -------
    PlanesSummary
    """
    planes = PlaneRun(read_plane, n_planes, options, **run)
    for plane in planes:
        sink(plane)
    return planes.summary


class PlaneRun:
    """The planes of :func:`segment_planes`, segmented one by one as they are iterated
    (for a caller that is itself a generator, such as a napari thread worker).

    Parameters
    ----------
    read_plane, n_planes, options
        As in :func:`segment_planes`.
    predictor : SegAnyPredictor, optional
        None: the default one.
    out : callable, optional
        ``out(number)``: an (H, W) integer array of zeros to write the plane's labels into
        (tiled: one tile window at a time), e.g. a view of a stack or a zarr array.
    boxes : sequence, optional
        Per plane, (N, 4) box prompts or None (discovery).
    number_ids : bool
        True: ids run on through the planes (plane k's ids follow plane k-1's); False:
        every plane's ids start at 1.
    progress : callable, optional
        ``progress(number, done, total)`` while plane ``number`` is segmented; an exception
        it raises (e.g. :class:`napari_mobilesam._progress.Cancelled`) stops the run.
    detector, box_decoder : optional
        Loaded already (a batch worker's models); default: ``options``' detector, loaded
        once on first use, and its decoder, resolved once here.

    Attributes
    ----------
    summary : PlanesSummary
        Filled in as the planes are segmented.
    """

    def __init__(
        self,
        read_plane: Callable[[int], tuple[Any, Sequence[float] | None]],
        n_planes: int,
        options: SegEveryOptions,
        *,
        predictor: Any = None,
        out: Callable[[int], Any] | None = None,
        boxes: Sequence[Any] | None = None,
        number_ids: bool = True,
        progress: Callable[[int, int, int], None] | None = None,
        detector: Any = None,
        box_decoder: BoxDecoder | None = None,
    ) -> None:
        if box_decoder is None and (not options.grid or boxes is not None):
            box_decoder = load_box_decoder(options.decoder)
        self.options = replace(
            options,
            detector=detector if detector is not None else _once(options, predictor),
            decoder=box_decoder if box_decoder is not None else options.decoder,
            level=None,
        )
        self.read_plane, self.n_planes = read_plane, n_planes
        self.predictor, self.out, self.boxes = predictor, out, boxes
        self.number_ids, self.progress = number_ids, progress
        self.summary = PlanesSummary(box_decoder=box_decoder)

    def __iter__(self) -> Iterator[SegmentedPlane]:
        summary = self.summary
        for number in range(self.n_planes):
            first_id = summary.n_objects + 1 if self.number_ids else 1
            try:
                image, limits = self.read_plane(number)
            except PlaneSkipped as skipped:
                yield _skipped(number, str(skipped), first_id)
                continue
            plane = _segment_plane(
                number,
                image,
                limits,
                self.options,
                predictor=self.predictor,
                out=None if self.out is None else self.out(number),
                boxes=None if self.boxes is None else self.boxes[number],
                first_id=first_id,
                progress=self.progress,
                summary=summary,
            )
            summary.n_objects += len(plane.scores)
            yield plane


def _once(options: SegEveryOptions, predictor: Any) -> Any:
    """The detector for every plane: loaded once, on first use (nothing for the grid), run
    by the engine of ``options`` or else of the predictor."""
    if options.grid or isinstance(options.detector, LazyDetector):
        return options.detector
    return LazyDetector(options, engine=options.detector_engine(predictor))


def _segment_plane(
    number: int,
    image: Any,
    limits: Sequence[float] | None,
    options: SegEveryOptions,
    *,
    predictor: Any,
    out: Any,
    boxes: Any,
    first_id: int,
    progress: Callable[[int, int, int], None] | None,
    summary: PlanesSummary,
) -> SegmentedPlane:
    from napari_mobilesam.segevery import pipeline

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(number, done, total)

    result = pipeline.segment_everything(
        image,
        options=options,
        predictor=predictor,
        boxes=boxes,
        contrast_limits=limits,
        progress=report,
        out=out,
    )
    labels = result.labels
    if out is not None and labels is not out:
        out[...] = labels
        labels = out
    if first_id > 1 and len(result.scores):
        _shift_ids(labels, first_id - 1)
    for stage in STAGES:
        summary.timings[stage] += float(result.timings.get(stage, 0.0))
    summary.tiles_encoded += result.tiles_encoded
    if result.message and result.message not in summary.notes:
        summary.notes.append(result.message)
    return SegmentedPlane(
        number,
        labels,
        np.asarray(result.scores, np.float32),
        np.asarray(result.boxes, np.float32).reshape(-1, 4),
        np.asarray(result.areas, np.int64),
        first_id=first_id,
        message=result.message,
        tiles_encoded=result.tiles_encoded,
    )


def _shift_ids(labels: Any, offset: int) -> None:
    """Add ``offset`` to the object pixels of ``labels``, in place, without a copy of it
    (an on-disk array is read and written back whole: one plane)."""
    if isinstance(labels, np.ndarray):
        np.add(labels, offset, out=labels, where=labels > 0)
        return
    plane = np.asarray(labels[...])
    np.add(plane, offset, out=plane, where=plane > 0)
    labels[...] = plane


def _skipped(number: int, reason: str, first_id: int) -> SegmentedPlane:
    return SegmentedPlane(
        number,
        None,
        np.zeros(0, np.float32),
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.int64),
        first_id=first_id,
        message=reason,
        skipped=True,
    )


def link_planes(
    labels: np.ndarray,
    mode: str,
    scores: Mapping[int, float] | Sequence[Any],
    *,
    progress: Callable[[int, int], Any] | None = None,
    **rules: Any,
) -> LinkResult:
    """Link the objects of a (S, H, W) stack of plane labels into 3-D objects or tracks.

    Parameters
    ----------
    labels : (S, H, W) int array
        Every plane's labels (ids unique through the stack, or per plane).
    mode : {"z", "t"}
        3-D objects or tracks, see :func:`napari_mobilesam.stacks.linking.link_slices`.
    scores : mapping or sequence
        ``{id: score}`` for ids unique through the stack, else one array or mapping per
        plane (as :func:`~napari_mobilesam.stacks.linking.link_slices` takes them).
    progress : callable, optional
        ``progress(done, total)`` after each plane; an exception it raises stops linking.
    **rules
        ``iou_threshold``, ``min_contained``, ``max_gap`` of ``link_slices``.

    Returns
    -------
    LinkResult
        Its table's ``mean_score`` is the score of each linked object.
    """
    check_link_mode(mode, ("z", "t"))
    per_plane = [scores] * len(labels) if isinstance(scores, Mapping) else list(scores)
    return link_slices(labels, mode=mode, scores=per_plane, progress=progress, **rules)
