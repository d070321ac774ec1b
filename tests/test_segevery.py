"""segment_everything: prompts to one label image, through every route."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam import segment_everything
from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.segevery.candidates import grid_points


def _smallest_owner_labels(masks: np.ndarray, min_area: int = 1) -> np.ndarray:
    """The documented overlap rule, computed the plain way from full masks: paste masks
    in order of decreasing area (later prompt first among equals), smaller ones on top."""
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    order = sorted(range(len(masks)), key=lambda i: (-areas[i], -i))
    labels = np.zeros(masks.shape[1:], np.int64)
    for i in order:
        if areas[i] >= min_area:
            labels[masks[i]] = i + 1
    return labels


def _prompt_index(result_boxes: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    return np.array([np.flatnonzero((prompts == box).all(axis=1))[0] for box in result_boxes])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:120, :160]
    img = rng.normal(100, 10, (120, 160))
    for cy, cx in [(40, 40), (80, 110), (60, 70)]:
        img += 900 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 90)
    return img.astype(np.uint16)


@pytest.mark.parametrize("name", ["coins", "cell"])
def test_boxes_route_matches_reference_masks(predictor, parity_cases, name):
    prompts = parity_cases[f"{name}/boxes_batch/in_boxes"]
    ref_masks = parity_cases[f"{name}/boxes_batch/out_masks"]
    ref_scores = parity_cases[f"{name}/boxes_batch/out_scores"]
    result = segment_everything(parity_cases[f"{name}/image"], predictor=predictor, boxes=prompts)

    assert result.labels.dtype == np.int32
    assert result.labels.shape == ref_masks.shape[1:]
    n = result.n_objects
    assert n > 0
    assert set(np.unique(result.labels)) == set(range(n + 1))  # sequential 1..N
    index = _prompt_index(result.boxes, prompts)
    assert np.all(np.diff(index) > 0)  # labels follow prompt order
    np.testing.assert_allclose(result.scores, ref_scores[index], atol=1e-3)
    np.testing.assert_array_equal(result.areas, np.bincount(result.labels.ravel())[1:])

    # Each object agrees with its reference mask inside the region it owns...
    for label, i in enumerate(index, start=1):
        owned = result.labels == label
        assert ref_masks[i][owned].mean() >= 0.995
    # ...and the whole label image is the overlap rule applied to the reference masks.
    expected = _smallest_owner_labels(ref_masks)
    got = np.where(result.labels > 0, index[np.maximum(result.labels, 1) - 1] + 1, 0)
    assert (got == expected).mean() >= 0.995


def test_smaller_object_survives_inside_larger():
    painter = LabelCanvas((10, 10), min_area=0)
    cell = np.ones((8, 8), bool)
    nucleus = np.ones((2, 2), bool)
    painter.paste(Candidate(0, 3, 3, nucleus, 0.9, np.array([3, 3, 5, 5])))
    painter.paste(Candidate(1, 1, 1, cell, 0.8, np.array([1, 1, 9, 9])))
    boxes, _scores, areas = painter.finish()
    assert len(boxes) == 2
    assert (painter.labels[3:5, 3:5] == 1).all()  # the nucleus, pasted first, is kept on top
    assert (painter.labels == 2).sum() == 64 - 4
    np.testing.assert_array_equal(areas, [4, 60])


def test_equal_masks_keep_the_earlier_prompt_and_drop_the_duplicate():
    painter = LabelCanvas((6, 6), min_area=0)
    mask = np.ones((3, 3), bool)
    painter.paste(Candidate(0, 0, 0, mask, 0.9, np.array([0, 0, 3, 3])))
    painter.paste(Candidate(1, 0, 0, mask, 0.5, np.array([0, 0, 3, 3])))
    boxes, scores, _areas = painter.finish()
    assert len(boxes) == 1
    assert scores.tolist() == [pytest.approx(0.9)]


def test_min_area_applies_after_overlaps():
    painter = LabelCanvas((10, 10), min_area=5)
    big = np.ones((4, 4), bool)  # 16 px, 12 of them covered by a smaller object
    small = np.ones((3, 4), bool)
    painter.paste(Candidate(0, 0, 0, big, 0.9, np.array([0, 0, 4, 4])))
    painter.paste(Candidate(1, 0, 0, small, 0.9, np.array([0, 0, 4, 3])))
    painter.paste(Candidate(2, 8, 8, np.ones((2, 2), bool), 0.9, np.array([8, 8, 10, 10])))
    boxes, _scores, _areas = painter.finish()
    assert len(boxes) == 1  # big keeps 4 px < 5; the 2x2 one is under 5 px itself
    assert (painter.labels == 1).sum() == 12
    assert painter.labels[3].sum() == 0


def test_yolo_checkpoint_route_runs_offline(predictor, image, yolo_checkpoint):
    result = segment_everything(
        image, predictor=predictor, detector=yolo_checkpoint, conf=0.0, max_objects=5
    )
    assert result.labels.shape == image.shape
    assert result.n_objects <= 5
    assert len(result.boxes) == len(result.scores) == len(result.areas) == result.n_objects
    if result.n_objects:
        assert (result.boxes[:, [0, 2]] <= image.shape[1]).all()
        assert (result.boxes[:, [1, 3]] <= image.shape[0]).all()


def test_callable_detector_and_max_objects(predictor, image):
    def detector(rgb):
        assert rgb.shape == (*image.shape, 3) and rgb.dtype == np.uint8
        boxes = np.array([[10, 10, 60, 60], [80, 50, 140, 110], [40, 30, 100, 90]], float)
        return boxes, np.array([0.5, 0.9, 0.7])

    result = segment_everything(image, predictor=predictor, detector=detector, max_objects=2)
    assert result.n_objects <= 2
    kept = {tuple(b) for b in result.boxes.tolist()}
    assert kept <= {(80, 50, 140, 110), (40, 30, 100, 90)}  # the two most confident


def test_no_boxes_is_a_valid_empty_result(predictor, image):
    result = segment_everything(image, predictor=predictor, boxes=np.zeros((0, 4)))
    assert result.n_objects == 0
    assert result.labels.shape == image.shape and not result.labels.any()
    assert "No objects found" in result.message


def test_detector_finding_nothing_is_a_valid_empty_result(predictor, image):
    result = segment_everything(
        image, predictor=predictor, detector=lambda rgb: (np.zeros((0, 4)), np.zeros(0))
    )
    assert result.n_objects == 0 and "No objects found" in result.message


def test_degenerate_inverted_and_outside_boxes_never_crash(predictor, image):
    boxes = [
        [60, 60, 20, 20],  # inverted: reordered
        [-50, -50, -10, -10],  # outside: dropped
        [30, 30, 30, 80],  # zero width: dropped
        [100, 70, 500, 500],  # partly outside: clipped
        [60, 60, 20, 20],  # duplicate of the first
    ]
    result = segment_everything(image, predictor=predictor, boxes=boxes)
    assert result.n_objects <= 2
    assert (result.boxes[:, 2] <= image.shape[1]).all() and (result.boxes[:, 3] <= 120).all()
    for box in result.boxes:
        assert box[0] < box[2] and box[1] < box[3]


def test_progress_reports_and_can_cancel(predictor, image):
    calls = []
    boxes = np.array([[10, 10, 60, 60], [80, 50, 140, 110]] * 1, float)
    predictor.batch_size = 1
    segment_everything(
        image, predictor=predictor, boxes=boxes, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(0, 2), (1, 2), (2, 2)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done:
            raise Cancelled

    with pytest.raises(Cancelled):
        segment_everything(image, predictor=predictor, boxes=boxes, progress=cancel)


def test_a_cancel_after_discovery_stops_before_the_encoder(predictor, image, monkeypatch):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    encodes = []
    monkeypatch.setattr(predictor, "_encode", lambda rgb: encodes.append(rgb) or 1 / 0)

    with pytest.raises(Cancelled):
        segment_everything(image, predictor=predictor, boxes=[[10, 10, 60, 60]], progress=cancel)
    assert encodes == []


def test_grid_points_are_cell_centres():
    points = grid_points(4, (40, 80))
    assert points.shape == (16, 2)
    np.testing.assert_allclose(np.unique(points[:, 0]), [10, 30, 50, 70])
    np.testing.assert_allclose(np.unique(points[:, 1]), [5, 15, 25, 35])


def test_grid_mode_filters_and_suppresses(predictor, image, monkeypatch):
    import napari_mobilesam.segevery.candidates as mask_candidates

    # Random weights predict low IoUs: SAM's thresholds keep nothing, which is reported.
    empty = segment_everything(image, predictor=predictor, detector="grid", points_per_side=4)
    assert empty.n_objects == 0 and empty.message

    monkeypatch.setattr(mask_candidates, "PRED_IOU_THRESH", -np.inf)
    monkeypatch.setattr(mask_candidates, "STABILITY_SCORE_THRESH", 0.0)
    result = segment_everything(image, predictor=predictor, detector="grid", points_per_side=4)
    assert 0 < result.n_objects <= 48
    assert result.labels.max() == result.n_objects
    import torch
    from torchvision.ops import box_iou

    ious = box_iou(torch.as_tensor(result.boxes), torch.as_tensor(result.boxes))
    ious.fill_diagonal_(0)
    assert (ious <= mask_candidates.BOX_NMS_THRESH + 1e-6).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conf": 1.5}, "conf"),
        ({"iou": -0.1}, "iou"),
        ({"max_objects": 0}, "max_objects"),
        ({"min_area": -1}, "min_area"),
    ],
)
def test_bad_parameters_are_refused(predictor, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment_everything(image, predictor=predictor, boxes=[[0, 0, 5, 5]], **kwargs)


def test_bad_detector_file_is_a_clear_error(predictor, image, tmp_path):
    missing = tmp_path / "nuclei.pt"
    with pytest.raises(Exception, match=r"nuclei\.pt"):
        segment_everything(image, predictor=predictor, detector=missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="YOLO"):
        segment_everything(image, predictor=predictor, detector=junk)


def test_options_object_is_checked_once_and_keywords_replace_its_fields(predictor, image):
    from napari_mobilesam.segevery import InvalidOptionError, SegEveryOptions

    with pytest.raises(InvalidOptionError, match="max_objects"):
        SegEveryOptions(max_objects=0)
    with pytest.raises(ValueError, match="conf"):  # a ValueError, and a TypeError
        SegEveryOptions(conf="high")
    options = SegEveryOptions(decoder="mobile_sam", min_area=10)
    boxes = [[4, 4, 60, 60], [70, 30, 150, 100]]
    keywords = segment_everything(
        image, predictor=predictor, boxes=boxes, decoder="mobile_sam", min_area=10
    )
    with_options = segment_everything(image, predictor=predictor, boxes=boxes, options=options)
    np.testing.assert_array_equal(with_options.labels, keywords.labels)
    replaced = segment_everything(
        image, predictor=predictor, boxes=boxes, options=options, max_objects=1
    )
    assert replaced.n_objects <= 1


def test_lazy_detector_loads_once_and_keeps_a_failure(monkeypatch):
    from napari_mobilesam.segevery import LazyDetector, SegEveryOptions, discovery

    calls = []

    def failing_load(detector, **kwargs):
        calls.append(detector)
        raise discovery.DetectorUnavailableError("offline")

    monkeypatch.setattr(discovery, "load_detector", failing_load)
    detector = LazyDetector(SegEveryOptions(detector="auto"))
    for _ in range(3):
        with pytest.raises(discovery.DetectorUnavailableError, match="offline"):
            detector(np.zeros((8, 8, 3), np.uint8))
    assert calls == ["auto"]


def test_an_untiled_image_is_converted_and_hashed_once(predictor, image, conversions_and_hashes):
    predictor.clear_cache()
    result = segment_everything(
        image, predictor=predictor, boxes=[[20, 20, 70, 60]], decoder="mobile_sam"
    )
    assert result.n_objects <= 1
    assert conversions_and_hashes == {"converted": 1, "hashed": 1}
