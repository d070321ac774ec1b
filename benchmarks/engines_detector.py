"""Benchmark: SegEvery's YOLO detector in torch against its OpenVINO exports (float32, int8).

A YOLOv8x-seg sized detector (MobileSAMv2's ObjectAwareModel is one; random weights, one
class, its class branch re-drawn so that the scores differ between anchors) is exported
with ultralytics into the engine cache (once per weights file), then, in one process, the
engines are alternated round by round (a change of load hits all alike) on a 1024² image
(:func:`napari_mobilesam.evaluation.synthetic_nuclei`), median of ``--rounds``. Ratios are
torch's median / the engine's. Memory: the growth of resident memory while the engine is
loaded and runs its first detection (OpenVINO allocates its buffers when it compiles), and
the largest growth during one later detection. Boxes matched: float32 against torch and
int8 against float32, one-to-one at IoU >= 0.98 with scores within 1e-3 (float32) or 0.05
(int8), at the gate's threshold (:mod:`napari_mobilesam.segevery.detectors.engine_choice`),
on the timed image.

A random detector's boxes hardly depend on the image (every anchor gets about the same
score), so they say nothing about int8; ``--v2 coffee`` runs the ObjectAwareModel-format
fixture of ``../shared/fixtures/v2`` (random weights whose BatchNorm statistics were
calibrated on its images) on its ``coffee`` or ``cell`` image instead, whose boxes do.

Usage::

    python benchmarks/engines_detector.py                  # YOLOv8x-seg, 5 rounds
    python benchmarks/engines_detector.py --yaml yolov8n-seg.yaml --rounds 3
    python benchmarks/engines_detector.py --v2 coffee      # boxes that depend on the image
    python benchmarks/engines_detector.py --detector nuclei.pt --seed 1000  # a trained one
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
V2 = HERE.parents[1] / "shared" / "fixtures" / "v2"
sys.path.insert(0, str(HERE))
ENGINES = ("torch", "openvino", "openvino-int8")


def random_detector(folder: Path, base_yaml: str) -> Path:
    """A one-class random-weight YOLO segmentation model built from ultralytics' yaml."""
    import torch
    import yaml

    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics, yolo_class

    YOLO = yolo_class()
    from ultralytics.nn.tasks import yaml_model_load

    config = yaml_model_load(base_yaml)
    config["nc"] = 1
    config_path = folder / f"1-class-{Path(base_yaml).stem}.yaml"
    config_path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "yaml_file"}))
    torch.manual_seed(0)
    with quiet_ultralytics():
        model = YOLO(str(config_path))
        for branch in model.model.model[-1].cv3:
            torch.nn.init.normal_(branch[-1].weight, std=0.05)
        path = folder / f"{config_path.stem}.pt"
        model.save(path)
    return path


def detect_rounds(detectors: dict, image: np.ndarray, rounds: int) -> dict:
    """Median seconds and peak MiB per engine, alternating (after a first detection)."""
    from _measure import PeakRSS

    seconds = {name: [] for name in detectors}
    peaks = dict.fromkeys(detectors, 0.0)
    found = {name: detect(image) for name, detect in detectors.items()}  # none is new
    for _ in range(rounds):
        for name, detect in detectors.items():
            with PeakRSS() as peak:
                start = time.perf_counter()
                detect(image)
                seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], peak.growth_mib)
    return {
        name: (statistics.median(seconds[name]), peaks[name], found[name]) for name in detectors
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", default="yolov8x-seg.yaml", help="ultralytics model yaml")
    parser.add_argument("--detector", type=Path, help="a YOLO .pt file instead of --yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=1024)
    parser.add_argument("--v2", choices=("coffee", "cell"), help="the v2 fixture and image")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic image")
    parser.add_argument(
        "--conf",
        type=float,
        default=0.25,
        help="detection threshold (a low one times NMS over thousands of random boxes)",
    )
    args = parser.parse_args(argv)

    import torch

    from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
    from napari_mobilesam.imaging.convert import to_rgb_uint8
    from napari_mobilesam.segevery.detectors import engine_choice
    from napari_mobilesam.segevery.discovery import load_detector

    scratch = Path(tempfile.mkdtemp(prefix="engines-detector-"))
    if args.v2:
        path = V2 / "ObjectAwareModel_seed0.pt"
        with np.load(V2 / "official_seed0.npz") as data:
            image = data[f"{args.v2}/image"]
    else:
        path = args.detector or random_detector(scratch, args.yaml)
        image = to_rgb_uint8(synthetic_nuclei((args.imgsz, args.imgsz), seed=args.seed)[0])
    from _measure import PeakRSS

    detectors, converted, loaded = {}, {}, {}
    for engine in ENGINES:
        start = time.perf_counter()
        with PeakRSS() as peak:
            detectors[engine] = load_detector(
                path, conf=args.conf, imgsz=args.imgsz, device="cpu", engine=engine
            )
            converted[engine] = time.perf_counter() - start
            detectors[engine](image)
        loaded[engine] = peak.growth_mib
    results = detect_rounds(detectors, image, args.rounds)
    matched = {}
    for name, reference, tolerance in (
        ("openvino", "torch", engine_choice.FLOAT32_SCORE_TOLERANCE),
        ("openvino-int8", "openvino", engine_choice.INT8_SCORE_TOLERANCE),
    ):
        ref_boxes, ref_scores = results[reference][2]
        threshold = engine_choice.gate_threshold(ref_scores)
        matched[name] = engine_choice.boxes_agree(
            ref_boxes, ref_scores, *results[name][2], threshold, tolerance
        )
        matched[name]["threshold"] = threshold
    torch_seconds = results["torch"][0]
    print(
        f"detector {path.name}, image {image.shape[:2]} at imgsz {args.imgsz}, "
        f"conf {args.conf}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {args.rounds} rounds"
    )
    print(
        "| engine | ms | × torch | MiB load+first / run | boxes matched (worst IoU, max Δscore) "
        "| load s |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for engine in ENGINES:
        seconds, peak, _ = results[engine]
        if engine in matched:
            m = matched[engine]
            agree = (
                f"{m['matched']}/{m['compared']} above {m['threshold']:.3f} "
                f"({m['min_iou']:.4f}, {m['max_score_diff']:.1e})"
            )
        else:
            agree = "reference"
        print(
            f"| {engine} | {seconds * 1e3:.0f} | {torch_seconds / seconds:.2f} "
            f"| {loaded[engine]:.0f} / {peak:.0f} "
            f"| {agree} | {converted[engine]:.1f} |"
        )


if __name__ == "__main__":
    main()
