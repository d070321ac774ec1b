"""GUI faults under Xvfb, with real widgets: closing while workers run, repeated runs,
several widgets on one viewer, and the warning on the YOLO file field.

The model has random weights (``random_weights``), so the tests check that napari keeps
running and the user's layers are kept, not what the masks look like. ``FAULTS`` counts
the faults injected, for the README figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import skimage.data

from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget
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


FAULTS = {
    "test_closing_while_workers_run_exits_cleanly": 3,
    "test_segevery_run_twice_quickly_gives_one_result": 1,
    "test_segevery_cancel_then_run_again": 1,
    "test_two_segany_widgets_on_one_viewer": 1,
    "test_deleting_layers_mid_decode_keeps_napari_running": 3,
}
