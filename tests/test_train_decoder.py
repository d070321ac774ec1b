"""Fine-tuning of the mask decoders (training.decoder): on synthetic nuclei with known
labels, from MobileSAMv2's real box decoder (alone, and as the prompt encoder and mask
decoder of the seed-0 mobile_sam.pt), with the embeddings of the random seed-0 image encoder
(no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import PARITY_CHECKPOINT, REAL_PROMPT_GUIDED
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.overlap import mask_ious
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
from napari_mobilesam.model.image_encoder import TinyViT
from napari_mobilesam.training.annotations import annotated_image
from napari_mobilesam.training.decoder import DEFAULT_LEARNING_RATE, train_decoder
from napari_mobilesam.training.decoder_files import mobile_sam_with_box_decoder
from napari_mobilesam.weights.registry import WeightsError

#: Epochs of the package's default recipe: a CPU minute or two each on 6 images of 256².
EPOCHS = 2
#: SegAny's decoder: boxes, points and corrections, about three box-decoder steps each.
SEGANY_EPOCHS = 3


def _items(seeds) -> list:
    return [
        annotated_image(*synthetic_nuclei((256, 256), seed=seed), f"nuclei{seed}")
        for seed in seeds
    ]


@pytest.fixture(scope="module")
def data():
    """6 training and 2 held-out images."""
    return _items(range(6)), _items(range(100, 102))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One embedding store for the module: each image is encoded once in all the tests."""
    return tmp_path_factory.mktemp("store") / "embeddings.zarr"


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts the image encoder's forward calls."""
    calls = []
    forward = TinyViT.forward

    def counting(self, x):
        calls.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(TinyViT, "forward", counting)
    return calls


def _box_miou(predictor, items, decoder=None) -> float:
    """Mean IoU of masks from each object's exact box, through the predictor."""
    from scipy import ndimage

    ious = []
    for item in items:
        predictor.set_image(item.image)
        found = ndimage.find_objects(item.labels)
        ids = [i + 1 for i, f in enumerate(found) if f is not None]
        boxes = np.array(
            [
                (
                    found[i - 1][1].start,
                    found[i - 1][0].start,
                    found[i - 1][1].stop,
                    found[i - 1][0].stop,
                )
                for i in ids
            ],
            float,
        )
        masks = []
        for _, low_res, _ in predictor.decode_boxes(boxes, decoder=decoder):
            masks.append(predictor.masks_from_logits(low_res[:, 0]))
        true = item.labels[None] == np.array(ids)[:, None, None]
        ious.append(mask_ious(np.concatenate(masks), true))
    return float(np.mean(np.concatenate(ious)))


def _report(name, result):
    before, best = result.history[0], result.best
    print(
        f"\n{name}: box mIoU {before.metrics['val/box_mIoU']:.3f} -> "
        f"{best.metrics['val/box_mIoU']:.3f}, point mIoU {before.metrics['val/point_mIoU']:.3f}"
        f" -> {best.metrics['val/point_mIoU']:.3f} (best epoch {best.epoch}; "
        f"{', '.join(f'{r.seconds:.0f}' for r in result.history)} s per epoch)"
    )
    return before.metrics["val/box_mIoU"], best.metrics["val/box_mIoU"]


def test_box_decoder_fine_tuning_raises_box_iou_and_loads_as_segevery_decoder(
    data, store, tmp_path, encoder_calls
):
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.segevery.box_decoders import load_box_decoder
    from napari_mobilesam.weights.build import build_mobile_sam

    train, validation = data
    output = tmp_path / "nuclei_boxes.pt"
    result = train_decoder(
        train,
        validation,
        output,
        base=REAL_PROMPT_GUIDED,
        image_encoder=PARITY_CHECKPOINT,
        epochs=EPOCHS,
        device="cpu",
        store=store,
    )
    before, after = _report("prompt-guided box decoder", result)
    assert after >= before  # the best epoch is kept; epoch 0 is the base
    assert len(encoder_calls) <= len(train) + len(validation)  # 0 if another test encoded

    # The file has MobileSAMv2's format and loads strictly as SegEvery's decoder.
    saved = torch.load(output, weights_only=True)
    assert set(saved) == {"PromtEncoder", "MaskDecoder"}
    loaded = load_box_decoder(str(output)).decoder
    predictor = SegAnyPredictor(build_mobile_sam(PARITY_CHECKPOINT), "cpu")
    assert _box_miou(predictor, validation, loaded) == pytest.approx(after, abs=1e-3)

    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["kind"] == "prompt_guided"
    assert sidecar["settings"]["learning_rate"] == DEFAULT_LEARNING_RATE
    assert [entry["epoch"] for entry in sidecar["history"]] == list(range(EPOCHS + 1))
    assert sidecar["best"]["epoch"] == result.best.epoch
    assert [item["name"] for item in sidecar["trained_on"]] == [item.name for item in train]
    # The target, from the raw seed-0 encoder's embeddings.
    assert after - before >= 0.2, f"held-out box mIoU {before:.3f} -> {after:.3f}"


@pytest.fixture(scope="module")
def segany_base(tmp_path_factory):
    """The seed-0 mobile_sam.pt with MobileSAMv2's trained decoder as its prompt encoder and
    mask decoder: the random seed-0 decoder cannot learn from the seed-0 encoder's
    embeddings, which show nothing of the image (README, "The mask decoders")."""
    output = tmp_path_factory.mktemp("base") / "mobile_sam_box_decoder.pt"
    return mobile_sam_with_box_decoder(PARITY_CHECKPOINT, REAL_PROMPT_GUIDED, output)


def test_segany_fine_tuning_raises_box_iou_and_loads_as_mobile_sam(
    data, store, segany_base, tmp_path, monkeypatch
):
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.weights.build import build_mobile_sam

    train, validation = data
    output = tmp_path / "nuclei_sam.pt"
    result = train_decoder(
        train,
        validation,
        output,
        base=segany_base,
        epochs=SEGANY_EPOCHS,
        device="cpu",
        store=store,
    )
    before, after = _report("mobile_sam.pt prompt encoder + mask decoder", result)
    assert after - before >= 0.2, f"held-out box mIoU {before:.3f} -> {after:.3f}"

    # Loads strictly through build_mobile_sam and NAPARI_MOBILESAM_WEIGHTS; the image
    # encoder is the base's, unchanged.
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(output))
    for model in (build_mobile_sam(output), build_mobile_sam()):
        base = torch.load(PARITY_CHECKPOINT, weights_only=True)
        for name, tensor in model.image_encoder.state_dict().items():
            assert torch.equal(tensor, base[f"image_encoder.{name}"]), name
    predictor = SegAnyPredictor(build_mobile_sam(output), "cpu")
    assert _box_miou(predictor, validation) == pytest.approx(after, abs=1e-3)
    assert json.loads(result.sidecar.read_text())["kind"] == "mobile_sam"


def test_each_image_is_encoded_once_stop_keeps_the_best_and_resume_continues(
    tmp_path, encoder_calls
):
    train, validation = _items(range(200, 202)), _items(range(300, 301))
    output = tmp_path / "boxes.pt"
    settings = dict(
        base=REAL_PROMPT_GUIDED,
        image_encoder=PARITY_CHECKPOINT,
        device="cpu",
        store=tmp_path / "store.zarr",
    )
    reports = []

    def stop_in_epoch_two() -> bool:
        return any(report.epoch == 1 for report in reports)  # at epoch 2's first batch

    result = train_decoder(
        train,
        validation,
        output,
        epochs=3,
        on_epoch=reports.append,
        should_stop=stop_in_epoch_two,
        **settings,
    )
    assert result.stopped
    assert [report.epoch for report in result.history] == [0, 1] == [r.epoch for r in reports]
    assert len(encoder_calls) == len(train) + len(validation)  # 2 epochs, encoded once
    best = result.best
    kept = torch.load(output, weights_only=True)
    assert json.loads(result.sidecar.read_text())["stopped"] is True

    resumed = train_decoder(train, validation, output, epochs=3, resume=True, **settings)
    assert not resumed.stopped
    assert [report.epoch for report in resumed.history] == [0, 1, 2, 3]
    assert len(encoder_calls) == len(train) + len(validation)  # streamed from the store
    if resumed.best.epoch == best.epoch:  # nothing better: the kept file is unchanged
        again = torch.load(output, weights_only=True)
        assert all(torch.equal(again["MaskDecoder"][k], v) for k, v in kept["MaskDecoder"].items())


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    train = _items([0])
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="do not fit"):
        train_decoder(train, [], tmp_path / "out.pt", base=wrong)
    empty = [annotated_image(train[0].image, np.zeros((256, 256), np.int32), "empty")]
    with pytest.raises(InvalidValueError, match="has an object"):
        train_decoder(empty, [], tmp_path / "out.pt", base=REAL_PROMPT_GUIDED)
    with pytest.raises(InvalidValueError, match="base file itself"):
        train_decoder(train, [], REAL_PROMPT_GUIDED, base=REAL_PROMPT_GUIDED)
    with pytest.raises(InvalidValueError, match="Nothing to resume"):
        train_decoder(
            train,
            [],
            tmp_path / "out.pt",
            base=REAL_PROMPT_GUIDED,
            image_encoder=PARITY_CHECKPOINT,
            resume=True,
        )
    with pytest.raises(InvalidValueError, match="epochs"):
        train_decoder(train, [], tmp_path / "out.pt", base=REAL_PROMPT_GUIDED, epochs=0)
    assert not (tmp_path / "out.pt").exists()


def test_command_trains_from_folders(tmp_path):
    import tifffile

    from napari_mobilesam.batch.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for item in _items(range(400, 402)):
        tifffile.imwrite(tmp_path / "images" / f"{item.name}.tif", item.image)
        tifffile.imwrite(tmp_path / "labels" / f"{item.name}.tif", item.labels)
    output = tmp_path / "boxes.pt"
    status = main(
        [
            "train-decoder",
            str(tmp_path / "images"),
            "--labels",
            str(tmp_path / "labels"),
            "--base",
            str(REAL_PROMPT_GUIDED),
            "--image-encoder",
            str(PARITY_CHECKPOINT),
            "-o",
            str(output),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    assert output.is_file() and output.with_suffix(".json").is_file()
