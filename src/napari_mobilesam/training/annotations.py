"""Annotated images: the one currency of detector training and decoder fine-tuning.

Every source (napari Labels layers, folders of image / label-image pairs, COCO files) is
turned into :class:`AnnotatedImage` objects, checked here once, and split here once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = ["AnnotatedImage", "annotated_image", "split_by_image"]


@dataclass(frozen=True)
class AnnotatedImage:
    """One 2-D image and its label image (a plane of a stack is one of these).

    Attributes
    ----------
    image : numpy.ndarray
        ``(H, W)`` grayscale or ``(H, W, 3|4)`` RGB(A), any real dtype.
    labels : numpy.ndarray
        ``(H, W)`` integer label image; 0 is background, each other id one object.
    name : str
        Names the image in reports and decides its side of the train/validation split.
    contrast_limits : (float, float) or None
        The display range mapped to 0..255 (None: as everywhere else in the package).
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    contrast_limits: tuple[float, float] | None = None

    @property
    def n_objects(self) -> int:
        """Number of distinct non-zero ids in :attr:`labels`."""
        return int(np.count_nonzero(np.unique(self.labels)))


def annotated_image(
    image: np.ndarray,
    labels: np.ndarray,
    name: str,
    contrast_limits: tuple[float, float] | None = None,
) -> AnnotatedImage:
    """Check an image / label-image pair and make an :class:`AnnotatedImage` of it.

    Raises
    ------
    InvalidTypeError
        The label image is not of an integer (or bool) dtype.
    InvalidValueError
        The shapes differ, or the image is not 2-D gray or RGB(A).

    Examples
    --------
    >>> import numpy as np
    >>> item = annotated_image(np.zeros((64, 64)), np.eye(64, dtype=np.int32), "a")
    >>> item.n_objects
    1
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise InvalidTypeError(
            f"{name}: a label image must hold integers (0 = background), got dtype {labels.dtype}"
        )
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if image.ndim != 2 and not rgb:
        raise InvalidValueError(
            f"{name}: expected a 2-D image (H, W) or RGB(A) (H, W, 3|4), got shape {image.shape}"
        )
    if labels.shape != image.shape[:2]:
        raise InvalidValueError(
            f"{name}: the label image's shape {labels.shape} differs from the image's "
            f"{image.shape[:2]}; they must be the same pixels"
        )
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int32)
    return AnnotatedImage(image, labels, str(name), contrast_limits)


def split_by_image(
    items: Sequence[AnnotatedImage], validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """Split annotated images into training and validation sets, reproducibly by name.

    Each image goes to one side by a hash of its name and ``seed``, so the split does not
    depend on the order of ``items`` and an image stays on its side when more are added.
    At least one image is kept for validation when there are two or more; with a single
    image there is no validation set (the caller reports training figures instead).

    Returns
    -------
    train, validation : list of AnnotatedImage

    Examples
    --------
    >>> import numpy as np
    >>> items = [annotated_image(np.zeros((8, 8)), np.ones((8, 8), int), f"im{i}")
    ...          for i in range(10)]
    >>> train, val = split_by_image(items, 0.2)
    >>> len(train) + len(val), len(val) >= 1
    (10, True)
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise InvalidValueError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}"
        )
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise InvalidValueError("annotated images must have distinct names to be split")
    ranked = sorted(items, key=lambda item: _hash_fraction(item.name, seed))
    if len(ranked) < 2 or validation_fraction == 0.0:
        return list(items), []
    n_val = max(1, round(validation_fraction * len(ranked)))
    validation = {item.name for item in ranked[:n_val]}
    return (
        [item for item in items if item.name not in validation],
        [item for item in items if item.name in validation],
    )


def _hash_fraction(name: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
