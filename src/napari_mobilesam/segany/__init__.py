"""SegAny: prompts (points, boxes, masks) -> masks, with a predictor that holds the image
embedding, a store of precomputed embeddings, tiling for large images, and the rule that
turns a set of prompts into decoder calls (``prompts``)."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "predictor": ["SegAnyPredictor"],
        "tiled": ["TiledSegAnyPredictor"],
        "tiled_prediction": ["TiledPrediction"],
        "prompts": ["PromptSet", "decode_prompts", "decode_prompts_tiled", "prompt_tiles"],
        "embedding_store": ["EmbeddingStore"],
    },
)
