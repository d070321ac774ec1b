"""Hand a trained file to the widget that uses it: SegEvery (detector, box decoder) or SegAny
(point decoder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_mobilesam._widgets._segevery_settings import DECODERS
from napari_mobilesam._widgets._segevery_widget import SegEveryWidget
from napari_mobilesam._widgets._train_job import DETECTOR

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-mobilesam"
SEGEVERY = "SegEvery (MobileSAMv2)"
#: The SegEvery decoder choice that names a trained file starts with this.
TRAINED_PREFIX = "trained: "


def docked(viewer: napari.Viewer, kind: type) -> Any:
    """The docked widget of class ``kind`` in the viewer's window, or None."""
    for widget in viewer.window.dock_widgets.values():
        if isinstance(widget, kind):
            return widget
    return None


def segevery_widget(viewer: napari.Viewer) -> SegEveryWidget:
    """The SegEvery widget of the viewer: the docked one, else one opened now."""
    widget = docked(viewer, SegEveryWidget)
    if widget is None:
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, SEGEVERY)
    native = widget.native
    if native.parent() is not None:
        native.parent().show()
        native.parent().raise_()
    return widget


def use_in_segevery(viewer: napari.Viewer, kind: str, path: Path) -> str:
    """Put a trained detector or box decoder in SegEvery's fields; returns what was done."""
    widget = segevery_widget(viewer)
    if kind == DETECTOR:
        widget._detector.value = "file"
        widget._detector_file.value = path
        return f"SegEvery's detector is now the YOLO file {path.name}: press Run there."
    trained = (f"{TRAINED_PREFIX}{path.name}", str(path))
    # A callable survives the widget's reset_choices (called when layers change).
    widget._decoder.choices = lambda _widget: [*DECODERS.items(), trained]
    widget._decoder.value = str(path)
    if widget._detector.value == "grid":
        widget._detector.value = "auto"
    return f"SegEvery decodes its boxes with {path.name} now: press Run there."


def segany_instructions(path: Path) -> str:
    """What to do to click with a trained point decoder in SegAny (it has no weights field)."""
    return (
        "SegAny reads its weights from the environment variable NAPARI_MOBILESAM_WEIGHTS: "
        f'set it to "{path}" and restart napari, then SegAny\'s clicks use the trained '
        "decoder."
    )
