"""Detector training on this machine: time against annotated images and epochs, and held-out
box AP@0.5 and recall before (MobileSAMv2's ObjectAwareModel format with seed-0 weights, an
untrained detector) and after training.

Synthetic nuclei (``napari_mobilesam.evaluation.synthetic``) of 512² stand in for annotated
microscopy: the training images have seeds 0..N-1, two validation images follow them, and
the held-out images (seeds 1000+) are never seen in training. Box figures match each true
box to at most one detection at IoU >= 0.5 (``training.detector_scores``); recall counts
detections at ``conf`` 0.25, AP ranks all detections above 0.01.

With ``--weights`` (a real ``mobile_sam.pt``) SegEvery also segments the held-out images
with each detector, and its labels are measured against the truth (AP at IoU 0.5 and mSA,
:func:`napari_mobilesam.evaluation.match_objects`); the random test weights would make
those figures meaningless, so they are left out without ``--weights``.

Run: ``python benchmarks/train_detector.py [--images 5 10 20] [--epochs N] [--device cpu]
[--weights mobile_sam.pt]`` (about 5 minutes per run of the default epochs on 2 free CPU
cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
OBJECT_AWARE = SHARED / "v2" / "ObjectAwareModel_seed0.pt"
SIDE = 512
HELD_OUT = 4


def held_out_scores(path: Path, held_out: list, device: str | None) -> tuple[float, float]:
    """Box AP@0.5 and recall (at conf 0.25) of a detector file on the held-out images."""
    from napari_mobilesam.imaging.convert import to_rgb_uint8
    from napari_mobilesam.segevery.detectors.yolo import load_yolo_detector
    from napari_mobilesam.training.detector_scores import box_scores, label_boxes

    truths = [label_boxes(labels) for _, labels in held_out]
    rgbs = [to_rgb_uint8(image) for image, _ in held_out]
    figures = []
    for conf in (0.01, 0.25):
        detector = load_yolo_detector(
            path, conf=conf, iou=0.7, imgsz=None, max_det=300, device=device
        )
        figures.append(box_scores([detector(rgb) for rgb in rgbs], truths))
    return figures[0]["AP"], figures[1]["recall"]


def segevery_scores(path: Path, held_out: list, predictor: object) -> str:
    """`` AP50 | mSA |`` of SegEvery's labels with a detector file, pooled over images."""
    from napari_mobilesam import segment_everything
    from napari_mobilesam.evaluation import match_objects

    matchings = [
        match_objects(
            segment_everything(
                image, predictor=predictor, detector=path, decoder="mobile_sam", conf=0.25
            ).labels,
            labels,
        )
        for image, labels in held_out
    ]
    ap50 = sum(m.ap50 for m in matchings) / len(matchings)
    msa = sum(m.msa for m in matchings) / len(matchings)
    return f" {ap50:.3f} | {msa:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--epochs", type=int, help="default: train_detector's")
    parser.add_argument("--device", help="default: CUDA when available, else the CPU")
    parser.add_argument("--weights", type=Path, help="a real mobile_sam.pt: SegEvery's mSA too")
    args = parser.parse_args()
    predictor = None
    if args.weights is not None:
        from napari_mobilesam import SegAnyPredictor, build_mobile_sam

        predictor = SegAnyPredictor(build_mobile_sam(args.weights))
    extra = (" SegEvery AP50 | SegEvery mSA |", " ---: | ---: |") if predictor else ("", "")

    from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
    from napari_mobilesam.training import annotated_image, train_detector

    held_out = [synthetic_nuclei((SIDE, SIDE), seed=1000 + i) for i in range(HELD_OUT)]
    objects = sum(int(labels.max()) for _, labels in held_out)
    print(f"held-out: {HELD_OUT} images of {SIDE}², {objects} objects")
    print(
        "| start | train images | epochs | training s | s / epoch | AP@0.5 | recall |" + extra[0]
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + extra[1])
    if OBJECT_AWARE.is_file():
        ap, recall = held_out_scores(OBJECT_AWARE, held_out, args.device)
        row = f"| ObjectAwareModel seed 0 (untrained) | 0 | 0 | - | - | {ap:.3f} | {recall:.3f} |"
        if predictor is not None:
            row += segevery_scores(OBJECT_AWARE, held_out, predictor)
        print(row, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for count in args.images:
            items = [
                annotated_image(*synthetic_nuclei((SIDE, SIDE), seed=seed), f"im{seed}")
                for seed in range(count + 2)
            ]
            start = time.perf_counter()
            result = train_detector(
                items[:count],
                items[count:],
                Path(folder) / f"det{count}.pt",
                epochs=args.epochs,
                device=args.device,
            )
            seconds = time.perf_counter() - start
            epochs = len(result.history)
            ap, recall = held_out_scores(result.path, held_out, args.device)
            row = (
                f"| scratch | {count} | {epochs} | {seconds:.0f} | {seconds / epochs:.1f} | "
                f"{ap:.3f} | {recall:.3f} |"
            )
            if predictor is not None:
                row += segevery_scores(result.path, held_out, predictor)
            print(row, flush=True)


if __name__ == "__main__":
    main()
