"""GUI faults under Xvfb, with real widgets: closing while workers run, repeated runs,
several widgets on one viewer, the warning on the YOLO file field, layers deleted and the
image, slice or display mode switched while SegAny decodes or propagates, and SegEvery
cancelled at each stage of a run.

The model has random weights (``random_weights``), so the tests check that napari keeps
running and the user's layers are kept, not what the masks look like. ``FAULTS`` counts
the faults injected, for the README figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import skimage.data
from qtpy.QtCore import Qt

from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget, _model, _propagate, _segevery
from napari_mobilesam._widgets._segany_layers import NEW_LAYER
from napari_mobilesam._widgets._segevery_widget import YOLO_FILE_TOOLTIP

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 120_000

CLOSE_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import napari
    from qtpy.QtCore import QTimer

    from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget

    viewer = napari.Viewer(show=True)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (160, 200), dtype=np.uint8), name="cell")
    every = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(every, name="SegEvery")
    every._detector.value = "grid"
    every._points_per_side.value = 4
    any_widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(any_widget, name="SegAny")
    job = every.run()
    assert job is not None and job.running
    any_widget.controller.points.add([80, 100])  # SegAny starts encoding and decoding
    QTimer.singleShot({delay}, {close})
    napari.run()
    print("exited cleanly", flush=True)
    """
)


@pytest.mark.parametrize(
    ("delay", "close"),
    [
        (0, "viewer.close"),
        (300, "viewer.close"),
        (0, "lambda: (viewer.window.remove_dock_widget('all'), viewer.close())"),
    ],
    ids=["viewer-at-once", "viewer-mid-run", "docks-then-viewer"],
)
def test_closing_while_workers_run_exits_cleanly(tmp_path, random_weights, delay, close):
    script = tmp_path / "close_while_running.py"
    script.write_text(CLOSE_SCRIPT.format(delay=delay, close=close))
    env = {
        **os.environ,
        "NAPARI_MOBILESAM_WEIGHTS": str(random_weights),
        "NAPARI_MOBILESAM_CACHE": str(tmp_path / "cache"),
        "YOLO_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exited cleanly" in done.stdout
    assert "has been deleted" not in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.fixture
def cell() -> np.ndarray:
    return skimage.data.cell()[:192, :192]


def test_yolo_file_field_warns_that_files_can_run_code(make_napari_viewer, cell):
    viewer = make_napari_viewer()
    viewer.add_image(cell, name="cell")
    widget = SegEveryWidget(viewer)
    field = widget._detector_file
    assert field.tooltip == YOLO_FILE_TOOLTIP
    assert "can run code" in field.tooltip and "trust" in field.tooltip


def test_segevery_run_twice_quickly_gives_one_result(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(cell, name="cell")
    before = image.data.copy()
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    widget._detector.value = "grid"
    widget._points_per_side.value = 4
    first = widget.run()
    second = widget.run()  # a double click
    assert first is not None and second is None, "the second run is refused while one runs"
    qtbot.waitUntil(lambda: first.outcome is not None, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers].count("cell objects") == (
        1 if first.outcome.state == "done" else 0
    )
    third = widget.run()  # allowed again once finished
    assert third is not None
    qtbot.waitUntil(lambda: third.outcome is not None, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(image.data, before), "the image is never changed"
    assert "cell" in viewer.layers


def test_segevery_cancel_then_run_again(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="cell")
    widget = SegEveryWidget(viewer)
    widget._detector.value = "grid"
    widget._points_per_side.value = 4
    names = [layer.name for layer in viewer.layers]
    job = widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    if job.outcome.state == "cancelled":
        assert [layer.name for layer in viewer.layers] == names, "a cancelled run adds nothing"
    again = widget.run()
    assert again is not None
    qtbot.waitUntil(lambda: again.outcome is not None, timeout=TIMEOUT_MS)
    assert again.outcome.state in ("done", "empty")


def test_two_segany_widgets_on_one_viewer(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="cell")
    first = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(first, name="SegAny 1")
    second = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(second, name="SegAny 2")
    one, two = first.controller, second.controller
    one.points.add([100, 120])
    qtbot.waitUntil(lambda: one.preview_ready and not one.busy, timeout=TIMEOUT_MS)
    assert one.accept() == 1
    labels = viewer.layers["cell labels"]
    kept = labels.data.copy()
    two.points.add([30, 40])
    qtbot.waitUntil(
        lambda: (two.preview_ready and not two.busy) or not two.points.data.size,
        timeout=TIMEOUT_MS,
    )
    assert "cell" in viewer.layers and "cell labels" in viewer.layers
    # Whatever the second widget does, the first object is kept.
    assert ((labels.data == 1) | ~(kept == 1)).all()


def test_deleting_layers_mid_decode_keeps_napari_running(make_napari_viewer, qtbot, cell):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cell, name="cell")
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    controller = widget.controller
    controller.points.add([100, 120])
    qtbot.waitUntil(lambda: controller.preview_ready and not controller.busy, timeout=TIMEOUT_MS)
    controller.accept()
    labels = viewer.layers["cell labels"]
    accepted = labels.data.copy()

    controller.points.add([40, 40])  # a decode starts ...
    viewer.layers.remove(controller.boxes)  # ... and the boxes and points layers go
    viewer.layers.remove(controller.points)
    qtbot.wait(200)
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(labels.data, accepted), "accepted labels are kept"

    viewer.layers.remove("cell")  # the image itself, with the labels still there
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(viewer.layers["cell labels"].data, accepted)
    labels.undo()
    assert not labels.data.any(), "undo still restores the state before the accept"


# ------------------------------------------------------------------ held workers
class Hold:
    """Holds a worker thread once, where it calls :meth:`wait`, until :meth:`release`.

    ``reached`` is set when the worker is held, so that the test injects its fault while
    the worker is at a known stage, however fast or slow the machine is.
    """

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._release = threading.Event()
        self._used = False

    def wait(self) -> None:
        if self._used:
            return
        self._used = True
        self.reached.set()
        self._release.wait(timeout=60)

    def release(self) -> None:
        self._release.set()


@pytest.fixture
def small() -> np.ndarray:
    return skimage.data.cell()[:128, :128].copy()


@pytest.fixture
def volume() -> np.ndarray:
    """A 6 x 128 x 128 Z stack with a bright ellipsoid on a noisy background."""
    z, y, x = np.mgrid[:6, :128, :128]
    rng = np.random.default_rng(0)
    stack = rng.normal(20, 5, (6, 128, 128))
    stack += 180 * (((z - 2.5) / 3.2) ** 2 + ((y - 64) / 30) ** 2 + ((x - 50) / 22) ** 2 < 1)
    return stack.astype(np.float32)


def open_segany(make_napari_viewer, qtbot, image: np.ndarray, name: str = "cell"):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=name)
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget, widget.controller


def wait_for_preview(qtbot, controller) -> np.ndarray:
    qtbot.waitUntil(lambda: controller.preview_ready and not controller.busy, timeout=TIMEOUT_MS)
    return controller.preview.request.plane.take(controller.preview_layer.data) > 0


def hold_propagation(monkeypatch) -> Hold:
    """Hold every propagation after its first slice until ``release``."""
    hold = Hold()
    original = _propagate.PropagationJob._check_cancel

    def check_cancel(job, done, total):
        original(job, done, total)
        if done >= 1:
            hold.wait()

    monkeypatch.setattr(_propagate.PropagationJob, "_check_cancel", check_cancel)
    return hold


def names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


# ------------------------------------------------------------- SegAny: output deleted
def test_output_labels_deleted_mid_decode_then_accept(make_napari_viewer, qtbot, small):
    viewer, widget, controller = open_segany(make_napari_viewer, qtbot, small)
    controller.points.add([60, 60])
    wait_for_preview(qtbot, controller)
    assert controller.accept() >= 0
    removed = viewer.layers["cell labels"]
    kept = removed.data.copy()
    assert widget._output.value is removed

    controller.points.add([30, 90])  # a decode starts ...
    assert controller.busy
    viewer.layers.remove(removed)  # ... and the output layer is deleted
    assert controller.output is None and widget._output.value == NEW_LAYER
    mask = wait_for_preview(qtbot, controller)
    widget._accept.native.click()  # Accept: a new "cell labels" layer, as for a first accept
    np.testing.assert_array_equal(removed.data, kept), "nothing is written to the removed layer"
    new = viewer.layers["cell labels"]
    assert new is not removed and controller.output is new and widget._output.value is new
    np.testing.assert_array_equal(new.data == 1, mask)
    assert set(np.unique(new.data)) <= {0, 1}
    assert f"to {new.name!r}" in controller.status or "Nothing was written" in controller.status
    assert "cell" in viewer.layers and "cell prompts" in viewer.layers
    new.undo()
    assert not new.data.any(), "undo restores the new layer as it was made"


def test_output_labels_deleted_mid_propagation(make_napari_viewer, qtbot, volume, monkeypatch):
    viewer, widget, controller = open_segany(make_napari_viewer, qtbot, volume, "volume")
    removed = viewer.add_labels(np.zeros(volume.shape, np.int32), name="volume labels")
    removed.data[0, :4, :4] = 5
    kept = removed.data.copy()
    controller.set_output_layer(removed)
    viewer.layers.selection.active = controller.points
    viewer.dims.set_current_step(0, 2)
    controller.points.add([2, 64, 50])
    hold = hold_propagation(monkeypatch)
    qtbot.keyClick(
        viewer.window._qt_viewer.canvas.native, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier
    )
    job = controller.propagator.job
    assert job is not None and job.running
    qtbot.waitUntil(hold.reached.is_set, timeout=TIMEOUT_MS)
    viewer.layers.remove(removed)
    assert controller.output is None
    hold.release()
    qtbot.waitUntil(lambda: not controller.propagator.running, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(removed.data, kept), "nothing is written to the removed layer"
    assert job.state in ("done", "empty"), job.message
    assert controller.status == job.message
    assert widget._propagate.enabled and not widget._cancel_propagation.enabled
    if job.state == "done":
        # As Accept does: the object goes to a new "<image> labels" layer, id 1.
        new = viewer.layers["volume labels"]
        assert new is not removed and job.label == 1
        assert f"Propagated id 1 into {new.name!r}" in job.message
        np.testing.assert_array_equal(new.data == 1, job.result.mask)
        new.undo()
        assert not new.data.any()
    assert "volume" in viewer.layers


# ------------------------------------------------------ SegAny: image, slice, display
def test_switching_the_image_in_the_widget_mid_decode(make_napari_viewer, qtbot, small):
    viewer, widget, controller = open_segany(make_napari_viewer, qtbot, small)
    other = viewer.add_image(small[::-1].copy(), name="other")
    assert widget._image.value is viewer.layers["cell"]
    controller.points.add([60, 60])  # a decode of "cell" starts ...
    assert controller.busy
    widget._image.value = other  # ... and the user picks another image
    assert controller.image is other and controller.points.name == "other prompts"
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    assert controller.preview is None, "the result for 'cell' is dropped"
    assert "cell preview" not in viewer.layers and "other preview" not in viewer.layers
    np.testing.assert_array_equal(viewer.layers["cell prompts"].data, [[60, 60]]), "kept"
    assert not any(name.endswith("labels") for name in names(viewer))

    controller.points.add([40, 40])
    mask = wait_for_preview(qtbot, controller)
    assert controller.preview.request.image is other
    controller.accept()
    labels = viewer.layers["other labels"]
    np.testing.assert_array_equal(labels.data == 1, mask)
    labels.undo()
    assert not labels.data.any()


def test_moving_the_slider_mid_decode_drops_the_preview(make_napari_viewer, qtbot, small):
    stack = np.stack([small, small[::-1], small[:, ::-1]])
    viewer, _widget, controller = open_segany(make_napari_viewer, qtbot, stack)
    viewer.dims.set_current_step(0, 0)
    controller.points.add([0, 60, 60])  # a decode of slice 0 starts ...
    assert controller.busy
    viewer.dims.set_current_step(0, 1)  # ... and the slider moves to slice 1
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    # Documented: the preview is of the plane on screen; slice 1 has no prompt, so the
    # result computed for slice 0 is dropped, nothing is drawn anywhere.
    assert controller.preview is None
    assert controller.preview_layer is None or not controller.preview_layer.data.any()
    assert "Click on an object" in controller.status
    np.testing.assert_array_equal(controller.points.data, [[0, 60, 60]]), "the prompt is kept"

    viewer.dims.set_current_step(0, 0)  # back: the preview of slice 0 is recomputed
    mask = wait_for_preview(qtbot, controller)
    assert controller.preview.request.plane.fixed == (0, None, None)
    controller.accept()
    labels = viewer.layers["cell labels"]
    np.testing.assert_array_equal(labels.data[0] == 1, mask)
    assert not labels.data[1:].any(), "only the slice the prompt is on"
    labels.undo()
    assert not labels.data.any()


def test_3d_display_mid_decode_drops_the_preview(make_napari_viewer, qtbot, small):
    stack = np.stack([small, small[::-1]])
    viewer, _widget, controller = open_segany(make_napari_viewer, qtbot, stack)
    controller.points.add([0, 60, 60])  # a decode starts ...
    assert controller.busy
    viewer.dims.ndisplay = 3  # ... and the viewer switches to 3-D
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    assert controller.preview is None
    assert controller.preview_layer is None or not controller.preview_layer.data.any()
    assert "2-D" in controller.status
    assert controller.accept() == 0 and "cell labels" not in viewer.layers
    viewer.dims.ndisplay = 2  # back in 2-D the preview comes back
    wait_for_preview(qtbot, controller)
    assert controller.preview.request.plane.fixed == (0, None, None)
    np.testing.assert_array_equal(controller.points.data, [[0, 60, 60]])


def test_3d_display_mid_propagation_still_writes(make_napari_viewer, qtbot, volume, monkeypatch):
    viewer, widget, controller = open_segany(make_napari_viewer, qtbot, volume, "volume")
    image = viewer.layers["volume"]
    before = image.data.copy()
    viewer.dims.set_current_step(0, 2)
    controller.points.add([2, 64, 50])
    hold = hold_propagation(monkeypatch)
    qtbot.mouseClick(widget._propagate.native, Qt.MouseButton.LeftButton)
    job = controller.propagator.job
    assert job is not None and job.request.axis == 0
    qtbot.waitUntil(hold.reached.is_set, timeout=TIMEOUT_MS)
    viewer.dims.ndisplay = 3  # the request was captured at the start: the run goes on
    hold.release()
    qtbot.waitUntil(lambda: not controller.propagator.running, timeout=TIMEOUT_MS)
    assert job.state in ("done", "empty"), job.message
    assert controller.status == job.message
    np.testing.assert_array_equal(image.data, before)
    if job.state == "done":
        labels = viewer.layers["volume labels"]
        np.testing.assert_array_equal(labels.data == job.label, job.result.mask)
        assert len(controller.points.data) == 0, "the prompts are used up"
        labels.undo()
        assert not labels.data.any(), "one undo step restores the labels"
    assert widget._propagate.enabled and not widget._cancel_propagation.enabled
    viewer.dims.ndisplay = 2


# ------------------------------------------------------------------ SegEvery
def open_segevery(make_napari_viewer, qtbot, image: np.ndarray):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="cell")
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def use_box_detector(widget, monkeypatch, hold: Hold | None = None) -> None:
    """A detector (in place of the widget's "auto") that proposes two boxes, held the first
    time it runs at ``hold`` if given; the boxes are decoded by mobile_sam.pt's decoder."""
    import napari_mobilesam.segevery.discovery

    def discover_objects(image, detector, **_kwargs):
        if hold is not None:
            hold.wait()
        boxes = np.array([[10, 10, 100, 100], [20, 60, 120, 120]], np.float32)
        return boxes, np.array([0.9, 0.8], np.float32)

    monkeypatch.setattr(napari_mobilesam.segevery.discovery, "discover_objects", discover_objects)
    widget._detector.value = "auto"
    widget._decoder.value = "mobile_sam"


def _hold_decoding(monkeypatch, hold: Hold) -> None:
    """Hold the run when it starts decoding (after discovery and the image embedding)."""
    original = _segevery.SegEveryJob._report

    def report(job, number, done, total):
        hold.wait()
        original(job, number, done, total)

    monkeypatch.setattr(_segevery.SegEveryJob, "_report", report)


def test_segevery_moving_the_slider_mid_run_keeps_the_slice(
    make_napari_viewer, qtbot, small, monkeypatch
):
    stack = np.stack([small, small[::-1], small[:, ::-1]])
    viewer, widget = open_segevery(make_napari_viewer, qtbot, stack)
    use_box_detector(widget, monkeypatch)  # boxes decode to objects: a result
    hold = Hold()
    _hold_decoding(monkeypatch, hold)
    viewer.dims.set_current_step(0, 1)
    job = widget.run()
    assert job is not None and job.planes[0].fixed == (1, None, None)
    qtbot.waitUntil(hold.reached.is_set, timeout=TIMEOUT_MS)
    viewer.dims.set_current_step(0, 2)  # "this slice" was slice 1 when Run was clicked
    hold.release()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert job.outcome.state == "done", job.outcome.message
    layer = job.result_layer
    assert layer.data.shape == stack.shape
    assert layer.data[1].any(), "the objects go to the slice they were computed for"
    assert not layer.data[0].any() and not layer.data[2].any()
    np.testing.assert_array_equal(viewer.layers["cell"].data, stack)
    layer_count = len(viewer.layers)
    viewer.layers.remove(layer)  # the result is one plain layer: removing it is the undo
    assert len(viewer.layers) == layer_count - 1 and names(viewer) == ["cell"]


def _hold_loading(monkeypatch, hold: Hold) -> None:
    """Hold the first model load of the run (an empty model cache: a real first load)."""
    monkeypatch.setattr(_model, "_models", {})
    original = _segevery.new_predictor

    def new_predictor():
        hold.wait()
        return original()

    monkeypatch.setattr(_segevery, "new_predictor", new_predictor)


@pytest.mark.parametrize(
    "stage", ["model loading", "discovery", "decoding"], ids=lambda stage: stage.split()[0]
)
def test_segevery_cancel_at_each_stage(make_napari_viewer, qtbot, small, monkeypatch, stage):
    viewer, widget = open_segevery(make_napari_viewer, qtbot, small)
    hold = Hold()
    if stage == "discovery":
        use_box_detector(widget, monkeypatch, hold)
    else:
        widget._detector.value = "grid"
        widget._points_per_side.value = 4
        (_hold_loading if stage == "model loading" else _hold_decoding)(monkeypatch, hold)
    before = names(viewer)
    job = widget.run()
    assert job is not None
    qtbot.waitUntil(hold.reached.is_set, timeout=TIMEOUT_MS)
    assert widget._cancel.enabled and not widget._run.enabled
    qtbot.mouseClick(widget._cancel.native, Qt.MouseButton.LeftButton)
    assert widget._status.value == "Cancelling..."
    hold.release()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert job.outcome.state == "cancelled", job.outcome.message
    assert names(viewer) == before, "a cancelled run adds no layer"
    assert job.result_layer is None and job._bar is None and job._plane_bar is None
    assert widget._run.enabled and not widget._cancel.enabled
    assert "cancelled" in widget._status.value

    again = widget.run()  # ready to run again (the hold is used up)
    assert again is not None
    qtbot.waitUntil(lambda: again.outcome is not None, timeout=TIMEOUT_MS)
    assert again.outcome.state in ("done", "empty"), again.outcome.message
    assert names(viewer) == before + (["cell objects"] if again.outcome.state == "done" else [])
    np.testing.assert_array_equal(viewer.layers["cell"].data, small)


FAULTS = {
    "test_closing_while_workers_run_exits_cleanly": 3,
    "test_segevery_run_twice_quickly_gives_one_result": 1,
    "test_segevery_cancel_then_run_again": 1,
    "test_two_segany_widgets_on_one_viewer": 1,
    "test_deleting_layers_mid_decode_keeps_napari_running": 3,
    "test_output_labels_deleted_mid_decode_then_accept": 1,
    "test_output_labels_deleted_mid_propagation": 1,
    "test_switching_the_image_in_the_widget_mid_decode": 1,
    "test_moving_the_slider_mid_decode_drops_the_preview": 1,
    "test_3d_display_mid_decode_drops_the_preview": 1,
    "test_3d_display_mid_propagation_still_writes": 1,
    "test_segevery_moving_the_slider_mid_run_keeps_the_slice": 1,
    "test_segevery_cancel_at_each_stage": 3,
}
