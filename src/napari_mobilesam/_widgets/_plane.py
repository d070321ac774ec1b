"""The 2-D plane of an image layer on screen, and moving coordinates between layers.

MobileSAM segments 2-D images. For a stack (Z, T or any extra leading axes) the widgets
segment the plane the viewer shows: the two displayed axes, at the current position of the
others. :class:`Plane` holds that choice in the image's data coordinates, so that the slice
of the image, the prompts on it and the slice of a labels layer all use the same indices.

A multiscale (pyramid) layer is segmented at one of its levels: the plane is then in that
level's pixels, and :meth:`Plane.from_layer` turns the layer's data coordinates (those of
level 0, which napari uses for every level) into them.
"""

from __future__ import annotations

import itertools
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
    downsample : tuple of float, optional
        For a level of a multiscale layer: level-0 pixels per pixel of this level along
        each axis of ``shape``. None (the default) is 1 on every axis.

    Examples
    --------
    >>> plane = Plane(shape=(5, 64, 80), fixed=(3, None, None))
    >>> plane.size, plane.index
    ((64, 80), (3, slice(None, None, None), slice(None, None, None)))
    """

    shape: tuple[int, ...]
    fixed: tuple[int | None, ...]
    downsample: tuple[float, ...] | None = None

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

    def lazy(self, data: Any) -> PlaneArray:
        """The plane of ``data`` as an array-like that reads only the regions asked for."""
        return PlaneArray(data, self)

    def region_index(self, window: tuple[int, int, int, int]) -> tuple[int | slice, ...]:
        """Index into the layer's data of the (y0, y1, x0, x1) window of the plane."""
        y0, y1, x0, x1 = (int(v) for v in window)
        rows, cols = self.axes
        index = list(self.index)
        index[rows], index[cols] = slice(y0, y1), slice(x0, x1)
        return tuple(index)

    def from_layer(self, coords: np.ndarray) -> np.ndarray:
        """(K, ndim) data coordinates of the layer (level 0) -> coordinates of this plane's
        level (the same for a layer that is not multiscale)."""
        coords = np.asarray(coords, dtype=float).reshape(-1, len(self.shape))
        if self.downsample is None:
            return coords
        return coords / np.asarray(self.downsample, dtype=float)

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

    def data_indices(
        self, mask: np.ndarray, offset: tuple[int, int] = (0, 0)
    ) -> tuple[np.ndarray, ...]:
        """Full-data index arrays of the True pixels of a (height, width) mask of the plane.

        ``offset`` (row, column) places a mask of a window of the plane.
        """
        mask_rows, mask_cols = np.nonzero(mask)
        mask_rows = mask_rows + int(offset[0])
        mask_cols = mask_cols + int(offset[1])
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


class PlaneArray:
    """One plane of a layer's data as a lazy (H, W) or (H, W, C) array-like.

    Indexing with two slices reads only that region of ``data`` (a dask array stays lazy
    until computed, a zarr array reads the chunks it touches); ``np.asarray`` reads it all.

    Parameters
    ----------
    data : array-like
        The layer's data (one level of a multiscale layer).
    plane : Plane
    """

    def __init__(self, data: Any, plane: Plane) -> None:
        self.data = data
        self.plane = plane
        extra = tuple(int(side) for side in data.shape[len(plane.shape) :])
        self.shape = (*plane.size, *extra)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 2 or any(not isinstance(part, slice) for part in key):
            raise IndexError("A PlaneArray is indexed by at most two slices (rows, columns).")
        key = key + (slice(None),) * (2 - len(key))
        rows, cols = self.plane.axes
        index = list(self.plane.index)
        index[rows], index[cols] = key
        return self.data[tuple(index)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.plane.take(self.data)
        return array if dtype is None else array.astype(dtype)


def unproxied(obj: Any) -> Any:
    """The napari object itself behind the proxy napari hands to plugins, if any.

    napari gives plugin widgets and commands a ``PublicOnlyProxy`` of the viewer, whose
    layers come back as proxies too, while layer events carry the layers themselves. The
    widgets check "is this still the layer we captured?" by identity, so they keep the
    objects themselves (and use public API only).
    """
    return getattr(obj, "__wrapped__", obj)


def spatial_shape(layer: Layer, level: int | None = None) -> tuple[int, ...]:
    """The layer's data shape without an RGB(A) channel axis (of ``level`` if given)."""
    if level is not None and getattr(layer, "multiscale", False):
        return tuple(int(side) for side in level_data(layer, level).shape[: layer.ndim])
    return tuple(layer.data.shape[: layer.ndim])


def level_count(layer: Layer) -> int:
    """How many resolution levels the layer has (1 unless it is multiscale)."""
    return len(layer.data) if getattr(layer, "multiscale", False) else 1


def level_data(layer: Layer, level: int) -> Any:
    """The data of ``level`` (0 = full resolution); the data itself for a plain layer."""
    count = level_count(layer)
    if not 0 <= int(level) < count:
        raise PlaneError(
            f"{layer.name!r} has resolution levels 0 to {count - 1}; received level {level}."
        )
    return layer.data[int(level)] if getattr(layer, "multiscale", False) else layer.data


def level_downsample(layer: Layer, level: int) -> tuple[float, ...]:
    """Level-0 pixels per pixel of ``level`` along each axis of the layer (shape ratio)."""
    full = np.asarray(spatial_shape(layer, 0), dtype=float)
    return tuple(float(f) for f in full / np.asarray(spatial_shape(layer, level), dtype=float))


def displayed_plane(viewer: napari.Viewer, layer: Image, level: int | None = None) -> Plane:
    """Return the plane of ``layer`` that ``viewer`` shows.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : Image
    level : int, optional
        For a multiscale layer, the resolution level to segment (0 = full resolution);
        the plane is then in that level's pixels. None refuses multiscale layers.

    Raises
    ------
    PlaneError
        If the viewer shows 3-D, the layer is multiscale and no level is given, it has
        fewer than two axes, or the displayed axes are not axes of the layer.
    """
    if viewer.dims.ndisplay != 2:
        raise PlaneError(
            "MobileSAM segments 2-D planes: switch the viewer to 2-D display "
            "(the 2D/3D button, or Ctrl+Y)."
        )
    if layer.multiscale and level is None:
        raise PlaneError(
            f"{layer.name!r} is a multiscale image, which is not supported here; "
            "add one resolution level as its own image layer."
        )
    shape = spatial_shape(layer, level)
    downsample = level_downsample(layer, level) if layer.multiscale else None
    if len(shape) < 2:
        raise PlaneError(f"{layer.name!r} has {len(shape)} axis; at least 2 are needed.")
    leading_world_axes = viewer.dims.ndim - len(shape)
    displayed = sorted(axis - leading_world_axes for axis in viewer.dims.displayed)
    if displayed[0] < 0:
        raise PlaneError(
            f"The viewer displays axes that {layer.name!r} does not have; display two of its axes."
        )
    position = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    if downsample is not None:
        position = position / np.asarray(downsample)
    fixed = tuple(
        None if axis in displayed else int(np.clip(np.round(position[axis]), 0, size - 1))
        for axis, size in enumerate(shape)
    )
    return Plane(shape=shape, fixed=fixed, downsample=downsample)


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


def labels_for(image: Image, data: np.ndarray, name: str, level: int = 0) -> napari.layers.Labels:
    """A Labels layer of ``data`` (shaped like ``image`` without channels) on ``image``'s grid.

    For ``level`` > 0 of a multiscale image, ``data`` is shaped like that level and the
    layer's scale is multiplied by the level's downsampling, so that it overlays the image
    as napari draws that level (pixel i of the level at level-0 coordinate i × factor).
    """
    from napari.layers import Labels

    scale = np.asarray(image.scale, dtype=float)
    if level:
        scale = scale * np.asarray(level_downsample(image, level))
    return Labels(
        data,
        name=name,
        scale=scale,
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


def plane_is_tiled(viewer: napari.Viewer, layer: Image | None, level: int = 0) -> bool:
    """Whether the plane of ``layer`` on screen (at ``level``) is larger than the model's
    input, so that SegAny and SegEvery segment it tile by tile (their tile settings apply).
    """
    if layer is None:
        return False
    from napari_mobilesam.imaging.tiling import needs_tiling

    try:
        size = displayed_plane(viewer, layer, level if layer.multiscale else None).size
    except PlaneError:  # 3-D display: the last two axes
        size = spatial_shape(layer, level)[-2:]
    return needs_tiling(tuple(size))


def planes_to_segment(
    viewer: napari.Viewer, image: Image, all_planes: bool, level: int = 0
) -> list[Plane]:
    """The plane on screen, or every plane of the stack along the same displayed axes.

    For a multiscale image the planes are planes of resolution level ``level``.
    """
    shown = displayed_plane(viewer, image, level if image.multiscale else None)
    if not all_planes:
        return [shown]
    stack_axes = [axis for axis, index in enumerate(shown.fixed) if index is not None]
    planes = []
    for position in itertools.product(*(range(shown.shape[axis]) for axis in stack_axes)):
        fixed = list(shown.fixed)
        for axis, index in zip(stack_axes, position, strict=True):
            fixed[axis] = index
        planes.append(Plane(shape=shown.shape, fixed=tuple(fixed)))
    return planes
