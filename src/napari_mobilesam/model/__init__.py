"""MobileSAM in pure torch: one module per concept, as in Meta's ``segment_anything``.

- :mod:`.image_encoder`: TinyViT, image to embedding
- :mod:`.prompt_encoder`: points, boxes and masks to prompt embeddings
- :mod:`.transformer`: the two-way transformer
- :mod:`.mask_decoder`: masks and IoU scores from prompts and the embedding
- :mod:`.batched_decoder`: the same decoder function for many prompts of one image, with the
  prompt-independent work done once
- :mod:`.sam`: the assembled model
- :mod:`.device`: the default torch device

``napari_mobilesam.weights.build_mobile_sam`` builds the model with its weights loaded.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={"sam": ["MobileSAM"]},
)
