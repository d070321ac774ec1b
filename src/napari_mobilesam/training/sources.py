"""Training data from where annotations live: folders, COCO files and napari layer data.

Every source becomes a list of :class:`~napari_mobilesam.training.annotations.AnnotatedImage`
(one per 2-D image or stack plane with at least one object), checked by
:func:`~napari_mobilesam.training.annotations.annotated_image`. Used by detector training,
decoder fine-tuning, their commands and the napari "Train" widget. napari-free.

Decisions
---------
- Images without a label image (or label images without an image) in a folder pair are
  left out with a warning that lists them; no pair at all is an error.
- Stack planes without any object are left out (they would only teach "background" where
  nobody annotated); a source without any object is an error.
- A COCO file must match its images: every annotated image must exist in the images folder
  with the size the file gives it, else an error lists the mismatches. Annotations with
  only a box (no polygon or RLE) become filled boxes; crowd annotations are left out.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.image_files import pair_by_name, read_image, stack_layout
from napari_mobilesam.training.annotations import AnnotatedImage, annotated_image

__all__ = [
    "annotations_from_arrays",
    "annotations_from_coco",
    "annotations_from_folders",
    "load_annotations",
]

_LISTED = 5  # names listed in a message before "and N more"


def annotations_from_arrays(
    image: Any,
    labels: Any,
    name: str,
    axis: int | None = None,
    contrast_limits: tuple[float, float] | None = None,
) -> list[AnnotatedImage]:
    """Annotated images from an image and its label image, e.g. napari layers' data.

    Parameters
    ----------
    image : array-like
        ``(H, W)``, ``(H, W, 3|4)`` RGB(A), or a stack such as ``(Z, H, W)`` or
        ``(T, Z, H, W, 3)``: every leading axis is a stack axis, as in napari.
    labels : array-like
        Integer label image of the image's spatial shape (stacks included).
    name : str
        The image's name; a plane of a stack is named ``name[z=3]`` (``name[1,3]`` for
        planes of several stack axes).
    axis : int, optional
        A stack axis that is not leading (e.g. 2 for ``(Y, X, Z)``): moved first in both.
    contrast_limits : (float, float), optional
        The display range (a napari layer's contrast limits), used for every plane.

    Returns
    -------
    list of AnnotatedImage
        One per plane with at least one object.

    Raises
    ------
    InvalidValueError
        Shapes differ, or no plane has an object.
    InvalidTypeError
        The label image is not of an integer dtype.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.zeros((3, 32, 32), np.uint8)
    >>> labels = np.zeros((3, 32, 32), np.int32)
    >>> labels[1, 4:9, 4:9] = 1
    >>> [item.name for item in annotations_from_arrays(stack, labels, "cells")]
    ['cells[z=1]']
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    order, rgb = stack_layout(image.shape, None, axis)
    image = np.transpose(image, order)
    label_order = [i for i in order if i < labels.ndim] if rgb else list(order)
    if labels.ndim != image.ndim - rgb:
        raise InvalidValueError(
            f"{name}: the label image has {labels.ndim} axes, the image {image.ndim - rgb} "
            f"besides colour (shapes {labels.shape} and {np.asarray(image).shape}); they must "
            "be the same pixels"
        )
    labels = np.transpose(labels, label_order)
    stack_shape = image.shape[: image.ndim - 2 - rgb]
    if not stack_shape:
        items = [annotated_image(image, labels, name, contrast_limits)]
    else:
        if labels.shape[: len(stack_shape)] != stack_shape:
            raise InvalidValueError(
                f"{name}: the label stack's shape {labels.shape} differs from the image "
                f"stack's {image.shape[: image.ndim - rgb]}"
            )
        items = []
        for index in np.ndindex(*stack_shape):
            if not np.any(labels[index]):
                continue
            plane_name = f"{name}[z={index[0]}]" if len(index) == 1 else f"{name}{list(index)}"
            items.append(annotated_image(image[index], labels[index], plane_name, contrast_limits))
    items = [item for item in items if item.n_objects]
    if not items:
        raise InvalidValueError(f"{name}: the label image has no object (every pixel is 0)")
    return items


def annotations_from_folders(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    axis: int | None = None,
) -> list[AnnotatedImage]:
    """Annotated images from image files and label-image files paired by name.

    ``img_01.tif`` pairs with ``img_01.tif``, ``img_01_masks.tif``, ``img_01_labels.png``,
    ... in the labels folder (see :func:`napari_mobilesam.imaging.image_files.pair_by_name`).
    Files without a partner are left out with a warning listing them; stacks give one
    annotated image per plane with objects (see :func:`annotations_from_arrays`).

    Parameters
    ----------
    images, labels : path or sequence of paths
        Folders, files or glob patterns.
    axis : int, optional
        The stack axis of stacks whose stack axis is not leading.

    Raises
    ------
    InvalidValueError
        No image pairs with a label image, a pair's shapes differ, or no object at all.

    Examples
    --------
    >>> items = annotations_from_folders("data/images", "data/masks")  # doctest: +SKIP
    """
    images = [images] if isinstance(images, str | os.PathLike) else list(images)
    labels = [labels] if isinstance(labels, str | os.PathLike) else list(labels)
    pairs, images_only, labels_only = pair_by_name(images, labels)
    if not pairs:
        raise InvalidValueError(
            f"no image in {_listed(map(str, images))} has a label image of the same name in "
            f"{_listed(map(str, labels))} (e.g. img_01.tif and img_01.tif or "
            "img_01_masks.tif)"
        )
    for side, unpaired in (("images", images_only), ("label images", labels_only)):
        if unpaired:
            warnings.warn(
                f"{len(unpaired)} {side} without a partner of the same name are left out: "
                f"{_listed(unpaired)}",
                UserWarning,
                stacklevel=2,
            )
    items: list[AnnotatedImage] = []
    empty = []
    for image_item, label_item in pairs:
        image, _ = read_image(image_item.source)
        label_image = _read_label_file(label_item.source)
        try:
            items.extend(annotations_from_arrays(image, label_image, image_item.key, axis))
        except InvalidValueError as error:
            if not np.any(label_image):
                empty.append(image_item.key)
                continue
            raise InvalidValueError(f"{image_item.source}: {error}") from None
    if not items:
        raise InvalidValueError(f"no object in any label image (all 0): {_listed(empty)}")
    if empty:
        warnings.warn(
            f"{len(empty)} label images without objects are left out: {_listed(empty)}",
            UserWarning,
            stacklevel=2,
        )
    return items


def annotations_from_coco(
    coco_json: str | os.PathLike[str], images_dir: str | os.PathLike[str]
) -> list[AnnotatedImage]:
    """Annotated images from a COCO instance-segmentation file and its images.

    Each COCO image with at least one (non-crowd) annotation becomes one annotated image
    whose label image paints the objects larger first, so that smaller ones stay visible.

    Raises
    ------
    InvalidValueError
        The file is not COCO, an annotated image is missing in ``images_dir`` or has
        another size than the file says, or no image has an annotation.

    Examples
    --------
    >>> items = annotations_from_coco("out/coco.json", "data/")  # doctest: +SKIP
    """
    from pycocotools.coco import COCO

    coco_json, images_dir = Path(coco_json), Path(images_dir)
    try:
        content = json.loads(coco_json.read_text())
        if not isinstance(content, dict) or not {"images", "annotations"} <= content.keys():
            raise ValueError("it has no 'images' and 'annotations' lists")
        coco = COCO()
        coco.dataset = content
        coco.createIndex()
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidValueError(f"{coco_json} is not a COCO annotation file: {error}") from None
    entries = [coco.imgs[i] for i in sorted(coco.imgs) if _objects(coco, i)]
    if not entries:
        raise InvalidValueError(f"{coco_json} has no annotated image")
    problems, items = [], []
    for entry in entries:
        path = images_dir / entry["file_name"]
        if not path.is_file():
            path = images_dir / Path(entry["file_name"]).name
        if not path.is_file():
            problems.append(f"{entry['file_name']} (not in {images_dir})")
            continue
        image, _ = read_image(str(path))
        image = np.asarray(image)
        size = (entry.get("height"), entry.get("width"))
        if size != image.shape[:2]:
            problems.append(f"{entry['file_name']} ({image.shape[:2]} pixels, file says {size})")
            continue
        labels = _coco_labels(coco, entry)
        items.append(annotated_image(image, labels, Path(entry["file_name"]).stem))
    if problems:
        raise InvalidValueError(
            f"{coco_json} does not match the images in {images_dir}: {_listed(problems)}"
        )
    return items


def load_annotations(
    images: Any = None, labels: Any = None, coco: str | os.PathLike[str] | None = None
) -> list[AnnotatedImage]:
    """Annotated images from image and label folders, or from a COCO file and its images.

    Parameters
    ----------
    images : path or sequence of paths
        Image files or folders (with ``coco``: the folder of the COCO file's images).
    labels : path or sequence of paths, optional
        Label images paired with ``images`` by name; not with ``coco``.
    coco : path, optional
        A COCO instance-segmentation JSON file.

    Examples
    --------
    >>> items = load_annotations("images/", "masks/")  # doctest: +SKIP
    >>> items = load_annotations("images/", coco="annotations.json")  # doctest: +SKIP
    """
    if images is None:
        raise InvalidValueError("give the images (a folder, files or a glob pattern)")
    if coco is not None:
        if labels is not None:
            raise InvalidValueError("give either label images or a COCO file, not both")
        return annotations_from_coco(coco, images)
    if labels is None:
        raise InvalidValueError("give the label images (a folder) or a COCO file")
    return annotations_from_folders(images, labels)


def _coco_labels(coco: Any, entry: dict) -> np.ndarray:
    annotations = _objects(coco, entry["id"])
    height, width = int(entry["height"]), int(entry["width"])
    masks = []
    for annotation in annotations:
        if annotation.get("segmentation"):
            mask = coco.annToMask(annotation).astype(bool)
        else:
            x, y, w, h = (float(value) for value in annotation["bbox"])
            mask = np.zeros((height, width), bool)
            mask[round(y) : round(y + h), round(x) : round(x + w)] = True
        if mask.any():
            masks.append(mask)
    labels = np.zeros((height, width), np.int32)
    for index in np.argsort([-mask.sum() for mask in masks], kind="stable"):
        labels[masks[index]] = index + 1
    return labels


def _objects(coco: Any, image_id: Any) -> list[dict]:
    """The non-crowd annotations of an image (``iscrowd`` may be missing: not crowd)."""
    return [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]


def _read_label_file(source: str) -> np.ndarray:
    if Path(source).suffix.lower() in (".tif", ".tiff", ".zarr"):
        from napari_mobilesam.imaging.label_files import read_labels

        return np.asarray(read_labels(source))
    return np.asarray(read_image(source)[0])


def _listed(names: Any) -> str:
    names = list(names)
    shown = ", ".join(str(name) for name in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
