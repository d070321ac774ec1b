"""The Train widget, run as a user runs it: pairs of layers in, a trained file out, handed
to SegEvery.

Training is real (tiny: synthetic nuclei, one or two epochs on the CPU); the tests check
the structure (learning curve points, progress, the file, the hand-off), not the quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam._widgets import SegEveryWidget, TrainWidget
from napari_mobilesam._widgets._train_handoff import TRAINED_PREFIX, docked
from napari_mobilesam._widgets._train_job import BOX_DECODER, POINT_DECODER
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei

TIMEOUT_MS = 240_000
SIDE = 128


def nuclei_viewer(make_napari_viewer, qtbot, count: int = 2):
    viewer = make_napari_viewer(show=True)
    for seed in range(count):
        image, labels = synthetic_nuclei((SIDE, SIDE), seed=seed)
        viewer.add_image(image, name=f"nuclei {seed}")
        viewer.add_labels(labels, name=f"nuclei {seed} labels")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def add_pairs(viewer, widget: TrainWidget, count: int = 2) -> None:
    for seed in range(count):
        widget.data.add_pair(
            viewer.layers[f"nuclei {seed}"], viewer.layers[f"nuclei {seed} labels"]
        )


def wait(qtbot, job) -> None:
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)


def snapshot(viewer) -> dict[str, np.ndarray]:
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


def assert_untouched(viewer, before: dict[str, np.ndarray]) -> None:
    """The layers of ``before`` are all there, data unchanged (new layers may follow)."""
    assert [layer.name for layer in viewer.layers][: len(before)] == list(before)
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)


def test_the_note_says_how_images_are_split(make_napari_viewer, qtbot):
    viewer, widget = nuclei_viewer(make_napari_viewer, qtbot)
    note = widget.data._note
    assert "No pair added: the pair above is used" in note.value
    assert "validation is on the training image" in note.value
    add_pairs(viewer, widget)
    assert note.value.startswith("2 images: 1 for validation, 1 for training")
    # a stack: each plane with objects is one image
    image, labels = synthetic_nuclei((SIDE, SIDE), seed=5)
    stack_labels = np.stack([labels, np.zeros_like(labels), labels])
    viewer.add_image(np.stack([image] * 3), name="stack")
    viewer.add_labels(stack_labels, name="stack labels")
    widget.data.add_pair(viewer.layers["stack"], viewer.layers["stack labels"])
    assert note.value.startswith("4 images: 1 for validation, 3 for training")
    widget.data._pair_list.value = [0]
    widget.data.remove_selected()
    assert len(widget.data.pairs) == 2 and note.value.startswith("3 images")
    viewer.layers.remove("stack labels")
    assert len(widget.data.pairs) == 1


def test_bad_input_is_said_in_the_widget_and_layers_stay(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    viewer, widget = nuclei_viewer(make_napari_viewer, qtbot, count=1)
    status = widget._status
    assert widget.train() is None
    assert "Save as" in status.value
    widget._output.value = tmp_path / "detector.pt"
    widget._start_from.value = "file"
    assert widget.train() is None and "Base file" in status.value
    widget._base_file.value = widget._output.value = tmp_path / "same.pt"
    (tmp_path / "same.pt").write_bytes(b"base")
    assert widget.train() is None and "another file than the base" in status.value
    widget._output.value = tmp_path / "detector.pt"
    widget._start_from.value = "scratch"

    # a label image of another shape, then one without any object
    viewer.add_labels(np.zeros((SIDE, SIDE + 8), np.int32), name="wrong shape")
    viewer.add_labels(np.zeros((SIDE, SIDE), np.int32), name="empty")
    before = snapshot(viewer)
    for labels, expected in (("wrong shape", "differs from the image"), ("empty", "no object")):
        widget.data._labels_pick.value = viewer.layers[labels]
        job = widget.train()
        wait(qtbot, job)
        assert job.outcome.state == "failed"
        assert expected in status.value and status.value.startswith("Training the detector")
        assert widget._train.enabled and not widget._cancel.enabled
        assert not widget._use.visible
    assert_untouched(viewer, before)
    assert not (tmp_path / "detector.pt").exists()

    # a folder pair whose label image holds floats
    import tifffile

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image, truth = synthetic_nuclei((SIDE, SIDE), seed=0)
    tifffile.imwrite(images / "a.tif", image)
    tifffile.imwrite(labels / "a.tif", truth.astype(np.float32))
    widget.data._source.value = "folders"
    assert widget.train() is None and "folder of images" in status.value
    widget.data._images_folder.value = images
    widget.data._labels_folder.value = labels
    assert widget.data._note.value.startswith("1 image / label file pair(s)")
    job = widget.train()
    wait(qtbot, job)
    assert job.outcome.state == "failed" and "integers" in status.value


@pytest.mark.usefixtures("random_weights")
def test_train_the_detector_cancel_train_again_and_use_it_in_segevery(
    make_napari_viewer, qtbot, tmp_path
):
    viewer, widget = nuclei_viewer(make_napari_viewer, qtbot)
    add_pairs(viewer, widget)
    before = snapshot(viewer)
    output = tmp_path / "nuclei-detector.pt"
    widget._output.value = output

    # Cancel: the flag is set, the run stops after its batch and keeps the best so far
    widget._epochs.value = 5
    job = widget.train()
    assert not widget._train.enabled and widget._cancel.enabled
    widget._cancel.clicked.emit()
    assert job.stop_requested and "Stopping" in widget._status.value
    wait(qtbot, job)
    assert job.outcome.state == "stopped", job.outcome.message
    assert job.outcome.result.stopped and output.is_file()
    assert "Training stopped" in widget._status.value and widget._use.visible
    assert widget._train.enabled and not widget._cancel.enabled

    # ... and trains again, to the end
    widget._epochs.value = 2
    job = widget.train()
    assert widget.curve.scores == [] and not widget._use.visible
    wait(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message
    assert output.is_file() and job.outcome.result.path == output
    assert [epoch for epoch, _ in widget.curve.scores] == [1, 2]
    assert len(widget.curve.losses) == 2
    assert widget._progress.value == widget._progress.max == 2
    assert widget._use.visible and widget._use.text == "Use it in SegEvery"
    assert_untouched(viewer, before)

    # "Use it in SegEvery" opens SegEvery with the file in its YOLO file field
    assert docked(viewer, SegEveryWidget) is None
    widget._use.clicked.emit()
    segevery = docked(viewer, SegEveryWidget)
    assert segevery is not None
    assert segevery._detector.value == "file" and segevery._detector_file.value == output
    assert "press Run" in widget._status.value

    segevery._image.value = viewer.layers["nuclei 0"]
    segevery._conf.value = 0.0  # two epochs find little
    segevery._max_objects.value = 3
    run = segevery.run()
    qtbot.waitUntil(lambda: run.outcome is not None, timeout=TIMEOUT_MS)
    assert run.outcome.state in ("done", "empty"), run.outcome.message
    assert_untouched(viewer, before)  # a result is a new layer; the annotations stay


@pytest.mark.usefixtures("random_weights")
def test_train_the_box_decoder_and_use_it_in_segevery(
    make_napari_viewer, qtbot, tmp_path, seed0_prompt_guided
):
    viewer, widget = nuclei_viewer(make_napari_viewer, qtbot, count=1)
    widget._what.value = BOX_DECODER
    assert widget._start_from.value == "prompt_guided"
    widget._start_from.value = "file"
    widget._base_file.value = seed0_prompt_guided
    widget._epochs.value = 1
    output = tmp_path / "decoder.pt"
    widget._output.value = output
    job = widget.train()
    wait(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message
    assert output.is_file()
    # epoch 0 is the base decoder's score, before training
    assert [epoch for epoch, _ in widget.curve.scores] == [0, 1]
    assert widget._progress.value == widget._progress.max == 1
    assert job.outcome.kind == BOX_DECODER and widget._use.text == "Use it in SegEvery"

    segevery = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(segevery, name="SegEvery")
    widget._use.clicked.emit()
    assert docked(viewer, SegEveryWidget) is segevery
    assert segevery._decoder.value == str(output)
    assert segevery._decoder.current_choice == f"{TRAINED_PREFIX}{output.name}"
    viewer.add_points(np.zeros((1, 2)))  # layer changes reset the choices: the file stays
    assert segevery._decoder.value == str(output)
    assert segevery.settings().decoder == str(output)


def test_point_decoder_says_how_segany_uses_it(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = nuclei_viewer(make_napari_viewer, qtbot, count=1)
    widget._what.value = POINT_DECODER
    assert widget._start_from.value == "mobile_sam"
    trained = tmp_path / "points.pt"
    trained.write_bytes(b"weights")
    widget.trained = (POINT_DECODER, trained)
    message = widget.use_trained()
    assert "NAPARI_MOBILESAM_WEIGHTS" in message and str(trained) in message
    assert docked(viewer, SegEveryWidget) is None
