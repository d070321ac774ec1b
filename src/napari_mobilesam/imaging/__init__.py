"""Images as the model sees them: microscopy data -> RGB uint8 in the 1024 frame, tiles of
large images, the label canvas masks are pasted into, and low-resolution logits -> masks.

numpy only, except ``upsampling`` (torch)."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "convert": [
            "to_rgb_uint8",
            "display_range",
            "has_contrast",
            "non_finite_note",
            "NonFiniteWarning",
            "validate_contrast_limits",
            "select_level",
            "spatial_shape",
        ],
        "prepared_input": ["ModelInput", "content_key", "model_input"],
        "tiling": [
            "DEFAULT_HALO",
            "DEFAULT_TILE_SHAPE",
            "Tile",
            "TileGrid",
            "needs_tiling",
            "read_region",
        ],
        "label_canvas": ["Candidate", "LabelCanvas"],
    },
)
