"""The Engine field of the widgets that load the model (SegAny, SegEvery).

One combo box per widget, all bound to the session's setting
(:data:`napari_mobilesam._widgets._model.ENGINE`, default ``NAPARI_MOBILESAM_ENGINE``):
what runs the image encoder and SegEvery's YOLO detector on a CPU. Without the ``cpu``
extra only "torch" can be chosen (its tooltip says how to get the others). Choosing
another engine prepares it in a thread worker, the status line saying that the first use
converts the model (once per weights file, kept in the cache); SegEvery exports its
detector on its first run with that engine.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox
from superqt.utils import ensure_main_thread

from napari_mobilesam._widgets._errors import error_line, expected_errors, report_bug
from napari_mobilesam._widgets._model import ENGINE, new_predictor
from napari_mobilesam._widgets._status import StatusLine
from napari_mobilesam._widgets._workers import stoppable_worker
from napari_mobilesam.engines.names import ENGINES

__all__ = ["ENGINE_LABELS", "EngineField", "first_use"]

ENGINE_LABELS = {
    "torch": "torch (reference)",
    "auto": "auto (fastest checked)",
    "openvino": "OpenVINO float32",
    "openvino-int8": "OpenVINO int8",
}
ENGINE_TOOLTIP = (
    "What runs the image encoder and SegEvery's YOLO detector on a CPU. torch is the "
    "reference; OpenVINO float32 gives the same results, faster; int8 is faster still, "
    "close to float32; auto takes, per network, the fastest that passed its checks against "
    "torch on this computer (measured once). The first use converts each model (once, "
    "kept in the cache)."
)


class EngineField:
    """An "Engine" combo box bound to the session's engine setting.

    Parameters
    ----------
    status : StatusLine
        The widget's status line: where preparing an engine is reported.

    Attributes
    ----------
    combo : magicgui.widgets.ComboBox
        The field to put in the widget.
    worker : thread worker or None
        The preparation running or last run.
    """

    def __init__(self, status: StatusLine) -> None:
        self._status = status
        self.worker: Any = None
        value = ENGINE.value if ENGINE.value in ENGINES else "torch"
        self.combo = ComboBox(
            label="Engine",
            choices=[(ENGINE_LABELS[name], name) for name in ENGINES],
            value=value,
            tooltip=ENGINE_TOOLTIP,
        )
        if not _openvino_available():
            _only_torch(self.combo)
        self.combo.changed.connect(self._on_change)
        ENGINE.changed.connect(self._sync)
        self.combo.native.destroyed.connect(lambda *_: ENGINE.changed.disconnect(self._sync))

    def _sync(self, name: str) -> None:
        if name in ENGINES and self.combo.value != name:
            self.combo.value = name

    def _on_change(self, name: str) -> None:
        if name == ENGINE.value:  # another widget's field set it: prepared there
            return
        ENGINE.set(name)
        if name != "torch":
            self.prepare(name)

    def prepare(self, name: str) -> Any:
        """Convert (once) and load engine ``name`` in a thread worker, with progress."""
        self._status.value = (
            f"Preparing the {ENGINE_LABELS[name]} engine: its first use converts the model "
            "for this computer (once, kept in the cache)..."
        )
        self._status.show_progress("converting", 0, 0)
        worker = stoppable_worker(
            _prepare, name, self._show_progress, on_quit=lambda: None, _ignore_errors=True
        )
        worker.returned.connect(self._on_ready)
        worker.errored.connect(self._on_error)
        self.worker = worker
        worker.start()
        return worker

    @ensure_main_thread
    def _show_progress(self, done: int, total: int) -> None:
        self._status.show_progress("converting", done, total)

    def _on_ready(self, engine: str) -> None:
        self._status.hide_progress()
        self._status.value = f"Engine ready: {ENGINE_LABELS.get(engine, engine)}."

    def _on_error(self, error: Exception) -> None:
        self._status.hide_progress()
        what = "Preparing the engine"
        if isinstance(error, expected_errors()):
            self._status.show_message(error_line(what, error), str(error))
        else:
            self._status.value = report_bug(what, error)


def first_use() -> str:
    """A note for a run's status line: the first use of an OpenVINO engine converts."""
    if ENGINE.value == "torch":
        return ""
    return " (the first run with an OpenVINO engine exports the detector for it, once)"


def _prepare(name: str, progress: Any) -> str:
    """The engine ``name`` resolves to, converted and loaded (runs in the worker)."""
    predictor = new_predictor()
    if predictor.engine != name:  # "auto" without openvino, or on a GPU
        return predictor.engine
    return predictor.prepare_engine(progress=progress)


def _openvino_available() -> bool:
    from napari_mobilesam.engines.openvino_engine import openvino_available

    return openvino_available()


def _only_torch(combo: ComboBox) -> None:
    """Grey out every engine but torch (openvino and nncf are not installed)."""
    model = combo.native.model()
    for row in range(combo.native.count()):
        if combo.native.itemData(row) != "torch":
            model.item(row).setEnabled(False)
    from napari_mobilesam.engines.openvino_engine import CPU_INSTALL

    combo.tooltip = f"{ENGINE_TOOLTIP} The OpenVINO engines need: {CPU_INSTALL}"
