"""Stacks in the widgets, driven as a user does: SegAny's Propagate (Ctrl+P) through a Z
stack, cancel and undo; SegEvery on all slices with the objects linked across slices.

The models have random weights (``random_weights`` fixture), so masks are noise-like: the
tests check where masks go, what is kept and what is undone, not what they look like.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import QPoint, Qt

from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget, _propagate

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 300_000


@pytest.fixture
def volume() -> np.ndarray:
    """A 6 x 128 x 128 Z stack with two bright ellipsoids on a noisy background."""
    z, y, x = np.mgrid[:6, :128, :128]
    rng = np.random.default_rng(0)
    stack = rng.normal(20, 5, (6, 128, 128))
    stack += 180 * (((z - 2.5) / 3.2) ** 2 + ((y - 64) / 30) ** 2 + ((x - 50) / 22) ** 2 < 1)
    stack += 120 * (((z - 3) / 2.5) ** 2 + ((y - 40) / 14) ** 2 + ((x - 100) / 14) ** 2 < 1)
    return stack.astype(np.float32)


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def click(qtbot, viewer, world_yx) -> None:
    """A left click on the canvas at a (y, x) world position of the displayed plane."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    widget = canvas(viewer)
    offset = (np.asarray(world_yx, dtype=float) - np.asarray(camera.center[-2:])) * camera.zoom
    point = QPoint(round(widget.width() / 2 + offset[1]), round(widget.height() / 2 + offset[0]))
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)


def ctrl_p(qtbot, viewer) -> None:
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)


def open_segany(make_napari_viewer, qtbot, image: np.ndarray, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="volume", **image_kwargs)
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def wait_for_job(qtbot, controller):
    qtbot.waitUntil(lambda: not controller.propagator.running, timeout=TIMEOUT_MS)
    return controller.propagator.job


def test_propagate_by_key_writes_one_id_across_slices_and_undo(
    make_napari_viewer, qtbot, volume, notifications
):
    viewer, widget = open_segany(make_napari_viewer, qtbot, volume)
    controller = widget.controller
    assert widget._propagate.visible and not widget._stack_axis.visible  # one stack axis
    labels = viewer.add_labels(np.zeros(volume.shape, np.int32), name="volume labels")
    labels.data[0, :4, :4] = 5  # painted before: kept
    controller.set_output_layer(labels)
    viewer.layers.selection.active = controller.points
    viewer.dims.set_current_step(0, 2)

    click(qtbot, viewer, (64, 50))
    np.testing.assert_allclose(controller.points.data, [[2, 64, 50]], atol=0.6)
    ctrl_p(qtbot, viewer)
    job = controller.propagator.job
    assert job is not None and job.request.axis == 0 and list(job.request.prompts) == [2]
    assert not widget._propagate.enabled and widget._cancel_propagation.enabled
    job = wait_for_job(qtbot, controller)
    assert job.state == "done", job.message
    assert job.label == 6
    spans = [z for z in range(6) if (labels.data[z] == 6).any()]
    assert 2 in spans
    np.testing.assert_array_equal(labels.data == 6, job.result.mask & (labels.data != 5))
    assert (labels.data[0, :4, :4] == 5).all()
    assert set(np.unique(labels.data)) <= {0, 5, 6}, "one new id"
    assert len(controller.points.data) == 0, "the prompts are used up, as by Accept"
    assert widget._propagate.enabled and not widget._cancel_propagation.enabled
    assert any("Propagated id 6" in message for _, message in notifications)

    # Ctrl+Z on the labels layer undoes the whole propagation in one step.
    viewer.layers.selection.active = labels
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert set(np.unique(labels.data)) == {0, 5}
    assert (labels.data[0, :4, :4] == 5).all()


def test_propagate_from_two_slices_with_a_box_in_3d_display(make_napari_viewer, qtbot, volume):
    viewer, widget = open_segany(make_napari_viewer, qtbot, volume)
    controller = widget.controller
    controller.points.add([[1, 64, 50], [4, 60, 52]])  # two annotated slices
    controller.boxes.add_rectangles(
        np.array([[4, 30, 20], [4, 30, 80], [4, 98, 80], [4, 98, 20]], dtype=float)
    )
    viewer.dims.ndisplay = 3
    assert widget._propagate.visible
    job = controller.propagate()
    assert job is not None and sorted(job.request.prompts) == [1, 4]
    assert set(job.request.prompts[4]) == {"point_coords", "point_labels", "box"}
    job = wait_for_job(qtbot, controller)
    assert job.state == "done", job.message
    labels = viewer.layers["volume labels"]
    assert (labels.data[1] == 1).any() and (labels.data[4] == 1).any()
    assert controller.boxes.nshapes == 0 and len(controller.points.data) == 0


def test_cancel_mid_way_leaves_the_labels_as_they_were(
    make_napari_viewer, qtbot, volume, monkeypatch, notifications
):
    viewer, widget = open_segany(make_napari_viewer, qtbot, volume)
    controller = widget.controller
    labels = viewer.add_labels(np.zeros(volume.shape, np.int32), name="volume labels")
    labels.data[3, 60:70, 45:55] = 2
    before = labels.data.copy()
    controller.set_output_layer(labels)
    controller.points.add([2, 64, 50])

    # Hold the run after its first slice until Cancel is clicked, so that the click lands
    # mid-way whatever the speed of the machine.
    original = _propagate.PropagationJob._check_cancel

    def check_cancel(job, done, total):
        original(job, done, total)
        if done >= 1:
            job._cancel.wait(timeout=60)

    monkeypatch.setattr(_propagate.PropagationJob, "_check_cancel", check_cancel)
    qtbot.mouseClick(widget._propagate.native, Qt.MouseButton.LeftButton)
    job = controller.propagator.job
    qtbot.waitUntil(lambda: job._bar is not None and job._bar.n >= 1, timeout=TIMEOUT_MS)
    assert widget._cancel_propagation.enabled
    qtbot.mouseClick(widget._cancel_propagation.native, Qt.MouseButton.LeftButton)
    job = wait_for_job(qtbot, controller)
    assert job.state == "cancelled", job.message
    np.testing.assert_array_equal(labels.data, before)
    assert len(controller.points.data) == 1, "the prompts are kept for another try"
    assert job._bar is None, "the progress bar is closed"
    assert any("cancelled" in message for _, message in notifications)


def test_bad_input_is_a_clear_error(make_napari_viewer, qtbot, volume, notifications):
    viewer, widget = open_segany(make_napari_viewer, qtbot, volume[2])
    controller = widget.controller
    assert not widget._propagate.visible, "no Propagate for a 2-D image"
    controller.points.add([64, 50])
    assert controller.propagate() is None
    assert "2-D image" in controller.status
    assert (NotificationSeverity.ERROR, f"SegAny: {controller.status}") in notifications

    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)

    controller.set_image(viewer.add_image(volume, name="stack"))
    assert widget._propagate.visible
    assert controller.propagate() is None
    assert "prompts on no slice" in controller.status
    assert controller.propagate(axis=2) is None
    assert "Axis 2 is not a stack axis" in controller.status
    assert controller.propagate(axis=5) is None
    assert "Axis 5 is not a stack axis" in controller.status
    assert not any("labels" in layer.name for layer in viewer.layers), "nothing written"


def test_axis_choice_for_a_time_lapse_of_volumes(make_napari_viewer, qtbot, volume):
    movie = np.stack([volume, np.roll(volume, 3, axis=2)])  # T, Z, Y, X
    viewer, widget = open_segany(
        make_napari_viewer, qtbot, movie, axis_labels=("t", "z", "y", "x")
    )
    controller = widget.controller
    assert widget._stack_axis.visible
    values = list(widget._stack_axis.choices)
    assert values == [-1, 0, 1]  # auto, T, Z
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)
    viewer.dims.last_used = 1  # as moving the Z slider does: auto walks along Z
    controller.points.add([1, 2, 64, 50])
    request = controller.propagator.request()
    assert request.axis == 1 and request.plane.fixed[0] == 1
    widget._stack_axis.value = 0  # along T, at Z = 2
    assert controller.stack_axis == 0
    request = controller.propagator.request()
    assert request.axis == 0 and request.plane.fixed[1] == 2 and list(request.prompts) == [1]
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)


# ---------------------------------------------------------------------- SegEvery linking
def test_segevery_all_slices_links_objects_across_slices(
    make_napari_viewer, qtbot, volume, yolo_file
):
    viewer = make_napari_viewer(show=True)
    stack = np.repeat(volume[2:3], 3, axis=0)  # the same slice thrice: objects must link
    viewer.add_image(stack, name="volume")
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    widget._detector.value = "file"
    widget._detector_file.value = yolo_file
    widget._conf.value = 0.0
    widget._max_objects.value = 3
    widget._scope.value = "all slices"
    assert widget._link.visible and widget._link.value == "z", "3-D objects by default"

    job = widget.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert job.outcome.state == "done", job.outcome.message
    layer = job.result_layer
    features = layer.features
    assert {"first_slice", "last_slice", "volume", "mean_score"} <= set(features.columns)
    ids = np.unique(layer.data[layer.data > 0])
    np.testing.assert_array_equal(sorted(features["index"]), ids)
    spanning = features[features["last_slice"] > features["first_slice"]]
    assert len(spanning), "identical slices give objects that span slices"
    for row in features.itertuples():
        on = [z for z in range(3) if (layer.data[z] == row.index).any()]
        assert on[0] == row.first_slice and on[-1] == row.last_slice
        assert row.volume == np.count_nonzero(layer.data == row.index)
    assert "linked" in job.outcome.message


def test_segevery_link_defaults_to_tracks_for_a_time_axis(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(volume, name="movie", axis_labels=("time", "y", "x"))
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    widget._scope.value = "all slices"
    assert widget._link.value == "t"
    settings = widget.settings()
    assert settings.link == "t" and settings.link_axis == 0
    widget._link.value = "off"
    assert widget.settings().link == "off"
