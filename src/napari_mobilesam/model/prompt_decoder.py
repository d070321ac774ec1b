"""A prompt encoder and mask decoder without an image encoder: MobileSAMv2's box decoder.

MobileSAMv2 decodes the boxes of its object-aware detector with a *prompt-guided mask
decoder* (``Prompt_guided_Mask_Decoder.pt``): SAM's prompt encoder and mask decoder, same
architecture as MobileSAM's, fine-tuned for box prompts. It runs on the image embedding of
MobileSAM's TinyViT encoder, so only these two parts are stored and loaded.
"""

from __future__ import annotations

from torch import nn

from napari_mobilesam.model.mask_decoder import MaskDecoder
from napari_mobilesam.model.prompt_encoder import PromptEncoder


class PromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder, as a pair that decodes one image embedding.

    Its parameter names are those of ``mobile_sam.pt`` without the image encoder
    (``prompt_encoder.*`` and ``mask_decoder.*``); MobileSAMv2's
    ``{"PromtEncoder": ..., "MaskDecoder": ...}`` file is read into them by
    :func:`napari_mobilesam.weights.checkpoints.load_state_dict`.

    Attributes
    ----------
    prompt_encoder : PromptEncoder
        Points and boxes to sparse (B, N, 256) and dense (B, 256, 64, 64) embeddings.
    mask_decoder : MaskDecoder
        Prompt embeddings and a (1, 256, 64, 64) image embedding to (B, C, 256, 256)
        low-resolution mask logits and (B, C) predicted IoU.
    source : str
        Where its weights come from, recorded by the loader
        (:func:`napari_mobilesam.segevery.box_decoders.build_prompt_guided_decoder`):
        ``"prompt_guided"`` for MobileSAMv2's official file, the path of a user's file, or
        ``"custom"`` (the default) for a decoder filled some other way.
    """

    mask_threshold: float = 0.0
    source: str = "custom"

    def __init__(self) -> None:
        super().__init__()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()
