import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PARITY_CHECKPOINT, build_yolo_checkpoint
from napari_mobilesam.segevery import discovery as discovery
from napari_mobilesam.segevery.boxes import (
    cap_by_confidence,
    clean_boxes,
    nms_boxes,
    snap_to_border,
)
from napari_mobilesam.segevery.detectors.yolo import YoloDetector
from napari_mobilesam.segevery.discovery import (
    FASTSAM_FILENAME,
    DetectorUnavailableError,
    InvalidDetectorError,
    discover_objects,
    load_detector,
)
from napari_mobilesam.weights import fetch as weights
from napari_mobilesam.weights.fetch import CACHE_ENV, WEIGHTS_ENV, WeightsError

IMGSZ = 320
HEIGHT, WIDTH = 256, 320


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-class YOLOv8n detection and segmentation checkpoints with random weights."""
    folder = tmp_path_factory.mktemp("yolo")
    return {
        "detect": build_yolo_checkpoint(folder, "yolov8n.yaml", nc=1),
        "segment": build_yolo_checkpoint(folder, "yolov8n-seg.yaml", nc=1),
    }


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty napari-mobilesam cache, no weights variable, an empty working folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cache


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail every name lookup and connection at once, and fail the test on any retry wait."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s, e.g. before retrying a download")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(time, "sleep", no_waiting)


def fresh_copy(checkpoint: Path, folder: Path) -> Path:
    """A copy under a new path, which load_detector loads anew instead of reusing a model."""
    copy = folder / checkpoint.name
    shutil.copyfile(checkpoint, copy)
    return copy


# YOLO detectors


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_yolo_detector_returns_boxes_in_the_image(checkpoints, image, task):
    detect = load_detector(checkpoints[task], conf=0.0, imgsz=IMGSZ)

    boxes, scores = detect(image)

    assert isinstance(detect, YoloDetector)
    assert detect.task == task
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    assert scores.shape == (len(boxes),)
    assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= WIDTH))
    assert np.all((boxes[:, 1] >= 0) & (boxes[:, 3] <= HEIGHT))
    assert np.all((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_yolo_detector_snaps_edges_near_the_border(checkpoints, image, task):
    boxes, _ = load_detector(checkpoints[task], conf=0.0, imgsz=IMGSZ)(image)

    # The letterboxed 320 px frame is the 256 x 320 image itself: 20 px are 20 image px.
    threshold = 20
    assert np.all((boxes[:, 0] == 0) | (boxes[:, 0] >= threshold))
    assert np.all((boxes[:, 1] == 0) | (boxes[:, 1] >= threshold))
    assert np.all((boxes[:, 2] == WIDTH) | (boxes[:, 2] <= WIDTH - threshold))
    assert np.all((boxes[:, 3] == HEIGHT) | (boxes[:, 3] <= HEIGHT - threshold))
    assert np.any(boxes[:, 0] == 0) and np.any(boxes[:, 3] == HEIGHT)


def test_yolo_detector_reads_the_image_as_rgb(checkpoints, image, tmp_path):
    from ultralytics import YOLO

    # ultralytics reads an image file into the channel order its models expect.
    picture = tmp_path / "picture.png"
    Image.fromarray(image).save(picture)
    reference = YOLO(str(checkpoints["detect"])).predict(
        str(picture),
        imgsz=IMGSZ,
        conf=0.0,
        iou=0.9,
        agnostic_nms=True,
        verbose=False,
    )[0]
    threshold = 20  # the letterboxed frame is the image itself here (gain 1, no padding)

    boxes, scores = load_detector(checkpoints["detect"], conf=0.0, imgsz=IMGSZ)(image)

    expected = snap_to_border(reference.boxes.xyxy.numpy(), image.shape, threshold)
    np.testing.assert_allclose(boxes, expected, atol=1e-3)
    np.testing.assert_allclose(scores, reference.boxes.conf.numpy(), atol=1e-6)


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_discover_objects_with_a_checkpoint(checkpoints, image, task):
    boxes, scores = discover_objects(
        image, checkpoints[task], conf=0.0, imgsz=IMGSZ, max_objects=25, device="cpu"
    )

    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.shape == (25, 4) and scores.shape == (25,)
    assert np.all(np.diff(scores) <= 0)
    assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= WIDTH))
    assert np.all((boxes[:, 1] >= 0) & (boxes[:, 3] <= HEIGHT))
    assert np.all((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))


def test_confidence_threshold_drops_every_box_of_an_untrained_model(checkpoints, image):
    boxes, scores = discover_objects(image, checkpoints["detect"], conf=0.5, imgsz=IMGSZ)

    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_loaded_models_are_reused_until_the_file_changes(checkpoints, tmp_path):
    path = fresh_copy(checkpoints["detect"], tmp_path)
    first = load_detector(path, imgsz=IMGSZ, device="cpu")
    second = load_detector(str(path), conf=0.1, imgsz=IMGSZ, device="cpu")
    assert second.model is first.model
    assert second.conf == 0.1

    shutil.copyfile(checkpoints["segment"], path)
    replaced = load_detector(path, imgsz=IMGSZ, device="cpu")
    assert replaced.model is not first.model
    assert replaced.task == "segment"


def test_a_detector_call_prints_nothing(checkpoints, image, tmp_path, capfd):
    detect = load_detector(fresh_copy(checkpoints["segment"], tmp_path), conf=0.0, imgsz=IMGSZ)
    detect(image)

    assert capfd.readouterr().out == ""


def test_torch_thread_count_is_kept(checkpoints, image, tmp_path):
    from ultralytics.utils import NUM_THREADS

    # ultralytics sets its own count (NUM_THREADS) when it sets up a CPU predictor.
    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1
    torch.set_num_threads(wanted)
    try:
        path = fresh_copy(checkpoints["detect"], tmp_path)
        load_detector(path, conf=0.0, imgsz=IMGSZ, device="cpu")(image)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_importing_the_module_imports_neither_torch_nor_ultralytics():
    code = (
        f"import sys, {discovery.__name__}; "
        "sys.exit(any(name in sys.modules for name in ('torch', 'ultralytics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == 0


# Files that are not usable detectors


def test_missing_file(tmp_path):
    missing = tmp_path / "nuclei.pt"
    with pytest.raises(FileNotFoundError, match=r"nuclei\.pt does not exist"):
        load_detector(missing)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("random.pt", np.random.default_rng(0).bytes(4096)),
        ("notes.pt", b"these are my notes, not a model\n"),
        ("notes.txt", b"these are my notes, not a model\n"),
    ],
)
def test_file_that_is_not_a_checkpoint(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(InvalidDetectorError, match="not an ultralytics YOLO checkpoint"):
        load_detector(path)


def test_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(InvalidDetectorError, match="it is a folder"):
        load_detector(tmp_path)


def test_mobile_sam_state_dict_is_not_a_detector():
    with pytest.raises(ValueError, match="not an ultralytics YOLO checkpoint") as raised:
        load_detector(PARITY_CHECKPOINT)
    assert PARITY_CHECKPOINT.name in str(raised.value)


def test_classification_checkpoint_is_refused(tmp_path):
    path = build_yolo_checkpoint(tmp_path, "yolov8n-cls.yaml", nc=2)
    with pytest.raises(InvalidDetectorError, match="'classify' model"):
        load_detector(path)


def test_image_size_must_fit_the_model_stride(checkpoints):
    with pytest.raises(ValueError, match="multiple of the model's stride 32; received 300"):
        load_detector(checkpoints["detect"], imgsz=300)


# Named detectors


def test_auto_without_any_detector_offline_lists_the_options(isolated_env, no_network):
    from ultralytics.utils import SETTINGS

    if (Path(SETTINGS["weights_dir"]) / FASTSAM_FILENAME).is_file():
        pytest.skip(f"{FASTSAM_FILENAME} is in ultralytics' weights folder on this computer")

    with pytest.raises(DetectorUnavailableError) as raised:
        load_detector("auto")

    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert "ObjectAwareModel.pt" in message and FASTSAM_FILENAME in message
    assert "detector='/path/to/model.pt'" in message
    assert "detector='grid'" in message
    assert "boxes=" in message
    assert f"into {isolated_env}" in message
    assert WEIGHTS_ENV in message
    assert not list(isolated_env.rglob("*.pt"))


def test_auto_prefers_the_object_aware_model(checkpoints, isolated_env, monkeypatch):
    requested = []

    def fetch(name: str, *, progress: bool = True) -> Path:
        requested.append(name)
        return checkpoints["segment"]

    monkeypatch.setattr(weights, "fetch_checkpoint", fetch)

    detect = load_detector("auto", imgsz=IMGSZ)

    assert requested == ["object_aware"]
    assert detect.path == checkpoints["segment"]


def test_auto_falls_back_to_fastsam_in_the_cache(
    checkpoints, isolated_env, no_network, monkeypatch
):
    def unavailable(name: str, *, progress: bool = True) -> Path:
        raise WeightsError(f"no {name} here")

    monkeypatch.setattr(weights, "fetch_checkpoint", unavailable)
    isolated_env.mkdir()
    fastsam = isolated_env / FASTSAM_FILENAME
    shutil.copyfile(checkpoints["segment"], fastsam)

    assert load_detector("auto", imgsz=IMGSZ).path == fastsam


def test_fastsam_in_the_weights_folder(
    checkpoints, isolated_env, no_network, tmp_path, monkeypatch
):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(checkpoints["segment"], folder / FASTSAM_FILENAME)
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))

    detect = load_detector("FastSAM", imgsz=IMGSZ)

    assert detect.path == folder / FASTSAM_FILENAME
    assert detect.task == "segment"


def test_object_aware_missing_from_the_weights_folder(isolated_env, tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(DetectorUnavailableError, match=r"has no ObjectAwareModel\.pt") as raised:
        load_detector("object_aware")
    assert "detector='grid'" in str(raised.value)


# Callable detectors


def test_callable_detector_output_is_cleaned(image):
    def detector(rgb: np.ndarray) -> tuple[list, list]:
        assert rgb is image
        return (
            [[300, 10, 250, 60], [-50, -50, 10, 10], [400, 0, 500, 50], [20, 20, 80, 80]],
            [0.3, 0.8, 0.9, 0.5],
        )

    boxes, scores = discover_objects(image, detector)

    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10], [20, 20, 80, 80], [250, 10, 300, 60]])
    np.testing.assert_array_equal(scores, np.float32([0.8, 0.5, 0.3]))


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (np.zeros((3, 4)), "must return a pair"),
        ((np.zeros((3, 3)), np.zeros(3)), r"shape \(N, 4\)"),
        ((np.zeros((3, 4)), np.zeros(2)), "one score per box"),
        ((np.full((1, 4), np.nan), np.ones(1)), "NaN or infinite"),
        ((["a", "b", "c", "d"], [1.0]), "numeric arrays"),
    ],
)
def test_callable_detector_with_a_wrong_output(image, output, match):
    def detector(rgb: np.ndarray) -> object:
        return output

    with pytest.raises(InvalidDetectorError, match=match):
        discover_objects(image, detector)


def test_callable_detector_without_boxes(image):
    boxes, scores = discover_objects(image, lambda rgb: ([], []))

    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_detector_of_the_wrong_type():
    with pytest.raises(TypeError, match="received int"):
        load_detector(42)


def test_image_must_be_rgb_uint8(image):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB image"):
        discover_objects(image[..., 0], lambda rgb: ([], []))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB image"):
        discover_objects(image.astype(np.float32), lambda rgb: ([], []))


@pytest.mark.parametrize(("name", "value"), [("conf", 1.5), ("iou", -0.1), ("max_objects", 0)])
def test_arguments_out_of_range(image, name, value):
    with pytest.raises(ValueError, match=name):
        discover_objects(image, lambda rgb: ([], []), **{name: value})


# Box helpers


def test_snap_to_border():
    boxes = np.array([[5, 30, 90, 95], [19.9, 20, 80, 80], [20, 19, 81, 81]], np.float32)

    snapped = snap_to_border(boxes, (100, 100), threshold=20)

    np.testing.assert_array_equal(snapped, [[0, 30, 100, 100], [0, 20, 80, 80], [20, 0, 100, 100]])
    assert boxes[0, 0] == 5


def test_snap_to_border_of_a_wide_frame():
    snapped = snap_to_border([[150, 10, 185, 35], [30, 25, 170, 30]], (50, 200, 3), threshold=20)

    np.testing.assert_array_equal(snapped, [[150, 0, 200, 50], [30, 25, 170, 30]])
    assert snapped.dtype == np.float32


def test_snap_to_border_with_zero_threshold_changes_nothing():
    boxes = [[0.5, 0.5, 99.5, 99.5]]
    np.testing.assert_array_equal(snap_to_border(boxes, (100, 100), threshold=0), boxes)


def test_nms_boxes():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]]
    scores = [0.5, 0.9, 0.7]

    # The first two boxes overlap with an IoU of 90 / 110 = 0.82.
    np.testing.assert_array_equal(nms_boxes(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(nms_boxes(boxes, scores, 0.9), [1, 2, 0])
    assert nms_boxes(np.zeros((0, 4)), [], 0.5).dtype == np.int64


def test_nms_boxes_refuses_mismatched_scores():
    with pytest.raises(ValueError, match=r"one score per box, shape \(2,\)"):
        nms_boxes([[0, 0, 1, 1], [2, 2, 3, 3]], [0.5], 0.5)


def test_cap_by_confidence():
    boxes = [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3], [3, 3, 4, 4]]

    kept, scores = cap_by_confidence(boxes, [0.5, 0.9, 0.5, 0.7], 3)

    np.testing.assert_array_equal(kept, [[1, 1, 2, 2], [3, 3, 4, 4], [0, 0, 1, 1]])
    np.testing.assert_array_equal(scores, np.float32([0.9, 0.7, 0.5]))
    assert kept.dtype == np.float32


def test_cap_by_confidence_with_fewer_boxes_than_the_cap():
    kept, scores = cap_by_confidence([[0, 0, 1, 1]], [0.1], 320)
    assert kept.shape == (1, 4) and scores.shape == (1,)


def test_clean_boxes():
    boxes = [
        [10, 20, 30, 40],  # fine
        [30, 40, 10, 20],  # inverted
        [-10, -5, 20, 500],  # partly outside: clipped
        [120, 10, 150, 20],  # right of the image
        [10, 10, 10, 30],  # zero width
        [np.nan, 0, 5, 5],
        [0, 0, np.inf, 5],
    ]

    kept, valid = clean_boxes(boxes, (50, 100))

    np.testing.assert_array_equal(kept, [[10, 20, 30, 40], [10, 20, 30, 40], [0, 0, 20, 50]])
    np.testing.assert_array_equal(valid, [True, True, True, False, False, False, False])
    assert kept.dtype == np.float32


def test_clean_boxes_with_no_boxes():
    kept, valid = clean_boxes([], (50, 100, 3))
    assert kept.shape == (0, 4) and valid.shape == (0,)


@pytest.mark.parametrize(
    ("boxes", "error", "match"),
    [
        ([[1, 2, 3]], ValueError, r"shape \(N, 4\)"),
        ([1, 2, 3, 4], ValueError, r"shape \(N, 4\)"),
        ([["a", "b", "c", "d"]], TypeError, "not numeric"),
    ],
)
def test_clean_boxes_refuses_what_are_not_boxes(boxes, error, match):
    with pytest.raises(error, match=match):
        clean_boxes(boxes, (50, 100))
