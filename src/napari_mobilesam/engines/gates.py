"""The checks an engine variant must pass before ``engine="auto"`` may choose it.

- float32: the embedding within :data:`FLOAT32_TOLERANCE` (max absolute difference) of
  torch's.
- int8: masks decoded from the same box prompts on the int8 and the float32 embeddings
  agree at IoU >= :data:`INT8_MIN_IOU` for every object.

The mask decoders are gated the same way on the low-resolution logits (float32, as
:func:`logit_gap`) and masks (int8) of box and point prompts
(:mod:`napari_mobilesam.engines.decoder_choice`).

Both run on images the calibration set holds rotated by a quarter turn (inputs int8 was
not calibrated on), with the model's own prompt encoder and mask decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder

__all__ = [
    "FLOAT32_TOLERANCE",
    "INT8_MIN_IOU",
    "box_prompts",
    "embedding_gap",
    "gate_images",
    "logit_gap",
    "logit_mask_ious",
    "mask_ious",
]

FLOAT32_TOLERANCE = 1e-4
INT8_MIN_IOU = 0.98

Encoder = Callable[[torch.Tensor], torch.Tensor]


def embedding_gap(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference between two embeddings (or two sets of logits)."""
    return float((reference.detach().float() - other.detach().float()).abs().max())


def logit_gap(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest difference between two sets of logits, relative where ``|reference| > 1``:
    ``max |a - b| / max(1, |a|)``. A trained decoder's logits reach about ±100 far from its
    masks, where float32 rounding alone differs by more than 1e-4 (torch's batched decoder
    and its reference ``forward`` differ by 1.4e-4 at a logit of -72 on MobileSAMv2's
    real decoder); near the threshold, where masks are decided, this is the absolute
    difference.

    Examples
    --------
    >>> round(logit_gap(torch.tensor([0.2, -80.0]), torch.tensor([0.1, -80.5])), 5)
    0.1
    """
    reference, other = reference.detach().float(), other.detach().float()
    return float(((reference - other).abs() / reference.abs().clamp(min=1.0)).max())


def box_prompts(side: int = 1024, per_row: int = 5) -> np.ndarray:
    """(per_row², 4) boxes x0, y0, x1, y1 over the model frame, small to large."""
    boxes = []
    step = side / per_row
    for row in range(per_row):
        for col in range(per_row):
            size = step * (0.3 + 0.6 * ((row * per_row + col) % 4) / 3)
            x0, y0 = col * step + 4, row * step + 4
            boxes.append((x0, y0, min(x0 + size, side - 1), min(y0 + size, side - 1)))
    return np.asarray(boxes, dtype=np.float32)


def _low_res_logits(model: torch.nn.Module, embedding: torch.Tensor, boxes: np.ndarray):
    pe = model.prompt_encoder
    with torch.inference_mode():
        decoder = BatchedMaskDecoder(
            model.mask_decoder, embedding, pe.get_dense_pe(), pe.no_mask_embed.weight
        )
        sparse, _ = pe(None, torch.as_tensor(boxes), None)
        low_res, _ = decoder.decode(sparse, None, multimask_output=False)
    return low_res[:, 0]


def mask_ious(
    model: torch.nn.Module, reference: torch.Tensor, other: torch.Tensor, boxes: np.ndarray
) -> np.ndarray:
    """Per-box IoU of the (256, 256) masks decoded on two embeddings of one image.

    Parameters
    ----------
    model : MobileSAM
        Its prompt encoder and mask decoder decode the boxes.
    reference, other : (1, 256, 64, 64) tensors
    boxes : (N, 4) array in the 1024 model frame

    Returns
    -------
    (N,) float array; a box whose masks are both empty counts as 1.
    """
    a = _low_res_logits(model, reference.float(), boxes)
    b = _low_res_logits(model, other.float(), boxes)
    return logit_mask_ious(a, b, model.mask_threshold)


def logit_mask_ious(
    reference: torch.Tensor, other: torch.Tensor, threshold: float = 0.0
) -> np.ndarray:
    """Per-mask IoU of two (N, ..., H, W) logit tensors thresholded at ``threshold``
    (masks flattened over everything after N); both empty counts as 1."""
    a = (reference.detach().float() > threshold).flatten(1).cpu().numpy()
    b = (other.detach().float() > threshold).flatten(1).cpu().numpy()
    inter = (a & b).sum(axis=1)
    union = (a | b).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def gate_images(images: list[np.ndarray]) -> list[np.ndarray]:
    """Two gate images: the first and fifth calibration images rotated a quarter turn."""
    picks = [images[i] for i in (0, min(4, len(images) - 1))]
    return [np.ascontiguousarray(np.rot90(image)) for image in picks]
