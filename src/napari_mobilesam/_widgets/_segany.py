"""SegAny: segment one object at a time from point and box prompts, with a live preview.

:class:`SegAnyController` holds the behaviour and talks to napari layers only, so tests and
scripts can drive it through layer data; the dock widget around it is
:class:`~napari_mobilesam._widgets._segany_widget.SegAnyWidget`.

The prompt layers and clicks are those of
:class:`~napari_mobilesam._widgets._segany_layers.SegAnyLayers`; how the prompts become
objects is the rule of :mod:`napari_mobilesam.segany.prompts` (no rectangle: the points
make one object, one point alone gives three candidate masks, the best shown and the
others to pick; one rectangle: it and the points make one object; several rectangles: each
is its own object, and points are not used).

Large planes (a side longer than the model's 1024-pixel input) are segmented tile by tile
(:mod:`napari_mobilesam.segany.tiled`): the prompts of an object are decoded on the tile
that holds them with the most margin, encoded at full resolution the first time it is
used; a box larger than a tile is decoded on a coarser view. Multiscale (pyramid) layers
are segmented at a chosen level (default 0, full resolution, tiled); prompts are in the
layer's data coordinates (level 0) and are scaled to the level, and the preview and output
labels have the level's shape, scaled to overlay the image.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error

from napari_mobilesam._widgets._errors import report_bug
from napari_mobilesam._widgets._label_ids import NextLabelId
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    displayed_plane,
    layer_in_viewer,
    level_data,
    model_contrast_limits,
)
from napari_mobilesam._widgets._preview_canvas import PreviewCanvas, describe_preview
from napari_mobilesam._widgets._propagate import PROPAGATE_KEY, PropagationJob, Propagator
from napari_mobilesam._widgets._segany_decoding import (
    Decoded,
    DecodeRequest,
    Preview,
    PreviewEngine,
)
from napari_mobilesam._widgets._segany_layers import SegAnyLayers
from napari_mobilesam._widgets._workers import stoppable_worker
from napari_mobilesam.errors import UserInputError
from napari_mobilesam.imaging.tiling import (
    DEFAULT_HALO,
    DEFAULT_TILE_SHAPE,
    Tile,
    TileGrid,
    needs_tiling,
)
from napari_mobilesam.segany.prompts import prompt_tiles
from napari_mobilesam.segany.tiled import describe_tile

if TYPE_CHECKING:
    import napari


ACCEPT_KEY = "Control-Enter"


class SegAnyController(SegAnyLayers):
    """The SegAny behaviour on a napari viewer, without Qt widgets.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers are segmented.

    Events
    ------
    Those of :class:`~napari_mobilesam._widgets._segany_layers.SegAnyLayers`, and
    ``events.preview`` (a new preview or candidate) and ``events.propagation`` (``value``:
    whether a propagation is running).

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
        super().__init__(viewer)
        viewer = self.viewer
        self.overwrite = False
        self.tile_size = DEFAULT_TILE_SHAPE[0]
        self.halo = DEFAULT_HALO[0]
        #: The axis Propagate walks along; None: the slider moved last (3-D: the depth).
        self.stack_axis: int | None = None
        self.preview: Preview | None = None
        self._generation = 0
        self._engine = PreviewEngine()
        self._canvas = PreviewCanvas(viewer)
        #: Hands out the ids of accepted and propagated objects.
        self.label_ids = NextLabelId()
        self._workers: set = set()
        #: Whether napari (or the widget) was closed: runs are cancelled, nothing is shown.
        self.closed = False
        self.propagator = Propagator(self)
        controller = weakref.ref(self)

        def accept_key(_viewer: napari.Viewer) -> None:
            if (alive := controller()) is not None:
                alive.accept()

        def propagate_key(_viewer: napari.Viewer) -> None:
            if (alive := controller()) is not None:
                alive.propagate()

        viewer.bind_key(ACCEPT_KEY, accept_key, overwrite=True)
        viewer.bind_key(PROPAGATE_KEY, propagate_key, overwrite=True)

    # ---------------------------------------------------------------- preview
    def _on_layer_removed(self, event: Any) -> None:
        super()._on_layer_removed(event)
        self._canvas.forget(event.value)

    @property
    def preview_layer(self) -> Labels | None:
        """The ``"<image> preview"`` labels layer, once a preview was shown."""
        return self._canvas.layer

    def refresh(self) -> None:
        """Recompute the preview from the current prompts, in a thread worker."""
        self._generation += 1
        prepared = self._request()
        if prepared is None:
            return
        request, grid = prepared
        if request.tiling is None:
            to_encode = [] if self._engine.is_embedded(request.image_key) else [None]
        else:
            to_encode = self._engine.needs_encoding(request)
        worker = stoppable_worker(
            self._engine.run,
            request,
            lambda: self._generation == request.generation,
            on_quit=self.close,
            _progress={"total": 0, "desc": "MobileSAM: image embedding"} if to_encode else None,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda decoded: self._on_decoded(request, decoded))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(lambda: self._workers.discard(worker))
        self._workers.add(worker)
        self.set_status(self._encoding_status(request, grid, to_encode))
        worker.start()

    def _request(self) -> tuple[DecodeRequest, TileGrid | None] | None:
        """The preview request of the prompts on screen (and the tile grid of a large
        plane); None, with the reason in the status line, when there is nothing to decode."""
        if self.image is None or not layer_in_viewer(self.viewer, self.image):
            self._stop_preview("Choose an image layer.")
            return None
        try:
            plane = self._plane()
            prompts = self.collect_prompts(plane)
        except PlaneError as exc:
            self._stop_preview(str(exc))
            return None
        if prompts.empty:
            self._stop_preview(
                "Click on an object to add a point, or draw a rectangle in the boxes layer."
            )
            return None
        tiling, tiles, grid = None, (), None
        if needs_tiling(plane.size):
            tiling = (self.tile_size, self.halo)
            try:
                grid = TileGrid(plane.size, tile_shape=self.tile_size, halo=self.halo)
                tiles = prompt_tiles(grid, prompts)
            except UserInputError as exc:
                self._stop_preview(f"Cannot segment tile by tile: {exc}")
                return None
        limits = model_contrast_limits(self.image)
        request = DecodeRequest(
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
        return request, grid

    def _stop_preview(self, reason: str) -> None:
        self.clear_preview()
        self.set_status(reason)

    def _encoding_status(
        self, request: DecodeRequest, grid: TileGrid | None, to_encode: list[Tile | None]
    ) -> str:
        """The status line while a preview is computed: what is encoded, if anything."""
        where = request.plane.describe()
        where = f" {where}" if where else ""
        if self.level:
            where += f" at level {self.level}"
        name = request.image.name
        if to_encode and request.tiling is None:
            return f"Computing the image embedding of {name!r}{where} (once per plane)..."
        if len(to_encode) == 1:
            tile = describe_tile(grid, to_encode[0])
            return f"Encoding {tile} of {name!r}{where} (once per tile)..."
        if to_encode:
            rows, cols = grid.grid_shape
            return (
                f"Encoding {len(to_encode)} tiles of {rows}×{cols} of {name!r}{where} "
                "(once per tile)..."
            )
        return "Updating the preview..."

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

    def _on_decoded(self, request: DecodeRequest, decoded: Decoded | str | None) -> None:
        if decoded is None or request.generation != self._generation:
            return
        if isinstance(decoded, str):
            self.clear_preview()
            self.set_status(f"Segmentation failed: {decoded}")
            show_error(f"SegAny: {decoded}")
            return
        if request.image is not self.image or not layer_in_viewer(self.viewer, request.image):
            return
        self.preview = Preview(request, decoded)
        self._draw_preview()
        self.events.preview()

    def _on_worker_error(self, exc: Exception) -> None:
        if not self.closed:
            self.set_status(report_bug("Segmentation", exc))

    def close(self) -> None:
        """napari (or the widget) is closing: drop the preview being computed, cancel a
        propagation, and emit nothing more (the widgets are gone)."""
        self.closed = True
        self._generation += 1
        self.events.disconnect()
        self.propagator.close()

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

    def _draw_preview(self) -> None:
        self._canvas.draw(self.image, self.preview)
        text, warning = describe_preview(self.preview), self.preview.decoded.warning
        if warning:
            text = f"Some pixels are NaN or infinite (see Details). {text}"
        self.set_status(text, warning)

    def clear_preview(self) -> None:
        """Remove the preview (the prompts stay)."""
        if self.preview is None and not self._canvas.drawn:
            return
        self.preview = None
        self._canvas.erase()
        self.events.preview()

    # ---------------------------------------------------------- accept, clear
    def accept(self) -> int:
        """Write the preview into the output labels under new ids; return how many objects.

        Only pixels that are 0 in the output are written unless :attr:`overwrite` is set.
        The prompts that made the preview are then removed.
        """
        preview = self.preview
        if preview is None:
            self.set_status("Nothing to accept yet: add a point or a rectangle first.")
            return 0
        if not self.preview_ready:
            self.set_status("The preview is being updated; accept once it is shown.")
            return 0
        image, plane = preview.request.image, preview.request.plane
        output = self.output_layer(image, preview.request.level)
        if output is None:
            return 0
        window = preview.decoded.region
        written, last = self._write_objects(output, plane, window, preview)
        self.remove_prompts(preview.request.prompts)
        if written:
            self.set_status(f"Added {written} object(s) to {output.name!r}, last id {last}.")
        else:
            self.set_status(
                "Nothing was written: the mask only covers pixels that are already labelled "
                "(tick 'overwrite existing labels' to replace them)."
            )
        return written

    def _write_objects(
        self, output: Labels, plane: Plane, window: tuple[int, int, int, int], preview: Preview
    ) -> tuple[int, int]:
        """Write the preview's objects into ``output`` under new ids, as one undo step.

        Returns how many objects were written and the last id.
        """
        existing = np.asarray(output.data[plane.region_index(window)])
        writable = np.ones(existing.shape, dtype=bool) if self.overwrite else existing == 0
        next_id = self.label_ids.next_id(output, existing)
        new_labels = np.zeros(existing.shape, dtype=output.data.dtype)
        for mask in preview.decoded.object_masks(preview.candidate):
            pixels = mask & writable & (new_labels == 0)
            if pixels.any():
                new_labels[pixels] = next_id
                next_id += 1
        written = len(np.unique(new_labels)) - 1
        if written:
            pixels = new_labels > 0
            with self.label_ids.writing(output):
                output.data_setitem(
                    plane.data_indices(pixels, offset=(window[0], window[2])), new_labels[pixels]
                )
            self.label_ids.used(output, next_id - 1)
        return written, next_id - 1

    def propagate(self, axis: int | None = None) -> PropagationJob | None:
        """Propagate the object of the current prompts through the stack (Ctrl+P).

        The prompts on every slice along ``axis`` (default: the slider of the plane on
        screen, see :mod:`~napari_mobilesam._widgets._propagate`) are segmented and the
        object followed slice by slice in a thread worker; it is written under one new id
        (one undo step) when the run ends. Returns the job, or None with an error
        notification for a 2-D image, an axis not in the layer or no prompts.
        """
        return self.propagator.start(axis)

    def cancel_propagation(self) -> None:
        """Cancel a running propagation: the labels layer is left as it was."""
        self.propagator.cancel()

    def clear(self) -> None:
        """Discard the prompts on the plane on screen and the preview."""
        if self.image is None:
            return
        try:
            plane = self._plane()
        except PlaneError as exc:
            self.set_status(str(exc))
            return
        self.remove_prompts(self.collect_prompts(plane))
        self.clear_preview()
