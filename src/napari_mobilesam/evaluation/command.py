"""The ``evaluate`` command: predicted label images measured against ground truth.

``napari-mobilesam evaluate PRED GT -o report.csv``: PRED and GT are two label-image files,
or two folders whose files are paired by name (``img_01.tif`` with ``img_01_masks.tif``;
see :func:`~napari_mobilesam.imaging.image_files.pair_by_name`). The CSV has one row per
image and threshold (and plane, with ``--per-plane``), then the rows pooled over all
images: one quantity per column, so a spreadsheet's filter on ``threshold`` gives a
per-image table and a pivot table gives any other view. A summary is printed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError, UserInputError
from napari_mobilesam.evaluation.matching import check_thresholds, match_objects, match_planes
from napari_mobilesam.evaluation.results import (
    COLUMNS,
    IOU_THRESHOLDS,
    MatchCounts,
    PlaneMatching,
)

__all__ = ["CSV_COLUMNS", "ImageEvaluation", "add_command", "evaluate_files", "write_report"]

CSV_COLUMNS = ("image", "prediction", "ground_truth", "plane", *COLUMNS, "n_true", "n_pred",
               "msa")  # fmt: skip
POOLED = "(pooled)"


@dataclass(frozen=True)
class ImageEvaluation:
    """One evaluated pair: its name, the two files, and the matching (per plane or not)."""

    name: str
    prediction: str
    ground_truth: str
    result: MatchCounts | PlaneMatching

    @property
    def total(self) -> MatchCounts:
        """The image's counts (summed over its planes when evaluated per plane)."""
        return self.result.total if isinstance(self.result, PlaneMatching) else self.result


def add_command(commands: Any) -> None:
    """Add the ``evaluate`` subcommand to the console script's subparsers."""
    parser = commands.add_parser(
        "evaluate",
        help="measure predicted label images against ground truth (AP, mSA, F1)",
        description="Match predicted to true objects one-to-one by IoU (as Cellpose does) "
        "and report, per IoU threshold, TP, FP, FN, precision, recall, F1 and AP = TP / "
        "(TP + FP + FN), and mSA, the mean AP over 0.5:0.95. PRED and GT are two label "
        "images, or two folders paired by file name; unpaired files are listed and make "
        "the exit status 1.",
    )
    parser.add_argument("prediction", metavar="PRED", help="predicted label image or folder")
    parser.add_argument("truth", metavar="GT", help="ground-truth label image or folder")
    parser.add_argument("-o", "--output", metavar="REPORT.csv", help="write the CSV report")
    parser.add_argument(
        "--thresholds",
        type=_threshold,
        nargs="+",
        default=list(IOU_THRESHOLDS),
        metavar="IOU",
        help="IoU thresholds (default: 0.5 0.55 ... 0.95)",
    )
    parser.add_argument(
        "--per-plane",
        type=int,
        metavar="AXIS",
        help="evaluate each plane along AXIS (e.g. 0 for Z or T) separately, with totals "
        "summed over the planes (default: objects span the whole image, so 3-D label "
        "images are volumes of 3-D objects)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``: 0 all paired and evaluated, 1 unpaired files, 2 bad input."""
    try:
        evaluations, unpaired, failures = evaluate_files(
            args.prediction,
            args.truth,
            thresholds=args.thresholds,
            axis=args.per_plane,
            progress=not args.quiet,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if evaluations:
        print(summary_table(evaluations))
        if args.output:
            write_report(args.output, evaluations)
            print(f"report: {args.output}")
    for entry in unpaired:
        print(f"not evaluated, no partner of the same name: {entry}", file=sys.stderr)
    for name, reason in failures:
        print(f"error: {name}: {reason}", file=sys.stderr)
    if not evaluations and not failures:
        print("error: no pair of label images of the same name to evaluate", file=sys.stderr)
    if failures or not evaluations:
        return 2
    return 1 if unpaired else 0


def evaluate_files(
    prediction: str | Path,
    truth: str | Path,
    *,
    thresholds: Any = IOU_THRESHOLDS,
    axis: int | None = None,
    progress: bool = False,
) -> tuple[list[ImageEvaluation], list[str], list[tuple[str, str]]]:
    """Evaluate a predicted label image (or folder) against the ground truth (or folder).

    Two files are compared whatever their names; two folders are paired by name.

    Returns
    -------
    evaluations : list of ImageEvaluation
    unpaired : list of str
        Files (or inputs) of either side without a partner.
    failures : list of (str, str)
        Pairs that could not be compared (shapes differ, not integers), and why.
    """
    from tqdm.auto import tqdm

    from napari_mobilesam.imaging.image_files import InputItem, pair_by_name, read_image

    thresholds = check_thresholds(thresholds)
    for path in (prediction, truth):
        if not Path(path).exists():
            raise InvalidValueError(f"no such file or folder: {path}")
    if Path(prediction).is_file() and Path(truth).is_file():
        pairs = [(InputItem(str(prediction), Path(prediction).stem), InputItem(str(truth), ""))]
        unpaired: list[str] = []
    else:
        pairs, first_only, second_only = pair_by_name([prediction], [truth])
        unpaired = first_only + second_only
    evaluations, failures = [], []
    for pred_item, true_item in tqdm(pairs, unit="image", disable=not progress, desc="evaluate"):
        try:
            predicted, true = read_image(pred_item.source)[0], read_image(true_item.source)[0]
            if axis is None:
                result: MatchCounts | PlaneMatching = match_objects(
                    predicted, true, thresholds=thresholds
                )
            else:
                result = match_planes(predicted, true, axis=axis, thresholds=thresholds)
        except UserInputError as error:
            failures.append((f"{pred_item.source} vs {true_item.source}", str(error)))
            continue
        evaluations.append(
            ImageEvaluation(pred_item.key, pred_item.source, true_item.source, result)
        )
    return evaluations, unpaired, failures


def report_rows(evaluations: list[ImageEvaluation]) -> list[dict[str, Any]]:
    """The CSV rows: per image (per plane and total), per threshold, then pooled."""
    rows = []
    for evaluation in evaluations:
        parts: list[tuple[str, MatchCounts]] = []
        if isinstance(evaluation.result, PlaneMatching):
            parts = [(str(i), plane) for i, plane in enumerate(evaluation.result.planes)]
        parts.append(("all", evaluation.total))
        for plane, counts in parts:
            files = (evaluation.name, evaluation.prediction, evaluation.ground_truth, plane)
            rows += _rows(files, counts)
    pooled = MatchCounts.pooled([evaluation.total for evaluation in evaluations])
    return rows + _rows((POOLED, "", "", "all"), pooled)


def _rows(files: tuple[str, str, str, str], counts: MatchCounts) -> list[dict[str, Any]]:
    extra = {"n_true": counts.n_true, "n_pred": counts.n_pred, "msa": counts.msa}
    return [
        dict(zip(CSV_COLUMNS, files, strict=False), **row, **extra) for row in counts.as_rows()
    ]


def write_report(path: str | Path, evaluations: list[ImageEvaluation]) -> None:
    """Write the CSV report of :func:`report_rows` (nan written as an empty cell)."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in report_rows(evaluations):
            writer.writerow({k: "" if _is_nan(v) else v for k, v in row.items()})


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def summary_table(evaluations: list[ImageEvaluation]) -> str:
    """Per image AP50, AP75 and mSA; the figures pooled over all objects; and AP and mSA
    averaged over the images (images without any object left out)."""
    width = max(12, *(len(e.name) for e in evaluations))
    lines = [f"{'image':<{width}} {'true':>6} {'pred':>6} {'AP50':>6} {'AP75':>6} {'mSA':>6}"]
    for e in evaluations:
        t = e.total
        numbers = " ".join(f"{value:>6.3f}" for value in (t.ap50, t.ap75, t.msa))
        lines.append(f"{e.name:<{width}} {t.n_true:>6} {t.n_pred:>6} {numbers}")
    totals = [e.total for e in evaluations if e.total.n_true or e.total.n_pred]
    pooled = MatchCounts.pooled([e.total for e in evaluations])
    lines += ["", f"pooled over the objects of all {len(evaluations)} images:", pooled.summary()]
    if totals:
        mean_ap = np.mean([t.ap for t in totals], axis=0)
        lines.append(f"mean over {len(totals)} images with objects: AP "
                     + " ".join(f"{value:.3f}" for value in mean_ap)
                     + f", mSA {np.mean([t.msa for t in totals]):.3f}")  # fmt: skip
    return "\n".join(lines)
