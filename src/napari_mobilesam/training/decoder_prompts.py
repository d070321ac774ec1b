"""Prompts of decoder fine-tuning, sampled as users and SegEvery give them, and the loss.

- Boxes of true objects with random jitter on each edge, as a detector draws them (SAM:
  noise of 10 % of the box side, at most 20 pixels, in the 1024 frame).
- One or more positive points inside an object and negative points around it.
- SAM's iterative correction: a point in the error region of the previous prediction,
  positive where the object was missed, negative where too much was taken, with the
  previous low-resolution logits as mask input.
- The loss: cross-entropy and dice inside a region around each object (its box grown by
  half its size plus ``MARGIN``), plus the squared error of the predicted IoU.

All coordinates are in the model's 1024 frame; masks are in the low-resolution frame,
cropped to the unpadded part (``(N, hl, wl)``, see
:func:`~napari_mobilesam.training.decoder_data.low_res_targets`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_mobilesam.imaging.model_frame import LOW_RES_SIDE, MODEL_SIDE

__all__ = [
    "MARGIN",
    "correction_points",
    "interior_points",
    "jittered_boxes",
    "loss_regions",
    "sam_loss",
    "sample_points",
]

#: Model-frame pixels added around a box grown by half its size: the mask loss's region.
MARGIN = 8.0
_FACTOR = MODEL_SIDE // LOW_RES_SIDE


def jittered_boxes(
    boxes: torch.Tensor,
    input_size: tuple[int, int],
    generator: torch.Generator,
    noise: float = 0.1,
    max_shift: float = 20.0,
) -> torch.Tensor:
    """(N, 4) model-frame boxes moved edge by edge: N(0, ``noise`` * side), at most
    ``max_shift`` pixels, kept inside the image's ``input_size`` (h, w)."""
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    shift = torch.randn(boxes.shape, generator=generator) * noise * sides
    moved = boxes + shift.clamp(-max_shift, max_shift)
    h, w = input_size
    limits = torch.tensor([w, h, w, h], dtype=moved.dtype)
    moved = torch.minimum(moved.clamp(min=0), limits)
    # Keep at least a pixel between the corners.
    x1 = torch.maximum(moved[:, 2], moved[:, 0] + 1)
    y1 = torch.maximum(moved[:, 3], moved[:, 1] + 1)
    return torch.stack([moved[:, 0], moved[:, 1], x1, y1], dim=1)


def _pick(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` flat indices per row of (N, P) non-negative weights (rows of zeros: any)."""
    empty = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    return torch.multinomial(weights, count, replacement=True, generator=generator)


def _to_model_frame(flat: torch.Tensor, width: int, generator: torch.Generator) -> torch.Tensor:
    """Flat low-res pixel indices -> (..., 2) (x, y) at random places inside those pixels."""
    y = torch.div(flat, width, rounding_mode="floor")
    x = flat - y * width
    xy = torch.stack([x, y], dim=-1).float() * _FACTOR
    return xy + torch.rand(xy.shape, generator=generator) * (_FACTOR - 1)


def sample_points(
    targets: torch.Tensor,
    boxes: torch.Tensor,
    n_positive: int,
    n_negative: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive points inside each object and negative ones around it.

    Negative points are drawn around the object, where its loss is counted
    (:func:`loss_regions`), outside it (anywhere outside it when that is empty).

    Parameters
    ----------
    targets : (N, hl, wl) 0/1 low-res masks
    boxes : (N, 4) model-frame boxes of the objects

    Returns
    -------
    coords : (N, n_positive + n_negative, 2) model-frame (x, y)
    labels : (N, n_positive + n_negative) int64, 1 positive, 0 negative
    """
    n, hl, wl = targets.shape
    flat = targets.flatten(1)
    coords = [_to_model_frame(_pick(flat, n_positive, generator), wl, generator)]
    labels = [torch.ones((n, n_positive), dtype=torch.int64)]
    if n_negative:
        near = loss_regions(boxes, (hl, wl)) > 0
        around = (near.flatten(1) & (flat == 0)).float()
        around = torch.where(around.sum(1, keepdim=True) > 0, around, 1 - flat)
        coords.append(_to_model_frame(_pick(around, n_negative, generator), wl, generator))
        labels.append(torch.zeros((n, n_negative), dtype=torch.int64))
    return torch.cat(coords, dim=1), torch.cat(labels, dim=1)


def correction_points(
    logits: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One point per object in the error region of a prediction, as a user corrects it.

    Parameters
    ----------
    logits : (N, hl, wl) the previous prediction's low-res logits (unpadded part)
    targets : (N, hl, wl) 0/1 masks

    Returns
    -------
    coords : (N, 1, 2) model-frame (x, y); labels : (N, 1), 1 where the object was missed.
    """
    predicted = (logits.detach() > 0).float()
    error = (predicted != targets).float().flatten(1)
    # Without an error, a positive point on the object.
    error = torch.where(error.sum(1, keepdim=True) > 0, error, targets.flatten(1))
    flat = _pick(error, 1, generator)
    labels = targets.flatten(1).gather(1, flat).long()
    return _to_model_frame(flat, targets.shape[-1], generator), labels


def interior_points(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(N, 2) (x, y) pixel of each object farthest from its edge: a user's single click."""
    points = np.zeros((len(ids), 2), np.float64)
    found = ndimage.find_objects(np.maximum(labels, 0))
    for row, object_id in enumerate(ids):
        window = found[object_id - 1]
        inside = np.pad(labels[window] == object_id, 1)
        distance = ndimage.distance_transform_edt(inside)
        y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
        points[row] = (x - 1 + window[1].start, y - 1 + window[0].start)
    return points


def loss_regions(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Where the mask loss is counted: each box grown by half its size plus ``MARGIN``.

    Parameters
    ----------
    boxes : (N, 4) model-frame boxes of the objects (x0, y0, x1, y1)
    shape : (hl, wl) the unpadded low-resolution frame

    Returns
    -------
    (N, hl, wl) float32 tensor of 0 and 1 (a low-res pixel counts when its centre is inside).
    """
    hl, wl = shape
    grow = (boxes[:, 2:] - boxes[:, :2]) / 2 + MARGIN
    lo, hi = (boxes[:, :2] - grow) / _FACTOR, (boxes[:, 2:] + grow) / _FACTOR
    ys = torch.arange(hl).view(1, hl, 1) + 0.5
    xs = torch.arange(wl).view(1, 1, wl) + 0.5
    inside = (
        (xs >= lo[:, 0, None, None])
        & (xs < hi[:, 0, None, None])
        & (ys >= lo[:, 1, None, None])
        & (ys < hi[:, 1, None, None])
    )
    return inside.float()


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    regions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of (N, C, hl, wl) logits and (N, C) predicted IoU against (N, hl, wl)
    masks: binary cross-entropy + dice inside each prompt's region, binary cross-entropy
    over the whole frame (pixels far from every region stay background), plus the squared
    error of the predicted IoU against the real one (over the whole frame). With C > 1
    (multimask) only the best output of each prompt counts, as in SAM.

    SAM counts focal + dice over the whole frame; with objects of about 1 % of the frame,
    that drives a decoder to empty masks (README, "The mask decoders"). ``regions`` (from
    :func:`loss_regions`) keeps the object and a ring of background around it, where the
    edge is decided; None counts the whole frame.

    Returns
    -------
    loss : scalar tensor, the mean over prompts
    chosen : (N,) int64 index of the output the loss counted
    """
    target = targets[:, None].expand_as(logits)
    region = torch.ones_like(logits) if regions is None else regions[:, None].expand_as(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    area = region.flatten(2).sum(-1).clamp(min=1)
    bce = (ce * region).flatten(2).sum(-1) / area
    prob = logits.sigmoid() * region
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    with torch.no_grad():
        binary = (logits > 0).float()
        both = (binary * target).flatten(2).sum(-1)
        union = ((binary + target) > 0).float().flatten(2).sum(-1)
        true_iou = both / union.clamp(min=1)
    frame = ce.flatten(2).mean(-1)  # the pixels outside every region must stay background
    total = bce + dice + frame + (iou_pred - true_iou) ** 2
    best = total.argmin(dim=1)
    return total[torch.arange(len(best)), best].mean(), best
