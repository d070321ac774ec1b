"""How much predicted and true objects overlap: IoU of mask pairs, and the overlap table of
two label images, counted block by block so that large or lazy label images fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = ["BLOCK_PIXELS", "OverlapTable", "check_label_images", "mask_ious", "overlap_table"]

#: Pixels read and counted at a time by :func:`overlap_table` (about 100 MB of work memory).
BLOCK_PIXELS = 2**22
_MAX_LABEL = 2**32 - 1


def mask_ious(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU of each pair of masks: ``predicted[i]`` against ``true[i]``.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        ``(N, H, W)`` boolean stacks of the same shape (threshold logits or probabilities
        first, e.g. ``logits > 0``).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 intersection over union. A pair of two empty masks agrees
        perfectly: its IoU is 1.0 (never nan, so it can serve as a training target).

    Examples
    --------
    >>> predicted = np.zeros((2, 4, 4), bool); predicted[:, :2] = True
    >>> true = np.zeros((2, 4, 4), bool); true[0, :2] = True; true[1, :1] = True
    >>> mask_ious(predicted, true)
    array([1. , 0.5])
    """
    for name, masks in (("predicted", predicted), ("true", true)):
        if not isinstance(masks, np.ndarray) or masks.dtype != bool or masks.ndim != 3:
            got = f"{type(masks).__name__} {getattr(masks, 'dtype', '')}".strip()
            raise InvalidTypeError(
                f"{name} must be an (N, H, W) boolean numpy array (threshold it first, "
                f"e.g. logits > 0), got {got} of shape {getattr(masks, 'shape', None)}"
            )
    if predicted.shape != true.shape:
        raise InvalidValueError(
            f"predicted and true must have the same shape, got {predicted.shape} and {true.shape}"
        )
    flat_pred = predicted.reshape(len(predicted), -1)
    flat_true = true.reshape(len(true), -1)
    intersection = np.count_nonzero(flat_pred & flat_true, axis=1)
    union = np.count_nonzero(flat_pred | flat_true, axis=1)
    ious = np.ones(len(predicted), np.float64)
    np.divide(intersection, union, out=ious, where=union > 0)
    return ious


@dataclass(frozen=True)
class OverlapTable:
    """The objects of two label images and the pixels each touching pair shares.

    ``true_ids``/``true_areas`` and ``pred_ids``/``pred_areas`` list every object (id > 0)
    with its size in pixels; ``pair_true``, ``pair_pred`` and ``pair_pixels`` list each
    (true, predicted) pair that shares at least one pixel, and how many.
    """

    true_ids: np.ndarray
    true_areas: np.ndarray
    pred_ids: np.ndarray
    pred_areas: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    pair_pixels: np.ndarray

    @property
    def pair_ious(self) -> np.ndarray:
        """IoU of each touching pair, in the order of ``pair_true``."""
        true_area = self.true_areas[np.searchsorted(self.true_ids, self.pair_true)]
        pred_area = self.pred_areas[np.searchsorted(self.pred_ids, self.pair_pred)]
        return self.pair_pixels / (true_area + pred_area - self.pair_pixels)


def check_label_images(predicted: Any, true: Any) -> None:
    """Raise a clear error unless ``predicted`` and ``true`` are integer label images
    (numpy, dask or zarr arrays) of the same shape, with at least two dimensions."""
    for name, labels in (("predicted", predicted), ("true", true)):
        dtype = getattr(labels, "dtype", None)
        if dtype is None or not hasattr(labels, "shape"):
            raise InvalidTypeError(
                f"{name} must be a label image (a numpy, dask or zarr array of integers), "
                f"got {type(labels).__name__}"
            )
        if np.dtype(dtype).kind not in "iub":
            raise InvalidTypeError(
                f"{name} must be a label image of integers (one id per object, 0 for "
                f"background), got dtype {np.dtype(dtype).name}"
            )
        if len(labels.shape) < 2:
            raise InvalidValueError(f"{name} must have at least 2 dimensions, got {labels.shape}")
    if tuple(predicted.shape) != tuple(true.shape):
        raise InvalidValueError(
            f"predicted and true label images must have the same shape, got "
            f"{tuple(predicted.shape)} and {tuple(true.shape)}"
        )


def overlap_table(predicted: Any, true: Any, *, block_pixels: int = BLOCK_PIXELS) -> OverlapTable:
    """Count the objects of two label images and the pixels shared by touching pairs.

    The images are read a block of whole leading-axis slices at a time (rows of a 2-D
    image, planes of a volume), about ``block_pixels`` pixels per block, so memory is
    bounded by the block and the number of touching pairs, never by the number of objects:
    no per-object mask is ever built.

    Parameters
    ----------
    predicted, true : array-like
        Integer label images of the same shape (numpy, dask or zarr arrays; 0 is
        background, negative ids are refused).
    block_pixels : int
        Pixels per block, at least one leading-axis slice.

    Returns
    -------
    OverlapTable

    Examples
    --------
    >>> true = np.array([[1, 1, 0], [2, 2, 0]])
    >>> predicted = np.array([[5, 5, 5], [0, 2, 0]])
    >>> table = overlap_table(predicted, true)
    >>> table.pair_true.tolist(), table.pair_pred.tolist(), table.pair_pixels.tolist()
    ([1, 2], [5, 2], [2, 1])
    """
    check_label_images(predicted, true)
    if block_pixels < 1:
        raise InvalidValueError(f"block_pixels must be at least 1, got {block_pixels}")
    shape = tuple(int(side) for side in true.shape)
    slice_pixels = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, block_pixels // max(slice_pixels, 1))
    codes, counts, true_parts, pred_parts = [], [], [], []
    for start in range(0, shape[0], step):
        block = slice(start, min(start + step, shape[0]))
        t = _read_block(true, block, "true")
        p = _read_block(predicted, block, "predicted")
        true_parts.append(_count_ids(t))
        pred_parts.append(_count_ids(p))
        both = (t > 0) & (p > 0)
        pair_codes = (t[both].astype(np.uint64) << np.uint64(32)) | p[both].astype(np.uint64)
        unique, unique_counts = np.unique(pair_codes, return_counts=True)
        codes.append(unique)
        counts.append(unique_counts)
    true_ids, true_areas = _merge_counts(true_parts)
    pred_ids, pred_areas = _merge_counts(pred_parts)
    pair_codes, pair_pixels = _merge_counts(list(zip(codes, counts, strict=True)))
    return OverlapTable(
        true_ids=true_ids,
        true_areas=true_areas,
        pred_ids=pred_ids,
        pred_areas=pred_areas,
        pair_true=(pair_codes >> np.uint64(32)).astype(np.int64),
        pair_pred=(pair_codes & np.uint64(_MAX_LABEL)).astype(np.int64),
        pair_pixels=pair_pixels,
    )


def _read_block(labels: Any, block: slice, name: str) -> np.ndarray:
    values = labels[block]
    if hasattr(values, "compute"):
        values = values.compute()
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or values.max() > _MAX_LABEL):
        raise InvalidValueError(
            f"{name} label ids must be between 0 and {_MAX_LABEL}, got "
            f"{values.min()}..{values.max()}"
        )
    return values


def _count_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(values, return_counts=True)
    keep = ids > 0
    return ids[keep].astype(np.int64), counts[keep]


def _merge_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.concatenate([keys for keys, _ in parts])
    counts = np.concatenate([counts for _, counts in parts]).astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
