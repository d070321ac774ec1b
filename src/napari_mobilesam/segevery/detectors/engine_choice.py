"""Which engine runs a YOLO detector: torch, or its OpenVINO export in float32 or int8.

The engine names are the image encoder's (:data:`napari_mobilesam.engines.ENGINES`).
"auto" exports both OpenVINO variants once per detector weights file
(:mod:`napari_mobilesam.segevery.detectors.openvino_export`), checks them (the gates
below), times torch and each variant that passed on this machine (alternating, median of
a few rounds) and keeps the fastest; torch is kept unless a variant is faster. The
decision is remembered in ``choice-detector-*.json`` beside the exported files, with the
figures behind it, so it is measured once per detector file, input size and calibration
set.

Gates, on two images int8 was not calibrated on
(:func:`napari_mobilesam.engines.gates.gate_images`), each detector run at a confidence
threshold ``t`` low enough to compare at least :data:`GATE_BOXES` boxes (at most 0.25):

- float32: its boxes matched one-to-one to torch's at IoU >= :data:`MIN_BOX_IOU`, the
  matched scores within :data:`FLOAT32_SCORE_TOLERANCE`;
- int8: its boxes matched so to float32's, scores within :data:`INT8_SCORE_TOLERANCE`.

A box whose score lies within the tolerance of ``t`` may go unmatched (it may fall on
either side of the threshold); every other box must be matched. No box at all to compare
fails the gate: an unchecked variant is never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines import gates
from napari_mobilesam.engines.cache import engine_dir
from napari_mobilesam.engines.calibration import calibration_images
from napari_mobilesam.engines.choice import (
    choice_record_name,
    remember_choice,
    remembered_choice,
    time_encoders,
)
from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.segevery.detectors.openvino_export import (
    detector_fingerprint,
    openvino_detector_folder,
)
from napari_mobilesam.segevery.detectors.yolo import YoloDetector, load_yolo_detector

__all__ = [
    "FLOAT32_SCORE_TOLERANCE",
    "GATE_BOXES",
    "INT8_SCORE_TOLERANCE",
    "MIN_BOX_IOU",
    "boxes_agree",
    "detector_for_engine",
    "gate_threshold",
    "measure_detector_engines",
]

MIN_BOX_IOU = 0.98
FLOAT32_SCORE_TOLERANCE = 1e-3
INT8_SCORE_TOLERANCE = 0.05
GATE_BOXES = 20
_PRECISIONS = {"openvino": "float32", "openvino-int8": "int8"}
_LOWEST_GATE_CONF = 0.01


def detector_for_engine(
    path: Path,
    engine: str,
    *,
    conf: float,
    iou: float,
    imgsz: int,
    max_det: int,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> YoloDetector:
    """The detector of the ``.pt`` file ``path`` run by ``engine`` on the CPU.

    ``engine`` is a name checked by :func:`napari_mobilesam.engines.check_engine`; "auto"
    reads the remembered choice or measures it (:func:`measure_detector_engines`).
    """
    if engine == "auto":
        record = measure_detector_engines(
            path, imgsz=imgsz, calibration=calibration, progress=progress
        )
        engine = record["choice"]
    source = path
    if engine != "torch":
        source = openvino_detector_folder(
            path, _PRECISIONS[engine], imgsz=imgsz, calibration=calibration, progress=progress
        )
    return load_yolo_detector(
        source, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, device="cpu", engine=engine
    )


def _choice_path(path: Path, imgsz: int, calibrated: bool) -> Path:
    name = choice_record_name("detector", calibrated, imgsz)
    return engine_dir(detector_fingerprint(path)) / name


def measure_detector_engines(
    path: Path,
    *,
    imgsz: int = 1024,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    rounds: int = 3,
) -> dict:
    """Export, check and time every engine of the detector ``path`` on this machine once.

    Returns
    -------
    dict
        ``choice`` (the engine "auto" uses), ``seconds`` (median per engine), ``passed``
        and ``boxes`` (per OpenVINO variant: boxes compared, worst matched IoU, largest
        score difference, boxes left unmatched), ``threads``. Read from the JSON file when
        measured before with the same torch thread count.
    """
    record_path = _choice_path(path, imgsz, calibration is not None)
    remembered = remembered_choice(record_path)
    if remembered is not None:
        return remembered
    detectors = {"torch": _gate_detector(path, imgsz)}
    for step, name in enumerate(_PRECISIONS, start=1):
        folder = openvino_detector_folder(
            path, _PRECISIONS[name], imgsz=imgsz, calibration=calibration
        )
        detectors[name] = _gate_detector(folder, imgsz, name)
        if progress is not None:
            progress(step, len(_PRECISIONS) + 1)
    images = calibration_images() if calibration is None else map(to_rgb_uint8, calibration)
    checked = gates.gate_images(list(images))
    record = _gate_record(detectors, checked)
    record = remember_choice(record_path, record, time_encoders(detectors, checked[0], rounds))
    if progress is not None:
        progress(len(_PRECISIONS) + 1, len(_PRECISIONS) + 1)
    return record


def _gate_detector(source: Path, imgsz: int, engine: str = "torch") -> YoloDetector:
    return load_yolo_detector(
        source,
        conf=_LOWEST_GATE_CONF,
        iou=0.9,
        imgsz=imgsz,
        max_det=300,
        device="cpu",
        engine=engine,
    )


def _gate_record(detectors: dict[str, YoloDetector], images: list[np.ndarray]) -> dict:
    """The gates of both OpenVINO variants on ``images`` (see the module notes)."""
    pairs = {
        "openvino": ("torch", FLOAT32_SCORE_TOLERANCE),
        "openvino-int8": ("openvino", INT8_SCORE_TOLERANCE),
    }
    found = {name: [detect(image) for image in images] for name, detect in detectors.items()}
    boxes: dict[str, dict] = {}
    for name, (reference, tolerance) in pairs.items():
        results = []
        for (ref_boxes, ref_scores), (other_boxes, other_scores) in zip(
            found[reference], found[name], strict=True
        ):
            threshold = gate_threshold(ref_scores)
            results.append(
                boxes_agree(
                    ref_boxes,
                    ref_scores,
                    other_boxes,
                    other_scores,
                    threshold,
                    tolerance,
                    min_iou=MIN_BOX_IOU,
                )
            )
        boxes[name] = {
            "compared": sum(r["compared"] for r in results),
            "min_iou": min(r["min_iou"] for r in results),
            "max_score_diff": max(r["max_score_diff"] for r in results),
            "unmatched": sum(r["unmatched"] for r in results),
        }
    passed = {name: _held(result) for name, result in boxes.items()}
    passed["openvino-int8"] = passed["openvino-int8"] and passed["openvino"]
    return {"passed": passed, "boxes": boxes}


def _held(result: dict) -> bool:
    return result["compared"] > 0 and result["unmatched"] == 0


def gate_threshold(scores: np.ndarray) -> float:
    """The confidence threshold of one gate image: at most 0.25, low enough for
    :data:`GATE_BOXES` boxes of the reference when it has them.

    Examples
    --------
    >>> gate_threshold(np.linspace(0.9, 0.05, 40))
    0.25
    """
    ranked = np.sort(scores)[::-1]
    if len(ranked) >= GATE_BOXES:
        return float(max(_LOWEST_GATE_CONF, min(0.25, ranked[GATE_BOXES - 1])))
    return _LOWEST_GATE_CONF


def boxes_agree(
    ref_boxes: np.ndarray,
    ref_scores: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    tolerance: float,
    min_iou: float = MIN_BOX_IOU,
) -> dict:
    """Match two detectors' boxes above ``threshold`` one-to-one (an optimal assignment).

    A pair counts when its IoU is at least ``min_iou`` and its scores differ by at most
    ``tolerance``. Boxes with scores within ``tolerance`` of ``threshold`` may go
    unmatched.

    Returns
    -------
    dict
        ``compared`` (reference boxes above the threshold), ``matched`` (pairs),
        ``min_iou`` and
        ``max_score_diff`` of the matched pairs, ``unmatched`` (boxes of either side,
        clear of the threshold, without a partner).

    Examples
    --------
    >>> b = np.array([[0, 0, 10, 10]], np.float32)
    >>> boxes_agree(b, np.array([0.9]), b + 0.01, np.array([0.9005]), 0.25, 1e-3)["unmatched"]
    0
    """
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    keep_ref, keep = ref_scores >= threshold, scores >= threshold
    ref_boxes, ref_scores = ref_boxes[keep_ref], ref_scores[keep_ref]
    boxes, scores = boxes[keep], scores[keep]
    ious = box_iou(torch.as_tensor(ref_boxes), torch.as_tensor(boxes)).numpy()
    close = np.abs(ref_scores[:, None] - scores[None, :]) <= tolerance
    good = (ious >= min_iou) & close
    rows, cols = linear_sum_assignment(-(good + 1e-3 * ious))
    paired = good[rows, cols]
    rows, cols = rows[paired], cols[paired]
    clear = threshold + tolerance
    unmatched = np.count_nonzero(np.delete(ref_scores, rows) > clear) + np.count_nonzero(
        np.delete(scores, cols) > clear
    )
    diffs = np.abs(ref_scores[rows] - scores[cols])
    return {
        "compared": len(ref_boxes),
        "matched": len(rows),
        "min_iou": float(ious[rows, cols].min()) if len(rows) else 1.0,
        "max_score_diff": float(diffs.max()) if len(rows) else 0.0,
        "unmatched": int(unmatched),
    }
