"""SegAny's layers: the image, its prompt layers and the output labels, and how clicks
become points.

- Points layer ``"<image> prompts"``: a click adds a foreground point, Shift-click a
  background point; ``B`` (with the points layer selected) or the widget's "Click adds"
  switch swaps what a plain click adds. Foreground points are lime, background magenta.
- Shapes layer ``"<image> boxes"``: each rectangle is a box prompt.
- Labels layer ``"<image> labels"`` (``"<image> labels level N"`` for level N of a
  multiscale image): where accepted objects are written, made on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.events import EmitterGroup, Event
from napari.utils.notifications import show_error

from napari_mobilesam._widgets._plane import (
    Plane,
    labels_for,
    layer_in_viewer,
    level_data,
    spatial_shape,
    unproxied,
)
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

if TYPE_CHECKING:
    import napari

BACKGROUND_KEY = "B"
NEW_LAYER = "(new layer)"

_FINISHED_EDITS = {"added", "removed", "changed"}


class SegAnyLayers:
    """The layers SegAny works with on a napari viewer, and their events.

    Subclasses recompute their preview in :meth:`refresh` and drop it in
    :meth:`clear_preview`; both are called when prompts, the image or the view change.

    Parameters
    ----------
    viewer : napari.Viewer

    Events
    ------
    ``events.status`` (``value``: a line for people), ``events.layers`` (the image, prompt
    or output layer changed), ``events.click_kind`` (what a plain click adds changed),
    ``events.preview``, ``events.propagation`` and ``events.progress`` (``value``: a
    running propagation's ``(line, done, total)``), emitted by subclasses.
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
            progress=Event,
        )
        self.image: Image | None = None
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self.output: Labels | None = None
        self.background_clicks = False
        self.level = 0
        self.status = ""
        self._image_version = 0
        self._shift_click = False
        viewer.dims.events.current_step.connect(self._on_view_changed)
        viewer.dims.events.ndisplay.connect(self._on_view_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    def refresh(self) -> None:
        """Recompute what the prompts show (subclasses)."""
        raise NotImplementedError

    def clear_preview(self) -> None:
        """Remove what the prompts showed (subclasses)."""
        raise NotImplementedError

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

    def collect_prompts(self, plane: Plane) -> PlanePrompts:
        """The prompts of the prompt layers that lie on ``plane`` of the image."""
        return collect_prompts(self.points, self.boxes, self.image, plane)

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

    def set_status(self, text: str, details: str = "") -> None:
        """Show ``text`` in the status line (``events.status``), ``details`` (an error's
        full explanation) one click away."""
        self.status = text
        self.events.status(value=text, details=details)
