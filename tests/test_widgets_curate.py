"""The Correct and curate widget, driven as a user does: clicks on a labels layer, keys.

The model has random weights (``random_weights`` fixture), so SAM's masks are noise-like:
the tests check ids, neighbours, undo and what is kept, not the shapes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from skimage.draw import disk, ellipse, rectangle

from napari_mobilesam._widgets import CurateWidget
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
from test_widgets_segany import TIMEOUT_MS, canvas, click

pytestmark = pytest.mark.usefixtures("random_weights")


def open_widget(make_napari_viewer, image: np.ndarray, labels: np.ndarray, **kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="cells")
    layer = viewer.add_labels(labels.copy(), name="painted", **kwargs)
    widget = CurateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct and curate")
    assert widget.controller.labels is layer and widget.controller.image.name == "cells"
    return viewer, widget, layer


def undo(qtbot, viewer) -> None:
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


def accept(qtbot, viewer) -> None:
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def centre(labels: np.ndarray, label: int) -> tuple[float, float]:
    """A pixel of ``label`` near its centroid, as (row, column)."""
    rows, cols = np.nonzero(labels == label)
    k = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return float(rows[k]), float(cols[k])


@pytest.fixture
def nuclei() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_nuclei((200, 200), seed=3)


def biggest(labels: np.ndarray, k: int = 0) -> int:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return int(ids[np.argsort(counts)[::-1][k]])


def test_delete_by_click_and_ctrl_z_restores_the_exact_array(make_napari_viewer, qtbot, nuclei):
    image, labels = nuclei
    features = pd.DataFrame({"index": np.unique(labels)[1:], "label": np.unique(labels)[1:]})
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels, features=features)
    widget._click_mode.value = "delete"
    assert viewer.layers.selection.active is layer and layer.mode == "pan_zoom"
    target = biggest(labels)
    click(qtbot, viewer, centre(labels, target))
    np.testing.assert_array_equal(layer.data, np.where(labels == target, 0, labels))
    assert target not in layer.features["label"].tolist()
    click(qtbot, viewer, (0, 0) if labels[0, 0] == 0 else (199, 199))  # background
    assert "no object" in widget._status.value
    np.testing.assert_array_equal(layer.data, np.where(labels == target, 0, labels))
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)
    assert target in layer.features["label"].tolist(), "the features table follows the undo"
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Z, modifiers)  # redo
    np.testing.assert_array_equal(layer.data, np.where(labels == target, 0, labels))
    assert target not in layer.features["label"].tolist(), "and the redo"


def test_merge_two_clicks_then_ctrl_enter_is_one_undo_step(make_napari_viewer, qtbot, nuclei):
    image, labels = nuclei
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels)
    widget._click_mode.value = "merge"
    first, second = biggest(labels, 0), biggest(labels, 1)
    click(qtbot, viewer, centre(labels, first))
    accept(qtbot, viewer)
    assert "at least 2" in widget._status.value
    np.testing.assert_array_equal(layer.data, labels)
    click(qtbot, viewer, centre(labels, second))
    accept(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, np.where(labels == second, first, labels))
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)


def test_split_by_two_clicks_keeps_every_pixel(make_napari_viewer, qtbot, nuclei):
    image, labels = nuclei
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels)
    widget._click_mode.value = "split"
    target = biggest(labels)
    rows, cols = np.nonzero(labels == target)
    left, right = np.argmin(cols), np.argmax(cols)
    click(qtbot, viewer, (rows[left], cols[left] + 1))
    assert widget.controller.picks
    click(qtbot, viewer, (rows[right], cols[right] - 1))
    qtbot.waitUntil(lambda: not widget.controller.busy, timeout=TIMEOUT_MS)
    new = int(labels.max()) + 1
    np.testing.assert_array_equal(np.isin(layer.data, [target, new]), labels == target)
    assert (layer.data == new).any() and (layer.data == target).any()
    np.testing.assert_array_equal(layer.data[labels != target], labels[labels != target])
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)


def edit_object(qtbot, viewer, widget, labels, target) -> np.ndarray:
    """Pick ``target``, add a foreground click, accept; return the layer's data before."""
    widget._click_mode.value = "edit"
    y, x = centre(labels, target)
    click(qtbot, viewer, (y, x))
    qtbot.waitUntil(lambda: widget.controller.preview is not None, timeout=TIMEOUT_MS)
    click(qtbot, viewer, (y + 2, x + 2))
    assert widget.controller.editing.kinds == [1]
    qtbot.waitUntil(
        lambda: not widget.controller.busy and widget.controller.editing.result is not None,
        timeout=TIMEOUT_MS,
    )
    accept(qtbot, viewer)
    assert widget.controller.preview is None, "accept removes the preview"


def check_edited(data: np.ndarray, labels: np.ndarray, target: int) -> None:
    others = (labels != 0) & (labels != target)
    np.testing.assert_array_equal(data[others], labels[others])
    assert (data == target).any()
    assert np.isin(data[data != labels], [0, target]).all()


def test_edit_a_painted_object_keeps_its_id_and_neighbours(make_napari_viewer, qtbot, nuclei):
    image, labels = nuclei
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels)
    target = biggest(labels)
    edit_object(qtbot, viewer, widget, labels, target)
    check_edited(layer.data, labels, target)
    assert not np.array_equal(layer.data, labels)
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)


def test_edit_on_a_tiled_large_image(make_napari_viewer, qtbot, encodes):
    image, labels = synthetic_nuclei((1300, 1300), radius=(10, 20), seed=4)
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels)
    viewer.scene.camera.zoom = 0.5
    target = int(labels[300:900, 300:900][labels[300:900, 300:900] > 0][0])
    edit_object(qtbot, viewer, widget, labels, target)
    check_edited(layer.data, labels, target)
    assert encodes and all(max(shape) <= 1024 for shape in encodes), "tiles, not the image"


@pytest.fixture
def known() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((120, 120), np.int32)
    labels[disk((30, 30), 20, shape=labels.shape)] = 1  # big, round
    labels[disk((30, 90), 5, shape=labels.shape)] = 2  # small
    labels[ellipse(90, 30, 6, 25, shape=labels.shape)] = 3  # long
    labels[rectangle((75, 75), extent=(30, 30), shape=labels.shape)] = 4  # square
    return labels * 10.0, labels


def test_filters_keep_exactly_the_objects_in_range(make_napari_viewer, qtbot, known):
    image, labels = known
    scores = pd.DataFrame({"index": [1, 2, 3, 4], "label": [1, 2, 3, 4]})
    scores["score"] = [0.9, 0.95, 0.3, 0.8]
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels, features=scores)
    panel = widget.filters
    panel._measure.clicked.emit()
    assert set(panel.measured) == {"area", "solidity", "eccentricity", "mean_intensity", "score"}
    assert panel.preview is not None and not panel.preview.data.any(), "full ranges keep all"
    panel.sliders["area"].value = (100, panel.sliders["area"].max)  # drops 2
    panel.sliders["score"].value = (0.5, panel.sliders["score"].max)  # drops 3
    np.testing.assert_array_equal(panel.preview.data > 0, np.isin(labels, [2, 3]))
    np.testing.assert_array_equal(layer.data, labels)  # a preview changes nothing
    panel._apply.clicked.emit()
    np.testing.assert_array_equal(layer.data, np.where(np.isin(labels, [2, 3]), 0, labels))
    assert layer.features["label"].tolist() == [1, 4]
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)
    assert layer.features["label"].tolist() == [1, 2, 3, 4]


def test_in_a_stack_only_the_slice_shown_changes_unless_asked(make_napari_viewer, qtbot, nuclei):
    image, plane = nuclei
    labels = np.stack([plane, plane, plane])
    viewer, widget, layer = open_widget(make_napari_viewer, np.stack([image] * 3), labels)
    viewer.dims.set_point(0, 1)
    widget._click_mode.value = "delete"
    first, second = biggest(plane, 0), biggest(plane, 1)
    click(qtbot, viewer, centre(plane, first))
    expected = labels.copy()
    expected[1][plane == first] = 0
    np.testing.assert_array_equal(layer.data, expected)
    widget._through_stack.value = True
    click(qtbot, viewer, centre(plane, second))
    expected[labels == second] = 0
    np.testing.assert_array_equal(layer.data, expected)
    undo(qtbot, viewer)
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)


def test_edit_and_merge_in_a_stack(make_napari_viewer, qtbot, nuclei):
    image, plane = nuclei
    labels = np.stack([plane, plane, plane])
    viewer, widget, layer = open_widget(make_napari_viewer, np.stack([image] * 3), labels)
    viewer.dims.set_point(0, 2)
    target = biggest(plane)
    edit_object(qtbot, viewer, widget, plane, target)
    np.testing.assert_array_equal(layer.data[:2], labels[:2])
    check_edited(layer.data[2], plane, target)
    edited = layer.data.copy()

    widget._click_mode.value = "merge"
    widget._through_stack.value = True
    first, second = biggest(plane, 1), biggest(plane, 2)
    click(qtbot, viewer, centre(plane, first))
    click(qtbot, viewer, centre(plane, second))
    accept(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, np.where(edited == second, first, edited))
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, edited)
    undo(qtbot, viewer)
    np.testing.assert_array_equal(layer.data, labels)


def test_an_edit_is_not_written_over_labels_painted_meanwhile(make_napari_viewer, qtbot, nuclei):
    image, labels = nuclei
    viewer, widget, layer = open_widget(make_napari_viewer, image, labels)
    target = biggest(labels)
    widget._click_mode.value = "edit"
    click(qtbot, viewer, centre(labels, target))
    qtbot.waitUntil(
        lambda: not widget.controller.busy and widget.controller.editing.result is not None,
        timeout=TIMEOUT_MS,
    )
    layer.paint((5, 5), 77)  # the user paints before accepting
    painted = layer.data.copy()
    accept(qtbot, viewer)
    assert "nothing was written" in widget._status.value
    np.testing.assert_array_equal(layer.data, painted)
