"""Operations on whole objects of a label image: which object is at a pixel, merge, delete.

The label image may be 2-D or a stack (N-D): an object is every pixel with its id, so on a
stack these act through the 3-D object; pass one slice (``labels[z]``) to act on it alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError

__all__ = ["check_labels", "delete_objects", "merge_objects", "object_at", "present_ids"]


def check_labels(labels: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """``labels`` as an integer array (not copied), or a clear error."""
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(
            f"labels must be an integer label image (0 = background), got dtype {array.dtype}"
        )
    if ndim is not None and array.ndim != ndim:
        raise InvalidValueError(f"labels must be {ndim}-D, got shape {array.shape}")
    if array.ndim < 2:
        raise InvalidValueError(f"labels must be at least 2-D, got shape {array.shape}")
    return array


def present_ids(labels: np.ndarray, ids: Iterable[int], *, at_least: int = 1) -> list[int]:
    """The distinct ids of ``ids``, each checked to be an object (> 0) of ``labels``."""
    wanted = list(dict.fromkeys(int(i) for i in np.atleast_1d(np.asarray(list(ids)))))
    if any(i <= 0 for i in wanted):
        raise InvalidValueError(f"0 is the background, not an object: got ids {wanted}")
    found = set(np.unique(labels[np.isin(labels, wanted)]).tolist()) if wanted else set()
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidValueError(f"no object with id {missing} in the labels")
    if len(wanted) < at_least:
        raise InvalidValueError(
            f"this needs at least {at_least} different objects, got {len(wanted)}: {wanted}"
        )
    return wanted


def object_at(labels: np.ndarray, position: Sequence[float]) -> int:
    """The id of the object at ``position`` (one coordinate per axis, rounded).

    Raises
    ------
    InvalidValueError
        The position is outside the image or on the background.

    Examples
    --------
    >>> labels = np.zeros((4, 4), int); labels[1:3, 1:3] = 7
    >>> object_at(labels, (1.2, 2.4))
    7
    """
    labels = check_labels(labels)
    index = tuple(round(float(v)) for v in position)
    inside = len(index) == labels.ndim and all(
        0 <= i < side for i, side in zip(index, labels.shape, strict=True)
    )
    if not inside:
        raise InvalidValueError(
            f"position {tuple(position)} is outside labels of shape {labels.shape}"
        )
    value = int(labels[index])
    if value == 0:
        raise InvalidValueError(f"there is no object at {index}: it is background")
    return value


def merge_objects(labels: np.ndarray, ids: Iterable[int], into: int | None = None) -> np.ndarray:
    """A copy of ``labels`` where the objects ``ids`` are one object, ``into``.

    Parameters
    ----------
    labels : (..., H, W) int
    ids : two or more object ids
    into : int, optional
        The id of the merged object; default the first of ``ids``. It must be one of them.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2], [3, 0, 0, 2]])
    >>> merge_objects(labels, [2, 1]).tolist()
    [[2, 2, 0, 2], [3, 0, 0, 2]]
    """
    labels = check_labels(labels)
    wanted = present_ids(labels, ids, at_least=2)
    target = wanted[0] if into is None else int(into)
    if target not in wanted:
        raise InvalidValueError(f"into must be one of the merged ids {wanted}, got {into}")
    out = labels.copy()
    out[np.isin(labels, wanted)] = target
    return out


def delete_objects(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """A copy of ``labels`` without the objects ``ids`` (their pixels become 0).

    Examples
    --------
    >>> delete_objects(np.array([[1, 2], [2, 3]]), [2]).tolist()
    [[1, 0], [0, 3]]
    """
    labels = check_labels(labels)
    wanted = present_ids(labels, ids)
    out = labels.copy()
    out[np.isin(labels, wanted)] = 0
    return out
