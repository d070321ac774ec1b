"""Segmentations measured against ground truth: objects matched by IoU, Cellpose's average
precision and micro-sam's mean segmentation accuracy, for 2-D, 3-D and stacks."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "comparison": [
            "COMPARISON_COLORS",
            "COMPARISON_NAMES",
            "MATCHED",
            "MISSED",
            "SPURIOUS",
            "comparison_image",
        ],
        "matching": ["match_objects", "match_planes"],
        "overlap": ["OverlapTable", "mask_ious", "overlap_table"],
        "results": ["IOU_THRESHOLDS", "MatchCounts", "ObjectMatching", "PlaneMatching"],
        "synthetic": ["synthetic_nuclei"],
    },
)
