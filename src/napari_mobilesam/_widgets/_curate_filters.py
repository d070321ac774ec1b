"""The feature filters of the curate widget: measure, preview what goes, apply.

"Measure" computes each object's features (:func:`napari_mobilesam.curation.object_features`)
on the slice shown (or the whole stack, ``through_stack``), with the image for mean
intensity and the layer's ``score`` feature (SegEvery's) when it has one. A range slider per
feature then shows, live, the objects that would be removed in the ``"<labels> filtered
out"`` layer; "Apply filters" removes them as one undo step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, FloatRangeSlider, PushButton
from napari.layers import Labels

from napari_mobilesam._widgets._curate_preview import preview_layer
from napari_mobilesam._widgets._plane import Plane, displayed_plane
from napari_mobilesam.curation.features import (
    FEATURES,
    filter_objects,
    object_features,
    objects_within,
)

if TYPE_CHECKING:
    from napari_mobilesam._widgets._curate import CurateController


class FilterPanel(Container):
    """Range sliders on the features of a labels layer's objects, with a live preview."""

    def __init__(self, controller: CurateController) -> None:
        self.controller = controller
        self.features: dict[str, np.ndarray] | None = None
        #: The features measured (each has a slider shown).
        self.measured: list[str] = []
        self.plane: Plane | None = None
        self.preview: Labels | None = None
        self._measure = PushButton(text="Measure objects")
        self._apply = PushButton(text="Apply filters", enabled=False)
        self.sliders = {
            name: FloatRangeSlider(label=name.replace("_", " "), visible=False)
            for name in FEATURES
        }
        super().__init__(widgets=[self._measure, *self.sliders.values(), self._apply])
        self._measure.changed.connect(lambda: controller.run_safely(self.measure, "Measure"))
        self._apply.changed.connect(lambda: controller.run_safely(self.apply, "Filter"))
        for slider in self.sliders.values():
            slider.changed.connect(lambda _value: controller.run_safely(self.show, "Preview"))

    def _region(self, data: Any) -> np.ndarray:
        return np.asarray(data if self.plane is None else self.plane.take(data))

    def measure(self) -> None:
        """Compute the features and set each slider to the full range of its values."""
        controller = self.controller
        layer = controller._require_labels()
        stack = layer.ndim > 2 and controller.through_stack
        self.plane = None if stack else displayed_plane(controller.viewer, layer)
        labels = self._region(layer.data)
        image = self._image(labels.shape)
        table = layer.features
        scores = None
        # SegEvery layers name their ids "index" (napari's column), others "label".
        ids = next((c for c in ("label", "index") if c in table.columns), None)
        if "score" in table.columns and ids is not None:
            scores = dict(zip(table[ids].astype(int), table["score"].astype(float), strict=True))
        self.features = object_features(labels, image, scores)
        self.measured = []
        for name, slider in self.sliders.items():
            values = self.features.get(name)
            known = values[~np.isnan(values)] if values is not None else np.zeros(0)
            slider.visible = bool(len(known))
            if len(known):
                self.measured.append(name)
                low, high = float(known.min()), float(known.max())
                high = high if high > low else low + 1.0
                with slider.changed.blocked():
                    slider.min, slider.max = low, high
                    slider.step = (high - low) / 1000
                    slider.value = (low, high)
        self._apply.enabled = True
        where = "the whole stack" if stack else "the slice shown"
        controller.set_status(f"Measured {len(self.features['label'])} objects of {where}.")
        self.show()

    def _image(self, shape: tuple[int, ...]) -> np.ndarray | None:
        image = self.controller.image
        if image is None or not self.controller._in_viewer(image):
            return None
        if self.plane is None:
            data = np.asarray(image.data)
        else:
            data = displayed_plane(self.controller.viewer, image).take(image.data)
        return data if data.shape[: len(shape)] == tuple(shape) else None

    def ranges(self) -> dict[str, tuple[float | None, float | None]]:
        """The slider ranges; an end at the slider's own end is open (None)."""
        out = {}
        for name in self.measured:
            slider = self.sliders[name]
            low, high = slider.value
            out[name] = (
                None if low <= slider.min else low,
                None if high >= slider.max else high,
            )
        return out

    def removed(self) -> np.ndarray:
        """The ids the current ranges remove."""
        if self.features is None:
            return np.zeros(0, np.int64)
        keep = objects_within(self.features, self.ranges())
        return np.setdiff1d(self.features["label"], keep)

    def show(self) -> None:
        """Draw the objects the ranges remove in the ``"<labels> filtered out"`` layer."""
        layer = self.controller._require_labels()
        removed = self.removed()
        data = np.zeros(layer.data.shape, np.uint8)
        if self.plane is None:
            data[np.isin(layer.data, removed)] = 1
        else:
            data[self.plane.data_indices(np.isin(self._region(layer.data), removed))] = 1
        if self.preview is None or not self.controller._in_viewer(self.preview):
            self.preview = preview_layer(data, f"{layer.name} filtered out", layer, "magenta")
            self.controller.viewer.add_layer(self.preview)
            self.controller.viewer.layers.selection.active = layer
        else:
            self.preview.data = data
        kept = len(self.features["label"]) - len(removed)
        self.controller.set_status(
            f"Filters keep {kept} and remove {len(removed)} objects (shown in "
            f"{self.preview.name!r}): Apply filters removes them."
        )

    def apply(self) -> None:
        """Remove the objects outside the ranges, as one undo step."""
        if self.features is None:
            return
        removed = self.removed().tolist()
        features, ranges = self.features, self.ranges()
        self.controller.apply(
            lambda region: filter_objects(region, features, ranges),
            [],
            f"Filters removed {len(removed)} objects.",
            plane=self.plane,
        )
        self.features = None
        self._apply.enabled = False
        if self.preview is not None and self.controller._in_viewer(self.preview):
            self.controller.viewer.layers.remove(self.preview)
        self.preview = None
