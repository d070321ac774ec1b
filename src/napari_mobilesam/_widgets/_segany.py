"""SegAny: segment one object at a time from point and box prompts, with a live preview.

:class:`SegAnyController` holds the behaviour and talks to napari layers only, so tests and
scripts can drive it through layer data; the dock widget around it is
:class:`~napari_mobilesam._widgets._segany_widget.SegAnyWidget`.

Prompt rules (also in the README):

- Points layer ``"<image> prompts"``: a click adds a foreground point, Shift-click a
  background point; ``B`` (with the points layer selected) or the widget's "Click adds"
  switch swaps what a plain click adds. Foreground points are lime, background magenta.
- Shapes layer ``"<image> boxes"``: each rectangle is one object.
- No rectangle: the points make one object; one point gives three candidate masks (the
  best is shown, the others can be picked), several points give one mask.
  One rectangle: it and the points make one object (one mask).
  Several rectangles: each is its own object, decoded in one batch; points are not used.

Large planes (a side longer than the model's 1024-pixel input) are segmented tile by tile
(:mod:`napari_mobilesam.segany.tiled`): the prompts of an object are decoded on the tile
that holds them with the most margin, encoded at full resolution the first time it is
used; a box larger than a tile is decoded on a coarser view. Multiscale (pyramid) layers
are segmented at a chosen level (default 0, full resolution, tiled); prompts are in the
layer's data coordinates (level 0) and are scaled to the level, and the preview and output
labels have the level's shape, scaled to overlay the image.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils.events import EmitterGroup, Event
from napari.utils.notifications import show_error

from napari_mobilesam._widgets._label_ids import NextLabelId
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    displayed_plane,
    labels_for,
    layer_in_viewer,
    level_data,
    model_contrast_limits,
    spatial_shape,
    unproxied,
)
from napari_mobilesam._widgets._preview_canvas import PreviewCanvas, describe_preview
from napari_mobilesam._widgets._prompt_layers import (
    BACKGROUND,
    FOREGROUND,
    PROMPT_FEATURE,
    PlanePrompts,
    collect_prompts,
    new_boxes_layer,
    new_points_layer,
    remove_prompts,
)
from napari_mobilesam._widgets._propagate import PROPAGATE_KEY, PropagationJob, Propagator
from napari_mobilesam._widgets._segany_decoding import (
    Decoded,
    DecodeRequest,
    Preview,
    PreviewEngine,
)
from napari_mobilesam.imaging.tiling import (
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    Tile,
    TileGrid,
    needs_tiling,
)
from napari_mobilesam.segany.prompts import prompt_tiles
from napari_mobilesam.segany.tiled import describe_tile

if TYPE_CHECKING:
    import napari


ACCEPT_KEY = "Control-Enter"
BACKGROUND_KEY = "B"
NEW_LAYER = "(new layer)"

_FINISHED_EDITS = {"added", "removed", "changed"}


class SegAnyController:
    """The SegAny behaviour on a napari viewer, without Qt widgets.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers are segmented.

    Events
    ------
    ``events.status`` (``value``: a line for people), ``events.layers`` (the image, prompt
    or output layer changed), ``events.preview`` (a new preview or candidate),
    ``events.click_kind`` (what a plain click adds changed).

    Examples
    --------
    >>> controller = SegAnyController(viewer)  # doctest: +SKIP
    >>> controller.set_image(viewer.layers["cell"])  # doctest: +SKIP
    >>> controller.points.add([120, 80])  # preview in a thread worker  # doctest: +SKIP
    >>> controller.preview_ready  # once True, accept() writes the preview  # doctest: +SKIP
    True
    >>> controller.accept()  # doctest: +SKIP
    1
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        viewer = self.viewer = unproxied(viewer)
        self.events = EmitterGroup(
            source=self,
            status=Event,
            layers=Event,
            preview=Event,
            click_kind=Event,
            propagation=Event,
        )
        self.image: Image | None = None
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self.output: Labels | None = None
        self.overwrite = False
        self.background_clicks = False
        self.tile_size = DEFAULT_TILE_SHAPE[0]
        self.halo = DEFAULT_HALO[0]
        self.level = 0
        #: The axis Propagate walks along; None: the slider moved last (3-D: the depth).
        self.stack_axis: int | None = None
        self.preview: Preview | None = None
        self.status = ""
        self._generation = 0
        self._image_version = 0
        self._engine = PreviewEngine()
        self._canvas = PreviewCanvas(viewer)
        #: Hands out the ids of accepted and propagated objects.
        self.label_ids = NextLabelId()
        self._workers: set = set()
        self._shift_click = False
        self.propagator = Propagator(self)

        viewer.dims.events.current_step.connect(self._on_view_changed)
        viewer.dims.events.ndisplay.connect(self._on_view_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        controller = weakref.ref(self)

        def accept_key(_viewer: napari.Viewer) -> None:
            if (alive := controller()) is not None:
                alive.accept()

        def propagate_key(_viewer: napari.Viewer) -> None:
            if (alive := controller()) is not None:
                alive.propagate()

        viewer.bind_key(ACCEPT_KEY, accept_key, overwrite=True)
        viewer.bind_key(PROPAGATE_KEY, propagate_key, overwrite=True)

    # ------------------------------------------------------------------ layers
    def set_image(self, layer: Image | None) -> None:
        """Segment ``layer``: find or create its prompt layers and select the points layer."""
        layer = unproxied(layer)
        if layer is self.image:
            return
        if self.image is not None:
            self.image.events.data.disconnect(self._on_image_changed)
            self.image.events.contrast_limits.disconnect(self._on_image_changed)
        self.clear_preview()
        self.image = layer
        self.level = 0
        self._image_version += 1
        if layer is None:
            self.events.layers()
            self.refresh()
            return
        layer.events.data.connect(self._on_image_changed)
        layer.events.contrast_limits.connect(self._on_image_changed)
        self.output = self._find(Labels, self._output_name(layer))
        points = self._find(Points, f"{layer.name} prompts") or new_points_layer(
            self.viewer, layer
        )
        self.set_points_layer(points)
        self.set_boxes_layer(
            self._find(Shapes, f"{layer.name} boxes") or new_boxes_layer(self.viewer, layer)
        )
        self.viewer.layers.selection.active = self.points
        self.points.mode = "add"
        self.events.layers()
        self.refresh()

    def set_points_layer(self, layer: Points | None) -> None:
        """Use ``layer``'s points as point prompts."""
        layer = unproxied(layer)
        if layer is self.points:
            return
        if self.points is not None:
            self.points.events.data.disconnect(self._on_points_changed)
            self.points.events.features.disconnect(self._on_prompts_changed)
            self.points.bind_key(BACKGROUND_KEY, None)
            if self._on_points_press in self.points.mouse_drag_callbacks:
                self.points.mouse_drag_callbacks.remove(self._on_points_press)
        self.points = layer
        if layer is not None:
            layer.events.data.connect(self._on_points_changed)
            layer.events.features.connect(self._on_prompts_changed)
            layer.bind_key(BACKGROUND_KEY, self._toggle_click_kind, overwrite=True)
            layer.mouse_drag_callbacks.insert(0, self._on_points_press)
            self._apply_click_kind()
        self.events.layers()
        self.refresh()

    def set_boxes_layer(self, layer: Shapes | None) -> None:
        """Use ``layer``'s rectangles as box prompts."""
        layer = unproxied(layer)
        if layer is self.boxes:
            return
        if self.boxes is not None:
            self.boxes.events.data.disconnect(self._on_boxes_changed)
        self.boxes = layer
        if layer is not None:
            layer.events.data.connect(self._on_boxes_changed)
        self.events.layers()
        self.refresh()

    def set_output_layer(self, layer: Labels | None) -> None:
        """Write accepted objects into ``layer``; None creates ``"<image> labels"``."""
        self.output = unproxied(layer)
        self.events.layers()

    def set_tiling(self, tile_size: int | None = None, halo: int | None = None) -> None:
        """Tile size and halo (pixels) for planes larger than the model's 1024-pixel input.

        Checked when the next preview is computed: an invalid pair (a halo over half the
        tile) is reported in the status line.
        """
        if tile_size is not None:
            self.tile_size = int(tile_size)
        if halo is not None:
            self.halo = int(halo)
        self.refresh()

    def set_level(self, level: int) -> None:
        """Segment ``level`` of a multiscale image (0 = full resolution).

        The output becomes ``"<image> labels"`` for level 0 and ``"<image> labels level N"``
        for level N, shaped like that level.
        """
        level = int(level)
        if self.image is None or level == self.level:
            return
        level_data(self.image, level)  # raises PlaneError for a level that does not exist
        self.clear_preview()
        self.level = level
        self.output = self._find(Labels, self._output_name(self.image))
        self.events.layers()
        self.refresh()

    def _output_name(self, image: Image) -> str:
        if self.level:
            return f"{image.name} labels level {self.level}"
        return f"{image.name} labels"

    def _find(self, kind: type, name: str) -> Any:
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            return self.viewer.layers[name]
        return None

    # ------------------------------------------------------------- click kind
    def set_background_clicks(self, background: bool) -> None:
        """Make a plain click add background points (True) or foreground points (False)."""
        self.background_clicks = bool(background)
        self._apply_click_kind()
        self.events.click_kind(value=self.background_clicks)

    def _toggle_click_kind(self, _layer: Points) -> None:
        self.set_background_clicks(not self.background_clicks)

    def _apply_click_kind(self) -> None:
        if self.points is None or PROMPT_FEATURE not in self.points.features:
            return
        background = self.background_clicks != self._shift_click
        kind = BACKGROUND if background else FOREGROUND
        if self.points.feature_defaults[PROMPT_FEATURE].iloc[0] != kind:
            self.points.feature_defaults = {PROMPT_FEATURE: kind}

    def _on_points_press(self, layer: Points, event: Any) -> None:
        # napari adds the point on release, using feature_defaults; Shift flips the kind
        # for this click only, and the 'added' data event restores it.
        self._shift_click = layer.mode == "add" and "Shift" in event.modifiers
        self._apply_click_kind()

    # ----------------------------------------------------------------- events
    def _on_points_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if action not in _FINISHED_EDITS:
            return
        if action == "added" and self._shift_click:
            self._shift_click = False
            self._apply_click_kind()
        self.refresh()

    def _on_boxes_changed(self, event: Any) -> None:
        if str(getattr(event, "action", "changed")) in _FINISHED_EDITS:
            self.refresh()

    def _on_prompts_changed(self, _event: Any = None) -> None:
        self.refresh()

    def _on_image_changed(self, _event: Any = None) -> None:
        self._image_version += 1
        self.refresh()

    def _on_view_changed(self, _event: Any = None) -> None:
        self.refresh()

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        if removed is self.image:
            self.set_image(None)
        if removed is self.points:
            self.set_points_layer(None)
        if removed is self.boxes:
            self.set_boxes_layer(None)
        if removed is self.output:
            self.set_output_layer(None)
        self._canvas.forget(removed)

    # ---------------------------------------------------------------- preview
    @property
    def preview_layer(self) -> Labels | None:
        """The ``"<image> preview"`` labels layer, once a preview was shown."""
        return self._canvas.layer

    def collect_prompts(self, plane: Plane) -> PlanePrompts:
        """The prompts of the prompt layers that lie on ``plane`` of the image."""
        return collect_prompts(self.points, self.boxes, self.image, plane)

    def refresh(self) -> None:
        """Recompute the preview from the current prompts, in a thread worker."""
        self._generation += 1
        prepared = self._request()
        if prepared is None:
            return
        request, grid = prepared
        if request.tiling is None:
            to_encode = [] if self._engine.is_embedded(request.image_key) else [None]
        else:
            to_encode = self._engine.needs_encoding(request)
        worker = create_worker(
            self._engine.run,
            request,
            lambda: self._generation == request.generation,
            _progress={"total": 0, "desc": "MobileSAM: image embedding"} if to_encode else None,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda decoded: self._on_decoded(request, decoded))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(lambda: self._workers.discard(worker))
        self._workers.add(worker)
        self.set_status(self._encoding_status(request, grid, to_encode))
        worker.start()

    def _request(self) -> tuple[DecodeRequest, TileGrid | None] | None:
        """The preview request of the prompts on screen (and the tile grid of a large
        plane); None, with the reason in the status line, when there is nothing to decode."""
        if self.image is None or not layer_in_viewer(self.viewer, self.image):
            self._stop_preview("Choose an image layer.")
            return None
        try:
            plane = self._plane()
            prompts = self.collect_prompts(plane)
        except PlaneError as exc:
            self._stop_preview(str(exc))
            return None
        if prompts.empty:
            self._stop_preview(
                "Click on an object to add a point, or draw a rectangle in the boxes layer."
            )
            return None
        tiling, tiles, grid = None, (), None
        if needs_tiling(plane.size):
            tiling = (self.tile_size, self.halo)
            try:
                grid = TileGrid(plane.size, tile_shape=self.tile_size, halo=self.halo)
                tiles = prompt_tiles(grid, prompts)
            except ValueError as exc:
                self._stop_preview(f"Cannot segment tile by tile: {exc}")
                return None
        limits = model_contrast_limits(self.image)
        request = DecodeRequest(
            generation=self._generation,
            image=self.image,
            data=level_data(self.image, self.level),
            plane=plane,
            contrast_limits=limits,
            image_key=(id(self.image), self._image_version, plane.fixed, limits, self.level),
            prompts=prompts,
            level=self.level,
            tiling=tiling,
            tiles=tiles,
        )
        return request, grid

    def _stop_preview(self, reason: str) -> None:
        self.clear_preview()
        self.set_status(reason)

    def _encoding_status(
        self, request: DecodeRequest, grid: TileGrid | None, to_encode: list[Tile | None]
    ) -> str:
        """The status line while a preview is computed: what is encoded, if anything."""
        where = request.plane.describe()
        where = f" {where}" if where else ""
        if self.level:
            where += f" at level {self.level}"
        name = request.image.name
        if to_encode and request.tiling is None:
            return f"Computing the image embedding of {name!r}{where} (once per plane)..."
        if len(to_encode) == 1:
            tile = describe_tile(grid, to_encode[0])
            return f"Encoding {tile} of {name!r}{where} (once per tile)..."
        if to_encode:
            rows, cols = grid.grid_shape
            return (
                f"Encoding {len(to_encode)} tiles of {rows}×{cols} of {name!r}{where} "
                "(once per tile)..."
            )
        return "Updating the preview..."

    def _plane(self) -> Plane:
        """The plane on screen, at the chosen level of a multiscale image."""
        level = self.level if self.image.multiscale else None
        return displayed_plane(self.viewer, self.image, level)

    @property
    def busy(self) -> bool:
        """Whether a preview is being computed."""
        return bool(self._workers)

    @property
    def preview_ready(self) -> bool:
        """Whether the preview shown is the one of the current prompts (none pending)."""
        return self.preview is not None and self.preview.request.generation == self._generation

    def _on_decoded(self, request: DecodeRequest, decoded: Decoded | str | None) -> None:
        if decoded is None or request.generation != self._generation:
            return
        if isinstance(decoded, str):
            self.clear_preview()
            self.set_status(f"Segmentation failed: {decoded}")
            show_error(f"SegAny: {decoded}")
            return
        if request.image is not self.image or not layer_in_viewer(self.viewer, request.image):
            return
        self.preview = Preview(request, decoded)
        self._draw_preview()
        self.events.preview()

    def _on_worker_error(self, exc: Exception) -> None:
        # napari's worker has already shown the error with its traceback.
        self.set_status(f"Segmentation failed: {exc}")

    def select_candidate(self, candidate: int) -> None:
        """Show the ``candidate``-th best mask of a multimask preview (0 = best)."""
        if self.preview is None or self.preview.decoded.separate_objects:
            return
        if not 0 <= candidate < len(self.preview.decoded.scores):
            raise ValueError(
                f"Expected a candidate index in 0..{len(self.preview.decoded.scores) - 1}; "
                f"received {candidate}."
            )
        self.preview.candidate = candidate
        self._draw_preview()
        self.events.preview()

    def _draw_preview(self) -> None:
        self._canvas.draw(self.image, self.preview)
        self.set_status(describe_preview(self.preview))

    def clear_preview(self) -> None:
        """Remove the preview (the prompts stay)."""
        if self.preview is None and not self._canvas.drawn:
            return
        self.preview = None
        self._canvas.erase()
        self.events.preview()

    # ---------------------------------------------------------- accept, clear
    def accept(self) -> int:
        """Write the preview into the output labels under new ids; return how many objects.

        Only pixels that are 0 in the output are written unless :attr:`overwrite` is set.
        The prompts that made the preview are then removed.
        """
        preview = self.preview
        if preview is None:
            self.set_status("Nothing to accept yet: add a point or a rectangle first.")
            return 0
        if not self.preview_ready:
            self.set_status("The preview is being updated; accept once it is shown.")
            return 0
        image, plane = preview.request.image, preview.request.plane
        output = self.output_layer(image, preview.request.level)
        if output is None:
            return 0
        window = preview.decoded.region
        written, last = self._write_objects(output, plane, window, preview)
        self.remove_prompts(preview.request.prompts)
        if written:
            self.set_status(f"Added {written} object(s) to {output.name!r}, last id {last}.")
        else:
            self.set_status(
                "Nothing was written: the mask only covers pixels that are already labelled "
                "(tick 'overwrite existing labels' to replace them)."
            )
        return written

    def _write_objects(
        self, output: Labels, plane: Plane, window: tuple[int, int, int, int], preview: Preview
    ) -> tuple[int, int]:
        """Write the preview's objects into ``output`` under new ids, as one undo step.

        Returns how many objects were written and the last id.
        """
        existing = np.asarray(output.data[plane.region_index(window)])
        writable = np.ones(existing.shape, dtype=bool) if self.overwrite else existing == 0
        next_id = self.label_ids.next_id(output, existing)
        new_labels = np.zeros(existing.shape, dtype=output.data.dtype)
        for mask in preview.decoded.object_masks(preview.candidate):
            pixels = mask & writable & (new_labels == 0)
            if pixels.any():
                new_labels[pixels] = next_id
                next_id += 1
        written = len(np.unique(new_labels)) - 1
        if written:
            pixels = new_labels > 0
            with self.label_ids.writing(output):
                output.data_setitem(
                    plane.data_indices(pixels, offset=(window[0], window[2])), new_labels[pixels]
                )
            self.label_ids.used(output, next_id - 1)
        return written, next_id - 1

    def propagate(self, axis: int | None = None) -> PropagationJob | None:
        """Propagate the object of the current prompts through the stack (Ctrl+P).

        The prompts on every slice along ``axis`` (default: the slider of the plane on
        screen, see :mod:`~napari_mobilesam._widgets._propagate`) are segmented and the
        object followed slice by slice in a thread worker; it is written under one new id
        (one undo step) when the run ends. Returns the job, or None with an error
        notification for a 2-D image, an axis not in the layer or no prompts.
        """
        return self.propagator.start(axis)

    def cancel_propagation(self) -> None:
        """Cancel a running propagation: the labels layer is left as it was."""
        self.propagator.cancel()

    def clear(self) -> None:
        """Discard the prompts on the plane on screen and the preview."""
        if self.image is None:
            return
        try:
            plane = self._plane()
        except PlaneError as exc:
            self.set_status(str(exc))
            return
        self.remove_prompts(self.collect_prompts(plane))
        self.clear_preview()

    def remove_prompts(self, prompts: PlanePrompts) -> None:
        """Remove the prompt-layer rows ``prompts`` came from."""
        remove_prompts(self.points, self.boxes, prompts)

    def output_layer(self, image: Image, level: int = 0) -> Labels | None:
        """The layer accepted objects of ``image`` (at ``level``) go into, made when there is
        none; None (and an error in the status line) when it has another shape."""
        output = self.output
        shape = spatial_shape(image, level)
        if output is not None and layer_in_viewer(self.viewer, output):
            if output.data.shape != shape:
                at_level = f" at level {level}" if level else ""
                message = (
                    f"The output layer {output.name!r} has shape {output.data.shape}, but the "
                    f"image {image.name!r}{at_level} has shape {shape}; choose another "
                    "output layer or '(new layer)'."
                )
                self.set_status(message)
                show_error(message)
                return None
            return output
        output = labels_for(
            image, np.zeros(shape, dtype=np.int32), self._output_name(image), level
        )
        active = self.viewer.layers.selection.active
        self.viewer.layers.insert(self.viewer.layers.index(image) + 1, output)
        self.viewer.layers.selection.active = active
        self.set_output_layer(output)
        return output

    def set_status(self, text: str) -> None:
        """Show ``text`` in the status line (``events.status``)."""
        self.status = text
        self.events.status(value=text)
