"""The ``napari-mobilesam train-decoder`` command: fine-tune a mask decoder from the shell.

Same training data options as ``train-detector``
(:func:`~napari_mobilesam.training.data_arguments.add_data_arguments`). Progress and the
validation figures are printed per epoch; Ctrl+C stops after the current batch and keeps
the best weights so far (a second Ctrl+C stops at once).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_mobilesam.training.interrupts import stop_on_ctrl_c
from napari_mobilesam.training.reports import EpochReport

__all__ = ["add_command", "run"]

EXAMPLES = """\
examples:
  napari-mobilesam train-decoder images/ --labels masks/ \\
      --base Prompt_guided_Mask_Decoder.pt --image-encoder mobile_sam.pt -o nuclei_boxes.pt
  napari-mobilesam segment plates/ -o out/ --decoder nuclei_boxes.pt
  napari-mobilesam train-decoder images/ --labels masks/ --base mobile_sam.pt -o nuclei_sam.pt
  NAPARI_MOBILESAM_WEIGHTS=nuclei_sam.pt napari
"""


def add_command(commands: Any) -> None:
    """Add ``train-decoder`` to the console script's subcommands."""
    from napari_mobilesam.training.data_arguments import add_data_arguments

    parser = commands.add_parser(
        "train-decoder",
        help="fine-tune SegEvery's box decoder or SegAny's decoder on your annotations",
        description="Fine-tune MobileSAMv2's prompt-guided box decoder "
        "(Prompt_guided_Mask_Decoder.pt, used by SegEvery) or the prompt encoder and mask "
        "decoder of a mobile_sam.pt (SegAny's clicks) on annotated images, with the image "
        "encoder frozen: each image is encoded once, then only the decoder trains (a CPU "
        "is enough). The result has the format of --base.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--base",
        required=True,
        metavar="FILE",
        help="the weights to start from: a Prompt_guided_Mask_Decoder.pt-format file (box "
        "decoder) or a mobile_sam.pt-format file; the kind is read from the file",
    )
    model.add_argument(
        "--image-encoder",
        metavar="FILE",
        help="the mobile_sam.pt whose encoder makes the embeddings, for a box-decoder base "
        "(default: NAPARI_MOBILESAM_WEIGHTS or the official weights)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the result")
    run_group = parser.add_argument_group("training")
    run_group.add_argument("--epochs", type=int, metavar="N", help="passes (default 20)")
    run_group.add_argument("--lr", type=float, metavar="RATE", help="learning rate (3e-4)")
    run_group.add_argument("--device", metavar="DEVICE", help="cpu, cuda, mps (default: best)")
    run_group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run_group.add_argument("--store", metavar="ZARR", help="embedding store to use/fill")
    run_group.add_argument(
        "--resume", action="store_true", help="continue the stopped run of --output"
    )
    parser.set_defaults(run=run)


def _print_epoch(report: EpochReport) -> None:
    figures = "  ".join(
        f"{name} {value:.3f}" for name, value in report.metrics.items() if name != "val/objects"
    )
    label = "before training" if report.epoch == 0 else f"epoch {report.epoch}/{report.epochs}"
    mark = "  * best, saved" if report.best else ""
    print(f"{label}: {figures}  ({report.seconds:.1f} s){mark}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``train-decoder``; 0 when done, 130 when stopped by Ctrl+C, 2 on bad input."""
    from napari_mobilesam.training.data_arguments import annotations_from_args
    from napari_mobilesam.training.decoder import train_decoder

    train, validation = annotations_from_args(args)
    print(
        f"{len(train)} training and {len(validation)} validation images; encoding each "
        "once, then fine-tuning (Ctrl+C stops and keeps the best)",
        flush=True,
    )
    with stop_on_ctrl_c() as should_stop:
        result = train_decoder(
            train,
            validation,
            args.output,
            base=args.base,
            image_encoder=args.image_encoder,
            epochs=args.epochs,
            learning_rate=args.lr,
            device=args.device,
            resume=args.resume,
            seed=args.seed,
            store=args.store,
            on_epoch=_print_epoch,
            should_stop=should_stop,
        )
    best = result.best
    state = "stopped" if result.stopped else "done"
    if best is not None:
        print(f"{state}: best epoch {best.epoch} (score {best.score:.3f}) in {result.path}")
    print(f"figures and settings: {result.sidecar}")
    if result.stopped:
        print("run again with --resume to continue", file=sys.stderr)
        return 130
    return 0
