"""SegAny: segment one object at a time from point and box prompts, with a live preview.

:class:`SegAnyController` holds the behaviour and talks to napari layers only, so tests and
scripts can drive it through layer data; :class:`SegAnyWidget` is the dock widget around it.

Prompt rules (also in the README):

- Points layer ``"<image> prompts"``: a click adds a foreground point, Shift-click a
  background point; ``B`` (with the points layer selected) or the widget's "Click adds"
  switch swaps what a plain click adds. Foreground points are lime, background magenta.
- Shapes layer ``"<image> boxes"``: each rectangle is one object.
- No rectangle: the points make one object; one point gives three candidate masks (the
  best is shown, the others can be picked), several points give one mask.
  One rectangle: it and the points make one object (one mask).
  Several rectangles: each is its own object, decoded in one batch; points are not used.

Large planes (a side longer than the model's 1024-pixel input) are segmented tile by tile
(:mod:`napari_mobilesam.segany_tiled`): the prompts of an object are decoded on the tile
that holds them with the most margin, encoded at full resolution the first time it is
used; a box larger than a tile is decoded on a coarser view. Multiscale (pyramid) layers
are segmented at a chosen level (default 0, full resolution, tiled); prompts are in the
layer's data coordinates (level 0) and are scaled to the level, and the preview and output
labels have the level's shape, scaled to overlay the image.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
)
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils.events import EmitterGroup, Event
from napari.utils.notifications import show_error

from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._model import (
    expected_errors,
    new_predictor,
)
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    coords_in_image,
    displayed_plane,
    labels_for,
    layer_in_viewer,
    level_count,
    level_data,
    level_downsample,
    model_contrast_limits,
    spatial_shape,
    unproxied,
)
from napari_mobilesam.segany_tiled import (
    TiledSegAnyPredictor,
    coarse_window,
    combine_predictions,
    describe_tile,
    route_prompts,
)
from napari_mobilesam.tiling import DEFAULT_HALO, DEFAULT_TILE_SHAPE, Tile, TileGrid, needs_tiling

if TYPE_CHECKING:
    import napari

    from napari_mobilesam.segany import SegAnyPredictor

PROMPT_FEATURE = "prompt"
FOREGROUND = "foreground"
BACKGROUND = "background"
PROMPT_COLORS = {FOREGROUND: "lime", BACKGROUND: "magenta"}
ACCEPT_KEY = "Control-Enter"
BACKGROUND_KEY = "B"
PREVIEW_TAG = "napari-mobilesam-preview"
NEW_LAYER = "(new layer)"

_FINISHED_EDITS = {"added", "removed", "changed"}


@dataclass(frozen=True)
class Prompts:
    """The prompts on one plane, in SAM pixel coordinates of that plane.

    ``point_rows`` and ``box_rows`` are the rows of the prompt layers they came from.
    """

    point_coords: np.ndarray  # (K, 2) x, y
    point_labels: np.ndarray  # (K,) 1 foreground, 0 background
    boxes: np.ndarray  # (B, 4) x0, y0, x1, y1
    point_rows: np.ndarray
    box_rows: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.point_coords) == 0 and len(self.boxes) == 0

    @property
    def points_ignored(self) -> bool:
        """Points are not used when several rectangles each make their own object."""
        return len(self.boxes) > 1 and len(self.point_coords) > 0


@dataclass(frozen=True)
class Decoded:
    """Decoder output: ``separate_objects`` False means candidate masks of one object.

    ``masks`` cover the ``window`` (y0, y1, x0, x1) of the plane: the whole plane for an
    image that is not tiled, the tile (or tiles) they were decoded on otherwise. ``note``
    says where they were decoded (for the status line), empty when not tiled.
    """

    masks: np.ndarray  # (C, h, w) bool over the window
    scores: np.ndarray  # (C,)
    separate_objects: bool
    window: tuple[int, int, int, int] | None = None
    note: str = ""

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the masks in the plane."""
        if self.window is not None:
            return self.window
        return 0, self.masks.shape[1], 0, self.masks.shape[2]

    def object_masks(self, candidate: int) -> list[np.ndarray]:
        """The masks to write: every object, or the chosen candidate of the one object."""
        if self.separate_objects:
            return list(self.masks)
        return [self.masks[self.ranking[candidate]]]

    @property
    def ranking(self) -> np.ndarray:
        """Mask indices from the highest predicted IoU to the lowest."""
        return np.argsort(-self.scores, kind="stable")

    def label_image(self, candidate: int) -> np.ndarray:
        """(h, w) uint16 image of the window: object i as i + 1; where objects overlap, the
        first wins."""
        masks = self.object_masks(candidate)
        labels = np.zeros(masks[0].shape, dtype=np.uint16)
        for value, mask in enumerate(masks, start=1):
            labels[mask & (labels == 0)] = value
        return labels


def decode_prompts(predictor: SegAnyPredictor, prompts: Prompts) -> Decoded:
    """Decode ``prompts`` on the predictor's current image by the rules in the module doc."""
    if len(prompts.boxes) > 1:
        masks, scores, _ = predictor.predict_boxes(prompts.boxes)
        return Decoded(masks, scores, separate_objects=True)
    has_points = len(prompts.point_coords) > 0
    masks, scores, _ = predictor.predict(
        point_coords=prompts.point_coords if has_points else None,
        point_labels=prompts.point_labels if has_points else None,
        box=prompts.boxes[0] if len(prompts.boxes) else None,
        multimask_output=len(prompts.boxes) == 0 and len(prompts.point_coords) == 1,
    )
    return Decoded(masks, scores, separate_objects=False)


def decode_tiled(
    tiled: TiledSegAnyPredictor, prompts: Prompts, encoded_before: set | frozenset = frozenset()
) -> Decoded:
    """Decode ``prompts`` tile by tile on a large image, by the rules in the module doc.

    ``encoded_before`` holds the outer regions of tiles encoded for previews that were
    superseded: the status still says they were encoded now.
    """
    if len(prompts.boxes) > 1:
        predictions = tiled.predict_boxes(prompts.boxes)
        masks, window = combine_predictions(predictions)
        scores = np.concatenate([p.scores for p in predictions])
        note = _tile_note(tiled, predictions, encoded_before)
        return Decoded(masks, scores, True, window, note)
    has_points = len(prompts.point_coords) > 0
    prediction = tiled.predict(
        point_coords=prompts.point_coords if has_points else None,
        point_labels=prompts.point_labels if has_points else None,
        box=prompts.boxes[0] if len(prompts.boxes) else None,
        multimask_output=len(prompts.boxes) == 0 and len(prompts.point_coords) == 1,
    )
    return Decoded(
        prediction.masks,
        prediction.scores,
        False,
        prediction.window,
        _tile_note(tiled, [prediction], encoded_before),
    )


def _tile_note(
    tiled: TiledSegAnyPredictor, predictions: list, encoded_before: set | frozenset
) -> str:
    """Where masks were decoded, e.g. "Tile (2, 3) of 6×6, cached.", one part per tile."""
    parts: dict[tuple, str] = {}
    for prediction in predictions:
        key = tuple(prediction.tile.outer)
        encoded_now = prediction.encoded_now or key in encoded_before
        if key not in parts or encoded_now:
            state = "encoded now" if encoded_now else "cached"
            parts[key] = f"{tiled.describe(prediction.tile)}, {state}"
    text = "; ".join(parts.values())
    return text[:1].upper() + text[1:] + "."


@dataclass(frozen=True)
class _Request:
    """Everything a preview needs, captured on the GUI thread when the prompts changed.

    ``tiling`` is (tile size, halo) when the plane is segmented tile by tile, and ``tiles``
    the tiles (or coarse windows) the prompts are routed to.
    """

    generation: int
    image: Image
    data: Any
    plane: Plane
    contrast_limits: tuple[float, float] | None
    image_key: tuple
    prompts: Prompts
    level: int = 0
    tiling: tuple[int, int] | None = None
    tiles: tuple[Tile, ...] = ()


class _PreviewEngine:
    """Runs requests in thread workers, one at a time, skipping superseded ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._predictor: SegAnyPredictor | None = None
        self._image_key: tuple | None = None
        self._tiled: TiledSegAnyPredictor | None = None
        self._tiled_key: tuple | None = None
        # Tiles encoded by runs whose preview was superseded (not yet reported).
        self._unreported: set[tuple[int, int, int, int]] = set()

    def is_embedded(self, image_key: tuple) -> bool:
        return self._image_key == image_key

    def tiled_for(self, request: _Request) -> TiledSegAnyPredictor | None:
        """The tiled predictor of ``request``'s plane and tile settings, if set up."""
        if self._tiled_key == (request.image_key, request.tiling):
            return self._tiled
        return None

    def needs_encoding(self, request: _Request) -> list[Tile]:
        """The tiles of a tiled request that are not encoded yet (read nothing)."""
        tiled = self.tiled_for(request)
        return [tile for tile in request.tiles if tiled is None or not tiled.is_encoded(tile)]

    def run(self, request: _Request, is_current: Callable[[], bool]) -> Decoded | str | None:
        """Decode ``request``: the masks, an error message for the user, or None if a newer
        request replaced it before it ran."""
        with self._lock:
            if not is_current():
                return None
            prepare_torch_import()
            try:
                if self._predictor is None:
                    self._predictor = new_predictor()
                if request.tiling is not None:
                    return self._run_tiled(request, is_current)
                if self._image_key != request.image_key:
                    self._image_key = None
                    self._predictor.set_image(
                        request.plane.take(request.data), contrast_limits=request.contrast_limits
                    )
                    self._image_key = request.image_key
                if not is_current():
                    return None
                return decode_prompts(self._predictor, request.prompts)
            except expected_errors() as exc:
                return str(exc)

    def _run_tiled(self, request: _Request, is_current: Callable[[], bool]) -> Decoded | None:
        key = (request.image_key, request.tiling)
        if self._tiled_key != key:
            self._tiled_key = None
            self._unreported = set()
            tile, halo = request.tiling
            tiled = TiledSegAnyPredictor(self._predictor, tile_shape=tile, halo=halo)
            tiled.set_image(
                request.plane.lazy(request.data), contrast_limits=request.contrast_limits
            )
            self._tiled, self._tiled_key = tiled, key
        self._image_key = None  # the predictor's current image is now a tile
        before = set(self._tiled.encoded_tiles)
        decoded = decode_tiled(self._tiled, request.prompts, self._unreported)
        if not is_current():
            self._unreported |= set(self._tiled.encoded_tiles) - before
            return None
        self._unreported = set()
        return decoded


@dataclass
class _Preview:
    request: _Request
    decoded: Decoded
    candidate: int = 0


def _route(grid: TileGrid, prompts: Prompts) -> tuple[Tile, ...]:
    """The tiles (or coarse windows) the prompts are decoded on, as decode_tiled does."""
    if len(prompts.boxes) > 1:
        best, whole = grid.best_tiles(prompts.boxes)
        tiles = [
            grid.tiles[int(index)] if ok else coarse_window(grid, box)
            for index, ok, box in zip(best, whole, prompts.boxes, strict=True)
        ]
        return tuple(dict.fromkeys(tiles))
    has_points = len(prompts.point_coords) > 0
    tile, _ = route_prompts(
        grid,
        prompts.point_coords if has_points else None,
        prompts.boxes[0] if len(prompts.boxes) else None,
    )
    return (tile,)


class SegAnyController:
    """The SegAny behaviour on a napari viewer, without Qt widgets.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers are segmented.

    Events
    ------
    ``events.status`` (``value``: a line for people), ``events.layers`` (the image, prompt
    or output layer changed), ``events.preview`` (a new preview or candidate),
    ``events.click_kind`` (what a plain click adds changed).

    Examples
    --------
    >>> controller = SegAnyController(viewer)  # doctest: +SKIP
    >>> controller.set_image(viewer.layers["cell"])  # doctest: +SKIP
    >>> controller.points.add([120, 80])  # preview in a thread worker  # doctest: +SKIP
    >>> controller.preview_ready  # once True, accept() writes the preview  # doctest: +SKIP
    True
    >>> controller.accept()  # doctest: +SKIP
    1
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        viewer = self.viewer = unproxied(viewer)
        self.events = EmitterGroup(
            source=self, status=Event, layers=Event, preview=Event, click_kind=Event
        )
        self.image: Image | None = None
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self.output: Labels | None = None
        self.preview_layer: Labels | None = None
        self.overwrite = False
        self.background_clicks = False
        self.tile_size = DEFAULT_TILE_SHAPE[0]
        self.halo = DEFAULT_HALO[0]
        self.level = 0
        self.preview: _Preview | None = None
        self.status = ""
        self._generation = 0
        self._image_version = 0
        self._engine = _PreviewEngine()
        self._drawn: tuple[Labels, Plane, tuple[int, int, int, int]] | None = None
        self._workers: set = set()
        self._shift_click = False

        viewer.dims.events.current_step.connect(self._on_view_changed)
        viewer.dims.events.ndisplay.connect(self._on_view_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        controller = weakref.ref(self)

        def accept_key(_viewer: napari.Viewer) -> None:
            if (alive := controller()) is not None:
                alive.accept()

        viewer.bind_key(ACCEPT_KEY, accept_key, overwrite=True)

    # ------------------------------------------------------------------ layers
    def set_image(self, layer: Image | None) -> None:
        """Segment ``layer``: find or create its prompt layers and select the points layer."""
        layer = unproxied(layer)
        if layer is self.image:
            return
        if self.image is not None:
            self.image.events.data.disconnect(self._on_image_changed)
            self.image.events.contrast_limits.disconnect(self._on_image_changed)
        self._clear_preview()
        self.image = layer
        self.level = 0
        self._image_version += 1
        if layer is None:
            self.events.layers()
            self.refresh()
            return
        layer.events.data.connect(self._on_image_changed)
        layer.events.contrast_limits.connect(self._on_image_changed)
        self.output = self._find(Labels, self._output_name(layer))
        self.set_points_layer(self._find(Points, f"{layer.name} prompts") or self._new_points())
        self.set_boxes_layer(self._find(Shapes, f"{layer.name} boxes") or self._new_boxes())
        self.viewer.layers.selection.active = self.points
        self.points.mode = "add"
        self.events.layers()
        self.refresh()

    def set_points_layer(self, layer: Points | None) -> None:
        """Use ``layer``'s points as point prompts."""
        layer = unproxied(layer)
        if layer is self.points:
            return
        if self.points is not None:
            self.points.events.data.disconnect(self._on_points_changed)
            self.points.events.features.disconnect(self._on_prompts_changed)
            self.points.bind_key(BACKGROUND_KEY, None)
            if self._on_points_press in self.points.mouse_drag_callbacks:
                self.points.mouse_drag_callbacks.remove(self._on_points_press)
        self.points = layer
        if layer is not None:
            layer.events.data.connect(self._on_points_changed)
            layer.events.features.connect(self._on_prompts_changed)
            layer.bind_key(BACKGROUND_KEY, self._toggle_click_kind, overwrite=True)
            layer.mouse_drag_callbacks.insert(0, self._on_points_press)
            self._apply_click_kind()
        self.events.layers()
        self.refresh()

    def set_boxes_layer(self, layer: Shapes | None) -> None:
        """Use ``layer``'s rectangles as box prompts."""
        layer = unproxied(layer)
        if layer is self.boxes:
            return
        if self.boxes is not None:
            self.boxes.events.data.disconnect(self._on_boxes_changed)
        self.boxes = layer
        if layer is not None:
            layer.events.data.connect(self._on_boxes_changed)
        self.events.layers()
        self.refresh()

    def set_output_layer(self, layer: Labels | None) -> None:
        """Write accepted objects into ``layer``; None creates ``"<image> labels"``."""
        self.output = unproxied(layer)
        self.events.layers()

    def set_tiling(self, tile_size: int | None = None, halo: int | None = None) -> None:
        """Tile size and halo (pixels) for planes larger than the model's 1024-pixel input.

        Checked when the next preview is computed: an invalid pair (a halo over half the
        tile) is reported in the status line.
        """
        if tile_size is not None:
            self.tile_size = int(tile_size)
        if halo is not None:
            self.halo = int(halo)
        self.refresh()

    def set_level(self, level: int) -> None:
        """Segment ``level`` of a multiscale image (0 = full resolution).

        The output becomes ``"<image> labels"`` for level 0 and ``"<image> labels level N"``
        for level N, shaped like that level.
        """
        level = int(level)
        if self.image is None or level == self.level:
            return
        level_data(self.image, level)  # raises PlaneError for a level that does not exist
        self._clear_preview()
        self.level = level
        self.output = self._find(Labels, self._output_name(self.image))
        self.events.layers()
        self.refresh()

    def _output_name(self, image: Image) -> str:
        if self.level:
            return f"{image.name} labels level {self.level}"
        return f"{image.name} labels"

    def _find(self, kind: type, name: str) -> Any:
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            return self.viewer.layers[name]
        return None

    def _new_points(self) -> Points:
        image = self.image
        size = max(3.0, min(spatial_shape(image)[-2:]) / 60)
        return self.viewer.add_points(
            np.zeros((0, image.ndim)),
            ndim=image.ndim,
            name=f"{image.name} prompts",
            features={PROMPT_FEATURE: np.zeros(0, dtype=object)},
            feature_defaults={PROMPT_FEATURE: FOREGROUND},
            face_color=PROMPT_FEATURE,
            face_color_cycle=PROMPT_COLORS,
            border_color="white",
            size=size,
            scale=image.scale,
            translate=image.translate,
            rotate=image.rotate,
            shear=image.shear,
            affine=image.affine,
        )

    def _new_boxes(self) -> Shapes:
        image = self.image
        boxes = self.viewer.add_shapes(
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

    # ------------------------------------------------------------- click kind
    def set_background_clicks(self, background: bool) -> None:
        """Make a plain click add background points (True) or foreground points (False)."""
        self.background_clicks = bool(background)
        self._apply_click_kind()
        self.events.click_kind(value=self.background_clicks)

    def _toggle_click_kind(self, _layer: Points) -> None:
        self.set_background_clicks(not self.background_clicks)

    def _apply_click_kind(self) -> None:
        if self.points is None or PROMPT_FEATURE not in self.points.features:
            return
        background = self.background_clicks != self._shift_click
        kind = BACKGROUND if background else FOREGROUND
        if self.points.feature_defaults[PROMPT_FEATURE].iloc[0] != kind:
            self.points.feature_defaults = {PROMPT_FEATURE: kind}

    def _on_points_press(self, layer: Points, event: Any) -> None:
        # napari adds the point on release, using feature_defaults; Shift flips the kind
        # for this click only, and the 'added' data event restores it.
        self._shift_click = layer.mode == "add" and "Shift" in event.modifiers
        self._apply_click_kind()

    # ----------------------------------------------------------------- events
    def _on_points_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "changed"))
        if action not in _FINISHED_EDITS:
            return
        if action == "added" and self._shift_click:
            self._shift_click = False
            self._apply_click_kind()
        self.refresh()

    def _on_boxes_changed(self, event: Any) -> None:
        if str(getattr(event, "action", "changed")) in _FINISHED_EDITS:
            self.refresh()

    def _on_prompts_changed(self, _event: Any = None) -> None:
        self.refresh()

    def _on_image_changed(self, _event: Any = None) -> None:
        self._image_version += 1
        self.refresh()

    def _on_view_changed(self, _event: Any = None) -> None:
        self.refresh()

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        if removed is self.image:
            self.set_image(None)
        if removed is self.points:
            self.set_points_layer(None)
        if removed is self.boxes:
            self.set_boxes_layer(None)
        if removed is self.output:
            self.set_output_layer(None)
        if removed is self.preview_layer:
            self.preview_layer = None
            self._drawn = None

    # ---------------------------------------------------------------- preview
    def collect_prompts(self, plane: Plane) -> Prompts:
        """The prompts of the prompt layers that lie on ``plane`` of the image."""
        point_coords = np.zeros((0, 2))
        point_labels = np.zeros(0, dtype=int)
        point_rows = np.zeros(0, dtype=int)
        if self.points is not None and len(self.points.data):
            coords = plane.from_layer(coords_in_image(self.points, self.image, self.points.data))
            point_rows = np.flatnonzero(plane.contains(coords))
            point_coords = plane.to_xy(coords[point_rows])
            if PROMPT_FEATURE in self.points.features:
                kinds = np.asarray(self.points.features[PROMPT_FEATURE])[point_rows]
                point_labels = (kinds != BACKGROUND).astype(int)
            else:
                point_labels = np.ones(len(point_rows), dtype=int)
        boxes = np.zeros((0, 4))
        box_rows = np.zeros(0, dtype=int)
        if self.boxes is not None and self.boxes.nshapes:
            found = []
            for row, (vertices, kind) in enumerate(
                zip(self.boxes.data, self.boxes.shape_type, strict=True)
            ):
                if kind != "rectangle":
                    continue
                corners = plane.from_layer(coords_in_image(self.boxes, self.image, vertices))
                if plane.contains(corners).all():
                    xy = plane.to_xy(corners)
                    found.append((row, [*xy.min(axis=0), *xy.max(axis=0)]))
            if found:
                box_rows = np.array([row for row, _ in found])
                boxes = np.array([box for _, box in found], dtype=float)
        return Prompts(point_coords, point_labels, boxes, point_rows, box_rows)

    def refresh(self) -> None:
        """Recompute the preview from the current prompts, in a thread worker."""
        self._generation += 1
        if self.image is None or not layer_in_viewer(self.viewer, self.image):
            self._clear_preview()
            self._set_status("Choose an image layer.")
            return
        try:
            plane = self._plane()
            prompts = self.collect_prompts(plane)
        except PlaneError as exc:
            self._clear_preview()
            self._set_status(str(exc))
            return
        if prompts.empty:
            self._clear_preview()
            self._set_status(
                "Click on an object to add a point, or draw a rectangle in the boxes layer."
            )
            return
        limits = model_contrast_limits(self.image)
        tiling, tiles, grid = None, (), None
        if needs_tiling(plane.size):
            tiling = (self.tile_size, self.halo)
            try:
                grid = TileGrid(plane.size, tile_shape=self.tile_size, halo=self.halo)
                tiles = _route(grid, prompts)
            except ValueError as exc:
                self._clear_preview()
                self._set_status(f"Cannot segment tile by tile: {exc}")
                return
        request = _Request(
            generation=self._generation,
            image=self.image,
            data=level_data(self.image, self.level),
            plane=plane,
            contrast_limits=limits,
            image_key=(id(self.image), self._image_version, plane.fixed, limits, self.level),
            prompts=prompts,
            level=self.level,
            tiling=tiling,
            tiles=tiles,
        )
        if tiling is None:
            to_encode = [] if self._engine.is_embedded(request.image_key) else [None]
        else:
            to_encode = self._engine.needs_encoding(request)
        generation = request.generation
        worker = create_worker(
            self._engine.run,
            request,
            lambda: self._generation == generation,
            _progress={"total": 0, "desc": "MobileSAM: image embedding"} if to_encode else None,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda decoded: self._on_decoded(request, decoded))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(lambda: self._workers.discard(worker))
        self._workers.add(worker)
        where = plane.describe()
        where = f" {where}" if where else ""
        if self.level:
            where += f" at level {self.level}"
        if to_encode and tiling is None:
            self._set_status(
                f"Computing the image embedding of {self.image.name!r}{where} (once per plane)..."
            )
        elif len(to_encode) == 1:
            self._set_status(
                f"Encoding {describe_tile(grid, to_encode[0])} of {self.image.name!r}{where} "
                "(once per tile)..."
            )
        elif to_encode:
            rows, cols = grid.grid_shape
            self._set_status(
                f"Encoding {len(to_encode)} tiles of {rows}×{cols} of {self.image.name!r}"
                f"{where} (once per tile)..."
            )
        else:
            self._set_status("Updating the preview...")
        worker.start()

    def _plane(self) -> Plane:
        """The plane on screen, at the chosen level of a multiscale image."""
        level = self.level if self.image.multiscale else None
        return displayed_plane(self.viewer, self.image, level)

    @property
    def busy(self) -> bool:
        """Whether a preview is being computed."""
        return bool(self._workers)

    @property
    def preview_ready(self) -> bool:
        """Whether the preview shown is the one of the current prompts (none pending)."""
        return self.preview is not None and self.preview.request.generation == self._generation

    def _on_decoded(self, request: _Request, decoded: Decoded | str | None) -> None:
        if decoded is None or request.generation != self._generation:
            return
        if isinstance(decoded, str):
            self._clear_preview()
            self._set_status(f"Segmentation failed: {decoded}")
            show_error(f"SegAny: {decoded}")
            return
        if request.image is not self.image or not layer_in_viewer(self.viewer, request.image):
            return
        self.preview = _Preview(request, decoded)
        self._draw_preview()
        self.events.preview()

    def _on_worker_error(self, exc: Exception) -> None:
        # napari's worker has already shown the error with its traceback.
        self._set_status(f"Segmentation failed: {exc}")

    def select_candidate(self, candidate: int) -> None:
        """Show the ``candidate``-th best mask of a multimask preview (0 = best)."""
        if self.preview is None or self.preview.decoded.separate_objects:
            return
        if not 0 <= candidate < len(self.preview.decoded.scores):
            raise ValueError(
                f"Expected a candidate index in 0..{len(self.preview.decoded.scores) - 1}; "
                f"received {candidate}."
            )
        self.preview.candidate = candidate
        self._draw_preview()
        self.events.preview()

    def _preview_layer(self, level: int) -> Labels:
        layer = self.preview_layer
        shape = spatial_shape(self.image, level)
        if layer_in_viewer(self.viewer, layer) and layer.data.shape != shape:
            # Another level of a multiscale image: reshape the layer we have.
            self._erase_drawn()
            layer.data = np.zeros(shape, dtype=np.uint16)
            downsample = level_downsample(self.image, level) if level else 1.0
            layer.scale = np.asarray(self.image.scale, dtype=float) * downsample
        if not layer_in_viewer(self.viewer, layer):
            layer = labels_for(
                self.image,
                np.zeros(shape, dtype=np.uint16),
                f"{self.image.name} preview",
                level,
            )
            layer.opacity = 0.5
            layer.metadata[PREVIEW_TAG] = True
            active = self.viewer.layers.selection.active
            self.viewer.layers.insert(self.viewer.layers.index(self.image) + 1, layer)
            self.viewer.layers.selection.active = active
            self.preview_layer = layer
            self._drawn = None
        return layer

    def _draw_preview(self) -> None:
        preview = self.preview
        layer = self._preview_layer(preview.request.level)
        self._erase_drawn()
        plane = preview.request.plane
        window = preview.decoded.region
        layer.data[plane.region_index(window)] = preview.decoded.label_image(preview.candidate)
        self._drawn = (layer, plane, window)
        layer.refresh()
        self._set_status(self._describe_preview())

    def _describe_preview(self) -> str:
        preview = self.preview
        decoded = preview.decoded
        if decoded.separate_objects:
            text = f"Preview: {len(decoded.scores)} objects, one per rectangle."
        else:
            score = decoded.scores[decoded.ranking[preview.candidate]]
            text = (
                f"Preview: mask {preview.candidate + 1} of {len(decoded.scores)}, IoU {score:.2f}."
            )
        if preview.request.prompts.points_ignored:
            text += " Points are not used with several rectangles."
        if decoded.note:
            text += f" {decoded.note}"
        return text + " Accept: Ctrl+Enter."

    def _erase_drawn(self) -> None:
        if self._drawn is None:
            return
        layer, plane, window = self._drawn
        if layer_in_viewer(self.viewer, layer) and layer.data.shape == plane.shape:
            layer.data[plane.region_index(window)] = 0
            layer.refresh()
        self._drawn = None

    def _clear_preview(self) -> None:
        if self.preview is None and self._drawn is None:
            return
        self.preview = None
        self._erase_drawn()
        self.events.preview()

    # ---------------------------------------------------------- accept, clear
    def accept(self) -> int:
        """Write the preview into the output labels under new ids; return how many objects.

        Only pixels that are 0 in the output are written unless :attr:`overwrite` is set.
        The prompts that made the preview are then removed.
        """
        preview = self.preview
        if preview is None:
            self._set_status("Nothing to accept yet: add a point or a rectangle first.")
            return 0
        if not self.preview_ready:
            self._set_status("The preview is being updated; accept once it is shown.")
            return 0
        image, plane = preview.request.image, preview.request.plane
        output = self._output_layer(image, preview.request.level)
        if output is None:
            return 0
        window = preview.decoded.region
        region = plane.region_index(window)
        existing = np.asarray(output.data[region])
        writable = np.ones(existing.shape, dtype=bool) if self.overwrite else existing == 0
        next_id = int(output.data.max()) + 1
        new_labels = np.zeros(existing.shape, dtype=output.data.dtype)
        for mask in preview.decoded.object_masks(preview.candidate):
            pixels = mask & writable & (new_labels == 0)
            if pixels.any():
                new_labels[pixels] = next_id
                next_id += 1
        written = len(np.unique(new_labels)) - 1
        if written:
            pixels = new_labels > 0
            output.data_setitem(
                plane.data_indices(pixels, offset=(window[0], window[2])), new_labels[pixels]
            )
        self._remove_prompts(preview.request.prompts)
        if written:
            self._set_status(
                f"Added {written} object(s) to {output.name!r}, last id {next_id - 1}."
            )
        else:
            self._set_status(
                "Nothing was written: the mask only covers pixels that are already labelled "
                "(tick 'overwrite existing labels' to replace them)."
            )
        return written

    def clear(self) -> None:
        """Discard the prompts on the plane on screen and the preview."""
        if self.image is None:
            return
        try:
            plane = self._plane()
        except PlaneError as exc:
            self._set_status(str(exc))
            return
        self._remove_prompts(self.collect_prompts(plane))
        self._clear_preview()

    def _remove_prompts(self, prompts: Prompts) -> None:
        if self.points is not None and len(prompts.point_rows):
            self.points.remove(list(prompts.point_rows))
        if self.boxes is not None and len(prompts.box_rows):
            self.boxes.selected_data = set(prompts.box_rows.tolist())
            self.boxes.remove_selected()

    def _output_layer(self, image: Image, level: int = 0) -> Labels | None:
        output = self.output
        shape = spatial_shape(image, level)
        if output is not None and layer_in_viewer(self.viewer, output):
            if output.data.shape != shape:
                at_level = f" at level {level}" if level else ""
                message = (
                    f"The output layer {output.name!r} has shape {output.data.shape}, but the "
                    f"image {image.name!r}{at_level} has shape {shape}; choose another "
                    "output layer or '(new layer)'."
                )
                self._set_status(message)
                show_error(message)
                return None
            return output
        output = labels_for(
            image, np.zeros(shape, dtype=np.int32), self._output_name(image), level
        )
        active = self.viewer.layers.selection.active
        self.viewer.layers.insert(self.viewer.layers.index(image) + 1, output)
        self.viewer.layers.selection.active = active
        self.set_output_layer(output)
        return output

    def _set_status(self, text: str) -> None:
        self.status = text
        self.events.status(value=text)


class SegAnyWidget(Container):
    """Dock widget for SegAny (MobileSAM): prompts in, labels out.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to work on; napari passes it when the widget is opened from the
        Plugins menu.

    Examples
    --------
    >>> widget = SegAnyWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget, name="SegAny (MobileSAM)")  # doctest: +SKIP
    >>> widget.controller.set_image(viewer.layers["cell"])  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = self.viewer = unproxied(viewer)
        self.controller = SegAnyController(viewer)
        self._image = ComboBox(label="Image", nullable=True, choices=self._choices(Image))
        self._points = ComboBox(
            label="Point prompts", nullable=True, choices=self._choices(Points)
        )
        self._boxes = ComboBox(label="Box prompts", nullable=True, choices=self._choices(Shapes))
        self._click = RadioButtons(
            label="Click adds",
            choices=[FOREGROUND, BACKGROUND],
            value=FOREGROUND,
            orientation="horizontal",
            tooltip="B (points layer selected) switches; Shift-click adds the other kind",
        )
        self._candidate = ComboBox(label="Mask", choices=[], tooltip="Candidate masks by IoU")
        self._output = ComboBox(
            label="Output",
            choices=self._choices(Labels, outputs=True),
            tooltip="Labels layer that accepted objects go to; '(new layer)' makes one",
        )
        self._overwrite = CheckBox(text="Overwrite existing labels", value=False)
        self._level = ComboBox(
            label="Level",
            choices=self._level_choices,
            tooltip="Resolution level of a multiscale image to segment (0 = full resolution, "
            "tile by tile)",
        )
        tiling_tip = (
            "Planes larger than 1024 px on a side are segmented tile by tile: each object on "
            "the tile that holds its prompts, encoded at full resolution when first used. "
            "Tile + 2 × halo = 1024 (the defaults) is the model's input size."
        )
        self._tile_size = SpinBox(
            label="Tile size (px)",
            value=DEFAULT_TILE_SHAPE[0],
            min=64,
            max=8192,
            step=64,
            tooltip=tiling_tip,
        )
        self._halo = SpinBox(
            label="Tile halo (px)",
            value=DEFAULT_HALO[0],
            min=0,
            max=4096,
            step=16,
            tooltip="Pixels added on each side of a tile (at most half the tile). " + tiling_tip,
        )
        self._accept = PushButton(text="Accept (Ctrl+Enter)")
        self._clear = PushButton(text="Clear prompts")
        self._status = Label(value="")
        super().__init__(
            widgets=[
                self._image,
                self._points,
                self._boxes,
                self._click,
                self._candidate,
                self._output,
                self._overwrite,
                self._level,
                self._tile_size,
                self._halo,
                Container(widgets=[self._accept, self._clear], layout="horizontal", labels=False),
                self._status,
            ]
        )
        self._status.native.setWordWrap(True)

        self._image.changed.connect(self.controller.set_image)
        self._points.changed.connect(self.controller.set_points_layer)
        self._boxes.changed.connect(self.controller.set_boxes_layer)
        self._output.changed.connect(
            lambda value: self.controller.set_output_layer(None if value == NEW_LAYER else value)
        )
        self._overwrite.changed.connect(self._on_overwrite)
        self._level.changed.connect(self._on_level)
        self._tile_size.changed.connect(lambda value: self.controller.set_tiling(tile_size=value))
        self._halo.changed.connect(lambda value: self.controller.set_tiling(halo=value))
        self._click.changed.connect(
            lambda value: self.controller.set_background_clicks(value == BACKGROUND)
        )
        self._candidate.changed.connect(self._on_candidate)
        self._accept.changed.connect(self.controller.accept)
        self._clear.changed.connect(self.controller.clear)
        self.controller.events.status.connect(lambda event: self._status.set_value(event.value))
        self.controller.events.layers.connect(self._sync_layers)
        self.controller.events.preview.connect(self._sync_candidates)
        self.controller.events.click_kind.connect(
            lambda event: self._click.set_value(BACKGROUND if event.value else FOREGROUND)
        )
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self.reset_choices)
        self.reset_choices()
        active = viewer.layers.selection.active
        images = [layer for layer in viewer.layers if isinstance(layer, Image)]
        if images:
            self._image.value = active if isinstance(active, Image) else images[-1]

    def _choices(self, kind: type, outputs: bool = False) -> Callable[[Any], list]:
        def choices(_widget: Any) -> list[tuple[str, Any]]:
            layers = [
                (layer.name, layer)
                for layer in self.viewer.layers
                if isinstance(layer, kind) and not (outputs and PREVIEW_TAG in layer.metadata)
            ]
            return [(NEW_LAYER, NEW_LAYER), *layers] if outputs else layers

        return choices

    def _sync_layers(self, _event: Any = None) -> None:
        self.reset_choices()
        controller = self.controller
        for combo, layer in (
            (self._image, controller.image),
            (self._points, controller.points),
            (self._boxes, controller.boxes),
            (self._output, NEW_LAYER if controller.output is None else controller.output),
        ):
            if combo.value is not layer:
                with combo.changed.blocked():
                    combo.value = layer
        self._sync_levels()

    def _level_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        image = self.controller.image
        count = level_count(image) if image is not None else 0
        choices: list[tuple[str, int]] = []
        for level in range(count):
            rows, cols = spatial_shape(image, level)[-2:]
            full = " (full resolution)" if level == 0 else ""
            choices.append((f"{level}: {rows}×{cols}{full}", level))
        return choices

    def _sync_levels(self) -> None:
        with self._level.changed.blocked():
            self._level.reset_choices()
            if self._level.choices:
                self._level.value = self.controller.level
        image = self.controller.image
        self._level.visible = image is not None and level_count(image) > 1

    def _sync_candidates(self, _event: Any = None) -> None:
        preview = self.controller.preview
        choices: list[tuple[str, int]] = []
        if preview is not None and not preview.decoded.separate_objects:
            scores = preview.decoded.scores[preview.decoded.ranking]
            choices = [
                (f"{rank + 1}: IoU {score:.2f}{' (best)' if rank == 0 else ''}", rank)
                for rank, score in enumerate(scores)
            ]
        with self._candidate.changed.blocked():
            self._candidate.choices = choices
            if preview is not None and choices:
                self._candidate.value = preview.candidate
        self._candidate.enabled = len(choices) > 1

    def _on_candidate(self, candidate: int | None) -> None:
        if candidate is not None:
            self.controller.select_candidate(candidate)

    def _on_level(self, level: int | None) -> None:
        if level is not None:
            self.controller.set_level(level)

    def _on_overwrite(self, value: bool) -> None:
        self.controller.overwrite = bool(value)
