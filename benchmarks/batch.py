"""Benchmark: ``napari-mobilesam segment`` throughput, in-process and on a LocalCluster.

Writes ``n`` synthetic ``side``² uint16 TIFFs of nuclei with their true labels
(:func:`napari_mobilesam.evaluation.synthetic_nuclei`) into a temporary folder, then runs
:func:`napari_mobilesam.batch.runner.segment_files` over the folder

* in this process, one image after another (the default of ``segment``);
* on a dask ``LocalCluster`` of ``workers`` processes with one thread each
  (``segment --workers``), cluster start-up and the workers' model loading included.

Weights are random (``../shared/fixtures/parity/mobile_sam_seed0.pt``, or ``--weights``)
and the detector a random-weight one-class YOLOv8 (``--detector-yaml``); random weights
decode masks that cover most of the image, the worst case for decoding, so the number of
objects is capped (``--max-objects``). Reported: wall seconds, images per minute, and the
outputs' AP at IoU 0.5 and mSA against the truth, pooled over all objects (near 0 with
random weights; with real weights and a trained detector they measure the run).

Usage::

    python benchmarks/batch.py                   # 100 images of 512², 2 workers
    python benchmarks/batch.py --n 20 --workers 2 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
RANDOM_WEIGHTS = SHARED / "fixtures" / "parity" / "mobile_sam_seed0.pt"


def write_images(folder: Path, truth: Path, n: int, side: int) -> None:
    """``n`` uint16 TIFFs of ``side``² synthetic nuclei, and their true labels in ``truth``."""
    import tifffile

    from napari_mobilesam.evaluation import synthetic_nuclei

    for i in range(n):
        image, labels = synthetic_nuclei((side, side), seed=i)
        tifffile.imwrite(folder / f"img{i:04d}.tif", image)
        tifffile.imwrite(truth / f"img{i:04d}.tif", labels)


def pooled_quality(outputs: Path, truth: Path) -> tuple[float, float]:
    """AP at IoU 0.5 and mSA of a run's label images, pooled over all images' objects."""
    from napari_mobilesam.evaluation import MatchCounts
    from napari_mobilesam.evaluation.command import evaluate_files

    evaluations, unpaired, failures = evaluate_files(outputs, truth)
    assert not failures and not unpaired, (failures, unpaired)
    pooled = MatchCounts.pooled([evaluation.total for evaluation in evaluations])
    return pooled.ap50, pooled.msa


def random_detector(folder: Path, base_yaml: str) -> Path:
    """A one-class YOLOv8 with random weights, saved as an ultralytics checkpoint."""
    import torch
    import yaml

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    config = {k: v for k, v in yaml_model_load(base_yaml).items() if k != "yaml_file"}
    config["nc"] = 1
    config_path = folder / f"random-{Path(base_yaml).name}"
    config_path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    checkpoint = folder / f"{config_path.stem}.pt"
    YOLO(str(config_path)).save(checkpoint)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="images (default 100)")
    parser.add_argument("--side", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--workers", type=int, nargs="*", default=[2])
    parser.add_argument("--max-objects", type=int, default=16)
    parser.add_argument("--detector-yaml", default="yolov8n-seg.yaml")
    parser.add_argument("--weights", type=Path, default=RANDOM_WEIGHTS)
    args = parser.parse_args()

    from napari_mobilesam.batch.runner import BatchSettings, segment_files

    os.environ["NAPARI_MOBILESAM_WEIGHTS"] = str(args.weights)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        (tmp / "truth").mkdir()
        write_images(tmp / "images", tmp / "truth", args.n, args.side)
        settings = BatchSettings(
            detector=str(random_detector(tmp, args.detector_yaml)),
            decoder="mobile_sam",
            conf=0.01,
            max_objects=args.max_objects,
            weights=str(args.weights),
        )
        runs = [("in-process", None)] + [(f"LocalCluster {w}×1", w) for w in args.workers]
        for name, workers in runs:
            start = time.perf_counter()
            report = segment_files(
                [tmp / "images"], tmp / f"out-{name}", settings, workers=workers, progress=False
            )
            seconds = time.perf_counter() - start
            assert report.ok, report.failures
            per_image = np.median([r.seconds for r in report.results])
            ap50, msa = pooled_quality(tmp / f"out-{name}", tmp / "truth")
            rows.append((name, seconds, 60 * args.n / seconds, per_image, ap50, msa))
            print(f"{name}: {seconds:.1f} s, {60 * args.n / seconds:.1f} images/min", flush=True)
    print(
        f"\n{args.n} images of {args.side}², {os.cpu_count()} cores, max_objects="
        f"{args.max_objects}, detector {args.detector_yaml} (random weights)\n"
    )
    print(
        "| run | wall s | images/min | median s per task | AP50 | mSA |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, seconds, rate, per_image, ap50, msa in rows:
        figures = f"{seconds:.1f} | {rate:.1f} | {per_image:.2f} | {ap50:.2f} | {msa:.2f}"
        print(f"| {name} | {figures} |")


if __name__ == "__main__":
    main()
