"""Learning from annotations: training data from labels, the object detector that prompts
SegEvery, and fine-tuning of the mask decoders."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "annotations": ["AnnotatedImage", "annotated_image", "split_by_image"],
        "reports": ["EpochReport", "TrainingResult"],
    },
)
