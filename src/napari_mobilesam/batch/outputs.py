"""Files written by a batch run: label images, per-object tables and COCO annotations.

Every file is written under a temporary name in the output folder and renamed into place
when complete (:func:`atomic_path`), so a run that is killed never leaves a half-written
output under its final name. numpy, pandas, tifffile and zarr only; ``pycocotools`` is
imported by the COCO functions alone (``pip install "napari-mobilesam[batch]"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_mobilesam._atomic_files import atomic_path, remove_stale_temporaries
from napari_mobilesam.imaging.label_files import (
    LABEL_FORMATS,
    ZARR_PIXELS,
    label_format_for,
    open_labels,
    open_zarr_labels,
    read_labels,
    write_labels,
)

__all__ = [
    "LABEL_FORMATS",
    "ZARR_PIXELS",
    "atomic_path",
    "check_labels",
    "check_writable",
    "claim",
    "coco_part",
    "coco_plane",
    "is_done",
    "label_format_for",
    "merge_coco",
    "object_table",
    "open_labels",
    "open_zarr_labels",
    "output_paths",
    "read_labels",
    "remove_stale_temporaries",
    "write_labels",
]


def output_paths(outdir: Path, key: str) -> dict[str, Path]:
    """The outputs of input ``key``. The CSV is written last: it marks the input done."""
    return {
        "tiff": outdir / f"{key}_labels.tif",
        "zarr": outdir / f"{key}_labels.zarr",
        "csv": outdir / f"{key}_objects.csv",
        "coco": outdir / f"{key}_coco.json",
    }


def is_done(outdir: Path, key: str) -> bool:
    """Whether the outputs of ``key`` are complete (a label image and the CSV)."""
    paths = output_paths(outdir, key)
    return paths["csv"].is_file() and (paths["tiff"].is_file() or paths["zarr"].is_dir())


@contextmanager
def claim(outdir: Path, key: str) -> Iterator[bool]:
    """Claim input ``key`` for this process while the block runs: yields False if another
    live process holds it.

    The claim is a lock on ``outdir/.KEY.lock`` (``filelock``), released (and the file
    removed) when the block ends; the operating system releases it when the process dies,
    so a killed run's claim is taken over by the next run.
    """
    from filelock import FileLock, Timeout

    path = outdir / f".{key}.lock"
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        # Unlinked while held: a run that opened it meanwhile gets Timeout or, after the
        # release, finds the outputs done (filelock also re-checks an unlinked inode).
        path.unlink(missing_ok=True)
        lock.release()


def check_writable(outdir: Path) -> None:
    """Create ``outdir`` if needed; raise ``OSError`` naming it if no file can be written."""
    import tempfile

    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=outdir, prefix=".write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        message = f"cannot write into the output folder {outdir}: {reason}"
        raise type(error)(error.errno, message) from error


def check_labels(path: Path, shape: tuple[int, ...]) -> None:
    """Raise ``OSError`` unless the label image at ``path`` opens with ``shape``."""
    try:
        if path.suffix == ".zarr":
            found = tuple(open_labels(path).shape)
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                found = tuple(tif.series[0].shape)
    except Exception as error:
        raise OSError(f"{path} was written but cannot be read back ({error})") from error
    if found != tuple(shape):
        raise OSError(f"{path} was written with shape {found}, expected {tuple(shape)}")


def object_table(
    labels: np.ndarray,
    scores: dict[int, float],
    intensity: np.ndarray | None = None,
    index: tuple[int, ...] = (),
) -> pd.DataFrame:
    """One row per object of a 2-D label image.

    Parameters
    ----------
    labels : (H, W) int
        0 is background.
    scores : dict
        Predicted IoU of each label.
    intensity : (H, W) or (H, W, C) array, optional
        The image the objects were found in, in its own dtype (no float copy is made);
        gives ``mean_intensity`` (one column per channel, ``mean_intensity_0`` ..., for
        several channels).
    index : tuple of int
        Position of the plane in a stack: a ``slice`` column (``slice_0``, ``slice_1`` ...
        for several stack axes).

    Returns
    -------
    pandas.DataFrame
        Columns ``[slice...,] label, score, area, bbox_x0, bbox_y0, bbox_x1, bbox_y1,
        centroid_x, centroid_y[, mean_intensity...]``; the box is the mask's, in pixels,
        x1 and y1 exclusive.
    """
    from skimage.measure import regionprops_table

    properties = ["label", "area", "bbox", "centroid"]
    if intensity is not None:
        properties.append("intensity_mean")
        intensity = np.asarray(intensity)
    # cache=False: no object keeps its mask, pixel coordinates and intensities once its
    # property is computed (cached, they add up to several times the label image).
    table = regionprops_table(
        labels, intensity_image=intensity, properties=properties, cache=False
    )
    frame = pd.DataFrame(
        {
            "label": table["label"].astype(np.int64),
            "score": [float(scores.get(int(label), np.nan)) for label in table["label"]],
            "area": table["area"].astype(np.int64),
            "bbox_x0": table["bbox-1"].astype(np.int64),
            "bbox_y0": table["bbox-0"].astype(np.int64),
            "bbox_x1": table["bbox-3"].astype(np.int64),
            "bbox_y1": table["bbox-2"].astype(np.int64),
            "centroid_x": table["centroid-1"],
            "centroid_y": table["centroid-0"],
        }
    )
    if intensity is not None:
        if "intensity_mean" in table:
            frame["mean_intensity"] = table["intensity_mean"]
        else:
            for channel in range(intensity.shape[-1]):
                frame[f"mean_intensity_{channel}"] = table[f"intensity_mean-{channel}"]
    names = ["slice"] if len(index) == 1 else [f"slice_{axis}" for axis in range(len(index))]
    for position, (name, value) in enumerate(zip(names, index, strict=True)):
        frame.insert(position, name, int(value))
    return frame.sort_values("label", kind="stable").reset_index(drop=True)


def coco_part(
    labels: np.ndarray, scores: dict[int, float], file_name: str, stack_shape: tuple = ()
) -> dict[str, list]:
    """The COCO images and annotations of one input (one COCO image per plane of a stack).

    Ids are local (images numbered from 0, annotations unnumbered);
    :func:`merge_coco` numbers them for the whole run.
    """
    labels = np.asarray(labels)
    images, annotations = [], []
    for number, plane in enumerate(labels.reshape((-1, *labels.shape[-2:]))):
        position = np.unravel_index(number, stack_shape) if stack_shape else None
        image, plane_annotations = coco_plane(plane, scores, file_name, number, position)
        images.append(image)
        annotations.extend(plane_annotations)
    return {"images": images, "annotations": annotations}


def coco_plane(
    plane: np.ndarray,
    scores: dict[int, float],
    file_name: str,
    number: int = 0,
    position: Sequence[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The COCO image (local id ``number``) and annotations of one (H, W) label plane.

    ``position`` is the plane's index in a stack (the image's ``slice``); each annotation
    carries the object's ``label`` and ``score``.
    """
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    height, width = plane.shape
    image: dict[str, Any] = {"id": number, "file_name": file_name, "height": height}
    image["width"] = width
    if position is not None:
        image["slice"] = [int(i) for i in position]
    annotations = []
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    for offset, window in enumerate(ndimage.find_objects(plane)):
        if window is None:
            continue
        label = offset + 1
        mask[window] = plane[window] == label
        rle = mask_utils.encode(mask)
        mask[window] = 0
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        annotations.append(
            {
                "image_id": number,
                "category_id": 1,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                "area": float(mask_utils.area(rle)),
                "bbox": [x, y, w, h],
                "score": float(scores.get(label, np.nan)),
                "iscrowd": 0,
                "label": label,
            }
        )
    return image, annotations


def merge_coco(parts: Sequence[dict[str, list]], path: str | os.PathLike[str]) -> dict:
    """Number the images and annotations of ``parts`` in order and write one COCO file."""
    images, annotations = [], []
    for part in parts:
        first = len(images) + 1
        for image in part["images"]:
            images.append({**image, "id": first + image["id"]})
        for annotation in part["annotations"]:
            annotation = {**annotation, "image_id": first + annotation["image_id"]}
            annotations.append({"id": len(annotations) + 1, **annotation})
    coco = {
        "info": {"description": "napari-mobilesam segment (MobileSAMv2 SegEvery)"},
        "images": images,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        "annotations": annotations,
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(coco))
    return coco
