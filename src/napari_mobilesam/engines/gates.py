"""The checks an engine variant must pass before ``engine="auto"`` may choose it.

- float32: the embedding within :data:`FLOAT32_TOLERANCE` (max absolute difference) of
  torch's.
- int8: masks decoded from the same box prompts on the int8 and the float32 embeddings
  agree at IoU >= :data:`INT8_MIN_IOU` for every object.

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
    "mask_ious",
]

FLOAT32_TOLERANCE = 1e-4
INT8_MIN_IOU = 0.98

Encoder = Callable[[torch.Tensor], torch.Tensor]


def embedding_gap(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference between two embeddings."""
    return float((reference.detach().float() - other.detach().float()).abs().max())


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


def _low_res_masks(model: torch.nn.Module, embedding: torch.Tensor, boxes: np.ndarray):
    pe = model.prompt_encoder
    with torch.inference_mode():
        decoder = BatchedMaskDecoder(
            model.mask_decoder, embedding, pe.get_dense_pe(), pe.no_mask_embed.weight
        )
        sparse, _ = pe(None, torch.as_tensor(boxes), None)
        low_res, _ = decoder.decode(sparse, None, multimask_output=False)
    return (low_res[:, 0] > model.mask_threshold).cpu().numpy()


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
    a = _low_res_masks(model, reference.float(), boxes)
    b = _low_res_masks(model, other.float(), boxes)
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def gate_images(images: list[np.ndarray]) -> list[np.ndarray]:
    """Two gate images: the first and fifth calibration images rotated a quarter turn."""
    picks = [images[i] for i in (0, min(4, len(images) - 1))]
    return [np.ascontiguousarray(np.rot90(image)) for image in picks]
