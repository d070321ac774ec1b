"""The Engine field of the SegAny and SegEvery widgets: one setting shown in both, what the
predictor and SegEvery's detector run with, prepared in a thread worker, and only "torch"
without the ``cpu`` extra."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from napari_mobilesam import SegAnyPredictor
from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget, _engine
from napari_mobilesam._widgets._model import ENGINE, ENGINE_ENV, new_predictor
from napari_mobilesam.engines.openvino_engine import CPU_INSTALL
from napari_mobilesam.segevery import discovery

pytestmark = pytest.mark.usefixtures("random_weights")


@pytest.fixture(autouse=True)
def _engine_from_a_clean_environment(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    ENGINE.reset()
    yield
    ENGINE.reset()


def test_choosing_the_engine_changes_what_the_predictor_and_the_detector_run_with(
    make_napari_viewer, qtbot, monkeypatch, yolo_file
):
    prepared, detectors = [], []

    def prepare_engine(self, progress=None):  # the conversion itself is tested elsewhere
        progress(1, 2)
        progress(2, 2)
        prepared.append(self.engine)
        return self.engine

    def load_detector(detector, **kwargs):
        detectors.append(kwargs["engine"])
        return lambda image: (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    monkeypatch.setattr(SegAnyPredictor, "prepare_engine", prepare_engine)
    monkeypatch.setattr(discovery, "load_detector", load_detector)
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.cell()[:128, :128], name="cell")
    segany, segevery = SegAnyWidget(viewer), SegEveryWidget(viewer)
    assert segany._engine.combo.value == segevery._engine.combo.value == "torch"
    assert new_predictor().engine == "torch"

    segany._engine.combo.value = "openvino"
    assert segevery._engine.combo.value == "openvino"  # one setting, shown in both
    assert "first use converts the model" in segany._status.value
    qtbot.waitUntil(lambda: "ready" in segany._status.value, timeout=60_000)
    assert prepared == ["openvino"]
    assert new_predictor().engine == "openvino"

    segevery._detector.value = "file"
    segevery._detector_file.value = yolo_file
    job = segevery.run()
    assert "exports the detector" in segevery._status.value
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=60_000)
    assert detectors == ["openvino"]

    segevery._engine.combo.value = "torch"
    assert segany._engine.combo.value == "torch" and new_predictor().engine == "torch"
    job = segevery.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=60_000)
    assert detectors == ["openvino", "torch"]


def test_without_the_cpu_extra_only_torch_can_be_chosen(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(_engine, "_openvino_available", lambda: False)
    widget = SegEveryWidget(make_napari_viewer())
    combo = widget._engine.combo
    model = combo.native.model()
    enabled = {
        combo.native.itemData(row): model.item(row).isEnabled()
        for row in range(combo.native.count())
    }
    assert enabled == {"auto": False, "torch": True, "openvino": False, "openvino-int8": False}
    assert CPU_INSTALL in combo.tooltip


def test_the_environment_sets_the_default(make_napari_viewer, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "openvino-int8")
    widget = SegAnyWidget(make_napari_viewer())
    assert widget._engine.combo.value == "openvino-int8"
    assert new_predictor().engine == "openvino-int8"
