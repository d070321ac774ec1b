"""The SegEvery dock widget: a magicgui Container that starts :class:`SegEveryJob` runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    RadioButtons,
    SpinBox,
)
from napari.layers import Image
from napari.utils.notifications import show_error, show_info

from napari_mobilesam._widgets._engine import EngineField, first_use
from napari_mobilesam._widgets._plane import (
    PlaneError,
    plane_is_tiled,
    spatial_shape,
    unproxied,
)
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import (
    ALL_PLANES,
    DECODERS,
    DETECTORS,
    HALO,
    LINKING,
    THIS_PLANE,
    TILE_SIZE,
    TILING,
    SegEverySettings,
)
from napari_mobilesam._widgets._stack_axes import axis_label, is_time_axis
from napari_mobilesam._widgets._status import StatusLine
from napari_mobilesam.segevery.options import SegEveryOptions
from napari_mobilesam.stacks.link_options import LinkOptions

if TYPE_CHECKING:
    import napari


#: Shown on the YOLO file field: ultralytics unpickles a .pt file, which can run code.
YOLO_FILE_TOOLTIP = (
    "A YOLO detection or segmentation checkpoint (.pt), or its ONNX export (.onnx). Warning: "
    "ultralytics loads a .pt file with Python's pickle, which can run code stored in the "
    "file; only choose .pt files from a source you trust. ONNX files cannot run code: export "
    'one with YOLO("best.pt").export(format="onnx") where you trust the .pt file (needs '
    'pip install "napari-mobilesam[onnx]").'
)
#: File types the YOLO file field offers.
YOLO_FILE_FILTER = "*.pt *.onnx"


class SegEveryWidget(Container):
    """Dock widget for SegEvery (MobileSAMv2): every object of an image, one Labels layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to work on; napari passes it when the widget is opened from the
        Plugins menu.

    Examples
    --------
    >>> widget = SegEveryWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget, name="SegEvery (MobileSAMv2)")  # doctest: +SKIP
    >>> job = widget.run()  # the "<image> objects" layer appears when it ends  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = self.viewer = unproxied(viewer)
        self.job: SegEveryJob | None = None
        self._image = ComboBox(label="Image", nullable=True, choices=self._image_choices)
        self._make_segevery_fields()
        self._make_plane_fields()
        self._run = PushButton(text="Run")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._status = StatusLine()
        self._engine = EngineField(self._status)
        super().__init__(
            widgets=[
                self._image,
                self._detector,
                self._detector_file,
                self._decoder,
                self._conf,
                self._iou,
                self._max_objects,
                self._min_area,
                self._points_per_side,
                self._level,
                self._tiling,
                self._tile_size,
                self._halo,
                self._scope,
                self._link,
                self._link_axis,
                self._search_radius,
                self._max_gap,
                self._neck_ratio,
                self._engine.combo,
                Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False),
            ]
        )
        self.native.layout().addWidget(self._status)
        self._detector.changed.connect(self._on_detector)
        self._image.changed.connect(self._on_image)
        self._tiling.changed.connect(self._on_tiling)
        self._level.changed.connect(self._sync_tiling)
        self._scope.changed.connect(self._sync_link)
        self._link_axis.changed.connect(self._on_link_axis)
        viewer.dims.events.ndisplay.connect(self._sync_link)
        viewer.dims.events.order.connect(self._sync_link)
        viewer.dims.events.order.connect(self._sync_tiling)
        self._run.changed.connect(self.run)
        self.native.destroyed.connect(lambda *_: self._close_job())
        self._cancel.changed.connect(self.cancel)
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self.reset_choices)
        self.reset_choices()
        active = viewer.layers.selection.active
        images = [layer for layer in viewer.layers if isinstance(layer, Image)]
        if images:
            self._image.value = active if isinstance(active, Image) else images[-1]
        self._on_image(self._image.value)

    def _make_segevery_fields(self) -> None:
        """The fields of the SegEvery options, at their defaults."""
        defaults = SegEveryOptions()
        self._detector = ComboBox(label="Detector", choices=list(DETECTORS.items()), value="auto")
        self._detector_file = FileEdit(
            label="YOLO file", mode="r", filter=YOLO_FILE_FILTER, visible=False, nullable=True
        )
        self._detector_file.tooltip = YOLO_FILE_TOOLTIP
        self._decoder = ComboBox(label="Decoder", choices=list(DECODERS.items()), value="auto")
        self._decoder.tooltip = (
            "What decodes the detector's boxes into masks. MobileSAMv2 uses its "
            "prompt-guided decoder (Prompt_guided_Mask_Decoder.pt, downloaded once); auto "
            "falls back to mobile_sam.pt's decoder when it is not available, and says so."
        )
        self._conf = FloatSpinBox(label="conf", min=0.0, max=1.0, step=0.05, value=defaults.conf)
        self._iou = FloatSpinBox(label="iou", min=0.0, max=1.0, step=0.05, value=defaults.iou)
        self._max_objects = SpinBox(
            label="max objects", min=1, max=10_000, value=defaults.max_objects
        )
        self._min_area = SpinBox(
            label="min area (px)", min=0, max=100_000_000, value=defaults.min_area
        )
        self._points_per_side = SpinBox(
            label="grid points per side",
            min=1,
            max=128,
            value=defaults.points_per_side,
            visible=False,
        )

    def _make_plane_fields(self) -> None:
        """The fields of which planes are segmented, how they are tiled and linked."""
        self._level = ComboBox(label="Level", choices=self._level_choices, visible=False)
        self._level.tooltip = (
            "Resolution level of the multiscale image to segment (0 = full resolution). "
            "The labels have that level's size, drawn over the image at its scale."
        )
        self._tiling = ComboBox(label="Tiling", choices=list(TILING), value="auto")
        self._tiling.tooltip = (
            "auto: planes with a side longer than the model's 1024-pixel input are cut into "
            "tiles, each encoded at full resolution; off: the plane is resized to 1024 "
            "pixels (one embedding: fastest, coarse objects)."
        )
        self._tile_size = SpinBox(
            label="tile size (px)", min=64, max=8192, step=64, value=TILE_SIZE
        )
        self._tile_size.tooltip = f"Side of each tile before its halo (default {TILE_SIZE})."
        self._halo = SpinBox(label="tile halo (px)", min=0, max=4096, step=16, value=HALO)
        self._halo.tooltip = (
            f"Margin read on each side of a tile (default {HALO}, at most half the tile): "
            "objects up to twice this size are never cut by a seam."
        )
        self._scope = RadioButtons(
            label="Scope",
            choices=[THIS_PLANE, ALL_PLANES],
            value=THIS_PLANE,
            orientation="horizontal",
        )
        self._link = ComboBox(
            label="Link across slices",
            choices=[(name, mode) for name, mode in LINKING.items()],
            value="z",
            tooltip="All slices: give each object one id through the stack, as a 3-D object "
            "(Z) or a track that follows its motion (T). Default: tracks for an axis labelled "
            "t or time, else 3-D objects.",
        )
        self._link_axis = ComboBox(label="Link along", choices=self._link_axis_choices)
        self._search_radius = FloatSpinBox(
            label="Search radius", value=0.0, min=0.0, max=1e5, step=1.0,
            tooltip="Tracks: how far (layer units) a cell may be from where its velocity puts "
            "it on the next frame. 0: 3 median object radii.",
        )  # fmt: skip
        self._max_gap = SpinBox(
            label="Max gap", value=1, min=0, max=20,
            tooltip="Slices an object may be missed on and keep its id.",
        )  # fmt: skip
        self._neck_ratio = FloatSpinBox(
            label="Neck ratio", value=0.5, min=0.0, max=0.95, step=0.05,
            tooltip="3-D objects: cut a chain of sections whose area falls below this "
            "fraction of the peaks on both sides (nuclei stacked in Z). 0: never.",
        )  # fmt: skip

    def _on_image(self, image: Image | None) -> None:
        self._scope.visible = image is not None and len(spatial_shape(image)) > 2
        if not self._scope.visible:
            self._scope.value = THIS_PLANE
        self._sync_link()
        self._level.reset_choices()
        self._level.visible = image is not None and image.multiscale
        if self._level.choices:
            self._level.value = 0
        self._sync_tiling()

    def _sync_tiling(self, _event: Any = None) -> None:
        """Show the tile settings only for an image whose planes will be tiled."""
        if not hasattr(self, "_level"):
            return
        tiled = plane_is_tiled(self.viewer, self._image.value, int(self._level.value or 0))
        self._tiled = tiled
        self._tiling.visible = tiled
        self._on_tiling(self._tiling.value)

    def _link_axis_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        image = self._image.value if hasattr(self, "_image") else None
        if image is None or self.viewer.dims.ndisplay != 2:
            return []
        shape = spatial_shape(image)
        leading = self.viewer.dims.ndim - len(shape)
        displayed = {axis - leading for axis in self.viewer.dims.displayed}
        return [
            (f"{axis_label(self.viewer, image, axis)} (axis {axis}, {shape[axis]})", axis)
            for axis in range(len(shape))
            if axis not in displayed
        ]

    def _sync_link(self, _event: Any = None) -> None:
        """Show the link choices for "all slices" of a stack; pick the innermost axis."""
        if not hasattr(self, "_link_axis"):
            return
        with self._link_axis.changed.blocked():
            self._link_axis.reset_choices()
            choices = list(self._link_axis.choices)
            if choices and self._link_axis.value not in choices:
                self._link_axis.value = choices[-1]
        stack = self._scope.value == ALL_PLANES and bool(choices)
        self._link.visible = stack
        self._link_axis.visible = stack and len(choices) > 1
        for widget in (self._search_radius, self._max_gap, self._neck_ratio):
            widget.visible = stack
        if choices:
            self._on_link_axis(self._link_axis.value)

    def _on_link_axis(self, axis: int | None) -> None:
        """The default link for the axis: tracks for a time axis, else 3-D objects."""
        image = self._image.value
        if axis is None or image is None or self._link.value == "off":
            return
        self._link.value = "t" if is_time_axis(self.viewer, image, axis) else "z"

    def _on_tiling(self, tiling: str) -> None:
        tiled = getattr(self, "_tiled", True)
        self._tile_size.visible = self._halo.visible = tiled and tiling != "off"

    def _level_choices(self, _widget: Any) -> list[tuple[str, int]]:
        image = self._image.value if hasattr(self, "_image") else None
        if image is None or not image.multiscale:
            return [("0", 0)]
        return [
            (f"{level}: " + " x ".join(str(side) for side in data.shape[: image.ndim]), level)
            for level, data in enumerate(image.data)
        ]

    def _on_detector(self, detector: str) -> None:
        self._detector_file.visible = detector == "file"
        self._points_per_side.visible = detector == "grid"
        self._decoder.visible = detector != "grid"

    def _image_choices(self, _widget: Any) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def settings(self) -> SegEverySettings:
        """The settings the widget shows."""
        detector: str | Path = self._detector.value
        if detector == "file":
            path = self._detector_file.value
            if path is None or not str(path).strip() or Path(path).is_dir():
                raise ValueError("Choose a YOLO .pt or .onnx file for the custom detector.")
            detector = Path(path)
        linking = self._scope.value == ALL_PLANES and bool(self._link_axis.choices)
        return SegEverySettings(
            detector=detector,
            decoder=self._decoder.value,
            conf=float(self._conf.value),
            iou=float(self._iou.value),
            max_objects=int(self._max_objects.value),
            min_area=int(self._min_area.value),
            points_per_side=int(self._points_per_side.value),
            all_planes=self._scope.value == ALL_PLANES,
            tiling=TILING[self._tiling.value],
            tile_shape=int(self._tile_size.value),
            halo=int(self._halo.value),
            level=int(self._level.value or 0),
            link=self._link.value if linking else "off",
            link_axis=self._link_axis.value if linking else None,
            link_options=LinkOptions(
                search_radius=float(self._search_radius.value) or None,
                max_gap=int(self._max_gap.value),
                neck_ratio=float(self._neck_ratio.value) or None,
            ),
        )

    def run(self) -> SegEveryJob | None:
        """Start SegEvery on the chosen image; None (and a notification) if it cannot."""
        if self.job is not None and self.job.running:
            show_info("SegEvery is already running; cancel it first.")
            return None
        image = self._image.value
        if image is None:
            show_info("Choose an image layer for SegEvery.")
            return None
        try:
            job = SegEveryJob(
                self.viewer,
                image,
                self.settings(),
                on_finished=self._on_finished,
                on_progress=self._status.show_progress,
            )
        except (PlaneError, ValueError) as exc:
            self._status.value = str(exc)
            show_error(str(exc))
            return None
        self.job = job
        self._run.enabled = False
        self._cancel.enabled = True
        planes = len(job.planes)
        self._status.value = f"Running on {planes} plane(s) of {image.name!r}...{first_use()}"
        self._status.show_progress("starting", 0, 0)
        job.start()
        return job

    def _close_job(self) -> None:
        """napari (or the widget) is closing: cancel the run quietly.

        A widget never docked is destroyed by the garbage collector, which may have
        cleared its attributes first: then there is no run to cancel."""
        job = self.__dict__.get("job")
        if job is not None:
            job.close()

    def cancel(self) -> None:
        """Cancel the running job, if any."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._status.value = "Cancelling..."

    def _on_finished(self, job: SegEveryJob) -> None:
        self._run.enabled = True
        self._cancel.enabled = False
        self._status.hide_progress()
        self._status.show_message(job.outcome.message, job.outcome.details)
