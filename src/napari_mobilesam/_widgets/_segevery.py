"""SegEvery: segment every object of an image layer (MobileSAMv2) in a thread worker.

:class:`SegEveryJob` is one run: it reads the planes of the image as the viewer shows them
(its contrast limits), runs :func:`napari_mobilesam.segment_everything` on each, reports
progress in napari's activity dock (one step per plane, finer steps inside a plane), can be
cancelled, and adds one Labels layer ``"<image> objects"`` with per-object features at the
end. Nothing is added when the run is cancelled, fails or finds no object.

Large images: a plane with a side longer than the model's 1024-pixel input is segmented
tile by tile (see :mod:`napari_mobilesam.imaging.tiling`); the second progress bar then counts
tiles ("finding objects: tile k of N", then "decoding: tile k of N") and a cancel takes
effect between tiles. A dask or zarr plane is handed to the core as it is, so only one
tile region is in memory at a time. Multiscale layers: one resolution level is segmented
(``SegEverySettings.level``, 0 = full resolution); the labels have that level's shape and
the layer's scale times the level's downsampling factor, which puts them on the image as
napari draws that level.

Stacks: "all slices" segments every plane; with ``SegEverySettings.link`` the objects of
neighbouring slices along one axis are then linked with
:func:`napari_mobilesam.stacks.linking.link_slices` into 3-D objects ("z") or tracks ("t"), one id
each, and the features become one row per object (first and last slice, volume, mean
score...).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Image
from napari.utils import cancelable_progress, progress
from napari.utils.notifications import show_error, show_info, show_warning
from superqt.utils import ensure_main_thread

from napari_mobilesam._progress import Cancelled
from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import error_line, expected_errors, report_bug
from napari_mobilesam._widgets._model import (
    new_predictor,
)
from napari_mobilesam._widgets._plane import (
    Plane,
    labels_for,
    layer_in_viewer,
    level_data,
    model_contrast_limits,
    planes_to_segment,
    spatial_shape,
    unproxied,
)
from napari_mobilesam._widgets._segevery_features import (
    add_tracks_layer,
    decoder_note,
    layer_features,
    link_features,
    outcome_message,
    plane_features,
    plane_phase,
)
from napari_mobilesam._widgets._segevery_settings import DECODERS, DETECTORS, SegEverySettings
from napari_mobilesam._widgets._workers import stoppable_worker
from napari_mobilesam.imaging.convert import has_contrast, non_finite_note
from napari_mobilesam.imaging.tiling import TileGrid, needs_tiling
from napari_mobilesam.stacks.planes import PlaneSkipped

if TYPE_CHECKING:
    import napari

__all__ = ["SegEveryJob", "SegEveryOutcome", "planes_to_segment"]

#: What the widget offers when the object detector's file is missing (its own words).
NO_DETECTOR_CHOICES = (
    f'choose the Detector "{next(k for k, v in DETECTORS.items() if v == "grid")}" or '
    f'"{next(k for k, v in DETECTORS.items() if v == "file")}", or see Details for where '
    "to put the file"
)
#: The decoders' names as the widget shows them, by the core's names.
DECODER_LABELS = {value: name for name, value in DECODERS.items() if value != "auto"}

# Jobs started without a widget (the menu command) are kept alive here until they finish.
_running_jobs: set[SegEveryJob] = set()


@dataclass(frozen=True)
class SegEveryOutcome:
    """The end of a run: ``labels`` and ``features`` when objects were found."""

    state: str  # "done", "empty", "cancelled" or "failed"
    message: str
    labels: np.ndarray | None = None
    features: pd.DataFrame | None = None
    #: The full text behind a short ``message`` (an error's explanation), or "".
    details: str = ""


class SegEveryJob:
    """One SegEvery run on an image layer, in a napari thread worker.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the result layer is added.
    image : napari.layers.Image
        The image; its data, contrast limits and the planes are read when the job is made.
        For a multiscale image, the level ``settings.level``.
    settings : SegEverySettings
        Detector, thresholds, tiling and level.
    on_finished : callable, optional
        Called on the GUI thread with the job once it has ended in any way.
    on_progress : callable, optional
        Called on the GUI thread as ``on_progress(text, done, total)`` with what the
        activity dock's bars show (plane k of n, finding objects or decoding, tile k of
        n), for the widget's own progress row.

    Examples
    --------
    >>> settings = SegEverySettings(detector="grid")
    >>> job = SegEveryJob(viewer, viewer.layers["cell"], settings)  # doctest: +SKIP
    >>> job.start()  # doctest: +SKIP
    >>> job.result_layer  # the Labels layer, once finished  # doctest: +SKIP
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        image: Image,
        settings: SegEverySettings,
        on_finished: Callable[[SegEveryJob], None] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.viewer = viewer = unproxied(viewer)
        self.image = image = unproxied(image)
        self.settings = settings
        self.planes = planes_to_segment(viewer, image, settings.all_planes, settings.level)
        self.outcome: SegEveryOutcome | None = None
        self.result_layer: napari.layers.Labels | None = None
        self.tracks_layer: napari.layers.Tracks | None = None
        self.tiles_encoded = 0
        self._skipped: list[str] = []
        #: What the planes' NaN pixels became (said once, with the outcome).
        self._non_finite = ""
        self._data = level_data(image, settings.level)  # PlaneError for a missing level
        self._shape = self.planes[0].shape if image.multiscale else spatial_shape(image)
        self._tiles = [self._tile_count(plane) for plane in self.planes]
        self._contrast_limits = model_contrast_limits(image)
        self._link_axis = self._check_link(settings)
        self._on_finished = on_finished
        self._on_progress = on_progress
        self._cancel = threading.Event()
        self._closed = False
        self._bar: cancelable_progress | None = None
        self._plane_bar: progress | None = None
        self._worker: Any = None

    @property
    def running(self) -> bool:
        return self._worker is not None and self.outcome is None

    def start(self) -> None:
        """Start the run in a thread worker; the result layer is added when it ends."""
        # Two flat bars: napari 0.9's nested bars (nest_under) crash with PyQt6. Both are
        # made here, on the GUI thread: creating a bar processes Qt events.
        self._bar = cancelable_progress(
            total=len(self.planes),
            desc=f"SegEvery: {self.image.name}",
            cancel_callback=self.cancel,
        )
        name, _, _, total = self._phase(0, 0, self._tiles[0])
        self._plane_bar = progress(total=total, desc=f"SegEvery: {name}")
        self._worker = stoppable_worker(
            self._segment_planes, on_quit=self.close, _ignore_errors=True
        )
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.yielded.connect(self._on_plane_done)
        self._worker.returned.connect(self._on_returned)
        self._worker.errored.connect(self._on_errored)
        _running_jobs.add(self)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the run as soon as possible; nothing is added to the viewer."""
        self._cancel.set()

    def close(self) -> None:
        """napari (or the widget) is closing: cancel, and say nothing when the run ends."""
        self._closed = True
        self._on_finished = self._on_progress = None
        self.cancel()

    def _check_link(self, settings: SegEverySettings) -> int | None:
        """The axis to link along, or None when the objects are not linked."""
        if settings.link == "off" or not settings.all_planes or len(self.planes) < 2:
            return None
        stack = [axis for axis, index in enumerate(self.planes[0].fixed) if index is not None]
        axis = stack[-1] if settings.link_axis is None else int(settings.link_axis)
        if axis not in stack:
            raise ValueError(
                f"Cannot link along axis {axis}: the slices of {self.image.name!r} are taken "
                f"along axes {stack} (the axes that are not displayed)."
            )
        return axis

    def _tile_count(self, plane: Plane) -> int:
        """Tiles ``segment_everything`` will cut ``plane`` into; 0 when it will not tile."""
        settings = self.settings
        grid = TileGrid(plane.size, settings.tile_shape, settings.halo)  # checks the settings
        if not settings.tiling or grid.is_single or not needs_tiling(plane.size):
            return 0
        return len(grid)

    def _segment_planes(self) -> Generator[int, None, SegEveryOutcome]:
        prepare_torch_import()
        from napari_mobilesam.segevery.box_decoders import load_box_decoder
        from napari_mobilesam.stacks.planes import PlaneRun

        settings = self.settings
        labels = np.zeros(self._shape, dtype=np.int32)
        tables, notes = [], []
        cancelled = SegEveryOutcome("cancelled", "SegEvery was cancelled; nothing was added.")
        try:
            predictor = new_predictor()
            # Resolved once per run; its note is said once, not once per plane.
            box_decoder = None if settings.grid else load_box_decoder(settings.decoder)
            run = PlaneRun(
                self._read_plane,
                len(self.planes),
                settings,
                predictor=predictor,
                out=lambda number: labels[self.planes[number].index],
                progress=self._report,
                box_decoder=None if box_decoder is None else replace(box_decoder, message=""),
            )
            for segmented in run:
                if segmented.skipped:
                    self._skipped.append(segmented.message)
                else:
                    self.tiles_encoded += segmented.tiles_encoded
                    tables.append(plane_features(segmented, self.planes[segmented.number]))
                    if segmented.message and segmented.message not in notes:
                        notes.append(segmented.message)
                yield segmented.number + 1
        except Cancelled:
            return cancelled
        except expected_errors() as exc:
            message = error_line("SegEvery", exc, NO_DETECTOR_CHOICES)
            return SegEveryOutcome("failed", message, details=str(exc))
        features = pd.concat(tables, ignore_index=True) if tables else None
        found = 0 if features is None else len(features)
        linked = ""
        if self._link_axis is not None and found:
            try:
                labels, features = link_features(
                    labels,
                    features,
                    self.planes[0],
                    self._link_axis,
                    settings.link,
                    self._raise_if_cancelled,
                    settings.link_options.rules(),
                    tuple(self.image.scale),
                )
            except Cancelled:
                return cancelled
            kind = "3-D objects" if settings.link == "z" else "tracks"
            linked = f" linked into {len(features)} {kind} along axis {self._link_axis}"
        note = decoder_note(box_decoder, settings.decoder, DECODER_LABELS)
        message = outcome_message(self.image.name, found, notes, note, self._skipped, linked)
        if any(self._tiles) and found:
            message += f" {self.tiles_encoded} tile embeddings were computed."
        if self._non_finite:
            message = f"Some pixels are NaN or infinite (see Details). {message}"
        if not found:
            return SegEveryOutcome("empty", message, details=self._non_finite)
        return SegEveryOutcome("done", message, labels, features, self._non_finite)

    def _read_plane(self, number: int) -> tuple[Any, Any]:
        """Plane ``number`` for the core, with the layer's contrast limits: lazy when it is
        tiled (read tile by tile), else read; the core converts it once. A blank plane of
        several is skipped (one alone gets the core's message)."""
        self._raise_if_cancelled()
        plane = self.planes[number]
        if self._tiles[number]:
            return plane.lazy(self._data), self._contrast_limits
        image = plane.take(self._data)
        if not self._non_finite:
            self._non_finite = non_finite_note(image)
        if len(self.planes) > 1 and not has_contrast(image):
            raise PlaneSkipped(f"{plane.describe()}: no contrast, nothing to segment")
        return image, self._contrast_limits

    def _raise_if_cancelled(self) -> None:
        if self._cancel.is_set() or (self._bar is not None and self._bar.is_canceled):
            raise Cancelled

    def _report(self, number: int, done: int, total: int) -> None:
        self._raise_if_cancelled()
        self._show_plane_progress(number, done, total)

    # ------------------------------------------------------------ GUI thread
    def _phase(self, number: int, done: int = 0, total: int = 0) -> tuple[str, str, int, int]:
        """Plane ``number``'s step (see :func:`plane_phase`), with the plane if several."""
        tiles = self._tiles[number] if number < len(self._tiles) else 0
        name, line, *count = plane_phase(tiles, self.settings.grid, done, total)
        if len(self.planes) > 1:
            where = f"plane {number + 1} of {len(self.planes)}"
            name, line = f"{name} ({where})", f"{where}: {line}"
        return name, line, *count

    def _show_progress(self, line: str, done: int, total: int) -> None:
        if self._on_progress is not None:
            self._on_progress(line, done, total)

    @ensure_main_thread
    def _show_plane_progress(self, number: int, done: int, total: int) -> None:
        bar = self._plane_bar
        if bar is None or self._closed:
            return
        name, line, done, total = self._phase(number, done, total)
        # First: napari's bar processes Qt events, so the run may end inside its calls.
        self._show_progress(line, done, total)
        description = f"SegEvery: {name}"
        if bar.total != total:  # a new phase
            bar.total = total
        bar.update(done - bar.n)
        # set_description processes Qt events: only at a new phase, not at every step.
        if self._plane_bar is bar and bar.desc.rstrip(": ") != description:
            bar.set_description(description)

    def _on_plane_done(self, planes_done: int) -> None:
        # set_description processes Qt events, so the run may end inside these calls.
        if self._closed:
            return
        if (bar := self._bar) is not None:
            bar.update(planes_done - bar.n)
        count = len(self.planes)
        if self._plane_bar is not None and planes_done < count:
            self._show_plane_progress(planes_done, 0, self._tiles[planes_done])
        if count > 1 and planes_done < count:
            self._show_progress(f"{planes_done} of {count} planes done", planes_done, count)

    def _on_returned(self, outcome: SegEveryOutcome) -> None:
        if self._closed:
            self._finish(SegEveryOutcome("cancelled", "napari was closed; nothing was added."))
            return
        if outcome.state == "done" and not layer_in_viewer(self.viewer, self.image):
            outcome = SegEveryOutcome(
                "cancelled", f"{self.image.name!r} was removed during SegEvery; nothing was added."
            )
        if outcome.state == "done":
            # A level's labels get the layer's scale times the level's downsampling.
            layer = labels_for(
                self.image, outcome.labels, f"{self.image.name} objects", self.settings.level
            )
            layer.features = layer_features(outcome.features)
            self.result_layer = self.viewer.add_layer(layer)
            self._add_tracks(outcome, layer)
        self._finish(outcome)
        text = "\n\n".join(part for part in (outcome.message, outcome.details) if part)
        if outcome.state == "failed":
            show_error(text)
        elif outcome.details:
            show_warning(text)
        else:
            show_info(text)

    def _on_worker_finished(self) -> None:
        """A worker napari stopped (its window closed) ends without a result."""
        if self.outcome is None:
            self._finish(SegEveryOutcome("cancelled", "napari was closed; nothing was added."))

    def _add_tracks(self, outcome: SegEveryOutcome, layer: Any) -> None:
        if self.settings.link == "t" and self._link_axis == 0:
            name = f"{self.image.name} tracks"
            self.tracks_layer = add_tracks_layer(
                self.viewer, outcome.labels, outcome.features, layer, name
            )

    def _on_errored(self, exc: Exception) -> None:
        self._finish(SegEveryOutcome("failed", report_bug("SegEvery", exc), details=str(exc)))

    def _finish(self, outcome: SegEveryOutcome) -> None:
        self.outcome = outcome
        for bar in (self._plane_bar, self._bar):
            if bar is not None:
                bar.close()
        self._plane_bar = self._bar = None
        _running_jobs.discard(self)
        if self._on_finished is not None:
            self._on_finished(self)
