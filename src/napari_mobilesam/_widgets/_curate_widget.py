"""The "Correct and curate" dock widget: a magicgui Container around
:class:`~napari_mobilesam._widgets._curate.CurateController` and its filter panel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, RadioButtons
from napari.layers import Image, Labels

from napari_mobilesam._widgets._curate import MODES, CurateController
from napari_mobilesam._widgets._curate_filters import FilterPanel
from napari_mobilesam._widgets._plane import unproxied

if TYPE_CHECKING:
    import napari


class CurateWidget(Container):
    """Dock widget to correct a Labels layer: edit, delete, merge, split, filter objects.

    Parameters
    ----------
    viewer : napari.Viewer

    Examples
    --------
    >>> widget = CurateWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget, name="Correct and curate")  # doctest: +SKIP
    >>> widget.controller.set_mode("delete")  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = unproxied(viewer)
        self.controller = controller = CurateController(viewer)
        self.filters = FilterPanel(controller)
        self._labels_choice = ComboBox(
            label="Labels", nullable=True, choices=self._choices(Labels)
        )
        self._image_choice = ComboBox(
            label="Image",
            nullable=True,
            choices=self._choices(Image),
            tooltip="The image SAM sees to split and edit objects",
        )
        self._click_mode = RadioButtons(
            label="Click",
            choices=list(MODES),
            value="off",
            orientation="horizontal",
            tooltip="What a click on the labels layer does (in its pan/zoom mode)",
        )
        self._through_stack = CheckBox(
            text="Through the stack (delete, merge, filters)",
            value=False,
            tooltip="Off: only the slice shown changes. On: whole 3-D objects.",
        )
        self._accept = PushButton(text="Merge / Accept (Ctrl+Enter)")
        self._cancel = PushButton(text="Cancel (Escape)")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        lines = self._status.native.fontMetrics().lineSpacing()
        self._status.native.setMinimumHeight(4 * lines)  # long lines wrap, never clipped
        super().__init__(
            widgets=[
                self._labels_choice,
                self._image_choice,
                self._click_mode,
                self._through_stack,
                self._accept,
                self._cancel,
                Label(value="Filters on object features"),
                self.filters,
                self._status,
            ]
        )
        self._labels_choice.changed.connect(lambda layer: controller.set_labels(layer))
        self._image_choice.changed.connect(lambda layer: controller.set_image(layer))
        self._click_mode.changed.connect(
            lambda mode: controller.run_safely(lambda: controller.set_mode(mode), "Mode")
        )
        self._through_stack.changed.connect(lambda on: setattr(controller, "through_stack", on))
        self._accept.changed.connect(controller.accept)
        self._cancel.changed.connect(controller.cancel)
        controller.events.status.connect(lambda event: setattr(self._status, "value", event.value))
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _event: self._update_layer_choices())
        self._pick_defaults()

    def _choices(self, kind: type):
        def choices(_widget: object = None) -> list:
            own = (self.controller.preview, self.filters.preview)
            return [
                layer
                for layer in self.viewer.layers
                if isinstance(layer, kind) and not any(layer is o for o in own)
            ]

        return choices

    def _update_layer_choices(self) -> None:
        self._labels_choice.reset_choices()
        self._image_choice.reset_choices()

    def _pick_defaults(self) -> None:
        active = self.viewer.layers.selection.active
        for combo, kind in ((self._labels_choice, Labels), (self._image_choice, Image)):
            layers = combo.choices
            if layers:
                combo.value = active if isinstance(active, kind) else layers[-1]
