"""Correct and curate a label image: merge, delete, split and refine objects, and keep only
the objects whose features (area, solidity, eccentricity, mean intensity, score) lie in
given ranges. Every function takes plain arrays and returns a new label image; the input is
never changed, and an operation that cannot apply raises
:class:`~napari_mobilesam.errors.InvalidValueError` saying why."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "objects": ["delete_objects", "merge_objects", "object_at"],
        "features": ["FEATURES", "filter_objects", "object_features", "objects_within"],
        "prompted": ["object_prompt", "refine_object", "refined_mask", "split_object"],
    },
)
