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

import itertools
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress, progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from napari_mobilesam._progress import Cancelled
from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import expected_errors
from napari_mobilesam._widgets._model import (
    new_predictor,
)
from napari_mobilesam._widgets._plane import (
    Plane,
    displayed_plane,
    labels_for,
    layer_in_viewer,
    level_data,
    model_contrast_limits,
    spatial_shape,
    unproxied,
)
from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.imaging.tiling import (
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    TileGrid,
    needs_tiling,
)

if TYPE_CHECKING:
    import napari

#: Widget defaults of the tile settings (the core's, as single integers).
TILE_SIZE = int(DEFAULT_TILE_SHAPE[0])
HALO = int(DEFAULT_HALO[0])

DETECTORS = {
    "auto": "auto",
    "MobileSAMv2 ObjectAwareModel": "object_aware",
    "FastSAM": "fastsam",
    "custom YOLO file": "file",
    "grid of points": "grid",
}
DECODERS = {
    "auto (prompt-guided, else MobileSAM)": "auto",
    "MobileSAMv2 prompt-guided": "prompt_guided",
    "MobileSAM (mobile_sam.pt)": "mobile_sam",
}
#: The core tiles only planes with a side longer than 1024 px that one tile does not cover.
TILING = {"auto": True, "off": False}
THIS_PLANE = "this slice"
ALL_PLANES = "all slices"
FEATURE_COLUMNS = ("label", "score", "area", "box_x0", "box_y0", "box_x1", "box_y1")
#: Linking across slices ("all slices" only): the widget's names and the modes of
#: :func:`napari_mobilesam.stacks.linking.link_slices`.
LINKING = {"off": "off", "3-D objects (Z)": "z", "tracks (T)": "t"}
LINKED_COLUMNS = ("label", "first_slice", "last_slice", "volume", "mean_score")

# Jobs started without a widget (the menu command) are kept alive here until they finish.
_running_jobs: set[SegEveryJob] = set()


@dataclass(frozen=True)
class SegEverySettings:
    """What :func:`napari_mobilesam.segment_everything` is asked to do.

    Parameters
    ----------
    detector : str or path
        ``"auto"``, ``"object_aware"``, ``"fastsam"``, ``"grid"`` or the path of an
        ultralytics YOLO ``.pt`` checkpoint.
    decoder : str
        What decodes the boxes: ``"auto"``, ``"prompt_guided"`` or ``"mobile_sam"``; see
        :func:`napari_mobilesam.segevery.box_decoders.load_box_decoder`.
    conf, iou, max_objects, min_area, points_per_side
        Passed to :func:`napari_mobilesam.segment_everything` (``points_per_side`` is
        used by the grid only).
    all_planes : bool
        Segment every plane of a stack, not only the one on screen.
    tiling : bool
        True: planes with a side longer than the model's 1024-pixel input are cut into
        tiles (smaller planes give the untiled result); False: the plane is resized to
        the model's input.
    tile_shape, halo : int
        Tile size and the margin read around each tile (defaults 768 and 128, which
        encode each tile at exactly 1024 pixels).
    level : int
        Resolution level of a multiscale image (0 = full resolution); must be 0 for
        other images.
    link : {"off", "z", "t"}
        With ``all_planes``: link the objects of neighbouring slices along ``link_axis``
        into 3-D objects ("z") or tracks ("t") with
        :func:`napari_mobilesam.stacks.linking.link_slices`; each then has one id through the
        stack, and the features are per object (first and last slice, volume, mean score).
    link_axis : int, optional
        The data axis to link along; None is the innermost axis that is not displayed.
    """

    detector: str | Path = "auto"
    decoder: str = "auto"
    conf: float = 0.4
    iou: float = 0.9
    max_objects: int = 300
    min_area: int = 0
    points_per_side: int = 32
    all_planes: bool = False
    tiling: bool = True
    tile_shape: int = TILE_SIZE
    halo: int = HALO
    level: int = 0
    link: str = "off"
    link_axis: int | None = None


@dataclass(frozen=True)
class SegEveryOutcome:
    """The end of a run: ``labels`` and ``features`` when objects were found."""

    state: str  # "done", "empty", "cancelled" or "failed"
    message: str
    labels: np.ndarray | None = None
    features: pd.DataFrame | None = None


def planes_to_segment(
    viewer: napari.Viewer, image: Image, all_planes: bool, level: int = 0
) -> list[Plane]:
    """The plane on screen, or every plane of the stack along the same displayed axes.

    For a multiscale image the planes are planes of resolution level ``level``.
    """
    shown = displayed_plane(viewer, image, level if image.multiscale else None)
    if not all_planes:
        return [shown]
    stack_axes = [axis for axis, index in enumerate(shown.fixed) if index is not None]
    planes = []
    for position in itertools.product(*(range(shown.shape[axis]) for axis in stack_axes)):
        fixed = list(shown.fixed)
        for axis, index in zip(stack_axes, position, strict=True):
            fixed[axis] = index
        planes.append(Plane(shape=shown.shape, fixed=tuple(fixed)))
    return planes


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
    ) -> None:
        self.viewer = viewer = unproxied(viewer)
        self.image = image = unproxied(image)
        self.settings = settings
        self.planes = planes_to_segment(viewer, image, settings.all_planes, settings.level)
        self.outcome: SegEveryOutcome | None = None
        self.result_layer: napari.layers.Labels | None = None
        self.tiles_encoded = 0
        self._data = level_data(image, settings.level)  # PlaneError for a missing level
        self._shape = self.planes[0].shape if image.multiscale else spatial_shape(image)
        self._tiles = [self._tile_count(plane) for plane in self.planes]
        self._contrast_limits = model_contrast_limits(image)
        self._link_axis = self._check_link(settings)
        self._on_finished = on_finished
        self._cancel = threading.Event()
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
        self._plane_bar = progress(total=0, desc=self._plane_description(0))
        self._worker = create_worker(self._segment_planes, _ignore_errors=True)
        self._worker.yielded.connect(self._on_plane_done)
        self._worker.returned.connect(self._on_returned)
        self._worker.errored.connect(self._on_errored)
        _running_jobs.add(self)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the run as soon as possible; nothing is added to the viewer."""
        self._cancel.set()

    def _check_link(self, settings: SegEverySettings) -> int | None:
        """The axis to link along, or None when the objects are not linked."""
        if settings.link not in ("off", "z", "t"):
            raise ValueError(f"link must be 'off', 'z' or 't', got {settings.link!r}")
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

    # --------------------------------------------------------------- worker
    def _segment_planes(self) -> Generator[int, None, SegEveryOutcome]:
        prepare_torch_import()
        from napari_mobilesam.segevery.pipeline import segment_everything

        expected = expected_errors()
        settings = self.settings
        labels = np.zeros(self._shape, dtype=np.int32)
        tables = []
        skipped = []
        notes = []
        decoder_note = ""
        try:
            predictor = new_predictor()
            decoder = settings.decoder
            if settings.detector != "grid":
                from napari_mobilesam.segevery.box_decoders import load_box_decoder

                # Resolved once per run, not once per plane: offline, "auto" would
                # otherwise try the download again on every plane of a stack.
                box_decoder = load_box_decoder(settings.decoder)
                decoder = box_decoder.decoder or "mobile_sam"
                decoder_note = box_decoder.message
            for number, plane in enumerate(self.planes):
                self._raise_if_cancelled()
                if self._tiles[number]:
                    # Read tile by tile by the core; its contrast limits are the layer's.
                    image, limits = plane.lazy(self._data), self._contrast_limits
                else:
                    try:
                        image = to_rgb_uint8(plane.take(self._data), self._contrast_limits)
                    except ValueError as exc:
                        if len(self.planes) == 1:
                            raise
                        skipped.append(f"{plane.describe()}: {exc}")
                        yield number + 1
                        continue
                    limits = None
                offset = int(labels.max()) if number else 0
                result = segment_everything(
                    image,
                    predictor=predictor,
                    detector=settings.detector,
                    decoder=decoder,
                    conf=settings.conf,
                    iou=settings.iou,
                    max_objects=settings.max_objects,
                    min_area=settings.min_area,
                    points_per_side=settings.points_per_side,
                    progress=lambda done, total, number=number: self._report(number, done, total),
                    contrast_limits=limits,
                    tiling=settings.tiling,
                    tile_shape=settings.tile_shape,
                    halo=settings.halo,
                    # Written straight into this plane of the stack, tile by tile.
                    out=labels[plane.index],
                )
                self.tiles_encoded += result.tiles_encoded
                tables.append(self._number_plane(labels, plane, result, offset))
                if result.message and result.message not in notes:
                    notes.append(result.message)
                yield number + 1
        except Cancelled:
            return SegEveryOutcome("cancelled", "SegEvery was cancelled; nothing was added.")
        except expected as exc:
            return SegEveryOutcome("failed", f"SegEvery failed: {exc}")
        features = pd.concat(tables, ignore_index=True) if tables else None
        linked = ""
        found = 0 if features is None else len(features)
        if self._link_axis is not None and features is not None and not features.empty:
            try:
                labels, features = self._link(labels, features)
            except Cancelled:
                return SegEveryOutcome("cancelled", "SegEvery was cancelled; nothing was added.")
            kind = "3-D objects" if settings.link == "z" else "tracks"
            linked = f" linked into {len(features)} {kind} along axis {self._link_axis}"
        note = f" Skipped {len(skipped)} plane(s): {'; '.join(skipped)}" if skipped else ""
        if features is None or features.empty:
            reason = f" {notes[0]}" if len(notes) == 1 else ""
            reason += f" {decoder_note}" if decoder_note else ""
            return SegEveryOutcome(
                "empty", f"SegEvery found no objects in {self.image.name!r}.{reason}{note}"
            )
        message = f"SegEvery found {found} objects in {self.image.name!r}{linked}.{note}"
        # Notes of planes with objects, e.g. which decoder was used.
        others = (n for n in notes if not n.startswith("No objects"))
        message = " ".join([message, *others, *([decoder_note] if decoder_note else [])])
        if any(self._tiles):
            message += f" {self.tiles_encoded} tile embeddings were computed."
        return SegEveryOutcome("done", message, labels, features)

    def _number_plane(
        self, labels: np.ndarray, plane: Plane, result: Any, offset: int
    ) -> pd.DataFrame:
        """Shift one plane's ids (written into ``labels``) past the ones used so far, and
        return its feature table."""
        if offset:
            written = labels[plane.index]
            written[written > 0] += offset
        ids = np.arange(1, len(result.scores) + 1) + offset
        boxes = np.asarray(result.boxes, dtype=float).reshape(-1, 4)
        table = pd.DataFrame(
            {
                # napari maps feature rows to label values through the "index" column.
                "index": ids,
                "label": ids,
                "score": np.asarray(result.scores, dtype=float),
                "area": np.asarray(result.areas, dtype=np.int64),
                "box_x0": boxes[:, 0],
                "box_y0": boxes[:, 1],
                "box_x1": boxes[:, 2],
                "box_y1": boxes[:, 3],
            }
        )
        for axis, index in enumerate(plane.fixed):
            if index is not None:
                table[f"axis_{axis}"] = index
        return table

    def _link(self, labels: np.ndarray, features: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """Link the objects of neighbouring slices along the link axis, separately at each
        position of the other stack axes; return the labels and per-object features."""
        from napari_mobilesam.stacks.linking import link_slices

        axis = self._link_axis
        plane = self.planes[0]
        others = [a for a, index in enumerate(plane.fixed) if index is not None and a != axis]
        score_of = dict(zip(features["label"], features["score"], strict=True))
        out = np.zeros_like(labels)
        tables = []
        for position in itertools.product(*(range(labels.shape[a]) for a in others)):
            index = [slice(None)] * labels.ndim
            for a, i in zip(others, position, strict=True):
                index[a] = i
            kept = [a for a in range(labels.ndim) if a not in others]
            view = np.moveaxis(labels[tuple(index)], kept.index(axis), 0)
            scores = [
                {int(i): score_of[int(i)] for i in np.unique(view[s]) if i}
                for s in range(len(view))
            ]
            result = link_slices(
                view,
                mode=self.settings.link,
                scores=scores,
                progress=lambda done, total: self._raise_if_cancelled(),
            )
            offset = int(out.max())
            linked = result.labels.copy()
            linked[linked > 0] += offset
            np.moveaxis(out[tuple(index)], kept.index(axis), 0)[...] = linked
            table = result.table.copy()
            for column in ("label", "parent", "merged_into"):
                if column in table:
                    table[column] = np.where(table[column] > 0, table[column] + offset, 0)
            for a, i in zip(others, position, strict=True):
                table[f"axis_{a}"] = i
            tables.append(table)
        table = pd.concat(tables, ignore_index=True)
        # napari maps feature rows to label values through the "index" column.
        table.insert(0, "index", table["label"].to_numpy())
        return out, table

    def _raise_if_cancelled(self) -> None:
        if self._cancel.is_set() or (self._bar is not None and self._bar.is_canceled):
            raise Cancelled

    def _report(self, number: int, done: int, total: int) -> None:
        self._raise_if_cancelled()
        self._show_plane_progress(number, done, total)

    # ------------------------------------------------------------ GUI thread
    def _plane_description(self, number: int, done: int = 0, total: int = 0) -> str:
        of_plane = f" (plane {number + 1} of {len(self.planes)})" if len(self.planes) > 1 else ""
        tiles = self._tiles[number] if number < len(self._tiles) else 0
        if not tiles:
            return f"SegEvery: prompts of plane {number + 1} of {len(self.planes)}"
        finding = total > tiles or (total == 0 and self.settings.detector != "grid")
        if finding and done <= tiles:
            # Discovery first (one step per tile), then decoding (one per tile used).
            return f"SegEvery: finding objects, tile {max(done, 1)} of {tiles}{of_plane}"
        decoded, to_decode = (done - tiles, total - tiles) if total > tiles else (done, total)
        return f"SegEvery: decoding, tile {max(decoded, 1)} of {max(to_decode, 1)}{of_plane}"

    @ensure_main_thread
    def _show_plane_progress(self, number: int, done: int, total: int) -> None:
        bar = self._plane_bar
        if bar is None:
            return
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if self._tiles[number] and self._plane_bar is bar:
            description = self._plane_description(number, done + 1, total)
            if done < total and bar.desc != description:
                bar.set_description(description)

    def _on_plane_done(self, planes_done: int) -> None:
        # set_description processes Qt events, so the run may end inside these calls.
        if (bar := self._bar) is not None:
            bar.update(planes_done - bar.n)
        if (plane_bar := self._plane_bar) is not None and planes_done < len(self.planes):
            plane_bar.set_description(self._plane_description(planes_done))

    def _on_returned(self, outcome: SegEveryOutcome) -> None:
        if outcome.state == "done" and not layer_in_viewer(self.viewer, self.image):
            outcome = SegEveryOutcome(
                "cancelled", f"{self.image.name!r} was removed during SegEvery; nothing was added."
            )
        if outcome.state == "done":
            # A level's labels get the layer's scale times the level's downsampling.
            layer = labels_for(
                self.image, outcome.labels, f"{self.image.name} objects", self.settings.level
            )
            layer.features = outcome.features
            self.result_layer = self.viewer.add_layer(layer)
        self._finish(outcome)
        if outcome.state == "failed":
            show_error(outcome.message)
        else:
            show_info(outcome.message)

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker has already shown the error with its traceback.
        self._finish(SegEveryOutcome("failed", f"SegEvery failed: {exc}"))

    def _finish(self, outcome: SegEveryOutcome) -> None:
        self.outcome = outcome
        for bar in (self._plane_bar, self._bar):
            if bar is not None:
                bar.close()
        self._plane_bar = self._bar = None
        _running_jobs.discard(self)
        if self._on_finished is not None:
            self._on_finished(self)
