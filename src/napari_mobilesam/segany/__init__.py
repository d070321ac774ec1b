"""SegAny: prompts (points, boxes, masks) -> masks, with a predictor that holds the image
embedding, a store of precomputed embeddings, and tiling for large images."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "predictor": ["SegAnyPredictor"],
        "tiled": ["TiledSegAnyPredictor", "TiledPrediction"],
        "embedding_store": ["EmbeddingStore"],
    },
)
