"""SegEvery as MobileSAMv2 ships it, against its official pipeline's outputs.

``../shared/fixtures/v2`` holds a detector in the real ``ObjectAwareModel.pt`` format
(ultralytics 8.0.120 pickle, ``reg_max = 26``, a Segment head without ``proto``), the boxes
and label images of MobileSAMv2's own pipeline on two images with seed-0 weights, and the
real, trained prompt-guided decoder's logits. CI has those files; without them these tests
skip and say so.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from conftest import (
    OBJECT_AWARE_CHECKPOINT,
    PARITY_CHECKPOINT,
    REAL_PROMPT_GUIDED,
    V2,
    require_shared,
    write_prompt_guided_file,
)
from napari_mobilesam import segment_everything
from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.segevery.box_decoders import build_prompt_guided_decoder, load_box_decoder
from napari_mobilesam.segevery.detectors.yolo import YoloDetector
from napari_mobilesam.segevery.discovery import discover_objects, load_detector
from napari_mobilesam.weights import fetch as weights
from napari_mobilesam.weights.fetch import WeightsError

IMAGES = ("coffee", "cell")


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    require_shared(V2 / "official_seed0.npz", V2 / "confs.json", OBJECT_AWARE_CHECKPOINT)
    with np.load(V2 / "official_seed0.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def confs() -> dict[str, float]:
    require_shared(V2 / "confs.json")
    return json.loads((V2 / "confs.json").read_text())


def matched_ious(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """IoU of each expected box with the found box a one-to-one assignment gives it."""
    ious = box_iou(torch.as_tensor(found), torch.as_tensor(expected)).numpy()
    rows, cols = linear_sum_assignment(-ious)
    return ious[rows, cols]


def relabel_as_official(result, official_boxes: np.ndarray) -> np.ndarray:
    """Our label image with each object's id replaced by the official id of its box."""
    ious = box_iou(torch.as_tensor(result.boxes), torch.as_tensor(official_boxes)).numpy()
    lut = np.zeros(result.n_objects + 1, np.int64)
    lut[1:] = ious.argmax(axis=1) + 1
    return lut[result.labels]


# The detector


@pytest.mark.parametrize("name", IMAGES)
def test_object_aware_format_finds_the_official_boxes(official, confs, name):
    detector = load_detector(OBJECT_AWARE_CHECKPOINT, conf=confs[name], iou=0.9)

    boxes, scores = discover_objects(official[f"{name}/image"], detector, iou=0.9)

    expected = official[f"{name}/boxes"]
    assert isinstance(detector, YoloDetector)
    assert len(boxes) == len(expected)
    assert matched_ious(boxes, expected).min() >= 0.99
    np.testing.assert_allclose(np.sort(scores), np.sort(official[f"{name}/conf"]), atol=1e-3)


def test_a_segment_head_without_proto_runs_through_every_route(
    official, confs, tmp_path, monkeypatch
):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copyfile(OBJECT_AWARE_CHECKPOINT, folder / "ObjectAwareModel.pt")
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(folder))
    image = official["coffee/image"]
    expected = official["coffee/boxes"]

    for route in ("auto", "object_aware", folder / "ObjectAwareModel.pt"):
        detector = load_detector(route, conf=confs["coffee"], iou=0.9)
        boxes, _ = detector(image)
        assert detector.path.name == "ObjectAwareModel.pt", route
        assert len(boxes) == len(expected), route
        assert matched_ious(boxes, expected).min() >= 0.99, route


def test_no_mask_prototypes_are_computed(tmp_path):
    from conftest import build_yolo_checkpoint

    checkpoint = build_yolo_checkpoint(tmp_path, "yolov8n-seg.yaml", nc=1)
    detector = load_detector(checkpoint, conf=0.0, imgsz=320)
    head = detector.model.model.model[-1]
    calls = []
    head.proto.register_forward_hook(lambda *args: calls.append(1))

    boxes, _ = detector(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8))

    assert len(boxes) > 0
    assert calls == []


def test_snapping_happens_in_the_letterboxed_frame(official, confs):
    # coffee (400 x 600) is letterboxed into 704 x 1024; 20 frame px are 11.7 image px.
    detector = load_detector(OBJECT_AWARE_CHECKPOINT, conf=confs["coffee"], iou=0.9)
    boxes, _ = detector(official["coffee/image"])

    gain = 1024 / 600
    near = 20 / gain
    assert np.all((boxes[:, 0] == 0) | (boxes[:, 0] >= near - 0.01))
    assert np.all((boxes[:, 2] == 600) | (boxes[:, 2] <= 600 - near + 0.01))
    assert np.any(boxes[:, 3] == 400)


# The decoders


def test_real_prompt_guided_decoder_matches_the_official_logits(predictor):
    require_shared(REAL_PROMPT_GUIDED, V2 / "real_decoder_coffee.npz")
    with np.load(V2 / "real_decoder_coffee.npz") as data:
        case = {key: data[key] for key in data.files}
    decoder = build_prompt_guided_decoder(REAL_PROMPT_GUIDED)
    predictor.set_embedding(case["embedding"], (400, 600))

    batches = list(predictor.decode_boxes(case["in_boxes"], decoder=decoder))

    logits = torch.cat([low_res for _, low_res, _ in batches])[:, 0].numpy()
    scores = torch.cat([score for _, _, score in batches])[:, 0].numpy()
    assert np.abs(logits - case["out_low_res_logits"]).max() <= 1e-3
    assert np.abs(scores - case["out_scores"]).max() <= 1e-3


def test_real_prompt_guided_decoder_differs_from_mobile_sams(predictor):
    require_shared(REAL_PROMPT_GUIDED, V2 / "real_decoder_coffee.npz")
    with np.load(V2 / "real_decoder_coffee.npz") as data:
        embedding, boxes = data["embedding"], data["in_boxes"]
    predictor.set_embedding(embedding, (400, 600))

    (_, own, _), *_ = predictor.decode_boxes(boxes)
    (_, guided, _), *_ = predictor.decode_boxes(
        boxes, decoder=build_prompt_guided_decoder(REAL_PROMPT_GUIDED)
    )

    assert not torch.allclose(own, guided, atol=1e-2)


def test_the_decoder_is_loaded_once_per_process():
    require_shared(REAL_PROMPT_GUIDED)

    first = build_prompt_guided_decoder(REAL_PROMPT_GUIDED)
    second = load_box_decoder(REAL_PROMPT_GUIDED).decoder

    assert isinstance(first, PromptDecoder)
    assert first is second


# The whole pipeline


@pytest.mark.parametrize("name", IMAGES)
def test_segment_everything_gives_the_official_label_image(
    official, confs, predictor, seed0_prompt_guided, name
):
    detector = load_detector(OBJECT_AWARE_CHECKPOINT, conf=confs[name], iou=0.9)

    result = segment_everything(
        official[f"{name}/image"],
        predictor=predictor,
        detector=detector,
        decoder=seed0_prompt_guided,
        iou=0.9,
    )

    expected = official[f"{name}/labels"]
    assert result.decoder == str(seed0_prompt_guided)
    assert result.message == ""
    assert (relabel_as_official(result, official[f"{name}/boxes"]) == expected).mean() >= 0.99
    # Every object the official pipeline shows is there; at most the hidden ones are not.
    assert result.n_objects >= len(np.unique(expected)) - 1


def test_auto_decoder_offline_falls_back_and_says_so(predictor):
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)
    boxes = [[10, 10, 60, 50], [50, 40, 120, 90]]

    result = segment_everything(image, predictor=predictor, boxes=boxes, decoder="auto")

    assert result.decoder == "mobile_sam"
    assert "mobile_sam.pt's mask decoder" in result.message
    assert "Prompt_guided_Mask_Decoder.pt" in result.message
    reference = segment_everything(image, predictor=predictor, boxes=boxes, decoder="mobile_sam")
    np.testing.assert_array_equal(result.labels, reference.labels)
    assert reference.message == ""


def test_auto_decoder_uses_the_file_in_the_weights_folder(predictor, tmp_path, monkeypatch):
    require_shared(REAL_PROMPT_GUIDED)
    (tmp_path / "Prompt_guided_Mask_Decoder.pt").symlink_to(REAL_PROMPT_GUIDED)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)

    result = segment_everything(image, predictor=predictor, boxes=[[10, 10, 60, 50]])

    assert result.decoder == "prompt_guided"
    assert "mobile_sam.pt" not in result.message


def test_a_decoder_passed_loaded_is_named_after_its_file(
    predictor, seed0_prompt_guided, tmp_path, monkeypatch
):
    require_shared(REAL_PROMPT_GUIDED)
    (tmp_path / "Prompt_guided_Mask_Decoder.pt").symlink_to(REAL_PROMPT_GUIDED)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)
    boxes = [[10, 10, 60, 50]]

    official = build_prompt_guided_decoder()
    users = build_prompt_guided_decoder(seed0_prompt_guided)
    by_name = segment_everything(image, predictor=predictor, boxes=boxes)
    loaded = segment_everything(image, predictor=predictor, boxes=boxes, decoder=official)
    own = segment_everything(image, predictor=predictor, boxes=boxes, decoder=users)

    assert official.source == "prompt_guided"
    assert loaded.decoder == by_name.decoder == "prompt_guided"
    np.testing.assert_array_equal(loaded.labels, by_name.labels)
    assert users.source == str(seed0_prompt_guided)
    assert own.decoder == str(seed0_prompt_guided)
    assert load_box_decoder(PromptDecoder()).name == "custom"


def test_prompt_guided_decoder_missing_is_a_clear_error(predictor):
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)

    with pytest.raises(WeightsError) as error:
        segment_everything(
            image, predictor=predictor, boxes=[[10, 10, 60, 50]], decoder="prompt_guided"
        )

    message = str(error.value)
    assert "Prompt_guided_Mask_Decoder.pt" in message
    assert str(weights.cache_dir() / "Prompt_guided_Mask_Decoder.pt") in message
    assert weights.WEIGHTS_ENV in message


def test_official_url_of_the_prompt_guided_decoder_is_named_in_the_error(predictor, monkeypatch):
    # The registry keeps its official URL (the download itself is refused offline here).
    official_url = (
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/MobileSAMv2/"
        "PromptGuidedDecoder/Prompt_guided_Mask_Decoder.pt"
    )
    import dataclasses

    entry = weights.CHECKPOINTS["prompt_guided"]
    monkeypatch.setitem(
        weights.CHECKPOINTS, "prompt_guided", dataclasses.replace(entry, url=official_url)
    )
    monkeypatch.setattr("pooch.HTTPDownloader.__call__", _refuse_download)

    with pytest.raises(WeightsError, match="MobileSAMv2/PromptGuidedDecoder"):
        load_box_decoder("prompt_guided")


def _refuse_download(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled in this test")


def test_prompt_guided_file_with_wrong_bytes_in_the_cache_is_refused(predictor):
    bad = weights.cache_dir() / "Prompt_guided_Mask_Decoder.pt"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not the decoder" * 100)

    with pytest.raises(WeightsError, match=r"Prompt_guided_Mask_Decoder\.pt"):
        load_box_decoder("prompt_guided")
    assert not bad.exists()


def test_decoder_file_with_wrong_keys_is_a_clear_error(tmp_path):
    require_shared(PARITY_CHECKPOINT)
    wrong = tmp_path / "wrong.pt"
    state = torch.load(
        write_prompt_guided_file(PARITY_CHECKPOINT, tmp_path / "pg.pt"), weights_only=True
    )
    state["MaskDecoder"]["renamed.weight"] = state["MaskDecoder"].pop("iou_token.weight")
    torch.save(state, wrong)

    with pytest.raises(WeightsError, match="prompt-guided"):
        load_box_decoder(wrong)


def test_unknown_decoder_name_is_refused_before_any_work(predictor):
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = 200

    with pytest.raises(ValueError, match="decoder"):
        segment_everything(image, predictor=predictor, boxes=[[0, 0, 10, 10]], decoder="best")
