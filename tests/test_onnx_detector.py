"""ONNX exports of ultralytics YOLO models as detectors: the route that cannot run code.

A ``.pt`` file is unpickled by ultralytics, which can run code stored in it; an ONNX file
holds a graph and weights only. Random-weight YOLOv8n detection and segmentation models are
exported once per module (a few seconds each) and must give the same boxes as their ``.pt``.
"""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from conftest import build_yolo_checkpoint
from napari_mobilesam import segment_everything
from napari_mobilesam.segevery.detectors import letterbox, onnx
from napari_mobilesam.segevery.detectors import yolo as yolo
from napari_mobilesam.segevery.discovery import (
    DetectorUnavailableError,
    InvalidDetectorError,
    load_detector,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

IMGSZ = 320
TASKS = ("detect", "segment")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``task -> (.pt, .onnx)``: one-class YOLOv8n models with random weights, exported at
    ``imgsz=320`` (fixed size, no onnxslim)."""
    folder = tmp_path_factory.mktemp("onnx")
    yolo_class = yolo.yolo_class()
    found = {}
    for task, base in zip(TASKS, ("yolov8n.yaml", "yolov8n-seg.yaml"), strict=True):
        checkpoint = build_yolo_checkpoint(folder, base, nc=1)
        # Freshly built heads give nearly all anchors one score; random class weights make
        # the scores differ, so that the comparison with the .pt is not one of tie-breaking.
        model = yolo_class(str(checkpoint))
        torch.manual_seed(1)
        for branch in model.model.model[-1].cv3:
            torch.nn.init.normal_(branch[-1].weight, std=0.05)
        model.save(checkpoint)
        start = time.perf_counter()
        with yolo.quiet_ultralytics():
            exported = yolo_class(str(checkpoint)).export(
                format="onnx", imgsz=IMGSZ, simplify=False, device="cpu"
            )
        took = time.perf_counter() - start
        assert took < 60, f"exporting {base} to ONNX took {took:.0f} s"
        found[task] = (checkpoint, Path(exported))
    return found


@pytest.fixture(scope="module")
def square_image() -> np.ndarray:
    """A square image: .pt and fixed-size ONNX models then see the same letterboxed input."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (IMGSZ, IMGSZ, 3), dtype=np.uint8)
    image[60:200, 40:160] = (220, 60, 60)
    image[150:300, 200:310] = (40, 200, 90)
    return image


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@pytest.mark.parametrize("task", TASKS)
def test_onnx_export_gives_the_boxes_of_its_pt(models, square_image, task):
    checkpoint, exported = models[task]
    onnx_detect = load_detector(exported, conf=0.0, imgsz=IMGSZ, device="cpu")
    pt_detect = load_detector(checkpoint, conf=0.0, imgsz=IMGSZ, device="cpu")
    assert onnx_detect.task == task
    assert onnx_detect.imgsz == IMGSZ and onnx_detect.applies_nms

    onnx_boxes, onnx_scores = onnx_detect(square_image)
    pt_boxes, pt_scores = pt_detect(square_image)
    assert onnx_boxes.dtype == onnx_scores.dtype == np.float32
    assert len(pt_boxes) > 10, "random weights at conf=0 give many boxes"
    assert len(onnx_boxes) == len(pt_boxes)
    # Float differences may reorder near-equal scores, and random weights give many equal
    # boxes: match the boxes one to one by the assignment of largest total IoU.
    iou = box_iou(onnx_boxes, pt_boxes)
    rows, columns = linear_sum_assignment(iou, maximize=True)
    assert len(rows) == len(pt_boxes)
    assert iou[rows, columns].min() >= 0.99
    np.testing.assert_allclose(np.sort(onnx_scores), np.sort(pt_scores), atol=1e-3)


def test_onnx_export_runs_at_its_own_size_by_default(models):
    detect = load_detector(models["detect"][1], device="cpu")
    assert detect.imgsz == IMGSZ


@pytest.mark.parametrize("imgsz", [640, 1024])
def test_onnx_export_refuses_another_imgsz(models, imgsz):
    with pytest.raises(ValueError, match=rf"fixed input size of {IMGSZ}.*imgsz={imgsz}") as raised:
        load_detector(models["detect"][1], imgsz=imgsz, device="cpu")
    assert f"Pass imgsz={IMGSZ}" in str(raised.value)
    assert "dynamic=True" in str(raised.value)


def test_onnx_fixed_frame_boxes_snap_like_a_pt_frame():
    # A 500 x 1000 image fills rows 256..768 of a fixed 1024 square frame; a .pt model
    # gets a 512 x 1024 frame. Edges at the image's top and bottom must snap in both.
    boxes = np.array([[0.0, 266.0, 1024.0, 760.0]])
    moved, frame = letterbox.square_to_rect_frame(boxes, (1024, 1024), (500, 1000), 32)
    assert frame == (512, 1024)
    np.testing.assert_allclose(moved, [[0, 10, 1024, 504]])
    # A .pt frame (already minimal) is not moved.
    same, frame = letterbox.square_to_rect_frame(boxes, (512, 1024), (500, 1000), 32)
    assert frame == (512, 1024)
    np.testing.assert_allclose(same, boxes)


def test_segment_everything_with_an_onnx_detector(predictor, models):
    image = np.random.default_rng(4).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for task in TASKS:
        result = segment_everything(
            image, predictor=predictor, detector=models[task][1], conf=0.0, max_objects=5
        )
        assert result.labels.shape == image.shape[:2]
        assert 0 < result.n_objects <= 5
        assert (result.boxes[:, [0, 2]] <= image.shape[1]).all()
        assert (result.boxes[:, [1, 3]] <= image.shape[0]).all()


def test_onnx_without_onnxruntime_names_the_extra(models, monkeypatch, tmp_path):
    path = shutil.copy(models["detect"][1], tmp_path / "nuclei.onnx")
    real_find_spec = onnx.importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "onnxruntime" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(onnx.importlib.util, "find_spec", find_spec)
    with pytest.raises(DetectorUnavailableError, match="onnxruntime") as raised:
        load_detector(path, device="cpu")
    assert 'pip install "napari-mobilesam[onnx]"' in str(raised.value)


def test_onnx_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(InvalidDetectorError, match=r"junk\.onnx is not a loadable ONNX model"):
        load_detector(junk, device="cpu")


def test_onnx_without_ultralytics_metadata(models, tmp_path):
    import onnx

    model = onnx.load(str(models["detect"][1]))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(InvalidDetectorError, match="no ultralytics metadata"):
        load_detector(bare, device="cpu")


def test_other_exports_are_still_refused(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(InvalidDetectorError, match=r"\.pt file or an ONNX export"):
        load_detector(engine)


def test_widget_file_picker_offers_onnx_and_says_it_cannot_run_code(make_napari_viewer):
    from napari_mobilesam._widgets._segevery_widget import SegEveryWidget

    field = SegEveryWidget(make_napari_viewer())._detector_file
    assert field.filter.split() == ["*.pt", "*.onnx"]
    assert "can run code" in field.tooltip and "trust" in field.tooltip
    assert "ONNX files cannot run code" in field.tooltip
