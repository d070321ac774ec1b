"""``napari-mobilesam train-detector``: train SegEvery's object detector on annotated images.

Examples::

    napari-mobilesam train-detector images/ --labels masks/ -o nuclei.pt
    napari-mobilesam train-detector images/ --coco annotations.json -o nuclei.pt --epochs 50
    napari-mobilesam train-detector images/ --labels masks/ -o nuclei.pt --resume
    napari-mobilesam segment plates/ -o out/ --detector nuclei.pt
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from napari_mobilesam._cli_arguments import positive
from napari_mobilesam.training.data_arguments import add_data_arguments, annotations_from_args
from napari_mobilesam.training.interrupts import stop_on_ctrl_c
from napari_mobilesam.training.reports import EpochReport

__all__ = ["add_command", "run_train_detector"]


def add_command(commands: Any) -> None:
    """Add the ``train-detector`` command to the console script's subcommands."""
    from napari_mobilesam.training.detector import (
        DEFAULT_BATCH,
        DEFAULT_CROP_PASSES,
        DEFAULT_TRAIN_IMGSZ,
    )

    parser = commands.add_parser(
        "train-detector",
        help="train SegEvery's object detector on annotated images",
        description="Train a one-class YOLO object detector for SegEvery on images and their "
        "label images (or a COCO file). The best epoch on the held-out images is written "
        "to -o; use it with 'segment --detector FILE' or in napari's SegEvery widget. "
        "Ctrl+C stops and keeps the best epoch so far.",
    )
    add_data_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="the detector .pt file to write")
    parser.add_argument(
        "--base",
        default="scratch",
        help="'scratch' (default), MobileSAMv2's ObjectAwareModel.pt, or a YOLO .pt/.yaml",
    )
    parser.add_argument(
        "--epochs",
        type=positive,
        help=f"epochs (default: enough for {DEFAULT_CROP_PASSES} training crops)",
    )
    parser.add_argument(
        "--imgsz",
        type=positive,
        help=f"training crop side, a multiple of 32 (default: {DEFAULT_TRAIN_IMGSZ})",
    )
    parser.add_argument("--batch", type=positive, help=f"crops per batch ({DEFAULT_BATCH})")
    parser.add_argument("--device", help="cpu, cuda:0, ... (default: CUDA when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run of the same -o"
    )
    parser.add_argument(
        "--workdir", help="dataset and training files (default: <output>_training beside -o)"
    )
    parser.set_defaults(run=run_train_detector)


def run_train_detector(args: argparse.Namespace) -> int:
    """Run ``train-detector``; 0 when done, 130 when stopped by Ctrl+C, 2 on bad input."""
    from napari_mobilesam.training.detector import train_detector

    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        train, validation = annotations_from_args(args)
        print(
            f"{len(train)} training and {len(validation)} validation images, "
            f"{sum(item.n_objects for item in train)} training objects",
            flush=True,
        )
        try:
            with stop_on_ctrl_c() as should_stop:
                result = train_detector(
                    train,
                    validation,
                    args.output,
                    base=args.base,
                    epochs=args.epochs,
                    imgsz=args.imgsz,
                    batch=args.batch,
                    device=args.device,
                    resume=args.resume,
                    seed=args.seed,
                    on_epoch=_print_epoch,
                    should_stop=should_stop,
                    workdir=args.workdir,
                )
        except KeyboardInterrupt:
            print("interrupted before an epoch finished: nothing to keep", file=sys.stderr)
            return 130
    best = result.best
    figures = f" (epoch {best.epoch}, AP50 {best.metrics['val/AP50']:.3f})" if best else ""
    if result.stopped:
        print(
            f"stopped: the best epoch so far{figures} is in {result.path}; "
            "run again with --resume to continue",
            file=sys.stderr,
        )
        return 130
    print(f"detector written to {result.path}{figures}; what it learnt from: {result.sidecar}")
    return 0


def _print_epoch(report: EpochReport) -> None:
    metrics = report.metrics
    print(
        f"epoch {report.epoch}/{report.epochs}  AP50 {metrics['val/AP50']:.3f}  "
        f"mAP50-95 {metrics['val/mAP50-95']:.3f}  recall {metrics['val/recall']:.3f}  "
        f"loss {metrics['loss']:.3f}  {report.seconds:.0f} s" + ("  best" if report.best else ""),
        flush=True,
    )


def _print_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
