"""The Compare labels widget: figures and a matched / spurious / missed layer in napari."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam._widgets import CompareLabelsWidget
from napari_mobilesam._widgets._compare import PLANES
from napari_mobilesam.evaluation import (
    COMPARISON_COLORS,
    MATCHED,
    MISSED,
    SPURIOUS,
    comparison_image,
    match_objects,
    synthetic_nuclei,
)

TIMEOUT_MS = 60_000


def prediction_of(true: np.ndarray) -> np.ndarray:
    """The truth with one object missed, one split, and one spurious blob."""
    predicted = np.roll(true, 1, axis=1).copy()
    predicted[predicted == 1] = 0
    rows, cols = np.nonzero(predicted == 2)
    predicted[rows[cols > np.median(cols)], cols[cols > np.median(cols)]] = 900
    predicted[2:12, 2:12] = 901
    return predicted


def open_widget(make_napari_viewer, qtbot, predicted, true):
    viewer = make_napari_viewer(show=True)
    viewer.add_labels(true, name="truth")
    viewer.add_labels(predicted, name="mobilesam")
    widget = CompareLabelsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare labels")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def compare(qtbot, widget):
    worker = widget.compare()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_compare_shows_the_figures_and_a_coloured_layer(make_napari_viewer, qtbot):
    _, true = synthetic_nuclei((256, 256), seed=2)
    true[:14, :14] = 0
    predicted = prediction_of(true)
    viewer, widget = open_widget(make_napari_viewer, qtbot, predicted, true)
    assert widget._prediction.value.name == "mobilesam" and widget._truth.value.name == "truth"
    compare(qtbot, widget)
    expected = match_objects(predicted, true)
    np.testing.assert_array_equal(widget.result.tp, expected.tp)
    table = widget._table.value
    assert len(table["data"]) == 10 and table["index"][0] == "IoU 0.50"
    assert table["data"][0][:3] == [expected.tp[0], expected.fp[0], expected.fn[0]]
    assert table["data"][0][-1] == f"{expected.ap50:.3f}"
    assert f"mSA {expected.msa:.3f}" in widget._summary.value
    layer = viewer.layers["mobilesam vs truth"]
    np.testing.assert_array_equal(layer.data, comparison_image(predicted, true))
    assert {MATCHED, SPURIOUS, MISSED} <= set(np.unique(layer.data))
    for value, color in COMPARISON_COLORS.items():
        rgba = layer.colormap.map(np.array([value]))[0]
        np.testing.assert_allclose(rgba[:3], [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)],
                                   atol=0.01)  # fmt: skip
    np.testing.assert_array_equal(viewer.layers["mobilesam"].data, predicted)  # untouched

    widget._threshold.value = 0.95  # the same layer is updated, not a second one added
    compare(qtbot, widget)
    assert len(viewer.layers) == 3
    assert np.count_nonzero(layer.data == MATCHED) < np.count_nonzero(
        comparison_image(predicted, true) == MATCHED
    )
    offered = {layer.name for layer in widget._truth.choices if layer is not None}
    assert offered == {"truth", "mobilesam"}  # the comparison layer is not offered


def test_screenshot_shows_the_three_colours(make_napari_viewer, qtbot, tmp_path):
    _, true = synthetic_nuclei((256, 256), seed=2)
    true[:14, :14] = 0
    viewer, widget = open_widget(make_napari_viewer, qtbot, prediction_of(true), true)
    compare(qtbot, widget)
    viewer.layers["truth"].visible = False
    viewer.layers["mobilesam"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)
    colors = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in COMPARISON_COLORS.values()}
    for color in colors:  # each class colour appears (blended at opacity 0.8 on black)
        near = np.abs(shot[..., :3].astype(int) - np.array(color) * 0.8).max(axis=-1) < 30
        assert near.sum() > 20, color
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "compare.png", shot)


def test_stacks_compare_volumes_or_planes(make_napari_viewer, qtbot):
    true = np.zeros((3, 32, 32), np.int32)
    true[:, 8:20, 8:20] = 1
    predicted = true.copy()
    predicted[1] = 0
    viewer, widget = open_widget(make_napari_viewer, qtbot, predicted, true)
    compare(qtbot, widget)  # one 3-D object, IoU 2/3
    assert widget.result.tp[0] == 1 and widget.result.n_true == 1
    widget._mode.value = PLANES
    compare(qtbot, widget)
    assert (widget.result.tp[0], widget.result.fn[0], widget.result.n_true) == (2, 1, 3)
    layer = viewer.layers["mobilesam vs truth"]
    assert np.all(layer.data[1][true[1] > 0] == MISSED)


@pytest.mark.parametrize("problem", ["same layer", "different shapes"])
def test_bad_choices_are_explained_and_no_layer_is_lost(make_napari_viewer, qtbot, problem):
    true = np.zeros((32, 32), np.int32)
    true[4:10, 4:10] = 1
    predicted = true[:30] if problem == "different shapes" else true.copy()
    viewer, widget = open_widget(make_napari_viewer, qtbot, predicted, true)
    if problem == "same layer":
        widget._truth.value = widget._prediction.value
    assert widget.compare() is None
    message = "same layer" if problem == "same layer" else "same shape"
    assert message in widget._status.value
    assert [layer.name for layer in viewer.layers] == ["truth", "mobilesam"]
    assert widget._compare.enabled
