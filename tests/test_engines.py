"""The OpenVINO CPU engine of the image encoder: converted once, checked against torch,
chosen by "auto" only when it passed its gate and is faster, and a clear error without it.

The gates of issue 20 on the parity weights: float32 within 1e-4 of torch on embeddings and
low-res logits (held); int8 masks agreeing with float32 at IoU >= 0.98 per object, on the
parity prompts and on SegEvery of the MobileSAMv2 fixtures, is not held on these random
weights (noise-like masks, edges everywhere: 0.93-0.99), so "auto" keeps float32 for them;
the tests pin a floor that catches a broken int8 model and that the gate decides.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import PARITY_IMAGES, V2, require_shared
from napari_mobilesam import SegAnyPredictor
from napari_mobilesam.engines import choice, decoder_choice, gates, openvino_engine
from napari_mobilesam.engines.cache import engine_dir, weights_fingerprint
from napari_mobilesam.engines.choice import choose_engine
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
from napari_mobilesam.weights.fetch import CACHE_ENV

CASES = ("point", "points3", "box", "box_points")


@pytest.fixture(autouse=True)
def _use_engine_cache(engine_cache, monkeypatch, offline_registry):
    monkeypatch.setenv(CACHE_ENV, str(engine_cache))


@pytest.fixture
def engines(mobile_sam, own_calibration):
    """Predictors of every engine on the parity weights (converted once per session)."""
    made = {
        name: SegAnyPredictor(mobile_sam, device="cpu", engine=name, calibration=own_calibration)
        for name in ("torch", "openvino", "openvino-int8")
    }
    for predictor in made.values():
        predictor.prepare_engine()
    return made


def _prompt(parity_cases, image: str, case: str) -> dict:
    prefix = f"{image}/{case}/in_"
    kwargs = {k[len(prefix) :]: parity_cases[k] for k in parity_cases if k.startswith(prefix)}
    if "multimask_output" in kwargs:
        kwargs["multimask_output"] = bool(kwargs["multimask_output"])
    return kwargs


def _int8_encoder_alone(engines, image: np.ndarray) -> SegAnyPredictor:
    """The int8 engine's embedding of ``image`` decoded by the float32 engine's decoder:
    the int8 encoder alone (the int8 decoder is tested in test_engines_decoder.py)."""
    engines["openvino-int8"].set_image(image)
    predictor = SegAnyPredictor(engines["openvino"].model, device="cpu", engine="openvino")
    predictor.set_embedding(engines["openvino-int8"].get_image_embedding(), image.shape[:2])
    return predictor


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("image", PARITY_IMAGES)
def test_float32_engine_matches_torch_on_embeddings_and_logits(engines, parity_cases, image):
    for predictor in engines.values():
        predictor.set_image(parity_cases[f"{image}/image"])
    torch_embedding = engines["torch"].get_image_embedding()
    gap = (engines["openvino"].get_image_embedding() - torch_embedding).abs().max()
    assert float(gap) <= 1e-4
    for case in CASES:
        kwargs = _prompt(parity_cases, image, case)
        _, scores, logits = engines["openvino"].predict(**kwargs)
        _, torch_scores, torch_logits = engines["torch"].predict(**kwargs)
        assert np.abs(logits - torch_logits).max() <= 1e-4
        assert np.abs(scores - torch_scores).max() <= 1e-4


@pytest.mark.parametrize("image", PARITY_IMAGES)
def test_int8_masks_stay_close_to_float32_and_the_gate_measures_them(engines, parity_cases, image):
    """On random weights the masks are noise-like (edges everywhere), and int8 does not hold
    IoU >= 0.98 for every object (about 0.93-0.99): "auto" then keeps float32. The floor
    here catches a broken int8 model (e.g. calibrated on wrongly preprocessed images)."""
    for predictor in engines.values():
        predictor.set_image(parity_cases[f"{image}/image"])
    int8_encoder = _int8_encoder_alone(engines, parity_cases[f"{image}/image"])
    ious, equal = [], []
    for case in CASES:
        kwargs = _prompt(parity_cases, image, case)
        fp32 = engines["openvino"].predict(**kwargs)[0]
        int8 = int8_encoder.predict(**kwargs)[0]
        ious += [_iou(a, b) for a, b in zip(fp32, int8, strict=True)]
        equal.append((fp32 == int8).mean())
    boxes = parity_cases[f"{image}/boxes_batch/in_boxes"]
    fp32 = engines["openvino"].predict_boxes(boxes)[0]
    int8 = int8_encoder.predict_boxes(boxes)[0]
    ious += [_iou(a, b) for a, b in zip(fp32, int8, strict=True)]
    assert np.median(ious) >= 0.95 and min(ious) >= 0.85, sorted(ious)[:5]
    assert min(equal) >= 0.98
    model = engines["torch"].model
    embeddings = {name: p.get_image_embedding() for name, p in engines.items()}
    gate = gates.mask_ious(
        model, embeddings["openvino"], embeddings["openvino-int8"], gates.box_prompts()
    )
    assert gate.min() < 1.0  # the gate sees int8's differences, as the masks above do


@pytest.mark.parametrize("name", ("coffee", "cell"))
def test_segevery_boxes_with_the_int8_encoder_stay_close_to_float32(
    engines, seed0_prompt_guided, name
):
    """Each of the official v2 boxes, decoded by the prompt-guided decoder on the int8 and
    the float32 embedding. (The label images themselves differ much more on random weights:
    their masks are large noise-like regions that overlap, and small changes reorder which
    object owns a pixel; see the README's Speed section.)"""
    from napari_mobilesam.segevery.box_decoders import load_box_decoder

    require_shared(V2 / "official_seed0.npz")
    with np.load(V2 / "official_seed0.npz") as data:
        image, boxes = data[f"{name}/image"], data[f"{name}/boxes"]
    decoder = load_box_decoder(seed0_prompt_guided).decoder
    masks = {}
    engines["openvino"].set_image(image)
    predictors = {
        "openvino": engines["openvino"],
        "openvino-int8": _int8_encoder_alone(engines, image),
    }
    for engine, predictor in predictors.items():
        logits = [low for _, low, _ in predictor.decode_boxes(boxes, decoder=decoder)]
        masks[engine] = torch.cat(logits)[:, 0].numpy() > 0
    ious = [_iou(a, b) for a, b in zip(masks["openvino"], masks["openvino-int8"], strict=True)]
    assert len(ious) == len(boxes) > 20
    assert np.median(ious) >= 0.95 and min(ious) >= 0.85, sorted(ious)[:5]


def test_conversion_happens_once_per_weights_file(engines, mobile_sam, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino_engine, "_convert", no_conversion)
    monkeypatch.setattr(openvino_engine, "quantized_model", no_conversion)
    again = SegAnyPredictor(mobile_sam, device="cpu", engine="openvino")
    again.set_image(np.zeros((64, 64), np.uint8) + np.arange(64, dtype=np.uint8))
    folder = engine_dir(weights_fingerprint(mobile_sam.image_encoder))
    assert sorted(p.name.split("-")[1] for p in folder.glob("image_encoder-*")) == [
        "float32",
        "int8",
    ]
    other = type(mobile_sam)()  # other weights: another fingerprint, converted anew
    with torch.no_grad():
        other.load_state_dict(mobile_sam.state_dict())
        other.image_encoder.patch_embed.seq[0].c.weight.add_(1.0)
    assert weights_fingerprint(other.image_encoder) != weights_fingerprint(
        mobile_sam.image_encoder
    )
    with pytest.raises(AssertionError, match="converted again"):
        SegAnyPredictor(other, device="cpu", engine="openvino").prepare_engine()


def test_without_openvino_auto_is_torch_and_openvino_names_the_extra(mobile_sam, monkeypatch):
    monkeypatch.setattr(choice, "openvino_available", lambda: False)
    assert SegAnyPredictor(mobile_sam, device="cpu", engine="auto").engine == "torch"
    with pytest.raises(RuntimeError, match=r"napari-mobilesam\[cpu\]"):
        SegAnyPredictor(mobile_sam, device="cpu", engine="openvino-int8")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "tensorrt"}, "engine must be one of"),
        ({"engine": "openvino", "precision": "bfloat16"}, "runs on the CPU in float32"),
    ],
)
def test_a_bad_engine_is_a_clear_error(mobile_sam, kwargs, message):
    with pytest.raises(InvalidValueError, match=message):
        SegAnyPredictor(mobile_sam, device="cpu", **kwargs)


def test_auto_on_a_gpu_or_in_bfloat16_is_torch(mobile_sam):
    predictor = SegAnyPredictor(mobile_sam, device="cpu", engine="auto", precision="bfloat16")
    assert predictor.engine == "torch"


@pytest.mark.parametrize(
    ("seconds", "passed", "expected"),
    [
        ({"torch": 0.6, "openvino": 0.4, "openvino-int8": 0.2}, {"openvino": True,
          "openvino-int8": True}, "openvino-int8"),
        ({"torch": 0.6, "openvino": 0.4, "openvino-int8": 0.2}, {"openvino": True,
          "openvino-int8": False}, "openvino"),
        ({"torch": 0.3, "openvino": 0.4, "openvino-int8": 0.5}, {"openvino": True,
          "openvino-int8": True}, "torch"),
        ({"torch": 0.3, "openvino": 0.3, "openvino-int8": 0.1}, {"openvino": True,
          "openvino-int8": False}, "torch"),
    ],
)  # fmt: skip
def test_auto_takes_the_fastest_that_passed_and_never_a_slower_one(seconds, passed, expected):
    assert choose_engine(seconds, passed) == expected


@pytest.mark.parametrize(("min_iou", "expected"), [(1.01, "openvino"), (0.0, "openvino-int8")])
def test_auto_measures_once_and_remembers(
    engines, mobile_sam, own_calibration, monkeypatch, min_iou, expected
):
    measured = []

    def injected(encoders, x, rounds):
        measured.append(sorted(encoders))
        return {"torch": 0.6, "openvino": 0.4, "openvino-int8": 0.2}

    monkeypatch.setattr(choice, "time_encoders", injected)
    monkeypatch.setattr(decoder_choice, "time_encoders", lambda calls, x, rounds: {})
    monkeypatch.setattr(choice.gates, "INT8_MIN_IOU", min_iou)  # int8 fails / passes
    folder = engine_dir(weights_fingerprint(mobile_sam.image_encoder))
    for path in folder.glob("choice-*.json"):
        path.unlink()
    kwargs = {"device": "cpu", "engine": "auto", "calibration": own_calibration}
    assert SegAnyPredictor(mobile_sam, **kwargs).prepare_engine() == expected
    record = json.loads(next(folder.glob("choice-own-*.json")).read_text())
    assert record["passed"] == {"openvino": True, "openvino-int8": expected != "openvino"}
    assert record["float32_max_abs_diff"] <= 1e-4 and record["choice"] == expected
    assert SegAnyPredictor(mobile_sam, **kwargs).prepare_engine() == expected
    assert measured == [["openvino", "openvino-int8", "torch"]]  # measured once


def test_the_widgets_predictor_takes_the_engine_from_the_environment(random_weights, monkeypatch):
    from napari_mobilesam._widgets._model import ENGINE_ENV, new_predictor

    assert new_predictor().engine == "torch"
    monkeypatch.setenv(ENGINE_ENV, "openvino-int8")
    assert new_predictor().engine == "openvino-int8"


def test_the_command_line_embeds_with_the_engine_asked_for(random_weights, tmp_path, capsys):
    import tifffile

    from napari_mobilesam.batch.cli import main
    from napari_mobilesam.batch.settings import BatchSettings
    from napari_mobilesam.segany.embedding_store import EmbeddingStore

    image = synthetic_nuclei((300, 400), seed=3)[0]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    stored = {}
    for engine in ("torch", "openvino"):
        store = tmp_path / f"{engine}.zarr"
        args = ["embed", str(tmp_path / "nuclei.tif"), "-o", str(store), "-q"]
        assert main([*args, "--engine", engine]) == 0
        (key,) = EmbeddingStore(store).keys()
        stored[engine] = EmbeddingStore(store).get(key)[0]
    assert np.abs(stored["openvino"] - stored["torch"]).max() <= 1e-4
    with pytest.raises(InvalidValueError, match="engine must be one of"):
        BatchSettings(engine="fast")


def test_a_store_of_int8_embeddings_never_serves_a_float32_predictor(engines, tmp_path):
    from napari_mobilesam.segany.embedding_store import EmbeddingStore

    image = synthetic_nuclei((256, 256), seed=3)[0]
    int8 = EmbeddingStore(tmp_path / "int8.zarr")
    assert int8.add(engines["openvino-int8"], image) == 1
    assert int8.load_into(engines["torch"], image) is False, "int8 embeddings served to torch"
    with pytest.raises(InvalidValueError, match="other model weights"):
        int8.add(engines["torch"], image)
    assert int8.load_into(engines["openvino-int8"], image) is True

    float32 = EmbeddingStore(tmp_path / "float32.zarr")
    float32.add(engines["openvino"], image)
    assert float32.load_into(engines["torch"], image) is True, "float32 engines share a store"
