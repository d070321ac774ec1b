"""The SAM side of the curate widget: edit (refine) an object with clicks, split one in two.

The image of the plane on screen is encoded once (a large plane tile by tile, only the tiles
that the prompts need) by a predictor on the session's shared model
(:func:`~napari_mobilesam._widgets._model.new_predictor`), in a thread worker; the result is
written (or previewed) in the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.qt.threading import create_worker

from napari_mobilesam._widgets._curate_preview import preview_layer
from napari_mobilesam._widgets._label_ids import NextLabelId
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    displayed_plane,
    model_contrast_limits,
)
from napari_mobilesam.curation.prompted import refine_object, split_object
from napari_mobilesam.imaging.tiling import needs_tiling

if TYPE_CHECKING:
    from napari.layers import Image


@dataclass
class EditState:
    """The object being edited: its id, the plane it is on, the clicks so far."""

    label: int
    plane: Plane
    xy: list[tuple[float, float]] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    result: np.ndarray | None = None  # the plane's labels with the refined object
    source: np.ndarray | None = None  # the plane's labels it was computed from
    generation: int = 0


class SamEdits:
    """Edit and split with SAM; mixed into
    :class:`~napari_mobilesam._widgets._curate.CurateController`."""

    image: Image | None
    labels: Labels | None

    def __init__(self) -> None:
        self.editing: EditState | None = None
        self.preview: Labels | None = None
        self._predictor: Any = None
        self._workers: set = set()

    @property
    def busy(self) -> bool:
        """Whether SAM is running (a split or an edit preview)."""
        return bool(self._workers)

    # ------------------------------------------------------------------ split
    def split(self, label: int, first: np.ndarray, second: np.ndarray) -> None:
        """Split ``label`` on the slice shown between the clicks ``first`` and ``second``
        (data coordinates), in a thread worker; written as one undo step."""
        plane = displayed_plane(self.viewer, self._require_labels())
        xy = plane.to_xy(np.stack([first, second]))
        region = plane.take(self.labels.data).copy()
        source = self._image_source(plane)
        new = NextLabelId().next_id(self.labels)  # above every id of the layer, all slices
        self.set_status(f"Splitting object {label} with SAM...")

        def work() -> np.ndarray:
            return split_object(region, label, xy, self._sam(*source), new_label=new)

        def done(result: np.ndarray) -> None:
            self._check_unchanged(plane, region)
            message = f"Split {label} into {label} and {new}."
            self.apply(lambda _: result, [label, new], message, plane=plane)

        self._start(work, done, "Split")

    # ------------------------------------------------------------------- edit
    def start_edit(self, label: int, position: np.ndarray) -> None:
        """Pick object ``label`` to edit; SAM's fit of its mask is previewed at once."""
        plane = displayed_plane(self.viewer, self._require_labels())
        self.editing = EditState(label, plane)
        self._refresh_edit()

    def add_edit_click(self, position: np.ndarray, background: bool) -> None:
        """A foreground (or ``background``) click refining the object being edited."""
        state = self.editing
        if not state.plane.contains(position[None])[0]:
            raise PlaneError("That click is on another slice: go back to the edited slice.")
        x, y = state.plane.to_xy(position[None])[0]
        state.xy.append((x, y))
        state.kinds.append(0 if background else 1)
        self._refresh_edit()

    def _refresh_edit(self) -> None:
        state = self.editing
        state.generation += 1
        state.result = None
        generation = state.generation
        region = state.plane.take(self.labels.data).copy()
        source = self._image_source(state.plane)
        xy = np.array(state.xy).reshape(-1, 2)
        kinds = np.array(state.kinds, dtype=np.int64)
        clicks = f"{int(kinds.sum())} fg, {int((kinds == 0).sum())} bg clicks"
        self.set_status(f"Object {state.label} ({clicks}): SAM is working...")

        def work() -> np.ndarray:
            return refine_object(region, state.label, self._sam(*source), xy, kinds)

        def done(result: np.ndarray) -> None:
            if self.editing is not state or state.generation != generation:
                return  # a newer click, or the edit was cancelled
            state.result, state.source = result, region
            self._show_preview(state)
            self.set_status(
                f"Object {state.label} ({clicks}): Ctrl+Enter accepts; click to refine "
                "(Shift: background); Escape stops."
            )

        self._start(work, done, "Edit")

    def accept_edit(self) -> None:
        """Replace the edited object by its preview, under the same id (one undo step)."""
        state = self.editing
        if state is None:
            raise PlaneError("Click an object to edit first.")
        if state.result is None:
            raise PlaneError("SAM is still working on the edit: accept once it is shown.")
        result, label = state.result, state.label
        self._check_unchanged(state.plane, state.source)
        self.forget_edit()
        self.apply(lambda _: result, [label], f"Replaced object {label}.", plane=state.plane)

    def forget_edit(self) -> None:
        self.editing = None
        if self.preview is not None and self._in_viewer(self.preview):
            self.viewer.layers.remove(self.preview)
        self.preview = None

    def _show_preview(self, state: EditState) -> None:
        labels = self.labels
        if self.preview is None or not self._in_viewer(self.preview):
            empty = np.zeros(labels.data.shape, np.uint8)
            self.preview = preview_layer(empty, f"{labels.name} edit preview", labels, "yellow")
            self.preview.contour = 2
            self.viewer.add_layer(self.preview)
            self._ready_for_clicks()
        data = np.zeros(labels.data.shape, np.uint8)
        data[state.plane.data_indices(state.result == state.label)] = 1
        self.preview.data = data

    def _check_unchanged(self, plane: Plane, before: np.ndarray) -> None:
        """Refuse to write SAM's result over labels edited since it was computed."""
        if not np.array_equal(plane.take(self._require_labels().data), before):
            raise PlaneError(
                "The labels changed while SAM worked, so nothing was written: try again."
            )

    # ----------------------------------------------------------------- engine
    def _image_source(self, plane: Plane) -> tuple[Any, tuple | None, bool]:
        """(the image plane, contrast limits, tiled) that SAM sees, checked on the GUI
        thread."""
        image = self.image
        if image is None or not self._in_viewer(image):
            raise PlaneError("Choose the image layer SAM should see.")
        image_plane = displayed_plane(self.viewer, image)
        if image_plane.size != plane.size:
            raise PlaneError(
                f"The image {image.name!r} ({image_plane.size}) and the labels "
                f"({plane.size}) differ in size: choose the image the labels belong to."
            )
        tiled = needs_tiling(plane.size)
        data = image_plane.lazy(image.data) if tiled else image_plane.take(image.data)
        return data, model_contrast_limits(image), tiled

    def _sam(self, data: Any, limits: tuple | None, tiled: bool) -> Any:
        """The predictor holding ``data`` (a thread worker calls this)."""
        if self._predictor is None:
            from napari_mobilesam._widgets._model import new_predictor

            self._predictor = new_predictor()
        if not tiled:
            self._predictor.set_image(data, limits)
            return self._predictor
        from napari_mobilesam.segany.tiled import TiledSegAnyPredictor

        sam = TiledSegAnyPredictor(self._predictor)
        sam.set_image(data, limits)
        return sam

    def _start(self, work: Any, done: Any, what: str) -> None:
        worker = create_worker(work, _ignore_errors=True)
        worker.returned.connect(lambda result: self.run_safely(lambda: done(result), what))
        worker.errored.connect(lambda error: self.run_safely(self._raise(error), what))
        worker.finished.connect(lambda: self._workers.discard(worker))
        self._workers.add(worker)
        worker.start()

    @staticmethod
    def _raise(error: BaseException) -> Any:
        def again() -> None:
            raise error

        return again
