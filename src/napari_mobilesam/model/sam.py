"""MobileSAM: the TinyViT image encoder with SAM's prompt encoder and mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_mobilesam.model.image_encoder import TinyViT
from napari_mobilesam.model.mask_decoder import MaskDecoder
from napari_mobilesam.model.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class MobileSAM(nn.Module):
    """The MobileSAM (``vit_t``) model.

    Its parameter names are those of the official ``mobile_sam.pt``; use
    :func:`napari_mobilesam.build_mobile_sam` to get one with weights loaded.
    """

    mask_threshold: float = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViT()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024)."""
        return self.image_encoder.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, h, w) RGB tensor (0..255) and pad it to (B, 3, 1024, 1024)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
