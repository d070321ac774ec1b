"""Turn a microscopy image of any dtype and channel count into the RGB uint8 input of MobileSAM.

numpy only, so that widgets can import it without loading torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = [
    "NonFiniteWarning",
    "display_range",
    "has_contrast",
    "non_finite_note",
    "to_rgb_uint8",
    "uses_own_range",
    "validate_contrast_limits",
]

LOW_PERCENTILE = 0.1
HIGH_PERCENTILE = 99.9
MIN_SIDE = 2
STACK_HINT = " For a Z/T stack pass one 2-D slice, e.g. image[z]."
#: How NaN and infinite pixels are converted (said by the warning and the widgets).
NON_FINITE_RULE = (
    "NaN pixels are segmented as the darkest value (0 of 0..255), +inf as the brightest "
    "and -inf as the darkest, and are left out of the automatic display range; replace "
    "them first (e.g. np.nan_to_num(image, nan=value)) to segment them otherwise."
)


class NonFiniteWarning(UserWarning):
    """An image given to MobileSAM holds NaN or infinite values (see ``NON_FINITE_RULE``)."""


def non_finite_note(image: ArrayLike) -> str:
    """A sentence on the NaN and infinite pixels of ``image``; "" when there are none.

    Examples
    --------
    >>> non_finite_note(np.array([[np.nan, 1.0], [2.0, 3.0]]))[:39]
    '1 of 4 pixels (25%) are NaN or infinite'
    """
    values = np.asarray(image)
    if values.dtype.kind not in "fc":
        return ""
    count = int(values.size - np.count_nonzero(np.isfinite(values)))
    if not count:
        return ""
    return (
        f"{count} of {values.size} pixels ({100 * count / values.size:.2g}%) are NaN or "
        f"infinite: {NON_FINITE_RULE}"
    )


def to_rgb_uint8(image: ArrayLike, contrast_limits: Sequence[float] | None = None) -> np.ndarray:
    """Convert a 2-D microscopy image to the (H, W, 3) uint8 RGB image that MobileSAM takes.

    Parameters
    ----------
    image : array_like
        A 2-D image, either grayscale ``(H, W)`` or channels-last ``(H, W, C)`` with
        ``C`` in 1..4. Channels are mapped to RGB as follows:

        - 1 channel (or a 2-D image): gray, copied to R, G and B;
        - 2 channels: R = channel 0, G = channel 1, B = 0;
        - 3 channels: R, G, B;
        - 4 channels: RGBA; the alpha channel is dropped.

        Any real dtype is accepted: unsigned/signed integers, floats and bool.
        Each side must be at least 2 pixels.
    contrast_limits : sequence of two floats, optional
        ``(lo, hi)`` display range, e.g. a napari layer's ``contrast_limits``.
        Values at ``lo`` become 0, values at ``hi`` become 255 and values outside are
        clipped. Must be finite with ``hi > lo``.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous ``(H, W, 3)`` uint8 array. It is always a copy: the input is
        never returned or modified.

    Raises
    ------
    TypeError
        If the dtype is not a real number type (e.g. strings, objects, complex).
    ValueError
        If the image is not ``(H, W)`` or ``(H, W, C)`` with C in 1..4, a side is under
        2 pixels, it has no finite values, all its finite values are equal (nothing to
        segment; this is checked on the data even when ``contrast_limits`` are given),
        or ``contrast_limits`` are not two finite numbers with ``hi > lo``.

    Notes
    -----
    How values become 0..255:

    - uint8 without ``contrast_limits`` is not rescaled: 0..255 already is its display
      range. An ``(H, W, 3)`` uint8 image is therefore returned with identical values,
      which is exactly the input the reference MobileSAM implementation expects.
    - bool maps False to 0 and True to 255. With ``contrast_limits`` the values are
      treated as 0 and 1 and rescaled like any other number.
    - Everything else is rescaled linearly from ``(lo, hi)`` to 0..255. Without
      ``contrast_limits``, ``lo`` and ``hi`` are the 0.1st and 99.9th percentiles of the
      finite values, so that a few hot or dead pixels do not crush the range; if those
      percentiles are equal (a sparse image on a flat background) the minimum and
      maximum of the finite values are used instead. One ``(lo, hi)`` is used for all
      channels, so that the colour balance between channels is kept.
    - Scaled values are rounded to the nearest integer with :func:`numpy.rint` (halves
      to even). NaN becomes 0, +inf becomes 255 and -inf becomes 0, and a
      :class:`NonFiniteWarning` says so.
    - Arithmetic is done in float32 for dtypes up to 16 bits and float32 itself, and in
      float64 for wider ones, so a 4096 x 4096 uint16 image needs one float32 copy.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    >>> rgb = to_rgb_uint8(image, contrast_limits=(0, 4000))
    >>> rgb.shape, rgb.dtype
    ((2, 2, 3), dtype('uint8'))
    >>> rgb[..., 0]
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    channels = _select_rgb_channels(image)
    limits = None if contrast_limits is None else validate_contrast_limits(contrast_limits)

    if channels.dtype == np.bool_:
        channels = channels.view(np.uint8)
        if limits is None:
            _check_not_constant(channels)
            return _to_three_channels(channels * np.uint8(255))
    if channels.dtype == np.uint8 and limits is None:
        _check_not_constant(channels)
        return _to_three_channels(channels)

    finite_values = _finite_values(channels)
    _check_not_constant(finite_values)
    if limits is None:
        limits = _percentile_limits(finite_values)
    return _to_three_channels(_rescale(channels, *limits))


def display_range(image: ArrayLike, max_samples: int = 2**22) -> tuple[float, float] | None:
    """The contrast limits :func:`to_rgb_uint8` would use for a whole image, read sparsely.

    For tiles of one large image to look alike, they must share one display range. This
    is the 0.1st-99.9th percentile range of :func:`to_rgb_uint8`, computed on the whole
    image when it has at most ``max_samples`` values and otherwise on a regular
    subsample of rows and columns (a dask or zarr array reads only those).

    Parameters
    ----------
    image : array-like
        (H, W) or (H, W, C), numpy, dask or zarr.
    max_samples : int
        Most values read.

    Returns
    -------
    (lo, hi) or None
        None for uint8 and bool images, which are used as they are.

    Raises
    ------
    ValueError
        An image without contrast (every finite value equal).

    Examples
    --------
    >>> lo, hi = display_range(np.arange(1000, dtype=np.uint16).reshape(10, 100))
    >>> round(lo, 3), round(hi, 3)
    (0.999, 998.001)
    """
    dtype = np.dtype(getattr(image, "dtype", np.asarray(image).dtype))
    if uses_own_range(dtype):
        return None
    shape = np.shape(image)
    if len(shape) not in (2, 3):
        _select_rgb_channels(image)  # raises the usual shape error
    values_per_pixel = min(shape[2], 3) if len(shape) == 3 else 1
    step = max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] * values_per_pixel / max_samples))))
    sample = image[::step, ::step]
    if hasattr(sample, "compute"):
        sample = sample.compute()
    channels = _select_rgb_channels(np.asarray(sample))
    values = _finite_values(channels)
    _check_not_constant(values)
    return _percentile_limits(values)


def uses_own_range(dtype: Any) -> bool:
    """Whether images of ``dtype`` are used as they are, without a display range.

    uint8 already is 0..255 and bool becomes 0 or 255, so :func:`to_rgb_uint8` picks no
    contrast limits for them.

    Examples
    --------
    >>> uses_own_range(np.uint8), uses_own_range(np.uint16)
    (True, False)
    """
    return np.dtype(dtype) in (np.uint8, np.bool_)


def has_contrast(image: ArrayLike) -> bool:
    """Whether an image holds something to segment: finite values that are not all equal.

    Only the first three channels of an (H, W, C) image count, as in
    :func:`to_rgb_uint8`, which refuses an image for which this is False.

    Examples
    --------
    >>> has_contrast(np.zeros((4, 4))), has_contrast(np.eye(4))
    (False, True)
    >>> has_contrast(np.array([[np.nan, 1.0], [1.0, np.inf]]))
    False
    """
    array = np.asarray(image)
    values = array[..., :3] if array.ndim == 3 else array
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
    return bool(values.size) and bool(values.min() != values.max())


def select_level(image: Any, level: int | None) -> Any:
    """The array of a multiscale pyramid (a list or tuple of arrays) at ``level``.

    A single array is returned as it is (``level`` must then be None or 0).
    """
    multiscale = (
        isinstance(image, list | tuple)
        and len(image) > 0
        and all(hasattr(part, "shape") and len(part.shape) >= 2 for part in image)
    )
    if level is not None and (isinstance(level, bool) or int(level) != level):
        raise InvalidValueError(f"level must be an integer, got {level!r}")
    if not multiscale:
        if level not in (None, 0):
            raise InvalidValueError(
                f"level {level} does not exist: the image is not multiscale (it has level 0 only)"
            )
        return image
    index = 0 if level is None else int(level)
    if not 0 <= index < len(image):
        raise InvalidValueError(
            f"level {level} does not exist: the image has levels 0 to {len(image) - 1}"
        )
    return image[index]


def spatial_shape(image: Any) -> tuple[int, int]:
    """(H, W) of an (H, W) or (H, W, C) array-like, without reading it."""
    shape = tuple(int(side) for side in np.shape(image))
    if len(shape) not in (2, 3):
        _select_rgb_channels(np.zeros(shape[:4] or (0,), np.uint8))  # the usual shape message
    return shape[0], shape[1]


def _select_rgb_channels(image: ArrayLike) -> np.ndarray:
    """Check the shape and dtype and return an (H, W, C) view with C in 1..3, not yet copied."""
    # Shape is checked before np.asarray so that a lazy Z/T stack is refused unread.
    shape = np.shape(image)
    if len(shape) not in (2, 3):
        stack_hint = STACK_HINT if len(shape) > 3 else ""
        raise InvalidValueError(
            "Expected a 2-D image of shape (H, W) or (H, W, C) with C in 1..4; "
            f"received an array with {len(shape)} dimensions, shape {shape}.{stack_hint}"
        )
    if len(shape) == 3 and not 1 <= shape[2] <= 4:
        raise InvalidValueError(
            "Expected channels last, shape (H, W, C) with C in 1..4; "
            f"received shape {shape} (last axis {shape[2]})."
            f"{STACK_HINT} For channels-first data use np.moveaxis(image, 0, -1)."
        )
    if min(shape[:2]) < MIN_SIDE:
        raise InvalidValueError(
            f"Expected an image at least {MIN_SIDE} x {MIN_SIDE} pixels; received shape {shape}."
        )

    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise InvalidTypeError(
            "Expected an image of real numbers (bool, integer or float dtype); "
            f"received dtype {array.dtype}."
        )
    if array.ndim == 2:
        return array[..., np.newaxis]
    return array[..., :3]


def validate_contrast_limits(contrast_limits: Sequence[float]) -> tuple[float, float]:
    """``contrast_limits`` as two floats (lo, hi), checked: finite with hi > lo.

    Raises
    ------
    ValueError
        Not two numbers, not finite, or hi <= lo.

    Examples
    --------
    >>> validate_contrast_limits([0, 4095])
    (0.0, 4095.0)
    """
    try:
        lo, hi = (float(value) for value in contrast_limits)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(
            f"Expected contrast_limits as two numbers (lo, hi); received {contrast_limits!r}."
        ) from exc
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        raise InvalidValueError(
            f"Expected contrast_limits (lo, hi) to be finite with hi > lo; received ({lo}, {hi})."
        )
    return lo, hi


def _check_not_constant(values: np.ndarray) -> None:
    if not has_contrast(values):
        raise InvalidValueError(
            f"Expected an image with some contrast; every pixel has the value {values.min()}, "
            "so there is nothing to segment."
        )


def _finite_values(channels: np.ndarray) -> np.ndarray:
    """Return ``channels`` itself if all values are finite, else a 1-D copy of the finite ones."""
    if channels.dtype.kind != "f":
        return channels
    finite = np.isfinite(channels)
    if finite.all():
        return channels
    values = channels[finite]
    if values.size == 0:
        raise InvalidValueError(
            "Expected an image with finite values; received one made only of NaN and infinity."
        )
    warnings.warn(
        f"The image holds NaN or infinite values: {NON_FINITE_RULE}",
        NonFiniteWarning,
        stacklevel=2,
    )
    return values


def _percentile_limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if lo == hi:
        # Fewer than 0.1 % of the pixels differ from the background: keep them visible.
        lo, hi = values.min(), values.max()
    return float(lo), float(hi)


def _rescale(channels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    work_dtype = np.result_type(channels.dtype, np.float32)
    scaled = channels.astype(work_dtype)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _to_three_channels(channels: np.ndarray) -> np.ndarray:
    """(H, W, 1|2|3) uint8 -> new C-contiguous (H, W, 3) uint8: gray copied, B=0 for two."""
    height, width, count = channels.shape
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    if count == 1:
        rgb[...] = channels
    else:
        rgb[..., :count] = channels
    return rgb
