"""Annotated images as a YOLO detection dataset: crops at the detector's scale, and boxes.

SegEvery hands its detector an image (or a 1024-pixel tile of a larger one) letterboxed into
``imgsz`` = 1024 pixels, so an image of 512² is seen twice enlarged and one of 4096² at its
own scale. The detector is trained on what it will see: each image is converted to RGB uint8
by the project's one conversion (:func:`napari_mobilesam.imaging.convert.to_rgb_uint8`, with
the image's contrast limits), resized by that same factor (:func:`inference_scale`), and cut
into overlapping square crops of the training input size, padded with ultralytics' letterbox
grey where the image is smaller.

Boxes come from the label image: an object cut by a crop border is boxed by its visible part;
a visible part under :data:`MIN_VISIBLE_FRACTION` of the object's pixels, or under
:data:`MIN_BOX_PIXELS` on a side, is dropped (a sliver gives no box worth learning).

Partial annotations: a crop without any annotated object is left out, so unannotated regions
of partially annotated images do not teach the detector "background". (Within a crop that has
annotations, unannotated objects do; annotate every object of the region you care about.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.segevery.detectors.base import DEFAULT_IMGSZ
from napari_mobilesam.training.annotations import AnnotatedImage

__all__ = [
    "MIN_BOX_PIXELS",
    "MIN_VISIBLE_FRACTION",
    "Crop",
    "DatasetSummary",
    "detector_crops",
    "inference_scale",
    "write_yolo_dataset",
]

#: A cut object's visible part smaller than this fraction of its pixels gets no box.
MIN_VISIBLE_FRACTION = 0.25
#: A box narrower than this (in crop pixels) on either side is dropped.
MIN_BOX_PIXELS = 3
#: ultralytics' letterbox padding value.
PAD_VALUE = 114
CLASS_NAME = "object"


@dataclass(frozen=True)
class Crop:
    """One training crop: ``image`` (crop, crop, 3) uint8 RGB and ``boxes`` (N, 4)
    x0, y0, x1, y1 in its pixels; ``origin`` (row, column) in the resized image."""

    image: np.ndarray
    boxes: np.ndarray
    origin: tuple[int, int]


@dataclass
class DatasetSummary:
    """What :func:`write_yolo_dataset` wrote: ``data.yaml`` and per-image counts."""

    data_yaml: Path
    crop: int
    inference_imgsz: int
    images: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def counts(self, split: str) -> dict[str, int]:
        """Totals of one split (``"train"`` or ``"val"``): images, objects, crops, boxes."""
        rows = self.images.get(split, {}).values()
        return {
            "images": len(rows),
            "objects": int(sum(row["objects"] for row in rows)),
            "crops": int(sum(row["crops"] for row in rows)),
            "boxes": int(sum(row["boxes"] for row in rows)),
        }


def inference_scale(shape: Sequence[int], imgsz: int = DEFAULT_IMGSZ) -> float:
    """The factor by which SegEvery's detector sees an image's pixels.

    An image that fits the detector's input is letterboxed into it (enlarged or reduced so
    that its longer side is ``imgsz``); a larger one is tiled in windows of ``imgsz``
    pixels seen at their own scale.

    Examples
    --------
    >>> inference_scale((512, 256)), inference_scale((4096, 4096))
    (2.0, 1.0)
    """
    longer = max(int(shape[0]), int(shape[1]))
    return imgsz / longer if longer <= imgsz else 1.0


def detector_crops(
    item: AnnotatedImage,
    crop: int = 256,
    overlap: float = 0.25,
    inference_imgsz: int = DEFAULT_IMGSZ,
) -> list[Crop]:
    """Cut an annotated image into square crops at the detector's scale, with their boxes.

    Parameters
    ----------
    item : AnnotatedImage
        The image and its label image.
    crop : int
        Crop side in pixels of the resized image: the training input size.
    overlap : float
        Fraction of a crop shared with its neighbour, in [0, 1).
    inference_imgsz : int
        The detector's input size in SegEvery (see :func:`inference_scale`).

    Returns
    -------
    list of Crop
        Only crops with at least one box (see the module's notes on partial annotations).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_mobilesam.training.annotations import annotated_image
    >>> labels = np.zeros((128, 128), np.int32)
    >>> labels[10:30, 20:40] = 1
    >>> item = annotated_image(np.random.default_rng(0).random((128, 128)), labels, "a")
    >>> crops = detector_crops(item, crop=256, inference_imgsz=256)
    >>> len(crops), crops[0].boxes.tolist()
    (1, [[40.0, 20.0, 80.0, 60.0]])
    """
    from skimage.segmentation import relabel_sequential

    scale = inference_scale(item.labels.shape, inference_imgsz)
    rgb = _resized(to_rgb_uint8(item.image, item.contrast_limits), scale)
    labels = relabel_sequential(np.asarray(item.labels))[0]
    areas = np.bincount(labels.ravel())
    crops = []
    for row, col in _origins(rgb.shape[:2], crop, overlap):
        boxes = _crop_boxes(labels, areas, scale, (row, col), crop)
        if len(boxes):
            window = np.full((crop, crop, 3), PAD_VALUE, np.uint8)
            part = rgb[row : row + crop, col : col + crop]
            window[: part.shape[0], : part.shape[1]] = part
            crops.append(Crop(window, boxes, (row, col)))
    return crops


def write_yolo_dataset(
    train: Sequence[AnnotatedImage],
    validation: Sequence[AnnotatedImage],
    folder: str | Path,
    *,
    crop: int = 256,
    overlap: float = 0.25,
    inference_imgsz: int = DEFAULT_IMGSZ,
) -> DatasetSummary:
    """Write the crops of annotated images as an ultralytics YOLO dataset.

    ``folder`` gets ``images/{train,val}/*.png`` (RGB), ``labels/{train,val}/*.txt``
    (``0 xc yc w h``, normalised) and ``data.yaml`` naming one class, "object".

    Examples
    --------
    >>> summary = write_yolo_dataset(train, val, "work/dataset")  # doctest: +SKIP
    >>> summary.counts("train")  # doctest: +SKIP
    {'images': 8, 'objects': 412, 'crops': 96, 'boxes': 701}
    """
    from PIL import Image

    folder = Path(folder)
    summary = DatasetSummary(folder / "data.yaml", int(crop), int(inference_imgsz))
    for split, items in (("train", train), ("val", validation)):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        summary.images[split] = {}
        for index, item in enumerate(items):
            crops = detector_crops(item, crop, overlap, inference_imgsz)
            for number, piece in enumerate(crops):
                stem = f"{index:05d}_{number:04d}"
                Image.fromarray(piece.image).save(folder / "images" / split / f"{stem}.png")
                (folder / "labels" / split / f"{stem}.txt").write_text(
                    "".join(_yolo_lines(piece.boxes, crop))
                )
            summary.images[split][item.name] = {
                "objects": item.n_objects,
                "crops": len(crops),
                "boxes": sum(len(piece.boxes) for piece in crops),
                "scale": inference_scale(item.labels.shape, inference_imgsz),
            }
    summary.data_yaml.write_text(
        f"path: {folder.resolve().as_posix()}\ntrain: images/train\nval: images/val\n"
        f"names:\n  0: {CLASS_NAME}\n"
    )
    return summary


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return rgb
    import cv2

    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
    return cv2.resize(rgb, size, interpolation=interpolation)


def _origins(shape: Sequence[int], crop: int, overlap: float) -> Iterator[tuple[int, int]]:
    """Top-left corners of crops covering ``shape``, evenly spread, overlapping by about
    ``overlap`` of a crop."""

    def starts(length: int) -> list[int]:
        if length <= crop:
            return [0]
        step = crop * (1.0 - overlap)
        count = math.ceil((length - crop) / step) + 1
        return [round(i * (length - crop) / (count - 1)) for i in range(count)]

    for row in starts(int(shape[0])):
        for col in starts(int(shape[1])):
            yield row, col


def _crop_boxes(
    labels: np.ndarray,
    areas: np.ndarray,
    scale: float,
    origin: tuple[int, int],
    crop: int,
) -> np.ndarray:
    """Boxes (in crop pixels) of the objects visible in a crop of the resized image."""
    from scipy import ndimage

    row, col = origin
    top, left = math.floor(row / scale), math.floor(col / scale)
    bottom = min(labels.shape[0], math.ceil((row + crop) / scale))
    right = min(labels.shape[1], math.ceil((col + crop) / scale))
    region = labels[top:bottom, left:right]
    visible = np.bincount(region.ravel(), minlength=len(areas))
    boxes = []
    for object_id, found in enumerate(ndimage.find_objects(region), start=1):
        if found is None or visible[object_id] < MIN_VISIBLE_FRACTION * areas[object_id]:
            continue
        rows, cols = found
        box = np.array(
            [
                (cols.start + left) * scale - col,
                (rows.start + top) * scale - row,
                (cols.stop + left) * scale - col,
                (rows.stop + top) * scale - row,
            ]
        )
        box = np.clip(box, 0, crop)
        if min(box[2] - box[0], box[3] - box[1]) >= MIN_BOX_PIXELS:
            boxes.append(box)
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def _yolo_lines(boxes: np.ndarray, crop: int) -> Iterator[str]:
    for x0, y0, x1, y1 in boxes / crop:
        yield f"0 {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n"
