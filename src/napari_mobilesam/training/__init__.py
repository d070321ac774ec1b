"""Learning from annotations: training data from labels, the object detector that prompts
SegEvery, and fine-tuning of the mask decoders."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "annotations": ["AnnotatedImage", "annotated_image", "split_by_image"],
        "reports": ["EpochReport", "TrainingResult"],
        "sources": [
            "annotations_from_arrays",
            "annotations_from_coco",
            "annotations_from_folders",
            "load_annotations",
        ],
        "detector": ["train_detector"],
        "decoder": ["train_decoder"],
    },
)
