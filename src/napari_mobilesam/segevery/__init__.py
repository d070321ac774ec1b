"""SegEvery: an image -> one label image, by object discovery (a detector proposes boxes),
box decoding and merging the masks, whole or tile by tile."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "pipeline": ["segment_everything", "default_predictor"],
        "result": ["SegEveryResult"],
        "options": ["InvalidOptionError", "LazyDetector", "SegEveryOptions"],
        "discovery": ["discover_objects", "load_detector", "DETECTOR_NAMES"],
        "box_decoders": ["BoxDecoder", "DECODER_NAMES", "load_box_decoder"],
    },
)
