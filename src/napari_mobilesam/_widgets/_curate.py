"""Correct and curate a Labels layer by clicking: delete, merge, split and edit objects.

:class:`CurateController` holds the behaviour and talks to napari layers only (the dock
widget around it is :class:`~napari_mobilesam._widgets._curate_widget.CurateWidget`). A
click on the chosen Labels layer (in its pan/zoom mode) acts by the current ``mode``:

- ``"delete"``: the object clicked is removed.
- ``"merge"``: each click picks an object; :meth:`accept` (Ctrl+Enter) merges the picks
  into the first one.
- ``"split"``: two clicks on one object, one on each part, cut it in two with SAM.
- ``"edit"``: the first click picks an object; the next clicks refine it with SAM
  (foreground; Shift-click: background), shown in a preview layer; :meth:`accept`
  replaces it under the same id. Escape forgets the picks and clicks.

Every edit is one step of the layer's undo history (Ctrl+Z); the features table follows
(:mod:`~napari_mobilesam._widgets._curate_features`). In a stack, edits act on the slice
on screen, or (``through_stack``) on the whole 3-D object for delete and merge. The core
operations are those of :mod:`napari_mobilesam.curation`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.events import EmitterGroup, Event

from napari_mobilesam._widgets._curate_features import FeatureHistory, followed_table
from napari_mobilesam._widgets._curate_sam import SamEdits
from napari_mobilesam._widgets._errors import expected_errors, report_bug
from napari_mobilesam._widgets._plane import Plane, PlaneError, displayed_plane, layer_in_viewer
from napari_mobilesam.curation.objects import delete_objects, merge_objects, object_at

if TYPE_CHECKING:
    import napari

MODES = ("off", "edit", "delete", "merge", "split")
ACCEPT_KEY = "Control-Enter"
CANCEL_KEY = "Escape"
_DRAG_PIXELS = 4  # a press and release further apart on screen is a pan, not a click


class CurateController(SamEdits):
    """The curate behaviour on a napari viewer, without Qt widgets.

    Events: ``events.status`` (``value``: the status line).

    Examples
    --------
    >>> controller = CurateController(viewer)  # doctest: +SKIP
    >>> controller.set_labels(viewer.layers["cell labels"])  # doctest: +SKIP
    >>> controller.set_mode("delete")  # a click on an object now deletes it  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.events = EmitterGroup(source=self, status=Event)
        self.labels: Labels | None = None
        self.image: Image | None = None
        self.mode = "off"
        self.through_stack = False
        self.picks: list[tuple[int, np.ndarray]] = []  # (id, data position) of each click
        self.status = ""
        self.history = FeatureHistory()
        me = weakref.ref(self)
        self._press = lambda layer, event: (c := me()) and c._on_press(layer, event)
        self._accept_key = lambda _layer: (c := me()) and c.accept()
        self._cancel_key = lambda _layer: (c := me()) and c.cancel()

    # ------------------------------------------------------------------ setup
    def set_status(self, text: str) -> None:
        self.status = text
        self.events.status(value=text)

    def set_labels(self, layer: Labels | None) -> None:
        """Curate ``layer``: its clicks and Ctrl+Enter / Escape keys go to this widget."""
        if layer is self.labels:
            return
        self.cancel()
        if self.labels is not None:
            if self._press in self.labels.mouse_drag_callbacks:
                self.labels.mouse_drag_callbacks.remove(self._press)
            self.labels.bind_key(ACCEPT_KEY, None)
            self.labels.bind_key(CANCEL_KEY, None)
        self.labels = layer
        if layer is not None:
            layer.mouse_drag_callbacks.append(self._press)
            layer.bind_key(ACCEPT_KEY, self._accept_key, overwrite=True)
            layer.bind_key(CANCEL_KEY, self._cancel_key, overwrite=True)
            self._ready_for_clicks()

    def set_image(self, layer: Image | None) -> None:
        """The image SAM sees for split and edit."""
        if layer is self.image:
            return
        self.image = layer
        self.cancel()

    def set_mode(self, mode: str) -> None:
        """What a click on the labels layer does: one of :data:`MODES`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == self.mode:
            return
        self.cancel()
        self.mode = mode
        self._ready_for_clicks()
        self.set_status(_MODE_HINTS[mode])

    def _ready_for_clicks(self) -> None:
        """Clicks reach the labels layer: it is selected, in pan/zoom mode."""
        if self.mode != "off" and self.labels is not None and self._in_viewer(self.labels):
            self.viewer.layers.selection.active = self.labels
            self.labels.mode = "pan_zoom"

    def _in_viewer(self, layer: Any) -> bool:
        return layer_in_viewer(self.viewer, layer)

    def cancel(self) -> None:
        """Forget the picks and the edit in progress (Escape)."""
        self.picks = []
        self.forget_edit()

    # ----------------------------------------------------------------- clicks
    def _on_press(self, layer: Labels, event: Any) -> Iterator[None]:
        """A click acts on release; a drag (panning the view) does nothing."""
        if self.mode == "off" or layer.mode != "pan_zoom" or event.button != 1:
            return
        start = np.asarray(event.pos, dtype=float)
        position = np.asarray(layer.world_to_data(event.position), dtype=float)
        background = "Shift" in event.modifiers
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = dragged or np.hypot(*(np.asarray(event.pos) - start)) > _DRAG_PIXELS
            yield
        if not dragged:
            self.run_safely(lambda: self.click(position, background=background), "The click")

    def click(self, position: Any, *, background: bool = False) -> None:
        """A click at ``position`` (the labels layer's data coordinates), by the mode."""
        layer = self._require_labels()
        position = np.asarray(position, dtype=float)
        if self.mode == "edit" and self.editing is not None:
            self.add_edit_click(position, background)
            return
        label = object_at(layer.data, position)
        if self.mode == "delete":
            self.delete([label])
        elif self.mode == "merge":
            if label not in (pick for pick, _ in self.picks):
                self.picks.append((label, position))
            ids = ", ".join(str(pick) for pick, _ in self.picks)
            self.set_status(
                f"Merge objects {ids}: click more, then Ctrl+Enter (or Merge / Accept)."
            )
        elif self.mode == "split":
            self._split_click(label, position)
        elif self.mode == "edit":
            self.start_edit(label, position)

    def _split_click(self, label: int, position: np.ndarray) -> None:
        if self.picks and self.picks[0][0] != label:
            self.picks = []
            raise PlaneError(
                f"The second click is on object {label}, not on object {self.picks[0][0]} "
                "clicked first: click twice on one object, once on each part."
            )
        self.picks.append((label, position))
        if len(self.picks) == 1:
            self.set_status(f"Split object {label}: now click on its other part.")
            return
        (_, first), (_, second) = self.picks
        self.picks = []
        self.split(label, first, second)

    # ------------------------------------------------------------- operations
    def accept(self) -> None:
        """Ctrl+Enter: merge the picked objects, or accept the edited object."""
        if self.mode == "merge":
            self.run_safely(self._merge_picks, "Merge")
        elif self.mode == "edit":
            self.run_safely(self.accept_edit, "Accept")

    def delete(self, ids: list[int]) -> None:
        """Delete objects ``ids`` (on the slice shown, or through the stack)."""
        self.apply(lambda region: delete_objects(region, ids), ids, f"Deleted object(s) {ids}.")

    def merge(self, ids: list[int]) -> None:
        """Merge objects ``ids`` into the first (on the slice shown, or through the stack)."""
        self.apply(lambda region: merge_objects(region, ids), ids, f"Merged {ids} into {ids[0]}.")

    def _merge_picks(self) -> None:
        self.merge([pick for pick, _ in self.picks])
        self.picks = []

    def apply(
        self,
        operation: Callable[[np.ndarray], np.ndarray],
        changed: list[int],
        message: str,
        *,
        plane: Plane | None = None,
        image: np.ndarray | None = None,
    ) -> None:
        """Write ``operation`` of the slice shown (or the whole layer, ``through_stack``) as
        one undo step; the features table follows."""
        layer = self._require_labels()
        if plane is None and (layer.ndim == 2 or not self.through_stack):
            plane = displayed_plane(self.viewer, layer)
        region = np.asarray(layer.data if plane is None else plane.take(layer.data))
        result = operation(region)
        changed_pixels = result != region
        if plane is None:
            indices = np.nonzero(changed_pixels)
        else:
            indices = plane.data_indices(changed_pixels)
        before, after = region[changed_pixels], result[changed_pixels]
        table = layer.features
        with layer.block_history():
            layer.data_setitem(indices, after)
        layer.features = followed_table(layer, changed, image)
        self.history.record(layer, indices, before, after, table)
        self.set_status(message + " Ctrl+Z undoes it.")

    def run_safely(self, action: Callable[[], Any], what: str) -> None:
        """Run ``action``; an expected error goes to the status line, a bug is reported."""
        try:
            action()
        except (*expected_errors(), PlaneError) as error:
            self.set_status(str(error))
        except Exception as error:
            self.set_status(report_bug(what, error))

    def _require_labels(self) -> Labels:
        if self.labels is None or not self._in_viewer(self.labels):
            raise PlaneError("Choose a labels layer to curate.")
        return self.labels


_MODE_HINTS = {
    "off": "Clicks on the labels layer paint as usual.",
    "edit": "Click an object to edit it; then click to refine it (Shift-click: background).",
    "delete": "Click an object to delete it.",
    "merge": "Click the objects to merge, then Ctrl+Enter (or Merge / Accept).",
    "split": "Click an object twice, once on each part, to split it.",
}
