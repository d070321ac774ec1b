"""The 2-D plane of an image layer on screen, and moving coordinates between layers.

MobileSAM segments 2-D images. For a stack (Z, T or any extra leading axes) the widgets
segment the plane the viewer shows: the two displayed axes, at the current position of the
others. :class:`Plane` holds that choice in the image's data coordinates, so that the slice
of the image, the prompts on it and the slice of a labels layer all use the same indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer


class PlaneError(ValueError):
    """The image layer cannot be segmented as shown; the message says what to change."""


@dataclass(frozen=True)
class Plane:
    """One 2-D plane of a layer's data.

    Parameters
    ----------
    shape : tuple of int
        The layer's data shape without the RGB(A) channel axis.
    fixed : tuple of int or None
        For each axis of ``shape``: the index of the plane on that axis, or None for the
        two axes of the plane (rows first, then columns, in data axis order).

    Examples
    --------
    >>> plane = Plane(shape=(5, 64, 80), fixed=(3, None, None))
    >>> plane.size, plane.index
    ((64, 80), (3, slice(None, None, None), slice(None, None, None)))
    """

    shape: tuple[int, ...]
    fixed: tuple[int | None, ...]

    @property
    def axes(self) -> tuple[int, int]:
        """The (rows, columns) axes of the plane."""
        rows, cols = (axis for axis, index in enumerate(self.fixed) if index is None)
        return rows, cols

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the plane in pixels."""
        rows, cols = self.axes
        return self.shape[rows], self.shape[cols]

    @property
    def index(self) -> tuple[int | slice, ...]:
        """Index into the layer's data that selects the plane (channel axis kept)."""
        return tuple(slice(None) if index is None else index for index in self.fixed)

    def take(self, data: Any) -> np.ndarray:
        """Read the plane out of ``data`` (numpy, dask, zarr...) as a numpy array."""
        return np.asarray(data[self.index])

    def contains(self, coords: np.ndarray) -> np.ndarray:
        """Which of the (K, ndim) data coordinates lie on this plane, as a (K,) bool array."""
        coords = np.asarray(coords, dtype=float).reshape(-1, len(self.shape))
        on_plane = np.ones(len(coords), dtype=bool)
        for axis, index in enumerate(self.fixed):
            if index is not None:
                on_plane &= np.round(coords[:, axis]) == index
        return on_plane

    def to_xy(self, coords: np.ndarray) -> np.ndarray:
        """(K, ndim) data coordinates -> (K, 2) SAM pixel coordinates (x = column, y = row)."""
        rows, cols = self.axes
        coords = np.asarray(coords, dtype=float).reshape(-1, len(self.shape))
        return np.stack([coords[:, cols], coords[:, rows]], axis=1)

    def data_indices(self, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """Full-data index arrays of the True pixels of a (height, width) mask of the plane."""
        mask_rows, mask_cols = np.nonzero(mask)
        rows, cols = self.axes
        indices = []
        for axis, index in enumerate(self.fixed):
            if axis == rows:
                indices.append(mask_rows)
            elif axis == cols:
                indices.append(mask_cols)
            else:
                indices.append(np.full(mask_rows.shape, index, dtype=np.intp))
        return tuple(indices)

    def describe(self) -> str:
        """Short text for status lines, e.g. ``"plane (3, :, :)"``; empty for 2-D data."""
        if len(self.shape) == 2:
            return ""
        return "plane (" + ", ".join(":" if i is None else str(i) for i in self.fixed) + ")"


def unproxied(obj: Any) -> Any:
    """The napari object itself behind the proxy napari hands to plugins, if any.

    napari gives plugin widgets and commands a ``PublicOnlyProxy`` of the viewer, whose
    layers come back as proxies too, while layer events carry the layers themselves. The
    widgets check "is this still the layer we captured?" by identity, so they keep the
    objects themselves (and use public API only).
    """
    return getattr(obj, "__wrapped__", obj)


def spatial_shape(layer: Layer) -> tuple[int, ...]:
    """The layer's data shape without an RGB(A) channel axis."""
    return tuple(layer.data.shape[: layer.ndim])


def displayed_plane(viewer: napari.Viewer, layer: Image) -> Plane:
    """Return the plane of ``layer`` that ``viewer`` shows.

    Raises
    ------
    PlaneError
        If the viewer shows 3-D, the layer is multiscale or has fewer than two axes, or
        the displayed axes are not axes of the layer.
    """
    if viewer.dims.ndisplay != 2:
        raise PlaneError(
            "MobileSAM segments 2-D planes: switch the viewer to 2-D display "
            "(the 2D/3D button, or Ctrl+Y)."
        )
    if layer.multiscale:
        raise PlaneError(
            f"{layer.name!r} is a multiscale image, which is not supported; "
            "add one resolution level as its own image layer."
        )
    shape = spatial_shape(layer)
    if len(shape) < 2:
        raise PlaneError(f"{layer.name!r} has {len(shape)} axis; at least 2 are needed.")
    leading_world_axes = viewer.dims.ndim - len(shape)
    displayed = sorted(axis - leading_world_axes for axis in viewer.dims.displayed)
    if displayed[0] < 0:
        raise PlaneError(
            f"The viewer displays axes that {layer.name!r} does not have; display two of its axes."
        )
    position = layer.world_to_data(viewer.dims.point)
    fixed = tuple(
        None if axis in displayed else int(np.clip(np.round(position[axis]), 0, size - 1))
        for axis, size in enumerate(shape)
    )
    return Plane(shape=shape, fixed=fixed)


def coords_in_image(source: Layer, image: Layer, coords: np.ndarray) -> np.ndarray:
    """Map (K, ndim) data coordinates of ``source`` to data coordinates of ``image``.

    Both layers must have the same number of axes; they may differ in scale, translation
    and other transforms.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, source.ndim)
    if source.ndim != image.ndim:
        raise PlaneError(
            f"{source.name!r} has {source.ndim} axes but the image {image.name!r} has "
            f"{image.ndim}; use a prompt layer with the image's axes."
        )
    return np.array(
        [image.world_to_data(source.data_to_world(point)) for point in coords], dtype=float
    ).reshape(-1, image.ndim)


def labels_for(image: Image, data: np.ndarray, name: str) -> napari.layers.Labels:
    """A Labels layer of ``data`` (shaped like ``image`` without channels) on ``image``'s grid."""
    from napari.layers import Labels

    return Labels(
        data,
        name=name,
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        shear=image.shear,
        affine=image.affine,
        units=image.units,
        axis_labels=image.axis_labels,
    )


def layer_in_viewer(viewer: napari.Viewer, layer: Layer | None) -> bool:
    """Whether ``layer`` (the object, not just a layer of that name) is still in ``viewer``."""
    return layer is not None and any(candidate is layer for candidate in viewer.layers)


def model_contrast_limits(layer: Image) -> tuple[float, float] | None:
    """The contrast limits to hand to the model, so that it sees what the viewer shows.

    An RGB uint8 layer at its full 0..255 range needs no rescaling: None.
    """
    low, high = (float(value) for value in layer.contrast_limits)
    if layer.rgb and np.dtype(layer.dtype) == np.uint8 and (low, high) == (0.0, 255.0):
        return None
    return low, high
