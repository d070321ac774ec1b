"""An image as the model's input, converted and hashed once: :class:`ModelInput`.

Embedding caches and stores are keyed by :func:`content_key`, so an image is encoded once
whatever array, file or slice it came from; a :class:`ModelInput` carries its key along so
that no caller converts or hashes it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_mobilesam.imaging.convert import to_rgb_uint8

__all__ = ["ModelInput", "content_key", "model_input"]


def content_key(rgb: np.ndarray | ModelInput) -> str:
    """A digest of a model input (an RGB uint8 image): its bytes and its shape.

    Embedding caches and stores are keyed by it, so an image is encoded once whatever
    array, file or slice it came from. A :class:`ModelInput` gives its key (not hashed
    again).
    """
    if isinstance(rgb, ModelInput):
        return rgb.key
    digest = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16)
    digest.update(str(rgb.shape).encode())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class ModelInput:
    """An image converted to the model's input once, with its content key.

    Pass it wherever an image is accepted (:meth:`SegAnyPredictor.set_image`,
    ``precompute``, ``is_cached``): it is neither converted nor hashed again.

    Attributes
    ----------
    rgb : (H, W, 3) uint8
        The model's input.
    key : str
        :func:`content_key` of ``rgb``.
    """

    rgb: np.ndarray
    key: str

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def __getitem__(self, key: Any) -> np.ndarray:
        """Pixels of :attr:`rgb`: a ModelInput indexes like the RGB image it holds."""
        return self.rgb[key]


def model_input(
    image: ArrayLike | ModelInput, contrast_limits: Sequence[float] | None = None
) -> ModelInput:
    """``image`` as the model's RGB uint8 input with its content key, converted and hashed
    once (a :class:`ModelInput` is returned as it is).

    Examples
    --------
    >>> import numpy as np
    >>> prepared = model_input(np.arange(16, dtype=np.uint16).reshape(4, 4))
    >>> prepared.rgb.shape, prepared.rgb.dtype, len(prepared.key)
    ((4, 4, 3), dtype('uint8'), 32)
    """
    if isinstance(image, ModelInput):
        return image
    rgb = to_rgb_uint8(image, contrast_limits)
    return ModelInput(rgb, content_key(rgb))
