"""What a walkthrough of the widgets on stacks and large images tripped on (issue 19),
driven as a user does: long errors, progress, the status line, undo after Propagate,
prompt sizes, closing napari during a run, tile reuse, settings shown, NaN pixels.

The models have random weights (``random_weights`` fixture): the tests check what the
widgets show and keep, not the shapes of objects.
"""

from __future__ import annotations

import logging
import socket
import warnings

import numpy as np
import pytest
import skimage.data
from napari.utils import progress
from qtpy.QtCore import QPoint, Qt, QThreadPool
from qtpy.QtWidgets import QApplication

from napari_mobilesam._widgets import SegAnyWidget, SegEveryWidget
from napari_mobilesam._widgets._prompt_layers import POINT_SCREEN_PX
from napari_mobilesam.imaging.convert import NonFiniteWarning, to_rgb_uint8

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 300_000


@pytest.fixture
def cell() -> np.ndarray:
    return skimage.data.cell()[:256, :256]


@pytest.fixture
def volume() -> np.ndarray:
    """A 6 x 128 x 128 Z stack with a bright ellipsoid on a noisy background."""
    z, y, x = np.mgrid[:6, :128, :128]
    stack = np.random.default_rng(0).normal(20, 5, (6, 128, 128))
    stack += 180 * (((z - 2.5) / 3.2) ** 2 + ((y - 64) / 30) ** 2 + ((x - 50) / 22) ** 2 < 1)
    return stack.astype(np.float32)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name lookup fails at once (ultralytics' download of FastSAM-s.pt included)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def click(qtbot, viewer, world_yx) -> None:
    """A left click on the canvas at a (y, x) world position of the displayed plane."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    widget = canvas(viewer)
    offset = (np.asarray(world_yx, dtype=float) - np.asarray(camera.center[-2:])) * camera.zoom
    point = QPoint(round(widget.width() / 2 + offset[1]), round(widget.height() / 2 + offset[0]))
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)


def open_widget(make_napari_viewer, qtbot, kind, image, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="image", **image_kwargs)
    widget = kind(viewer)
    viewer.window.add_dock_widget(widget, name=kind.__name__)
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def one_line(status) -> bool:
    """Whether the status line is one line of text high."""
    return status.label.height() <= 1.5 * status.label.fontMetrics().height()


def test_a_long_error_is_one_line_in_the_widgets_words_with_details_a_click_away(
    make_napari_viewer, qtbot, cell, no_network, notifications
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegEveryWidget, cell)
    window = viewer.window._qt_window
    size = window.size()
    assert widget._detector.value == "auto"  # offline: no ObjectAwareModel.pt, no FastSAM
    job = widget.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    QApplication.processEvents()

    status = widget._status
    assert job.outcome.state == "failed"
    assert '"grid of points"' in status.value and '"custom YOLO file"' in status.value
    assert "detector=" not in status.value and "boxes=" not in status.value
    assert one_line(status)
    assert window.size() == size, "the window does not grow"
    assert status.details_button.isVisible()
    qtbot.mouseClick(status.details_button, Qt.MouseButton.LeftButton)
    assert "ObjectAwareModel.pt" in status.details_box.text()
    assert "NAPARI_MOBILESAM_WEIGHTS" in status.details_box.text()
    status.details_box.close()


def test_segany_status_never_clips_a_long_message(make_napari_viewer, qtbot, cell):
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegAnyWidget, cell)
    window = viewer.window._qt_window
    size = window.size()
    long = " ".join(["Propagated id 6 into 'image labels' on 30 slices of axis Z."] * 8)
    widget.controller.set_status(long)
    QApplication.processEvents()

    status = widget._status
    assert one_line(status)
    assert status.label.toolTip() == long, "the full text is the line's tooltip"
    assert status.details_button.isVisible()
    assert window.size() == size
    qtbot.mouseClick(status.details_button, Qt.MouseButton.LeftButton)
    assert status.details_box.text() == long
    status.details_box.close()


def test_propagate_shows_slices_in_the_widget_and_ctrl_z_undoes_it_at_once(
    make_napari_viewer, qtbot, volume
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegAnyWidget, volume)
    controller = widget.controller
    seen: list[tuple[str, int, int]] = []
    controller.events.progress.connect(lambda event: seen.append(event.value))
    viewer.dims.set_current_step(0, 2)
    click(qtbot, viewer, (64, 50))
    assert viewer.layers.selection.active is controller.points
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not controller.propagator.running, timeout=TIMEOUT_MS)

    job = controller.propagator.job
    assert job.state == "done", job.message
    assert seen, "the widget showed the propagation's progress"
    assert all(f"slice {done} of {total}" in line for line, done, total in seen), seen
    assert len({total for _, _, total in seen}) == 1, "one total"
    assert widget._status.progress_text == "", "the progress row is hidden at the end"
    labels = viewer.layers["image labels"]
    assert viewer.layers.selection.active is labels
    assert (labels.data == job.label).any()
    qtbot.keyClick(canvas(viewer), Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not labels.data.any(), "Ctrl+Z right after Propagate undoes it"


def lime_width(viewer) -> int:
    """Width in screen pixels of the lime (foreground prompt) pixels on the canvas."""
    shot = viewer.screenshot(canvas_only=True, flash=False)
    lime = (shot[..., 1] > 200) & (shot[..., 0] < 80) & (shot[..., 2] < 80)
    columns = np.flatnonzero(lime.any(axis=0))
    return int(columns.max() - columns.min() + 1) if len(columns) else 0


def test_prompt_points_keep_their_size_on_screen_on_a_4096_image(make_napari_viewer, qtbot):
    image = np.zeros((4096, 4096), np.uint8)
    image[::64] = 60
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegAnyWidget, image)
    controller = widget.controller
    controller.set_image(None)  # no preview: only the point is drawn
    points = controller.points
    points.add([2048, 2048])
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    for zoom in (1.0, 4.0):
        camera.center = (2048, 2048)
        camera.zoom = zoom
        assert 0 < lime_width(viewer) <= POINT_SCREEN_PX + 2, zoom


def test_closing_napari_during_a_run_cancels_it_without_tracebacks(
    make_napari_viewer, qtbot, volume, capfd, caplog
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegAnyWidget, volume)
    controller = widget.controller
    viewer.dims.set_current_step(0, 2)
    controller.points.add([2, 64, 50])
    with caplog.at_level(logging.WARNING):
        job = controller.propagate()
        viewer.close()
        qtbot.waitUntil(lambda: not job.running, timeout=TIMEOUT_MS)
        qtbot.waitUntil(
            lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=TIMEOUT_MS
        )
        for _ in range(20):
            QApplication.processEvents()
    assert job.state == "cancelled"
    assert "Traceback" not in capfd.readouterr().err
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_segevery_reuses_segany_tiles_and_counts_each_phase_with_one_total(
    make_napari_viewer, qtbot, encodes
):
    image = np.random.default_rng(1).integers(0, 255, (1200, 1200), dtype=np.uint8)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="image")
    segany = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(segany, name="SegAny")
    segany.controller.points.add([300, 300])
    qtbot.waitUntil(lambda: segany.controller.preview_ready, timeout=TIMEOUT_MS)
    assert len(encodes) == 1

    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    assert shown(widget._tiling) and shown(widget._tile_size), "a 1200² plane is tiled"
    widget._detector.value = "grid"
    widget._points_per_side.value = 2
    seen, bars = [], []

    def record(line: str, done: int, total: int) -> None:
        seen.append((line, done, total))
        bars.extend((bar.desc, bar.total) for bar in progress._all_instances)

    job = widget.run()
    job._on_progress = record
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=2 * TIMEOUT_MS)
    assert job.outcome.state in {"done", "empty"}, job.outcome.message
    assert len(encodes) == 4, "2 x 2 tiles, the one SegAny encoded is not encoded again"
    assert job.tiles_encoded == 3
    decoding = [(done, total) for line, done, total in seen if "decoding" in line]
    assert decoding and {total for _, total in decoding} == {4}, "one total"
    assert all(total > 0 for _, total in bars), "every bar label is followed by a count"
    assert "Decoder" not in job.outcome.message, "the grid has no box decoder"


def shown(widget) -> bool:
    """Whether a magicgui widget is shown where its container is."""
    return not widget.native.isHidden()


def test_settings_show_only_where_they_apply(make_napari_viewer, qtbot, cell, volume):
    viewer, widget = open_widget(make_napari_viewer, qtbot, SegEveryWidget, cell)
    assert shown(widget._detector) and shown(widget._conf)
    assert not shown(widget._scope), "a 2-D image has one plane"
    assert not shown(widget._tiling) and not shown(widget._tile_size), "256² is not tiled"
    viewer.add_image(volume, name="volume")
    widget._image.value = viewer.layers["volume"]
    assert shown(widget._scope)
    segany = SegAnyWidget(viewer)
    assert not shown(segany._tile_size) and not shown(segany._halo)
    viewer.add_image(np.zeros((2048, 2048), np.uint8), name="large")
    segany._image.value = viewer.layers["large"]
    assert shown(segany._tile_size) and shown(segany._halo)


def test_features_table_has_one_id_column(make_napari_viewer, qtbot, cell, yolo_checkpoint):
    _viewer, widget = open_widget(make_napari_viewer, qtbot, SegEveryWidget, cell)
    widget._detector.value = "file"
    widget._detector_file.value = yolo_checkpoint
    widget._conf.value = 0.0  # an untrained detector scores everything low
    widget._max_objects.value = 4
    job = widget.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert job.outcome.state == "done", job.outcome.message
    columns = list(job.result_layer.features.columns)
    ids = [name for name in columns if name in {"index", "label", "id", "label_id"}]
    assert len(ids) == 1, columns
    values = job.result_layer.features[ids[0]].to_numpy()
    np.testing.assert_array_equal(np.sort(values), np.unique(job.result_layer.data)[1:])


def test_nan_pixels_are_said_in_the_python_api_and_the_widgets(make_napari_viewer, qtbot, cell):
    image = cell.astype(np.float32)
    image[:20, :20] = np.nan
    with pytest.warns(NonFiniteWarning, match="NaN pixels are segmented as the darkest"):
        to_rgb_uint8(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        to_rgb_uint8(cell.astype(np.float32))  # no NaN: no warning

    viewer, widget = open_widget(make_napari_viewer, qtbot, SegAnyWidget, image)
    controller = widget.controller
    controller.points.add([100, 120])
    qtbot.waitUntil(lambda: controller.preview_ready and not controller.busy, timeout=TIMEOUT_MS)
    assert "NaN" in widget._status.value
    assert "400 of 65536 pixels" in widget._status.details

    segevery = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(segevery, name="SegEvery")
    segevery._detector.value = "grid"
    segevery._points_per_side.value = 4
    job = segevery.run()
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)
    assert "NaN" in segevery._status.value
    assert "darkest value" in segevery._status.details
