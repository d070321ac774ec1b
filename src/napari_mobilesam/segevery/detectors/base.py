"""What every object detector of SegEvery shares: the :class:`Detector` protocol, its errors,
and the checks of its input image and of what a user's detector callable returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "DEFAULT_IMGSZ",
    "CheckedDetector",
    "Detector",
    "DetectorUnavailableError",
    "InvalidDetectorError",
    "check_detector_output",
    "check_rgb_uint8",
    "first_line",
]

#: MobileSAMv2's YOLO input size, the default for ``.pt`` files and dynamic ONNX exports.
DEFAULT_IMGSZ = 1024


class Detector(Protocol):
    """A callable that proposes object boxes in an RGB image.

    It takes an ``(H, W, 3)`` uint8 RGB image and returns ``(boxes, scores)``: ``boxes`` an
    ``(N, 4)`` float32 array of x0, y0, x1, y1 in image pixels and ``scores`` an ``(N,)``
    float32 array of confidences.
    """

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]: ...


class DetectorUnavailableError(RuntimeError):
    """No detector checkpoint could be found or downloaded, or what runs it is not installed;
    the message lists what to do."""


class InvalidDetectorError(ValueError):
    """A detector file or callable is not usable, e.g. not an ultralytics YOLO checkpoint."""


class CheckedDetector:
    """Wrap a user's detector callable so that what it returns is checked and made float32."""

    def __init__(self, function: Callable[[np.ndarray], Any]) -> None:
        self.function = function

    def __repr__(self) -> str:
        return f"CheckedDetector({self.function!r})"

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]:
        return check_detector_output(self.function(image), self.function)


def check_detector_output(output: Any, detector: object) -> tuple[np.ndarray, np.ndarray]:
    """Check what a detector callable returned and make it float32 arrays.

    Parameters
    ----------
    output : object
        What ``detector`` returned: a pair ``(boxes, scores)``.
    detector : object
        The callable, named in error messages.

    Returns
    -------
    boxes : numpy.ndarray
        ``(N, 4)`` float32.
    scores : numpy.ndarray
        ``(N,)`` float32.

    Raises
    ------
    InvalidDetectorError
        If ``output`` is not a pair of numeric arrays of those shapes, all finite.
    """
    name = getattr(detector, "__name__", type(detector).__name__)
    if not isinstance(output, tuple | list) or len(output) != 2:
        raise InvalidDetectorError(
            f"Detector {name} must return a pair (boxes, scores); received "
            f"{type(output).__name__}."
        )
    try:
        boxes = np.asarray(output[0], dtype=np.float32)
        scores = np.asarray(output[1], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidDetectorError(
            f"Detector {name} must return numeric arrays (boxes, scores): {error}"
        ) from error
    if boxes.size == 0 and scores.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidDetectorError(
            f"Detector {name} must return boxes of shape (N, 4) as x0, y0, x1, y1; "
            f"received shape {boxes.shape}."
        )
    if scores.shape != (len(boxes),):
        raise InvalidDetectorError(
            f"Detector {name} must return one score per box, shape ({len(boxes)},); "
            f"received shape {scores.shape}."
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise InvalidDetectorError(f"Detector {name} returned NaN or infinite values.")
    return boxes, scores


def check_rgb_uint8(image: Any) -> np.ndarray:
    """Return ``image`` if it is a non-empty ``(H, W, 3)`` uint8 numpy array.

    Raises
    ------
    TypeError
        If it is not a numpy array.
    ValueError
        If it has another shape or dtype, or is empty.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidTypeError(
            f"Expected the image as a numpy array; received {type(image).__name__}. "
            "Convert it with napari_mobilesam.to_rgb_uint8."
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidValueError(
            "Expected an (H, W, 3) uint8 RGB image; received shape "
            f"{image.shape} and dtype {image.dtype}. Convert it with "
            "napari_mobilesam.to_rgb_uint8."
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidValueError(f"Expected a non-empty image; received shape {image.shape}.")
    return image


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message, shortened to ``limit`` characters."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
