"""MobileSAMv2's post-processing of detector boxes: from the letterboxed frame to the image.

Boxes are post-processed as MobileSAMv2's ``PromptModelPredictor`` does: after one
class-agnostic NMS (by the detector), box edges within
:data:`~napari_mobilesam.segevery.boxes.BORDER_SNAP_PIXELS` of the border of the detector's
letterboxed input frame are snapped onto it, then the boxes are scaled to the image.
"""

from __future__ import annotations

import numpy as np

from napari_mobilesam.segevery.boxes import BORDER_SNAP_PIXELS, snap_to_border

__all__ = ["frame_boxes_to_image", "letterbox_to_image", "square_to_rect_frame"]


def frame_boxes_to_image(
    boxes: np.ndarray,
    frame_shape: tuple[int, int],
    image_shape: tuple[int, int],
    *,
    stride: int,
    fixed_input: bool,
) -> np.ndarray:
    """Map ``(N, 4)`` boxes from the detector's letterboxed frame to the image, MobileSAMv2's
    way: snapped onto the frame's border (within ``BORDER_SNAP_PIXELS``), then scaled.

    Parameters
    ----------
    boxes : numpy.ndarray
        ``(N, 4)`` x0, y0, x1, y1 in the frame.
    frame_shape : tuple of int
        ``(H, W)`` of the letterboxed frame the detector saw.
    image_shape : tuple of int
        ``(H, W)`` of the image.
    stride : int
        The model's largest stride.
    fixed_input : bool
        True when the frame is a fixed-size export's whole square rather than the image padded
        up to a multiple of ``stride`` (what a ``.pt`` model gets); the boxes are then moved
        into the latter first, so that border snapping is the same for both.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float32 boxes in image pixels, clipped to the image.
    """
    if fixed_input:
        boxes, frame_shape = square_to_rect_frame(boxes, frame_shape, image_shape, stride)
    boxes = snap_to_border(boxes, frame_shape, BORDER_SNAP_PIXELS)
    return letterbox_to_image(boxes, frame_shape, image_shape)


def square_to_rect_frame(
    boxes: np.ndarray, frame_shape: tuple[int, int], image_shape: tuple[int, int], stride: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Move boxes from a fixed-size letterboxed frame into the frame a ``.pt`` model gets.

    ultralytics pads an image for a PyTorch model only up to a multiple of ``stride``, and
    MobileSAMv2 snaps box edges onto the border of that frame; a fixed-size ONNX export is
    padded to its full input instead. Shifting the boxes into the smaller frame makes the
    border snapping the same for both.

    Examples
    --------
    >>> boxes = np.array([[0.0, 256.0, 1024.0, 768.0]])
    >>> square_to_rect_frame(boxes, (1024, 1024), (500, 1000), 32)
    (array([[   0.,    0., 1024.,  512.]]), (512, 1024))
    """
    height, width = image_shape
    gain = min(frame_shape[0] / height, frame_shape[1] / width)
    rect: list[int] = []
    shifts: list[int] = []
    for side, size in zip(frame_shape, image_shape, strict=True):
        resized = max(round(size * gain), 1)
        rect_side = resized + (side - resized) % stride
        rect.append(rect_side)
        # Pads as letterbox_to_image takes them (MobileSAMv2's rounding).
        shifts.append(
            round((side - size * gain) / 2 - 0.1) - round((rect_side - size * gain) / 2 - 0.1)
        )
    shift_y, shift_x = shifts
    moved = np.asarray(boxes, dtype=np.float64) - [shift_x, shift_y, shift_x, shift_y]
    return moved, (rect[0], rect[1])


def letterbox_to_image(
    boxes: np.ndarray, frame_shape: tuple[int, int], image_shape: tuple[int, int]
) -> np.ndarray:
    """Map ``(N, 4)`` boxes from a letterboxed detector frame to image pixels, clipped.

    The image was resized by ``gain = min(frame / image)`` per side and padded equally on
    both sides. The padding is taken as MobileSAMv2's ultralytics 8.0.120 computes it,
    ``round((frame - image * gain) / 2 - 0.1)``, so that boxes equal the official
    pipeline's (current ultralytics rounds the resized side first, which moves boxes by up
    to one frame pixel when the padding is odd).

    Examples
    --------
    >>> letterbox_to_image(np.array([[0.0, 10.0, 1024.0, 694.0]]), (704, 1024), (400, 600))
    array([[  0.,   0., 600., 400.]], dtype=float32)
    """
    frame_h, frame_w = frame_shape
    height, width = image_shape
    gain = min(frame_h / height, frame_w / width)
    pad_x = round((frame_w - width * gain) / 2 - 0.1)
    pad_y = round((frame_h - height * gain) / 2 - 0.1)
    scaled = (np.asarray(boxes, dtype=np.float64) - [pad_x, pad_y, pad_x, pad_y]) / gain
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    return scaled.astype(np.float32)
