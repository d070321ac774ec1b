"""The ``segment`` command's SegEvery, linking and object-filter options.

Split from :mod:`napari_mobilesam.batch.cli`; each option's default is the one of the
Python API (:class:`~napari_mobilesam.segevery.options.SegEveryOptions`,
:class:`~napari_mobilesam.batch.settings.BatchSettings`).
"""

from __future__ import annotations

import argparse

from napari_mobilesam._cli_arguments import finite_number, fraction, non_negative, positive
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.planes import LINK_MODES

__all__ = ["add_filter_options", "add_segevery_options", "object_ranges"]


def add_segevery_options(segment: argparse.ArgumentParser) -> None:
    segevery = segment.add_argument_group("segment everything (as in the SegEvery widget)")
    segevery.add_argument(
        "--detector",
        default="auto",
        help="auto, object_aware, fastsam, grid, or a YOLO .pt or .onnx file (default: auto)",
    )
    segevery.add_argument(
        "--decoder",
        default="auto",
        help="auto, prompt_guided, mobile_sam, or a decoder file (default: auto)",
    )
    defaults = SegEveryOptions()
    segevery.add_argument(
        "--conf", type=fraction, default=defaults.conf, help="detector confidence"
    )
    segevery.add_argument("--iou", type=fraction, default=defaults.iou, help="NMS IoU threshold")
    segevery.add_argument(
        "--max-objects", type=positive, default=defaults.max_objects, metavar="N"
    )
    segevery.add_argument("--min-area", type=non_negative, default=defaults.min_area, metavar="PX")
    segevery.add_argument(
        "--points-per-side", type=positive, default=defaults.points_per_side, metavar="N"
    )
    segevery.add_argument(
        "--link",
        choices=("auto", *LINK_MODES),
        default="auto",
        help="link the objects of a stack's planes into 3-D objects (z) or tracks (t), as "
        "the SegEvery widget does; auto: tracks along a T axis, else 3-D objects "
        "(default: auto)",
    )
    segevery.add_argument(
        "--search-radius",
        type=float,
        default=None,
        metavar="PX",
        help="tracks: how far a cell may be from where its velocity puts it (default: 3 "
        "median object radii)",
    )
    segevery.add_argument(
        "--max-gap", type=int, default=1, metavar="N", help="slices an object may be missed on"
    )
    segevery.add_argument(
        "--neck-ratio",
        type=float,
        default=0.5,
        metavar="R",
        help="3-D objects: cut a chain whose area falls below R of the peaks on both sides, "
        "nuclei stacked in Z (default: 0.5)",
    )


#: The object filters of ``segment``: (option suffix, feature, argparse type).
_FILTERS = (
    ("area", "area", non_negative),
    ("solidity", "solidity", fraction),
    ("eccentricity", "eccentricity", fraction),
    ("intensity", "mean_intensity", finite_number),
    ("score", "score", fraction),
)


def add_filter_options(segment: argparse.ArgumentParser) -> None:
    filters = segment.add_argument_group(
        "filters on object features (as in the Correct and curate widget): objects outside "
        "a range are removed from the labels and tables; ends included"
    )
    for suffix, feature, kind in _FILTERS:
        for end in ("min", "max"):
            if (end, suffix) == ("min", "area"):
                continue  # --min-area is SegEvery's own option, applied while painting
            filters.add_argument(
                f"--{end}-{suffix}",
                type=kind,
                default=None,
                dest=f"{end}_{feature}",
                help=f"{end}imum {feature.replace('_', ' ')}",
            )


def object_ranges(args: argparse.Namespace) -> tuple:
    """The (feature, low, high) filters given on the command line."""
    ranges = []
    for _, feature, _ in _FILTERS:
        low, high = getattr(args, f"min_{feature}", None), getattr(args, f"max_{feature}")
        if low is not None or high is not None:
            ranges.append((feature, low, high))
    return tuple(ranges)
