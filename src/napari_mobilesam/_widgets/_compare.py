"""The "Compare labels" dock widget: a prediction measured against ground truth in napari.

Pick two Labels layers and an IoU threshold, press Compare: the figures per threshold
(TP, FP, FN, precision, recall, F1, Cellpose's AP) and mSA fill the table, and a Labels
layer "<prediction> vs <truth>" shows matched, spurious (FP) and missed (FN) objects in
fixed colours (see :mod:`napari_mobilesam.evaluation.comparison`). The work runs in a
thread worker; neither input layer is ever changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, Table
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import QHeaderView

from napari_mobilesam._widgets._errors import expected_errors, report_bug
from napari_mobilesam._widgets._plane import unproxied
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.comparison import (
    COMPARISON_COLORS,
    COMPARISON_NAMES,
    comparison_image,
)
from napari_mobilesam.evaluation.matching import match_objects, match_planes
from napari_mobilesam.evaluation.overlap import check_label_images
from napari_mobilesam.evaluation.results import IOU_THRESHOLDS, MatchCounts, PlaneMatching

if TYPE_CHECKING:
    import napari

VOLUME = "whole volume (3-D objects)"
PLANES = "each plane (2-D objects)"
TABLE_COLUMNS = ("TP", "FP", "FN", "precision", "recall", "F1", "AP")
FRACTIONS = ("precision", "recall", "f1", "ap")
#: Marks the layers this widget made, with the names of the two layers compared.
METADATA_KEY = "napari_mobilesam_comparison"


def comparison_colormap() -> DirectLabelColormap:
    """The fixed colours of the comparison layer's classes; background transparent."""
    colors: dict[Any, Any] = {None: "transparent", 0: "transparent"}
    colors.update(COMPARISON_COLORS)
    return DirectLabelColormap(color_dict=colors)


class CompareLabelsWidget(Container):
    """Dock widget: compare a predicted Labels layer with a ground-truth Labels layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose Labels layers are compared.

    Examples
    --------
    >>> widget = CompareLabelsWidget(viewer)  # doctest: +SKIP
    >>> worker = widget.compare()  # table and "<pred> vs <gt>" layer follow  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = unproxied(viewer)
        self.result: MatchCounts | None = None
        self.worker: Any = None
        self._prediction = ComboBox(label="Prediction", nullable=True, choices=self._choices)
        self._truth = ComboBox(label="Ground truth", nullable=True, choices=self._choices)
        self._threshold = FloatSpinBox(
            label="IoU threshold", value=0.5, min=0.05, max=1.0, step=0.05,
            tooltip="a predicted object is matched when it and a true object overlap with "
            "IoU of at least this (one-to-one, as Cellpose matches); the colours use it",
        )  # fmt: skip
        self._mode = ComboBox(
            label="Stacks", choices=[VOLUME, PLANES], value=VOLUME,
            tooltip="3-D or stack layers: objects span the volume, or each plane along "
            "the first axis is compared on its own (figures summed over planes)",
        )  # fmt: skip
        self._compare = PushButton(text="Compare")
        self._legend = Label(value=_legend_html())
        self._summary = Label(value="")
        self._table = Table(value={"data": [], "index": [], "columns": list(TABLE_COLUMNS)})
        self._status = Label(value="")
        super().__init__(
            widgets=[self._prediction, self._truth, self._threshold, self._mode,
                     self._compare, self._legend, self._summary, self._table, self._status]
        )  # fmt: skip
        for label in (self._status, self._summary):
            label.native.setWordWrap(True)
        self._table.read_only = True
        self._table.min_height = 320
        header = self._table.native.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self._compare.changed.connect(self.compare)
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            emitter.connect(self.reset_choices)
        self.reset_choices()
        labels = [layer for layer in self.viewer.layers if _is_input(layer)]
        if len(labels) >= 2:
            self._prediction.value, self._truth.value = labels[-1], labels[-2]

    def _choices(self, _widget: Any) -> list[tuple[str, Labels]]:
        return [(layer.name, layer) for layer in self.viewer.layers if _is_input(layer)]

    def compare(self) -> Any:
        """Start comparing the chosen layers; returns the worker (None on bad input)."""
        if self.worker is not None:
            return None
        try:
            predicted, truth, axis = self._checked_inputs()
        except expected_errors() as error:
            self._status.value = str(error)
            return None
        threshold = round(float(self._threshold.value), 4)
        thresholds = sorted({*IOU_THRESHOLDS, threshold})
        self._status.value = f"Comparing {predicted.name!r} with {truth.name!r}..."
        self._compare.enabled = False
        self.worker = create_worker(
            _compute, predicted.data, truth.data, thresholds, threshold, axis,
            _ignore_errors=True,
        )  # fmt: skip
        self.worker.returned.connect(lambda out: self._show(out, predicted, truth, threshold))
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        return self.worker

    def _checked_inputs(self) -> tuple[Labels, Labels, int | None]:
        predicted, truth = self._prediction.value, self._truth.value
        if predicted is None or truth is None:
            raise InvalidValueError("Pick a prediction and a ground-truth Labels layer.")
        if predicted is truth:
            raise InvalidValueError(
                "Prediction and ground truth are the same layer: pick two different layers."
            )
        check_label_images(predicted.data, truth.data)
        per_plane = self._mode.value == PLANES and predicted.ndim >= 3
        return predicted, truth, 0 if per_plane else None

    def _show(self, out: tuple[MatchCounts, np.ndarray], predicted: Labels, truth: Labels,
              threshold: float) -> None:  # fmt: skip
        counts, image = out
        self.result = counts
        rows = counts.as_rows()
        self._table.value = {
            "data": [
                [r["tp"], r["fp"], r["fn"], *(f"{r[k]:.3f}" for k in FRACTIONS)] for r in rows
            ],
            "index": [f"IoU {r['threshold']:.2f}" for r in rows],
            "columns": list(TABLE_COLUMNS),
        }
        self._summary.value = (
            f"{counts.n_true} true, {counts.n_pred} predicted objects: "
            f"<b>mSA {counts.msa:.3f}</b> (mean AP over IoU 0.5:0.95), "
            f"AP50 {counts.ap50:.3f}, AP75 {counts.ap75:.3f}"
        )
        layer = self._show_layer(image, predicted, truth)
        self._status.value = f"Colours of {layer.name!r} at IoU >= {threshold:g}."

    def _show_layer(self, image: np.ndarray, predicted: Labels, truth: Labels) -> Labels:
        key = (predicted.name, truth.name)
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and layer.metadata.get(METADATA_KEY) == key:
                layer.data = image
                layer.colormap = comparison_colormap()
                return layer
        return self.viewer.add_labels(
            image, name=f"{predicted.name} vs {truth.name}", colormap=comparison_colormap(),
            scale=predicted.scale, translate=predicted.translate, opacity=0.8,
            metadata={METADATA_KEY: key},
        )  # fmt: skip

    def _on_errored(self, error: BaseException) -> None:
        if isinstance(error, expected_errors()):
            self._status.value = str(error)
        else:
            self._status.value = report_bug("Comparing labels", error)

    def _on_finished(self) -> None:
        self.worker = None
        self._compare.enabled = True


def _compute(
    predicted: Any, truth: Any, thresholds: list[float], threshold: float, axis: int | None
) -> tuple[MatchCounts, np.ndarray]:
    if axis is None:
        matching: Any = match_objects(predicted, truth, thresholds=thresholds)
    else:
        matching = match_planes(predicted, truth, axis=axis, thresholds=thresholds)
    image = comparison_image(predicted, truth, threshold=threshold, axis=axis, matching=matching)
    counts = matching.total if isinstance(matching, PlaneMatching) else matching.counts()
    return counts, image


def _is_input(layer: Any) -> bool:
    return isinstance(layer, Labels) and METADATA_KEY not in layer.metadata


def _legend_html() -> str:
    return " ".join(
        f'<span style="color:{COMPARISON_COLORS[value]}">&#9632;</span> {name}'
        for value, name in COMPARISON_NAMES.items()
    )
