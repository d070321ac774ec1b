"""The training data options shared by the training commands (``train-detector``, ...).

:func:`add_data_arguments` adds them to a command's parser; :func:`annotations_from_args`
reads the annotated images they name and splits them into training and validation images.
"""

from __future__ import annotations

import argparse

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.training.annotations import AnnotatedImage, split_by_image
from napari_mobilesam.training.sources import load_annotations

__all__ = ["add_data_arguments", "annotations_from_args"]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that name the training data to a command's parser.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_data_arguments(parser)
    >>> parser.parse_args(["images/", "--labels", "masks/"]).labels
    'masks/'
    """
    group = parser.add_argument_group("training data")
    group.add_argument(
        "images",
        nargs="+",
        help="image files, folders or glob patterns (with --coco: the folder of its images)",
    )
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--labels",
        metavar="LABELS",
        help="folder (or glob) of label images paired with the images by name: img_01.tif "
        "with img_01.tif, img_01_masks.tif, img_01_labels.png, ...",
    )
    source.add_argument("--coco", metavar="JSON", help="a COCO instance-segmentation file")
    group.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="fraction of the images held out to choose the best epoch, split by image name "
        "(default: %(default)s; a single image is validated on itself)",
    )


def annotations_from_args(
    args: argparse.Namespace,
) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """The training and validation images the options of :func:`add_data_arguments` name.

    Raises
    ------
    napari_mobilesam.errors.InvalidValueError
        Bad or mismatched input (the commands exit with status 2).
    """
    images = args.images
    if args.coco:
        if len(images) != 1:
            raise InvalidValueError("with --coco, give one folder: the folder of its images")
        images = images[0]
    items = load_annotations(images, args.labels, args.coco)
    return split_by_image(items, args.validation_fraction, seed=getattr(args, "seed", 0))
