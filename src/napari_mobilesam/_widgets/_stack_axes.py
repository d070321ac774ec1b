"""The axes of an image a propagation walks along, as the viewer shows it, and its slices.

- In 2-D display the plane is the one on screen (rows and columns are the displayed axes);
  the stack axis is one of the other axes of the layer (default: the slider moved last,
  else the innermost one). Every other axis stays at its current position.
- In 3-D display the rows and columns are the last two displayed axes and the stack axis
  is the first displayed one (or any non-displayed axis).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam._widgets._plane import Plane, PlaneError, spatial_shape

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

#: Axis labels that mean time: their stacks are time-lapses.
TIME_LABELS = ("t", "time", "frame", "frames", "timepoint")


def axis_label(viewer: napari.Viewer, image: Image, axis: int) -> str:
    """The name of data axis ``axis`` of ``image``: its axis label, else the viewer's, else
    the axis number (napari's default labels, "-3" or "0", are not names)."""
    world = viewer.dims.ndim - image.ndim + axis
    for labels, index in (
        (tuple(getattr(image, "axis_labels", ()) or ()), axis),
        (tuple(viewer.dims.axis_labels), world),
    ):
        if 0 <= index < len(labels):
            label = str(labels[index]).strip()
            if label and not re.fullmatch(r"(axis )?-?\d+", label):
                return label
    return str(axis)


def is_time_axis(viewer: napari.Viewer, image: Image, axis: int) -> bool:
    """Whether the axis is labelled as time ("t", "time", "frame"...)."""
    return axis_label(viewer, image, axis).strip().lower() in TIME_LABELS


def _displayed_axes(viewer: napari.Viewer, image: Image) -> list[int]:
    """The displayed axes of the viewer as data axes of ``image`` (sorted)."""
    leading = viewer.dims.ndim - len(spatial_shape(image))
    return sorted(axis - leading for axis in viewer.dims.displayed if axis - leading >= 0)


def stack_axes(viewer: napari.Viewer, image: Image) -> list[int]:
    """The axes of ``image`` a propagation can walk along, as the viewer shows it.

    In 2-D display: every axis that is not displayed. In 3-D display: the first displayed
    axis (the rows and columns are the other two) and every axis that is not displayed.
    Empty for a 2-D image.
    """
    shape = spatial_shape(image)
    if len(shape) < 3:
        return []
    displayed = _displayed_axes(viewer, image)
    plane_axes = displayed[-2:]
    return [axis for axis in range(len(shape)) if axis not in plane_axes]


def default_stack_axis(viewer: napari.Viewer, image: Image) -> int | None:
    """The axis to walk along by default: in 3-D display the first displayed axis; in 2-D
    the slider moved last if it is an axis of the image, else the innermost other axis."""
    axes = stack_axes(viewer, image)
    if not axes:
        return None
    if viewer.dims.ndisplay == 3:
        displayed = _displayed_axes(viewer, image)
        if len(displayed) == 3:
            return displayed[0]
    last = viewer.dims.last_used - (viewer.dims.ndim - image.ndim)
    if last in axes:
        return int(last)
    return axes[-1]


def stack_plane(viewer: napari.Viewer, image: Image, axis: int) -> Plane:
    """The plane through the current position whose rows and columns are the two displayed
    axes of ``image`` other than ``axis``; its index on ``axis`` is the current slice.

    Raises
    ------
    PlaneError
        For a 2-D or multiscale image, or an axis that is not a stack axis of the image.
    """
    if image.multiscale:
        raise PlaneError(
            f"{image.name!r} is a multiscale image; propagation needs one resolution level "
            "as its own image layer."
        )
    shape = spatial_shape(image)
    if len(shape) < 3:
        raise PlaneError(
            f"{image.name!r} is a 2-D image: propagation needs a Z or T stack (an image "
            "with a third axis to walk along). Use Accept to segment this image."
        )
    axes = stack_axes(viewer, image)
    if axis not in axes:
        names = ", ".join(f"{a} ({axis_label(viewer, image, a)})" for a in axes)
        raise PlaneError(
            f"Axis {axis} is not a stack axis of {image.name!r} (shape {shape}) as displayed; "
            f"choose one of: {names}."
        )
    displayed = [a for a in _displayed_axes(viewer, image) if a != axis][-2:]
    if len(displayed) < 2:
        raise PlaneError(f"The viewer must display two axes of {image.name!r} besides {axis}.")
    position = np.asarray(image.world_to_data(viewer.dims.point), dtype=float)
    fixed = tuple(
        None if a in displayed else int(np.clip(np.round(position[a]), 0, size - 1))
        for a, size in enumerate(shape)
    )
    return Plane(shape=shape, fixed=fixed)


def slice_plane(plane: Plane, axis: int, index: int) -> Plane:
    """``plane`` moved to slice ``index`` of ``axis``."""
    fixed = list(plane.fixed)
    fixed[axis] = int(index)
    return Plane(shape=plane.shape, fixed=tuple(fixed), downsample=plane.downsample)


class AxisStack:
    """The slices of a layer's data along one axis, as an (S, H, W[, C]) array-like.

    Indexing with ``(z,)`` (what :class:`napari_mobilesam.stacks.propagation.StackSlices` does)
    reads slice ``z`` only, so dask and zarr data stay lazy.
    """

    def __init__(self, data: Any, plane: Plane, axis: int) -> None:
        self.data, self.plane, self.axis = data, plane, axis
        channels = tuple(int(side) for side in data.shape[len(plane.shape) :])
        self.shape = (plane.shape[axis], *plane.size, *channels)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != 1 or isinstance(key[0], slice):
            raise IndexError("An AxisStack is indexed by one slice number.")
        return slice_plane(self.plane, self.axis, int(key[0])).take(self.data)
