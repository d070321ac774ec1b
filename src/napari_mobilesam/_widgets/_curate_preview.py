"""The curate widget's preview layers: one colour over a labels layer, never curated."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap


def preview_layer(data: np.ndarray, name: str, over: Labels, colour: str) -> Labels:
    """A Labels layer of ``data`` (0 / 1) drawn in ``colour``, on ``over``'s grid."""
    return Labels(
        data,
        name=name,
        scale=over.scale,
        translate=over.translate,
        rotate=over.rotate,
        shear=over.shear,
        affine=over.affine,
        opacity=0.9,
        colormap=DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", 1: colour}
        ),
    )
