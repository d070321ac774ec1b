"""SegEvery's YOLO detector in OpenVINO: exported once with ultralytics, offline, checked
against torch, chosen by "auto" only when it passed its gate and is faster, and following
the predictor's engine setting.

The detector is MobileSAMv2's ObjectAwareModel format of ../shared/fixtures/v2 (random
weights, YOLOv8n-seg sized). Both variants are exported once per session (int8 calibrated
at 320 pixels, the smallest input that still finds the fixture's objects).
"""

from __future__ import annotations

import json
import socket
import subprocess

import numpy as np
import pytest

from conftest import OBJECT_AWARE_CHECKPOINT, PARITY_CHECKPOINT, V2, require_shared
from napari_mobilesam.engines.cache import engine_dir
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segevery.detectors import engine_choice, openvino_export
from napari_mobilesam.segevery.discovery import load_detector
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.weights.fetch import CACHE_ENV

IMGSZ = 320


@pytest.fixture(scope="session")
def detector_cache(tmp_path_factory):
    """One engine cache for the session: the fixture detector is exported once."""
    return tmp_path_factory.mktemp("detector_cache")


@pytest.fixture(autouse=True)
def _use_detector_cache(detector_cache, monkeypatch, offline_registry):
    monkeypatch.setenv(CACHE_ENV, str(detector_cache))


@pytest.fixture(scope="session")
def exported(detector_cache):
    """Both OpenVINO variants of the fixture detector, exported with every network and
    subprocess call recorded (and refused): ``(folders, attempts)``."""
    require_shared(OBJECT_AWARE_CHECKPOINT)
    attempts: list[str] = []

    def refuse(what):
        def refused(*args, **kwargs):
            attempts.append(f"{what}{args[:2]!r}")
            raise OSError(f"no network in this test ({what})")

        return refused

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(detector_cache))
        patch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        patch.setattr(socket, "create_connection", refuse("create_connection"))
        patch.setattr(socket.socket, "connect", refuse("connect"))
        patch.setattr(subprocess, "run", refuse("subprocess.run"))
        patch.setattr(subprocess, "check_output", refuse("subprocess.check_output"))
        folders = {
            precision: openvino_export.openvino_detector_folder(
                OBJECT_AWARE_CHECKPOINT, precision, imgsz=IMGSZ
            )
            for precision in ("float32", "int8")
        }
    return folders, attempts


@pytest.fixture(scope="session")
def v2_images():
    require_shared(V2 / "official_seed0.npz", V2 / "confs.json")
    confs = json.loads((V2 / "confs.json").read_text())
    with np.load(V2 / "official_seed0.npz") as data:
        return {name: (data[f"{name}/image"], confs[name]) for name in ("coffee", "cell")}


def test_the_export_reaches_no_network_and_installs_nothing(exported):
    folders, attempts = exported
    assert attempts == []
    for folder in folders.values():
        assert folder.name.endswith("_openvino_model") and (folder / "model.xml").is_file()


@pytest.mark.parametrize("name", ("coffee", "cell"))
def test_the_float32_export_gives_torch_s_boxes(exported, v2_images, name):
    """At MobileSAMv2's 1024 pixels (the export takes any size) and each image's own
    threshold: the same boxes, each matched at IoU >= 0.98, scores within 1e-3."""
    image, conf = v2_images[name]
    boxes = {}
    for engine in ("torch", "openvino"):
        detect = load_detector(OBJECT_AWARE_CHECKPOINT, conf=conf, device="cpu", engine=engine)
        assert detect.engine == engine
        boxes[engine] = detect(image)
    agreement = engine_choice.boxes_agree(*boxes["torch"], *boxes["openvino"], conf, 1e-3)
    assert agreement["compared"] == len(boxes["openvino"][0]) > 20
    assert agreement["unmatched"] == 0 and agreement["min_iou"] >= 0.98, agreement


def test_an_export_is_made_once_and_reused(exported, monkeypatch, yolo_file):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(openvino_export, "_export", no_export)
    again = load_detector(OBJECT_AWARE_CHECKPOINT, device="cpu", engine="openvino")
    assert again.path == exported[0]["float32"]
    fingerprint = openvino_export.detector_fingerprint(OBJECT_AWARE_CHECKPOINT)
    variants = sorted(p.name.split("-")[1] for p in engine_dir(fingerprint).glob("detector-*"))
    assert variants == ["float32", "int8"]
    with pytest.raises(AssertionError, match="exported again"):  # other weights: exported
        load_detector(yolo_file, device="cpu", engine="openvino")


@pytest.mark.parametrize("name", ("coffee", "cell"))
def test_int8_boxes_stay_near_float32(exported, v2_images, name):
    """Random weights react to every small change: int8 moves their boxes (median best
    IoU 0.79 and 0.95 here) and fails its gate, so "auto" keeps float32 (next test). This
    floor catches a broken int8 export (no boxes, or boxes anywhere)."""
    import torch
    from torchvision.ops import box_iou

    image, conf = v2_images[name]
    (fp32, _), (int8, _) = (
        load_detector(
            OBJECT_AWARE_CHECKPOINT, conf=conf, imgsz=IMGSZ, device="cpu", engine=engine
        )(image)
        for engine in ("openvino", "openvino-int8")
    )
    assert len(fp32) / 2 <= len(int8) <= 2 * len(fp32) and len(fp32) > 20
    best = box_iou(torch.as_tensor(fp32), torch.as_tensor(int8)).max(dim=1).values
    assert float(best.median()) >= 0.6, sorted(best.tolist())


@pytest.mark.parametrize(
    ("int8_passes", "expected"), [(False, "openvino"), (True, "openvino-int8")]
)
def test_auto_measures_once_and_never_takes_a_variant_that_failed(
    exported, monkeypatch, int8_passes, expected
):
    """The real gate fails int8 on these random weights; a gate that lets everything
    through shows that a faster variant which passed is taken."""
    measured = []

    def timings(detectors, image, rounds):
        measured.append(sorted(detectors))
        return {"torch": 0.6, "openvino": 0.4, "openvino-int8": 0.2}

    monkeypatch.setattr(engine_choice, "time_encoders", timings)
    if int8_passes:
        monkeypatch.setattr(engine_choice, "MIN_BOX_IOU", 0.0)
        monkeypatch.setattr(engine_choice, "INT8_SCORE_TOLERANCE", 1.0)
    fingerprint = openvino_export.detector_fingerprint(OBJECT_AWARE_CHECKPOINT)
    for path in engine_dir(fingerprint).glob("choice-detector-*.json"):
        path.unlink()
    kwargs = {"imgsz": IMGSZ, "device": "cpu", "engine": "auto"}
    assert load_detector(OBJECT_AWARE_CHECKPOINT, **kwargs).engine == expected
    (record_path,) = engine_dir(fingerprint).glob("choice-detector-*.json")
    record = json.loads(record_path.read_text())
    assert record["passed"] == {"openvino": True, "openvino-int8": int8_passes}
    assert record["boxes"]["openvino"]["compared"] > 0
    assert load_detector(OBJECT_AWARE_CHECKPOINT, **kwargs).engine == expected
    assert measured == [["openvino", "openvino-int8", "torch"]]  # measured once


def test_the_detector_follows_the_predictor_s_engine_unless_told(exported, mobile_sam):
    from napari_mobilesam import SegAnyPredictor
    from napari_mobilesam.stacks.planes import _once

    predictor = SegAnyPredictor(mobile_sam, device="cpu", engine="openvino")
    options = SegEveryOptions(detector=str(OBJECT_AWARE_CHECKPOINT))
    assert _once(options, predictor).load().engine == "openvino"
    assert _once(SegEveryOptions(detector=str(OBJECT_AWARE_CHECKPOINT), engine="torch"),
                 predictor).load().engine == "torch"  # fmt: skip
    assert _once(options, None).load().engine == "torch"
    with pytest.raises(InvalidValueError, match="engine must be one of"):
        SegEveryOptions(engine="tensorrt")


def test_the_command_line_engine_runs_the_detector_too(exported):
    from napari_mobilesam.batch.models import load_models
    from napari_mobilesam.batch.settings import BatchSettings

    for engine in ("openvino", "torch"):
        settings = BatchSettings(
            detector=str(OBJECT_AWARE_CHECKPOINT),
            decoder="mobile_sam",
            weights=str(PARITY_CHECKPOINT),
            device="cpu",
            engine=engine,
        )
        predictor, detector, _ = load_models(settings)
        assert (predictor.engine, detector.engine) == (engine, engine)
