"""The SegAny widget, driven as a user does: clicks, keys, rectangles, layer edits.

The model has random weights (``random_weights`` fixture), so masks are noise-like: the
tests check where masks go and what is kept, not what they look like.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from qtpy.QtCore import QPoint, Qt

from napari_mobilesam._widgets import SegAnyWidget
from napari_mobilesam._widgets._prompt_layers import BACKGROUND, FOREGROUND, PROMPT_FEATURE

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 120_000


@pytest.fixture
def cell() -> np.ndarray:
    return skimage.data.cell()[:256, :256]


def open_widget(make_napari_viewer, image: np.ndarray, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="cell", **image_kwargs)
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    return viewer, widget


def start(make_napari_viewer, image: np.ndarray, **image_kwargs):
    viewer, widget = open_widget(make_napari_viewer, image, **image_kwargs)
    return viewer, widget.controller


def wait_for_preview(qtbot, controller) -> np.ndarray:
    """Wait until the preview of the current prompts is shown; return its label image."""
    qtbot.waitUntil(lambda: controller.preview_ready and not controller.busy, timeout=TIMEOUT_MS)
    preview = controller.preview
    return preview.request.plane.take(controller.preview_layer.data)


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def click(qtbot, viewer, world_yx, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """A left click on the canvas at a (y, x) world position of the displayed plane."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    widget = canvas(viewer)
    offset = (np.asarray(world_yx, dtype=float) - np.asarray(camera.center[-2:])) * camera.zoom
    point = QPoint(round(widget.width() / 2 + offset[1]), round(widget.height() / 2 + offset[0]))
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, modifier, point)


def rectangle(y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def test_click_previews_and_accept_writes_label_1_then_2(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    assert controller.points.name == "cell prompts"
    assert controller.boxes.name == "cell boxes"
    assert viewer.layers.selection.active is controller.points
    assert controller.points.mode == "add"

    click(qtbot, viewer, (100, 120))
    assert len(controller.points.data) == 1
    first = wait_for_preview(qtbot, controller) > 0
    assert controller.preview_layer.name == "cell preview"
    assert first.any()

    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    labels = viewer.layers["cell labels"]
    np.testing.assert_array_equal(labels.data == 1, first)
    np.testing.assert_array_equal(labels.scale, viewer.layers["cell"].scale)
    assert len(controller.points.data) == 0, "accept clears the prompts"
    assert not controller.preview_layer.data.any(), "and the preview"
    assert viewer.layers.selection.active is controller.points, "ready for the next object"

    click(qtbot, viewer, (30, 200))
    second = wait_for_preview(qtbot, controller) > 0
    assert controller.accept() == 1
    np.testing.assert_array_equal(labels.data == 1, first)  # label 1 is never overwritten
    np.testing.assert_array_equal(labels.data == 2, second & ~first)

    labels.undo()  # an accept is one step of the labels layer's undo history
    assert labels.data.max() == 1
    np.testing.assert_array_equal(labels.data == 1, first)


def test_background_point_by_shift_click_and_b_key(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    click(qtbot, viewer, (100, 120))
    foreground_only = wait_for_preview(qtbot, controller).copy()

    click(qtbot, viewer, (110, 130), Qt.KeyboardModifier.ShiftModifier)
    with_background = wait_for_preview(qtbot, controller)
    kinds = list(controller.points.features[PROMPT_FEATURE])
    assert kinds == [FOREGROUND, BACKGROUND]
    np.testing.assert_array_equal(controller.preview.request.prompts.point_labels, [1, 0])
    assert not np.array_equal(foreground_only, with_background)
    magenta = np.array([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(controller.points.face_color[1], magenta)

    qtbot.keyClick(canvas(viewer), Qt.Key.Key_B)
    assert controller.background_clicks
    click(qtbot, viewer, (50, 50))
    assert controller.points.features[PROMPT_FEATURE].iloc[-1] == BACKGROUND
    click(qtbot, viewer, (60, 60), Qt.KeyboardModifier.ShiftModifier)
    assert controller.points.features[PROMPT_FEATURE].iloc[-1] == FOREGROUND


def test_single_point_offers_three_candidates(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    controller.points.add([100, 120])
    wait_for_preview(qtbot, controller)
    decoded = controller.preview.decoded
    assert decoded.masks.shape[0] == 3
    assert not decoded.separate_objects

    controller.select_candidate(2)
    third = decoded.masks[decoded.ranking[2]]
    np.testing.assert_array_equal(controller.preview_layer.data > 0, third)
    controller.accept()
    np.testing.assert_array_equal(viewer.layers["cell labels"].data == 1, third)


def test_two_rectangles_make_two_objects(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    controller.points.add([20, 20])
    controller.boxes.add_rectangles([rectangle(10, 10, 120, 120), rectangle(130, 130, 250, 250)])
    preview = wait_for_preview(qtbot, controller)
    decoded = controller.preview.decoded
    assert decoded.separate_objects and decoded.masks.shape[0] == 2
    assert controller.preview.request.prompts.points_ignored
    assert set(np.unique(preview)) <= {0, 1, 2}

    assert controller.accept() == int(decoded.masks[0].any()) + int(decoded.masks[1].any())
    labels = viewer.layers["cell labels"].data
    np.testing.assert_array_equal(labels == 1, decoded.masks[0])
    np.testing.assert_array_equal(labels == 2, decoded.masks[1] & ~decoded.masks[0])
    assert controller.boxes.nshapes == 0
    assert len(controller.points.data) == 0, "accept clears every prompt of the plane"


def test_one_rectangle_and_points_make_one_object(make_napari_viewer, qtbot, cell):
    _viewer, controller = start(make_napari_viewer, cell)
    controller.boxes.add_rectangles(rectangle(10, 10, 120, 120))
    controller.points.add([60, 60])
    wait_for_preview(qtbot, controller)
    prompts = controller.preview.request.prompts
    np.testing.assert_allclose(prompts.boxes, [[10, 10, 120, 120]])
    np.testing.assert_allclose(prompts.point_coords, [[60, 60]])
    assert controller.preview.decoded.masks.shape[0] == 1


def test_widget_buttons_clear_accept_and_output_choice(make_napari_viewer, qtbot, cell):
    viewer, widget = open_widget(make_napari_viewer, cell)
    controller = widget.controller
    assert widget._output.value == "(new layer)"

    controller.points.add([100, 120])
    wait_for_preview(qtbot, controller)
    widget._clear.native.click()
    assert len(controller.points.data) == 0
    assert controller.preview is None and not controller.preview_layer.data.any()
    assert "cell labels" not in viewer.layers

    controller.points.add([100, 120])
    mask = wait_for_preview(qtbot, controller) > 0
    widget._accept.native.click()
    labels = viewer.layers["cell labels"]
    assert widget._output.value is labels
    np.testing.assert_array_equal(labels.data == 1, mask)

    widget._output.value = "(new layer)"  # the next object goes to a new layer
    controller.points.add([100, 120])
    wait_for_preview(qtbot, controller)
    widget._accept.native.click()
    assert widget._output.value is viewer.layers["cell labels [1]"]
    np.testing.assert_array_equal(viewer.layers["cell labels [1]"].data == 1, mask)


def test_painted_labels_are_kept_unless_overwrite_is_ticked(make_napari_viewer, qtbot, cell):
    viewer, widget = open_widget(make_napari_viewer, cell)
    controller = widget.controller
    painted = np.zeros(cell.shape, dtype=np.int32)
    painted[:, :128] = 7
    output = viewer.add_labels(painted.copy(), name="cell labels")
    controller.set_output_layer(output)
    viewer.layers.selection.active = controller.points

    controller.boxes.add_rectangles(rectangle(0, 0, 255, 255))
    mask = wait_for_preview(qtbot, controller) > 0
    assert mask[:, :128].any() and mask[:, 128:].any(), "the test needs a mask on both sides"
    controller.accept()
    np.testing.assert_array_equal(output.data[:, :128], 7)
    np.testing.assert_array_equal(output.data[:, 128:] == 8, mask[:, 128:])

    widget._overwrite.value = True
    assert controller.overwrite
    controller.boxes.add_rectangles(rectangle(0, 0, 255, 255))
    mask = wait_for_preview(qtbot, controller) > 0
    controller.accept()
    np.testing.assert_array_equal(output.data == 9, mask)


def test_stack_segments_the_plane_on_screen(make_napari_viewer, qtbot, cell):
    stack = np.stack([cell, cell[::-1], cell[:, ::-1]])
    viewer, controller = start(make_napari_viewer, stack, scale=(2.0, 0.5, 0.5))
    viewer.dims.set_current_step(0, 1)
    click(qtbot, viewer, (50, 60))  # world (y, x) = data (100, 120) at scale 0.5
    np.testing.assert_allclose(controller.points.data, [[1, 100, 120]], atol=0.6)
    mask = wait_for_preview(qtbot, controller) > 0
    assert controller.preview.request.plane.fixed == (1, None, None)

    controller.accept()
    labels = viewer.layers["cell labels"]
    assert labels.data.shape == stack.shape
    np.testing.assert_array_equal(labels.scale, [2.0, 0.5, 0.5])
    np.testing.assert_array_equal(labels.data[1] == 1, mask)
    assert not labels.data[0].any() and not labels.data[2].any()

    viewer.dims.set_current_step(0, 2)
    controller.points.add([1, 10, 10])  # on plane 1: not shown, not used
    assert controller.preview is None
    assert not controller.busy


def test_rgb_layer_and_contrast_limits_reach_the_model(make_napari_viewer, qtbot):
    rgb = skimage.data.astronaut()[::2, ::2]
    viewer, controller = start(make_napari_viewer, rgb)
    controller.points.add([100, 100])
    wait_for_preview(qtbot, controller)
    assert controller.preview.request.contrast_limits is None
    assert controller.preview_layer.data.shape == rgb.shape[:2]

    viewer.layers["cell"].contrast_limits = (50, 200)
    wait_for_preview(qtbot, controller)
    assert controller.preview.request.contrast_limits == (50.0, 200.0)


def test_newer_prompts_supersede_a_running_preview(make_napari_viewer, qtbot, cell):
    _viewer, controller = start(make_napari_viewer, cell)
    controller.points.add([100, 120])
    controller.points.add([30, 40])
    wait_for_preview(qtbot, controller)
    assert len(controller.preview.request.prompts.point_coords) == 2


def test_removing_layers_while_a_preview_runs(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    controller.points.add([100, 120])
    assert controller.busy
    viewer.layers.remove(controller.points)
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    assert controller.points is None
    assert controller.preview is None
    assert controller.accept() == 0
    assert "cell labels" not in viewer.layers


def test_changing_the_image_while_a_preview_runs(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, cell)
    other = viewer.add_image(cell[::-1].copy(), name="other")
    controller.points.add([100, 120])
    controller.set_image(other)
    assert controller.points.name == "other prompts"
    qtbot.waitUntil(lambda: not controller.busy, timeout=TIMEOUT_MS)
    assert controller.preview is None
    assert "cell preview" not in viewer.layers, "the stale result was dropped"


def test_3d_display_is_refused_with_a_message(make_napari_viewer, qtbot, cell):
    viewer, controller = start(make_napari_viewer, np.stack([cell, cell]))
    controller.points.add([0, 100, 120])
    wait_for_preview(qtbot, controller)
    viewer.dims.ndisplay = 3
    assert controller.preview is None
    assert "2-D" in controller.status


def test_next_label_id_scans_once_and_follows_painting():
    from napari.layers import Labels

    from napari_mobilesam._widgets._label_ids import NextLabelId

    class CountingArray(np.ndarray):
        scans = 0

        def max(self, *args, **kwargs):
            CountingArray.scans += 1
            return super().max(*args, **kwargs)

    layer = Labels(np.zeros((32, 32), np.int32))
    layer.data = np.zeros((32, 32), np.int32).view(CountingArray)
    layer.data[0, 0] = 3
    ids = NextLabelId()
    for expected in (4, 5, 6):
        label = ids.next_id(layer)
        assert label == expected
        with ids.writing(layer):
            layer.data_setitem((np.array([expected]), np.array([expected])), label)
        ids.used(layer, label)
    assert CountingArray.scans == 1, "our own writes do not call for a new scan"

    layer.data_setitem((np.array([20]), np.array([20])), 40)  # the user paints id 40
    assert ids.next_id(layer) == 41
    region = np.array([[0, 77]])  # an id the region to write already holds (e.g. an undo)
    assert ids.next_id(layer, region) == 78
    layer.data = np.zeros((32, 32), np.int32)  # data replaced
    assert ids.next_id(layer) == 1
