"""Sample images for napari's File > Open Sample menu.

Both images ship inside scikit-image itself, so opening them never touches the network.
"""

from __future__ import annotations

from typing import Any

import skimage.data

LayerDataTuple = tuple[Any, dict[str, Any], str]


def cell() -> list[LayerDataTuple]:
    """Return scikit-image's ``cell``, a 660 x 550 uint8 microscopy image, as an image layer.

    Examples
    --------
    >>> [(data, meta, kind)] = cell()
    >>> data.shape, meta["name"], kind
    ((660, 550), 'cell', 'image')
    """
    return [(skimage.data.cell(), {"name": "cell"}, "image")]


def coins() -> list[LayerDataTuple]:
    """Return scikit-image's ``coins``, a 303 x 384 uint8 image, as an image layer.

    Examples
    --------
    >>> [(data, meta, kind)] = coins()
    >>> data.shape, meta["name"], kind
    ((303, 384), 'coins', 'image')
    """
    return [(skimage.data.coins(), {"name": "coins"}, "image")]
