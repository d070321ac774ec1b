"""The SegEvery widget and the Layers > Segment command, run as a user runs them.

The SAM model and the YOLO detector have random weights: the tests check the structure of
the result (a Labels layer on the image's grid, one feature row per label), the progress,
cancelling and error reports, not the shapes of objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from napari.utils.notifications import NotificationSeverity

from napari_mobilesam._commands import segment_everything_in_active_layer
from napari_mobilesam._widgets import SegEveryWidget
from napari_mobilesam._widgets._segevery_features import FEATURE_COLUMNS

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 300_000


@pytest.fixture
def cell() -> np.ndarray:
    return skimage.data.cell()[:256, :256]


def open_widget(make_napari_viewer, qtbot, image: np.ndarray, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="cell", **image_kwargs)
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def use_yolo(widget: SegEveryWidget, path: Path, max_objects: int = 4) -> None:
    widget._detector.value = "file"
    widget._detector_file.value = path
    widget._conf.value = 0.0  # an untrained detector scores everything low
    widget._max_objects.value = max_objects


def wait_until_finished(qtbot, job) -> None:
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)


def test_yolo_file_gives_a_labels_layer_with_features(
    make_napari_viewer, qtbot, cell, yolo_file, notifications
):
    viewer, widget = open_widget(
        make_napari_viewer, qtbot, cell, scale=(0.5, 0.5), translate=(3, 4)
    )
    assert widget._detector_file.visible is False
    use_yolo(widget, yolo_file)
    assert widget._detector_file.visible is True

    job = widget.run()
    assert not widget._run.enabled and widget._cancel.enabled
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message

    layer = viewer.layers["cell objects"]
    assert layer is job.result_layer
    assert layer.data.shape == cell.shape and layer.data.dtype == np.int32
    np.testing.assert_array_equal(layer.scale, [0.5, 0.5])
    np.testing.assert_array_equal(layer.translate, [3, 4])
    features = layer.features
    assert set(FEATURE_COLUMNS) - {"label"} <= set(features.columns)
    assert "label" not in features, "one id column: napari's 'index'"
    ids = np.unique(layer.data[layer.data > 0])
    np.testing.assert_array_equal(sorted(features["index"]), ids)
    for row in features.itertuples():
        assert row.area == np.count_nonzero(layer.data == row.index)
        assert 0 <= row.box_x0 <= row.box_x1 <= cell.shape[1]
        assert 0 <= row.box_y0 <= row.box_y1 <= cell.shape[0]
    assert len(features) <= 4
    assert (NotificationSeverity.INFO, job.outcome.message) in notifications
    assert widget._run.enabled and not widget._cancel.enabled

    # napari's status bar shows the features of the label under the cursor
    label = int(features["index"].iloc[0])
    y, x = np.argwhere(layer.data == label)[0]
    properties = layer._get_properties((y * 0.5 + 3, x * 0.5 + 4), world=True)
    assert any(line.startswith("score:") for line in properties)


def test_stack_this_slice_and_all_slices(make_napari_viewer, qtbot, cell, yolo_file):
    stack = np.stack([cell, cell[::-1]])
    viewer, widget = open_widget(make_napari_viewer, qtbot, stack)
    use_yolo(widget, yolo_file, max_objects=2)
    viewer.dims.set_current_step(0, 1)

    job = widget.run()
    wait_until_finished(qtbot, job)
    layer = job.result_layer
    assert layer.data.shape == stack.shape
    assert layer.data[1].any() and not layer.data[0].any()
    assert set(layer.features["axis_0"]) == {1}

    widget._scope.value = "all slices"
    widget._link.value = "off"  # per-slice ids: linking is tested in test_widgets_stacks.py
    job = widget.run()
    assert len(job.planes) == 2
    wait_until_finished(qtbot, job)
    layer = job.result_layer
    assert layer.name == "cell objects [1]"
    assert layer.data[0].any() and layer.data[1].any()
    first, second = (set(np.unique(layer.data[z])) - {0} for z in range(2))
    assert not first & second, "ids are unique across the stack"
    assert sorted(layer.features["axis_0"].unique()) == [0, 1]


def test_cancel_mid_run_adds_nothing(make_napari_viewer, qtbot, cell, yolo_file, notifications):
    stack = np.stack([cell] * 3)
    viewer, widget = open_widget(make_napari_viewer, qtbot, stack)
    use_yolo(widget, yolo_file, max_objects=2)
    widget._scope.value = "all slices"
    layers_before = list(viewer.layers)

    job = widget.run()
    qtbot.waitUntil(lambda: job._bar is not None and job._bar.n >= 1, timeout=TIMEOUT_MS)
    widget._cancel.clicked.emit()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "cancelled"
    assert list(viewer.layers) == layers_before
    assert job._bar is None, "the progress bar is closed"
    assert widget._run.enabled
    assert any("cancelled" in message for _, message in notifications)


def test_removing_the_image_during_a_run_adds_nothing(
    make_napari_viewer, qtbot, cell, yolo_file, notifications
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    use_yolo(widget, yolo_file)
    job = widget.run()
    viewer.layers.remove("cell")
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "cancelled"
    assert len(viewer.layers) == 0
    assert any("was removed" in message for _, message in notifications)


def test_bad_detector_file_is_an_error_notification(
    make_napari_viewer, qtbot, cell, tmp_path, notifications
):
    bad = tmp_path / "not-a-model.pt"
    bad.write_text("not a checkpoint")
    viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    use_yolo(widget, bad)
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "failed"
    assert "cell objects" not in viewer.layers
    errors = [message for severity, message in notifications if severity == "error"]
    assert len(errors) == 1 and "not-a-model.pt" in errors[0], errors


def test_missing_weights_offline_is_an_error_notification(
    make_napari_viewer, qtbot, cell, yolo_file, tmp_path, monkeypatch, notifications
):
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(tmp_path / "missing"))
    _viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    use_yolo(widget, yolo_file)
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "failed"
    errors = [message for severity, message in notifications if severity == "error"]
    assert any("NAPARI_MOBILESAM_WEIGHTS" in message for message in errors), errors


def test_no_objects_is_an_info_notification(
    make_napari_viewer, qtbot, cell, yolo_file, notifications
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    use_yolo(widget, yolo_file)
    widget._conf.value = 1.0
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "empty"
    assert "cell objects" not in viewer.layers
    assert any(
        severity == "info" and "no objects" in message for severity, message in notifications
    )


def test_grid_detector(make_napari_viewer, qtbot, cell):
    viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    widget._detector.value = "grid"
    assert widget._points_per_side.visible
    widget._points_per_side.value = 4
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state in {"done", "empty"}, job.outcome.message
    assert ("cell objects" in viewer.layers) == (job.outcome.state == "done")


def test_menu_command_runs_on_the_selected_image(
    make_napari_viewer, qtbot, cell, yolo_file, monkeypatch, notifications
):
    from napari_mobilesam._widgets import _segevery

    viewer = make_napari_viewer(show=True)
    viewer.add_points(np.zeros((1, 2)))
    assert segment_everything_in_active_layer(viewer) is None
    assert any("Select an image layer" in message for _, message in notifications)

    viewer.add_image(cell, name="cell")
    # The default detector would be downloaded; tests stay offline with a local file.
    monkeypatch.setattr(
        "napari_mobilesam._commands.SegEverySettings",
        lambda: _segevery.SegEverySettings(detector=yolo_file, conf=0.0, max_objects=2),
    )
    job = segment_everything_in_active_layer(viewer)
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message
    assert "cell objects" in viewer.layers


@pytest.fixture
def mobilesamv2_folder(tmp_path, monkeypatch) -> Path:
    """A NAPARI_MOBILESAM_WEIGHTS folder with MobileSAMv2's files as a user sets it up:
    mobile_sam.pt and ObjectAwareModel.pt (the real format, random weights)."""
    from conftest import OBJECT_AWARE_CHECKPOINT, RANDOM_WEIGHTS, require_shared

    require_shared(OBJECT_AWARE_CHECKPOINT, RANDOM_WEIGHTS)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "mobile_sam.pt").symlink_to(RANDOM_WEIGHTS)
    (folder / "ObjectAwareModel.pt").symlink_to(OBJECT_AWARE_CHECKPOINT)
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(folder))
    return folder


@pytest.fixture
def coffee() -> np.ndarray:
    from conftest import V2, require_shared

    require_shared(V2 / "official_seed0.npz")
    with np.load(V2 / "official_seed0.npz") as data:
        return data["coffee/image"]


def test_object_aware_model_with_the_prompt_guided_decoder(
    make_napari_viewer, qtbot, coffee, mobilesamv2_folder, notifications
):
    from conftest import REAL_PROMPT_GUIDED

    (mobilesamv2_folder / "Prompt_guided_Mask_Decoder.pt").symlink_to(REAL_PROMPT_GUIDED)
    _viewer, widget = open_widget(make_napari_viewer, qtbot, coffee, rgb=True)
    assert widget._detector.value == "auto" and widget._decoder.value == "auto"
    widget._max_objects.value = 8
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state in {"done", "empty"}, job.outcome.message
    assert "mobile_sam.pt's mask decoder" not in job.outcome.message
    if job.outcome.state == "done":  # "auto" says which decoder ran
        assert "Decoder: MobileSAMv2 prompt-guided" in job.outcome.message


def test_decoder_fallback_is_said_in_a_notification(
    make_napari_viewer, qtbot, coffee, mobilesamv2_folder, notifications
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, coffee, rgb=True)
    widget._max_objects.value = 8
    widget._conf.value = 0.4
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message
    assert "cell objects" in viewer.layers
    infos = [message for severity, message in notifications if severity == "info"]
    assert any("mobile_sam.pt's mask decoder" in message for message in infos), infos


def test_prompt_guided_decoder_missing_is_an_error_notification(
    make_napari_viewer, qtbot, coffee, mobilesamv2_folder, notifications
):
    viewer, widget = open_widget(make_napari_viewer, qtbot, coffee, rgb=True)
    widget._decoder.value = "prompt_guided"
    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "failed"
    assert "cell objects" not in viewer.layers
    errors = [message for severity, message in notifications if severity == "error"]
    assert any("Prompt_guided_Mask_Decoder.pt" in message for message in errors), errors


def test_grid_hides_the_decoder_choice(make_napari_viewer, qtbot, cell):
    _viewer, widget = open_widget(make_napari_viewer, qtbot, cell)
    assert widget._decoder.visible
    widget._detector.value = "grid"
    assert not widget._decoder.visible
