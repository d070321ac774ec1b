"""The SegAny dock widget: a magicgui Container around :class:`SegAnyController`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    PushButton,
    RadioButtons,
    SpinBox,
)
from napari.layers import Image, Labels, Points, Shapes

from napari_mobilesam._widgets._engine import EngineField
from napari_mobilesam._widgets._plane import (
    level_count,
    plane_is_tiled,
    spatial_shape,
    unproxied,
)
from napari_mobilesam._widgets._preview_canvas import PREVIEW_TAG
from napari_mobilesam._widgets._prompt_layers import BACKGROUND, FOREGROUND
from napari_mobilesam._widgets._segany import SegAnyController
from napari_mobilesam._widgets._segany_layers import NEW_LAYER
from napari_mobilesam._widgets._stack_axes import axis_label, stack_axes
from napari_mobilesam._widgets._status import StatusLine
from napari_mobilesam.imaging.tiling import DEFAULT_HALO, DEFAULT_TILE_SHAPE

if TYPE_CHECKING:
    import napari

#: The stack axis choice that follows the viewer (see ``default_stack_axis``).
AUTO_AXIS = -1


class SegAnyWidget(Container):
    """Dock widget for SegAny (MobileSAM): prompts in, labels out.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to work on; napari passes it when the widget is opened from the
        Plugins menu.

    Examples
    --------
    >>> widget = SegAnyWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget, name="SegAny (MobileSAM)")  # doctest: +SKIP
    >>> widget.controller.set_image(viewer.layers["cell"])  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = self.viewer = unproxied(viewer)
        self.controller = SegAnyController(viewer)
        self._make_layer_widgets()
        self._make_tiling_widgets()
        self._make_action_widgets()
        super().__init__(widgets=self._widget_list())
        self.native.layout().addWidget(self._status)
        self._connect_widgets()
        self._connect_events()
        controller = self.controller
        self.native.destroyed.connect(lambda *_: controller.close())
        self.reset_choices()
        active = viewer.layers.selection.active
        images = [layer for layer in viewer.layers if isinstance(layer, Image)]
        if images:
            self._image.value = active if isinstance(active, Image) else images[-1]

    def _make_layer_widgets(self) -> None:
        """The layer choices, the click kind, the candidate and the overwrite switch."""
        self._image = ComboBox(label="Image", nullable=True, choices=self._choices(Image))
        self._points = ComboBox(
            label="Point prompts", nullable=True, choices=self._choices(Points)
        )
        self._boxes = ComboBox(label="Box prompts", nullable=True, choices=self._choices(Shapes))
        self._click = RadioButtons(
            label="Click adds",
            choices=[FOREGROUND, BACKGROUND],
            value=FOREGROUND,
            orientation="horizontal",
            tooltip="B (points layer selected) switches; Shift-click adds the other kind",
        )
        self._candidate = ComboBox(label="Mask", choices=[], tooltip="Candidate masks by IoU")
        self._output = ComboBox(
            label="Output",
            choices=self._choices(Labels, outputs=True),
            tooltip="Labels layer that accepted objects go to; '(new layer)' makes one",
        )
        self._overwrite = CheckBox(text="Overwrite existing labels", value=False)

    def _make_tiling_widgets(self) -> None:
        """The level of a multiscale image and the tile settings of large planes."""
        self._level = ComboBox(
            label="Level",
            choices=self._level_choices,
            tooltip="Resolution level of a multiscale image to segment (0 = full resolution, "
            "tile by tile)",
        )
        tiling_tip = (
            "Planes larger than 1024 px on a side are segmented tile by tile: each object on "
            "the tile that holds its prompts, encoded at full resolution when first used. "
            "Tile + 2 × halo = 1024 (the defaults) is the model's input size."
        )
        self._tile_size = SpinBox(
            label="Tile size (px)",
            value=DEFAULT_TILE_SHAPE[0],
            min=64,
            max=8192,
            step=64,
            tooltip=tiling_tip,
        )
        self._halo = SpinBox(
            label="Tile halo (px)",
            value=DEFAULT_HALO[0],
            min=0,
            max=4096,
            step=16,
            tooltip="Pixels added on each side of a tile (at most half the tile). " + tiling_tip,
        )

    def _make_action_widgets(self) -> None:
        """Accept, Clear, Propagate (with its stack axis) and the status line."""
        self._accept = PushButton(text="Accept (Ctrl+Enter)")
        self._clear = PushButton(text="Clear prompts")
        self._stack_axis = ComboBox(
            label="Stack axis",
            choices=self._axis_choices,
            tooltip="The Z or T axis Propagate walks along (default: the slider moved last; "
            "in 3-D display, the depth axis)",
        )
        self._propagate = PushButton(
            text="Propagate (Ctrl+P)",
            tooltip="Follow the object of the current prompts (or preview) slice by slice "
            "through the stack and write it under one new id",
        )
        self._cancel_propagation = PushButton(text="Cancel", enabled=False)
        self._status = StatusLine()
        self._engine = EngineField(self._status)

    def _widget_list(self) -> list:
        """The widgets, top to bottom."""
        return [
            self._image,
            self._points,
            self._boxes,
            self._click,
            self._candidate,
            self._output,
            self._overwrite,
            self._level,
            self._tile_size,
            self._halo,
            self._engine.combo,
            Container(widgets=[self._accept, self._clear], layout="horizontal", labels=False),
            self._stack_axis,
            Container(
                widgets=[self._propagate, self._cancel_propagation],
                layout="horizontal",
                labels=False,
            ),
        ]

    def _connect_widgets(self) -> None:
        """Widget changes -> controller."""
        self._image.changed.connect(self.controller.set_image)
        self._points.changed.connect(self.controller.set_points_layer)
        self._boxes.changed.connect(self.controller.set_boxes_layer)
        self._output.changed.connect(
            lambda value: self.controller.set_output_layer(None if value == NEW_LAYER else value)
        )
        self._overwrite.changed.connect(self._on_overwrite)
        self._level.changed.connect(self._on_level)
        self._tile_size.changed.connect(lambda value: self.controller.set_tiling(tile_size=value))
        self._halo.changed.connect(lambda value: self.controller.set_tiling(halo=value))
        self._click.changed.connect(
            lambda value: self.controller.set_background_clicks(value == BACKGROUND)
        )
        self._candidate.changed.connect(self._on_candidate)
        self._accept.changed.connect(self.controller.accept)
        self._clear.changed.connect(self.controller.clear)
        self._propagate.changed.connect(self.propagate)
        self._stack_axis.changed.connect(self._on_stack_axis)
        self._cancel_propagation.changed.connect(self.controller.cancel_propagation)

    def _connect_events(self) -> None:
        """Controller and viewer events -> widgets."""
        viewer = self.viewer
        self.controller.events.propagation.connect(self._on_propagation)
        viewer.dims.events.ndisplay.connect(self._sync_stack_axes)
        viewer.dims.events.order.connect(self._sync_stack_axes)
        self.controller.events.status.connect(self._on_status)
        self.controller.events.progress.connect(self._on_progress)
        viewer.dims.events.order.connect(self._sync_tiling)
        self.controller.events.layers.connect(self._sync_layers)
        self.controller.events.preview.connect(self._sync_candidates)
        self.controller.events.click_kind.connect(
            lambda event: self._click.set_value(BACKGROUND if event.value else FOREGROUND)
        )
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self.reset_choices)

    def _choices(self, kind: type, outputs: bool = False) -> Callable[[Any], list]:
        def choices(_widget: Any) -> list[tuple[str, Any]]:
            layers = [
                (layer.name, layer)
                for layer in self.viewer.layers
                if isinstance(layer, kind) and not (outputs and PREVIEW_TAG in layer.metadata)
            ]
            return [(NEW_LAYER, NEW_LAYER), *layers] if outputs else layers

        return choices

    def _sync_layers(self, _event: Any = None) -> None:
        self.reset_choices()
        controller = self.controller
        for combo, layer in (
            (self._image, controller.image),
            (self._points, controller.points),
            (self._boxes, controller.boxes),
            (self._output, NEW_LAYER if controller.output is None else controller.output),
        ):
            if combo.value is not layer:
                with combo.changed.blocked():
                    combo.value = layer
        self._sync_levels()
        self._sync_stack_axes()

    def _axis_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        image = self.controller.image if hasattr(self, "controller") else None
        if image is None:
            return []
        shape = spatial_shape(image)
        axes = stack_axes(self.viewer, image)
        choices = [
            (f"{axis_label(self.viewer, image, axis)} (axis {axis}, {shape[axis]})", axis)
            for axis in axes
        ]
        if len(axes) > 1:
            auto = "auto: depth axis" if self.viewer.dims.ndisplay == 3 else "auto: last slider"
            choices.insert(0, (auto, AUTO_AXIS))
        return choices

    def _sync_stack_axes(self, _event: Any = None) -> None:
        image = self.controller.image
        with self._stack_axis.changed.blocked():
            self._stack_axis.reset_choices()
            values = [value for _, value in self._axis_choices()]
            wanted = self.controller.stack_axis
            if values:
                self._stack_axis.value = wanted if wanted in values else values[0]
        self._on_stack_axis(self._stack_axis.value if values else None)
        self._stack_axis.visible = len(self._stack_axis.choices) > 1
        stack = image is not None and bool(self._stack_axis.choices)
        self._propagate.visible = self._cancel_propagation.visible = stack

    def _on_stack_axis(self, axis: int | None) -> None:
        self.controller.stack_axis = None if axis in (None, AUTO_AXIS) else int(axis)

    def propagate(self) -> Any:
        """Propagate along the chosen stack axis (see :meth:`SegAnyController.propagate`)."""
        return self.controller.propagate()

    def _on_propagation(self, event: Any) -> None:
        running = bool(event.value)
        self._propagate.enabled = not running
        self._cancel_propagation.enabled = running
        if not running:
            self._status.hide_progress()

    def _on_status(self, event: Any) -> None:
        """A status line of the controller; ``event.details``, if any, one click away."""
        self._status.show_message(event.value, getattr(event, "details", ""))

    def _on_progress(self, event: Any) -> None:
        """``event.value``: (line, done, total) of a running propagation."""
        self._status.show_progress(*event.value)

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        image = self.controller.image
        count = level_count(image) if image is not None else 0
        choices: list[tuple[str, int]] = []
        for level in range(count):
            rows, cols = spatial_shape(image, level)[-2:]
            full = " (full resolution)" if level == 0 else ""
            choices.append((f"{level}: {rows}×{cols}{full}", level))
        return choices

    def _sync_levels(self) -> None:
        with self._level.changed.blocked():
            self._level.reset_choices()
            if self._level.choices:
                self._level.value = self.controller.level
        image = self.controller.image
        self._level.visible = image is not None and level_count(image) > 1
        self._sync_tiling()

    def _sync_tiling(self, _event: Any = None) -> None:
        """Show the tile settings only for an image whose planes are tiled."""
        controller = self.controller
        tiled = plane_is_tiled(self.viewer, controller.image, controller.level)
        self._tile_size.visible = self._halo.visible = tiled

    def _sync_candidates(self, _event: Any = None) -> None:
        preview = self.controller.preview
        choices: list[tuple[str, int]] = []
        if preview is not None and not preview.decoded.separate_objects:
            scores = preview.decoded.scores[preview.decoded.ranking]
            choices = [
                (f"{rank + 1}: IoU {score:.2f}{' (best)' if rank == 0 else ''}", rank)
                for rank, score in enumerate(scores)
            ]
        with self._candidate.changed.blocked():
            self._candidate.choices = choices
            if preview is not None and choices:
                self._candidate.value = preview.candidate
        self._candidate.enabled = len(choices) > 1

    def _on_candidate(self, candidate: int | None) -> None:
        if candidate is not None:
            self.controller.select_candidate(candidate)

    def _on_level(self, level: int | None) -> None:
        if level is not None:
            self.controller.set_level(level)
            self._sync_tiling()

    def _on_overwrite(self, value: bool) -> None:
        self.controller.overwrite = bool(value)
