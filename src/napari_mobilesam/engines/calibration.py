"""The encoder's input from an image, and the images int8 quantization is calibrated on.

The default calibration set is eight images that ship with scikit-image (no download):
microscopy and microscopy-like ones (``cell``: phase contrast; ``immunohistochemistry``:
brightfield stain; ``hubble_deep_field``: bright spots on a dark field, as in
fluorescence; ``coins``: bright objects on a dark ground) and natural ones
(``astronaut``, ``coffee``), two of them also inverted and flipped, the way microscopy
shows both dark-on-bright and bright-on-dark objects. Each is converted with
:func:`napari_mobilesam.to_rgb_uint8` and resized into the model's 1024 frame as any image
is. Pass your own images instead to calibrate on the data you segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_mobilesam.imaging.convert import to_rgb_uint8
from napari_mobilesam.imaging.model_frame import resize_longest_side

__all__ = ["CALIBRATION_IMAGES", "calibration_images", "calibration_inputs", "encoder_input"]

#: The scikit-image sample images of the default calibration set.
CALIBRATION_IMAGES = (
    "cell",
    "immunohistochemistry",
    "hubble_deep_field",
    "coins",
    "astronaut",
    "coffee",
)


def calibration_images() -> list[np.ndarray]:
    """The default calibration set: eight (H, W, 3) uint8 images (see the module notes).

    Examples
    --------
    >>> len(calibration_images())
    8
    """
    from skimage import data

    images = [to_rgb_uint8(getattr(data, name)()) for name in CALIBRATION_IMAGES]
    images.append(255 - images[0][:, ::-1])  # dark cells on bright -> bright on dark
    images.append(255 - images[3][::-1])
    return images


def encoder_input(model: torch.nn.Module, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """An (H, W, 3) uint8 RGB image -> the encoder's (1, 3, 1024, 1024) input tensor on the
    model's device, and the (h, w) the image takes in it.

    Parameters
    ----------
    model : MobileSAM
    rgb : (H, W, 3) uint8 array

    Examples
    --------
    >>> x, size = encoder_input(model, rgb)  # doctest: +SKIP
    """
    resized = resize_longest_side(rgb, model.image_size)
    x = torch.as_tensor(np.ascontiguousarray(resized), device=model.device)
    x = x.permute(2, 0, 1).unsqueeze(0).float()
    return model.preprocess(x), (int(resized.shape[0]), int(resized.shape[1]))


def calibration_inputs(
    model: torch.nn.Module, images: Sequence[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Encoder inputs, (1, 3, 1024, 1024) float32 arrays, of ``images`` (any array
    :func:`napari_mobilesam.to_rgb_uint8` takes; default :func:`calibration_images`)."""
    images = calibration_images() if images is None else [to_rgb_uint8(i) for i in images]
    with torch.inference_mode():
        return [encoder_input(model, rgb)[0].cpu().numpy() for rgb in images]
