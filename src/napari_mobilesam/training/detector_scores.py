"""How well a detector's boxes find the objects of a label image: box recall and AP at an IoU.

Used by the detector tests and ``benchmarks/train_detector.py``; the evaluation stage
measures the segmentations themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["box_scores", "label_boxes"]


def label_boxes(labels: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float32 boxes x0, y0, x1, y1 (end exclusive) of a label image's objects.

    Examples
    --------
    >>> labels = np.zeros((8, 8), int)
    >>> labels[2:4, 1:6] = 7
    >>> label_boxes(labels).tolist()
    [[1.0, 2.0, 6.0, 4.0]]
    """
    from scipy import ndimage

    boxes = [
        (found[1].start, found[0].start, found[1].stop, found[0].stop)
        for found in ndimage.find_objects(np.asarray(labels))
        if found is not None
    ]
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def box_scores(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float = 0.5,
) -> dict[str, float]:
    """Box recall, precision and average precision of detections over several images.

    Each true box is matched to at most one detection, the most confident first, at an
    IoU of at least ``iou``; AP is the area under the interpolated precision-recall curve
    (every point, as in Pascal VOC 2010+ and COCO at one threshold).

    Parameters
    ----------
    detections : sequence of (boxes, scores)
        Per image, ``(N, 4)`` x0, y0, x1, y1 and ``(N,)`` confidences (as a detector returns).
    truths : sequence of (M, 4) arrays
        Per image, the true boxes (see :func:`label_boxes`).

    Returns
    -------
    dict
        ``recall`` and ``precision`` of all detections given, ``AP`` and ``objects``.

    Examples
    --------
    >>> truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    >>> found = (np.array([[1, 1, 10, 10]], float), np.array([0.9]))
    >>> box_scores([found], [truth])
    {'recall': 0.5, 'precision': 1.0, 'AP': 0.5, 'objects': 2}
    """
    hits, confidences = [], []
    total = 0
    for (boxes, scores), truth in zip(detections, truths, strict=True):
        boxes, scores = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float)
        truth = np.asarray(truth, float).reshape(-1, 4)
        total += len(truth)
        order = np.argsort(-scores, kind="stable")
        overlaps = _ious(boxes[order], truth)
        taken = np.zeros(len(truth), bool)
        for row, score in zip(overlaps, scores[order], strict=True):
            candidates = np.where(~taken & (row >= iou))[0]
            hit = len(candidates) > 0
            if hit:
                taken[candidates[np.argmax(row[candidates])]] = True
            hits.append(hit)
            confidences.append(score)
    hits_sorted = np.asarray(hits, bool)[np.argsort(-np.asarray(confidences), kind="stable")]
    true_positives = np.cumsum(hits_sorted)
    recall = true_positives / max(total, 1)
    precision = true_positives / np.arange(1, len(hits_sorted) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return {
        "recall": float(recall[-1]) if len(recall) else 0.0,
        "precision": float(precision[-1]) if len(precision) else 0.0,
        "AP": float(np.sum(steps * envelope)),
        "objects": int(total),
    }


def _ious(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    x0 = np.maximum(first[:, None, 0], second[None, :, 0])
    y0 = np.maximum(first[:, None, 1], second[None, :, 1])
    x1 = np.minimum(first[:, None, 2], second[None, :, 2])
    y1 = np.minimum(first[:, None, 3], second[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area_first[:, None] + area_second[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
