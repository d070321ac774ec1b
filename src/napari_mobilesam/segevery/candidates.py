"""Decoded masks as candidates for the label image: from boxes, or from SAM's point grid.

:func:`box_candidates` decodes box prompts in batches against the predictor's embedding and
yields each mask cropped to where it can be positive. :func:`grid_candidates` is SAM's
automatic mask generation: three masks per point of a regular grid, kept where SAM's quality
filters pass, then box NMS. Both give image-pixel
:class:`~napari_mobilesam.imaging.label_canvas.Candidate`
masks for :class:`~napari_mobilesam.imaging.label_canvas.LabelCanvas`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.imaging.label_canvas import Candidate
from napari_mobilesam.model.prompt_decoder import PromptDecoder
from napari_mobilesam.segany.predictor import SegAnyPredictor

__all__ = ["box_candidates", "grid_candidates", "grid_points"]


#: Bytes of full-resolution float logits upsampled at once.
UPSCALE_BUDGET = 256 * 2**20
PRED_IOU_THRESH = 0.88
STABILITY_SCORE_THRESH = 0.95
STABILITY_SCORE_OFFSET = 1.0
BOX_NMS_THRESH = 0.7
POINTS_PER_BATCH = 64


def box_candidates(
    predictor: SegAnyPredictor,
    boxes: np.ndarray,
    progress: ProgressCallback | None,
    decoder: PromptDecoder | None = None,
) -> Iterator[Candidate]:
    """Decode box prompts in batches on the predictor's image, one cropped mask per box.

    Parameters
    ----------
    predictor : SegAnyPredictor
        With the image set.
    boxes : (N, 4) x0, y0, x1, y1 in the image's pixels.
    progress : callable, optional
        ``progress(done, N)`` after each batch.
    decoder : PromptDecoder, optional
        Another prompt encoder and mask decoder (MobileSAMv2's prompt-guided one); None
        decodes with the model's own, which is then the only one built for the image.

    Yields
    ------
    Candidate
        ``index`` is the row of ``boxes``.
    """
    total = len(boxes)
    upsample = predictor.mask_upsampler
    for rows, low_res, scores in predictor.decode_boxes(boxes, decoder=decoder):
        low_res = low_res.cpu()
        for offset in range(len(low_res)):
            i = rows.start + offset
            y0, x0, mask = upsample(low_res[offset, 0])
            yield Candidate(i, y0, x0, mask, float(scores[offset, 0]), boxes[i])
        if progress is not None:
            progress(rows.stop, total)


def _crop(mask: torch.Tensor) -> tuple[int, int, np.ndarray]:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if len(rows) == 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return y0, x0, mask[y0:y1, x0:x1].cpu().numpy()


def grid_points(points_per_side: int, shape: tuple[int, int]) -> np.ndarray:
    """SAM's prompt grid: (n*n, 2) (x, y) pixel coordinates of cell centres.

    Examples
    --------
    >>> grid_points(2, (100, 200))
    array([[ 50.,  25.],
           [150.,  25.],
           [ 50.,  75.],
           [150.,  75.]])
    """
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    unit = np.stack([xs.ravel(), ys.ravel()], axis=-1)
    return unit * np.array([shape[1], shape[0]], dtype=np.float64)


def grid_candidates(
    predictor: SegAnyPredictor,
    points_per_side: int,
    progress: ProgressCallback | None,
) -> list[Candidate]:
    """SAM's automatic mask generation: three masks per grid point, kept where the predicted
    IoU and the stability score pass SAM's thresholds, then box NMS."""
    from torchvision.ops import nms

    points = grid_points(points_per_side, predictor.original_size)
    total = len(points)
    threshold = predictor.model.mask_threshold
    h, w = predictor.original_size
    chunk = max(1, UPSCALE_BUDGET // (4 * h * w))  # full-size logits upsampled at once
    kept: list[Candidate] = []
    for start in range(0, total, POINTS_PER_BATCH):
        batch = points[start : start + POINTS_PER_BATCH]
        low_res, iou = predictor.decode_points(batch)  # (B, 3, 256, 256), (B, 3)
        low_res, iou = low_res.flatten(0, 1), iou.flatten()
        good = torch.nonzero(iou > PRED_IOU_THRESH).flatten()
        for c in range(0, len(good), chunk):
            idx = good[c : c + chunk]
            with torch.inference_mode():
                logits = predictor.upscale_logits(low_res[idx][:, None])[:, 0]
                inter = (logits > threshold + STABILITY_SCORE_OFFSET).sum(dim=(1, 2))
                union = (logits > threshold - STABILITY_SCORE_OFFSET).sum(dim=(1, 2))
                stable = inter / union.clamp(min=1) >= STABILITY_SCORE_THRESH
            for j in torch.nonzero(stable).flatten().tolist():
                y0, x0, mask = _crop(logits[j] > threshold)
                if mask.size == 0:
                    continue
                box = np.array([x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]], np.float32)
                k = int(idx[j])
                kept.append(Candidate(start * 3 + k, y0, x0, mask, float(iou[k]), box))
        if progress is not None:
            progress(min(start + POINTS_PER_BATCH, total), total)
    if not kept:
        return []
    boxes = torch.as_tensor(np.stack([c.box for c in kept]))
    scores = torch.as_tensor([c.score for c in kept])
    order = nms(boxes, scores, BOX_NMS_THRESH).tolist()
    return [kept[i] for i in order]
