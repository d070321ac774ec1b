"""SegAny's preview: the ``"<image> preview"`` labels layer and the masks drawn on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels

from napari_mobilesam._widgets._plane import (
    Plane,
    labels_for,
    layer_in_viewer,
    level_downsample,
    spatial_shape,
)

if TYPE_CHECKING:
    import napari

    from napari_mobilesam._widgets._segany_decoding import Preview

PREVIEW_TAG = "napari-mobilesam-preview"


class PreviewCanvas:
    """Draws a :class:`~napari_mobilesam._widgets._segany_decoding.Preview` into the preview
    layer of its image, erasing what was drawn before (only the window it covered)."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.layer: Labels | None = None
        self._drawn: tuple[Labels, Plane, tuple[int, int, int, int]] | None = None

    def draw(self, image: Image, preview: Preview) -> None:
        """Show ``preview`` (its chosen candidate) over ``image``."""
        layer = self._layer_for(image, preview.request.level)
        self.erase()
        plane = preview.request.plane
        window = preview.decoded.region
        layer.data[plane.region_index(window)] = preview.decoded.label_image(preview.candidate)
        self._drawn = (layer, plane, window)
        layer.refresh()

    def erase(self) -> None:
        """Remove what was drawn last."""
        if self._drawn is None:
            return
        layer, plane, window = self._drawn
        if layer_in_viewer(self.viewer, layer) and layer.data.shape == plane.shape:
            layer.data[plane.region_index(window)] = 0
            layer.refresh()
        self._drawn = None

    @property
    def drawn(self) -> bool:
        return self._drawn is not None

    def forget(self, layer: Labels) -> None:
        """``layer`` was removed from the viewer: if it is the preview layer, drop it."""
        if layer is self.layer:
            self.layer = None
            self._drawn = None

    def _layer_for(self, image: Image, level: int) -> Labels:
        layer = self.layer
        shape = spatial_shape(image, level)
        if layer_in_viewer(self.viewer, layer) and layer.data.shape != shape:
            # Another level of a multiscale image: reshape the layer we have.
            self.erase()
            layer.data = np.zeros(shape, dtype=np.uint16)
            downsample = level_downsample(image, level) if level else 1.0
            layer.scale = np.asarray(image.scale, dtype=float) * downsample
        if not layer_in_viewer(self.viewer, layer):
            layer = labels_for(
                image, np.zeros(shape, dtype=np.uint16), f"{image.name} preview", level
            )
            layer.opacity = 0.5
            layer.metadata[PREVIEW_TAG] = True
            active = self.viewer.layers.selection.active
            self.viewer.layers.insert(self.viewer.layers.index(image) + 1, layer)
            self.viewer.layers.selection.active = active
            self.layer = layer
            self._drawn = None
        return layer


def describe_preview(preview: Preview) -> str:
    """The status line of a preview: what it shows and how to accept it."""
    decoded = preview.decoded
    if decoded.separate_objects:
        text = f"Preview: {len(decoded.scores)} objects, one per rectangle."
    else:
        score = decoded.scores[decoded.ranking[preview.candidate]]
        text = f"Preview: mask {preview.candidate + 1} of {len(decoded.scores)}, IoU {score:.2f}."
    if preview.request.prompts.points_ignored:
        text += " Points are not used with several rectangles."
    if decoded.note:
        text += f" {decoded.note}"
    if len(preview.request.plane.shape) > 2:
        return text + " Accept: Ctrl+Enter; through the stack: Propagate (Ctrl+P)."
    return text + " Accept: Ctrl+Enter."
