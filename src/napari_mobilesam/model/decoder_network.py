"""The mask decoder as one module with plain tensor inputs, for conversion to other engines.

:class:`DecoderNetwork` wraps :class:`~napari_mobilesam.model.batched_decoder.BatchedMaskDecoder`
(the embedding is shared by every prompt, never repeated per prompt) so that it traces into
one graph with a dynamic number of prompts: ``keys`` (the image embedding plus the dense
prompt embedding, (1, 256, 64, 64)) and ``sparse`` (B, T, 256) prompt embeddings in, all four
masks and IoU predictions out. The prompt encoder stays outside (it is cheap and works on
Python-level prompts); the positional encoding of the embedding grid is a constant of it.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_mobilesam.model.batched_decoder import BatchedMaskDecoder
from napari_mobilesam.model.mask_decoder import MaskDecoder

__all__ = ["DecoderNetwork"]


class DecoderNetwork(nn.Module):
    """``(keys (1, 256, 64, 64), sparse (B, T, 256)) -> (logits (B, 4, 256, 256), iou (B, 4))``.

    Parameters
    ----------
    mask_decoder : MaskDecoder
        Its weights are used, not copied.
    image_pe : (1, 256, 64, 64) tensor
        ``prompt_encoder.get_dense_pe()``, kept as a constant.

    Examples
    --------
    >>> network = DecoderNetwork(model.mask_decoder, model.prompt_encoder.get_dense_pe())
    ... # doctest: +SKIP
    >>> logits, iou = network(embedding + no_mask[..., None, None], sparse)  # doctest: +SKIP
    """

    def __init__(self, mask_decoder: MaskDecoder, image_pe: torch.Tensor) -> None:
        super().__init__()
        self.mask_decoder = mask_decoder
        self.register_buffer("image_pe", image_pe.detach().clone())

    def forward(
        self, keys: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batched = BatchedMaskDecoder(self.mask_decoder, keys, self.image_pe, None)
        return batched.decode_all(sparse)
