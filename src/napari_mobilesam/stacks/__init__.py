"""Z stacks and time-lapses: slices as model inputs, one object propagated through a stack,
per-slice labels linked into 3-D objects or tracks, and SegEvery on every slice."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "slices": ["StackSlices"],
        "propagation": ["PropagationResult", "propagate_mask"],
        "linking": ["LinkResult", "link_slices"],
        "segevery_stack": ["StackSegEveryResult", "segment_everything_stack"],
        "planes": ["SegmentedPlane", "link_planes", "segment_planes"],
    },
)
