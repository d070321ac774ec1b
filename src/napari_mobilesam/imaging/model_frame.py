"""Geometry shared by the model and its callers: resizing to the model's 1024 frame.

SAM and MobileSAM resize an image so that its longest side is 1024 pixels, keeping the aspect
ratio, and pad the rest. Prompts given in image pixels are scaled the same way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MODEL_SIDE = 1024
"""Side of the square frame the image encoder sees."""
LOW_RES_SIDE = 256
"""Side of the mask decoder's low-resolution logits (a quarter of ``MODEL_SIDE``)."""


def preprocess_shape(height: int, width: int, long_side: int = MODEL_SIDE) -> tuple[int, int]:
    """(height, width) of an image after resizing its longest side to ``long_side``.

    Examples
    --------
    >>> preprocess_shape(512, 384)
    (1024, 768)
    """
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int = MODEL_SIDE) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image so its longest side is ``long_side`` pixels.

    Bilinear resampling with Pillow, as the reference implementation does.

    Examples
    --------
    >>> resize_longest_side(np.zeros((300, 200, 3), np.uint8)).shape
    (1024, 683, 3)
    """
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    if (new_h, new_w) == image.shape[:2]:
        return image
    return np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def scale_coords(
    coords: np.ndarray, original_size: tuple[int, int], long_side: int = MODEL_SIDE
) -> np.ndarray:
    """Scale (..., 2) (x, y) pixel coordinates from an ``original_size`` (H, W) image to the
    resized frame. Returns a new float64 array."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    scaled = np.array(coords, dtype=np.float64, copy=True)
    scaled[..., 0] *= new_w / old_w
    scaled[..., 1] *= new_h / old_h
    return scaled


def scale_boxes(
    boxes: np.ndarray, original_size: tuple[int, int], long_side: int = MODEL_SIDE
) -> np.ndarray:
    """Scale (..., 4) x0, y0, x1, y1 boxes like :func:`scale_coords`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return scale_coords(boxes.reshape(-1, 2, 2), original_size, long_side).reshape(boxes.shape)
