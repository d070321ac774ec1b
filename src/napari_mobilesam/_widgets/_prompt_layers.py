"""SegAny's prompt layers: the points and boxes layers of an image, and their prompts.

Points layer ``"<image> prompts"``: foreground points are lime, background magenta (the
``prompt`` feature), a fixed size on screen. Shapes layer ``"<image> boxes"``: each
rectangle is a box prompt.
:func:`collect_prompts` reads the prompts lying on one plane of the image as
:class:`PlanePrompts`, which remember the layer rows they came from, so that
:func:`remove_prompts` can take exactly those away once they are used.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Points, Shapes

from napari_mobilesam._widgets._plane import Plane, coords_in_image, spatial_shape
from napari_mobilesam.segany.prompts import PromptSet

if TYPE_CHECKING:
    import napari

PROMPT_FEATURE = "prompt"
FOREGROUND = "foreground"
BACKGROUND = "background"
PROMPT_COLORS = {FOREGROUND: "lime", BACKGROUND: "magenta"}
#: Width of a prompt point on screen, in canvas pixels, at every zoom and image size.
POINT_SCREEN_PX = 10

_NO_ROWS = np.zeros(0, dtype=int)


@dataclass(frozen=True, eq=False)
class PlanePrompts(PromptSet):
    """The prompts on one plane, in SAM pixel coordinates of that plane.

    ``point_rows`` and ``box_rows`` are the rows of the prompt layers they came from.
    """

    point_rows: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    box_rows: np.ndarray = field(default_factory=lambda: _NO_ROWS)

    @classmethod
    def rows_only(cls, point_rows: np.ndarray, box_rows: np.ndarray) -> PlanePrompts:
        """Prompts that only name layer rows (to remove them)."""
        return cls(point_rows=np.asarray(point_rows, int), box_rows=np.asarray(box_rows, int))


def new_points_layer(viewer: napari.Viewer, image: Image) -> Points:
    """Add the empty ``"<image> prompts"`` points layer, aligned with ``image``.

    Points are drawn :data:`POINT_SCREEN_PX` canvas pixels wide whatever the zoom, so that
    they mark a small object on a large image without hiding it.
    """
    points = viewer.add_points(
        np.zeros((0, image.ndim)),
        ndim=image.ndim,
        name=f"{image.name} prompts",
        features={PROMPT_FEATURE: np.zeros(0, dtype=object)},
        feature_defaults={PROMPT_FEATURE: FOREGROUND},
        face_color=PROMPT_FEATURE,
        face_color_cycle=PROMPT_COLORS,
        border_color="white",
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        shear=image.shear,
        affine=image.affine,
    )
    keep_screen_size(viewer, points)
    return points


def keep_screen_size(viewer: napari.Viewer, points: Points) -> None:
    """Keep the points of ``points`` :data:`POINT_SCREEN_PX` canvas pixels wide: their
    size (in data units) follows the camera's zoom.

    (napari's ``canvas_size_limits`` would clamp the drawn size, but a clamped marker
    keeps its unclamped border: a white ring around a dot of colour.)
    """
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    layer = weakref.ref(points)

    def follow_zoom(_event: object = None) -> None:
        if (alive := layer()) is None:
            camera.events.zoom.disconnect(follow_zoom)
            return
        size = POINT_SCREEN_PX / (camera.zoom * max(abs(float(alive.scale[-1])), 1e-12))
        alive.current_size = size
        if len(alive.data):
            alive.size = size

    camera.events.zoom.connect(follow_zoom)
    follow_zoom()


def new_boxes_layer(viewer: napari.Viewer, image: Image) -> Shapes:
    """Add the empty ``"<image> boxes"`` shapes layer, aligned with ``image``, ready to draw
    rectangles."""
    boxes = viewer.add_shapes(
        ndim=image.ndim,
        name=f"{image.name} boxes",
        face_color="transparent",
        edge_color="yellow",
        edge_width=max(1.0, min(spatial_shape(image)[-2:]) / 300),
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        shear=image.shear,
        affine=image.affine,
    )
    boxes.mode = "add_rectangle"
    return boxes


def _points_on(points: Points | None, image: Image, plane: Plane) -> tuple:
    """(coords, labels, rows) of the points of ``points`` that lie on ``plane``."""
    if points is None or not len(points.data):
        return np.zeros((0, 2)), _NO_ROWS, _NO_ROWS
    coords = plane.from_layer(coords_in_image(points, image, points.data))
    rows = np.flatnonzero(plane.contains(coords))
    if PROMPT_FEATURE in points.features:
        kinds = np.asarray(points.features[PROMPT_FEATURE])[rows]
        labels = (kinds != BACKGROUND).astype(int)
    else:
        labels = np.ones(len(rows), dtype=int)
    return plane.to_xy(coords[rows]), labels, rows


def _boxes_on(boxes: Shapes | None, image: Image, plane: Plane) -> tuple:
    """(boxes, rows) of the rectangles of ``boxes`` that lie on ``plane``."""
    found = []
    if boxes is not None and boxes.nshapes:
        for row, (vertices, kind) in enumerate(zip(boxes.data, boxes.shape_type, strict=True)):
            if kind != "rectangle":
                continue
            corners = plane.from_layer(coords_in_image(boxes, image, vertices))
            if plane.contains(corners).all():
                xy = plane.to_xy(corners)
                found.append((row, [*xy.min(axis=0), *xy.max(axis=0)]))
    if not found:
        return np.zeros((0, 4)), _NO_ROWS
    return np.array([box for _, box in found], dtype=float), np.array([row for row, _ in found])


def collect_prompts(
    points: Points | None, boxes: Shapes | None, image: Image, plane: Plane
) -> PlanePrompts:
    """The prompts of the prompt layers that lie on ``plane`` of ``image``."""
    point_coords, point_labels, point_rows = _points_on(points, image, plane)
    box_coords, box_rows = _boxes_on(boxes, image, plane)
    return PlanePrompts(point_coords, point_labels, box_coords, point_rows, box_rows)


def remove_prompts(points: Points | None, boxes: Shapes | None, prompts: PlanePrompts) -> None:
    """Remove the rows ``prompts`` came from out of the prompt layers."""
    if points is not None and len(prompts.point_rows):
        points.remove(list(prompts.point_rows))
    if boxes is not None and len(prompts.box_rows):
        boxes.selected_data = set(prompts.box_rows.tolist())
        boxes.remove_selected()
