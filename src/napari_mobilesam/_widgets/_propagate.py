"""SegAny's Propagate action: one object through a Z or T stack, in a napari thread worker.

The prompts of the object (points and boxes on one or more slices along the stack axis, or
the preview of the slice on screen) are handed to
:func:`napari_mobilesam.stacks.propagation.propagate_mask`, which segments the object on those
slices and then slice by slice outwards. The result is written into the output labels
layer under one new id, as one step of its undo history; a run that is cancelled or fails
writes nothing.

Which slices, which axis:

- In 2-D display the plane is the one on screen (rows and columns are the displayed axes);
  the stack axis is one of the other axes of the layer (default: the slider moved last,
  else the innermost one). Every other axis stays at its current position.
- In 3-D display the rows and columns are the last two displayed axes and the stack axis
  is the first displayed one (or any non-displayed axis); prompts are found on every slice
  along it, so a propagation can be started (or redone) while looking at the volume.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from napari_mobilesam._progress import Cancelled
from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._model import expected_errors, new_predictor
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    layer_in_viewer,
    model_contrast_limits,
    spatial_shape,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from napari_mobilesam._widgets._segany import SegAnyController
    from napari_mobilesam._widgets._segany_decoding import Prompts
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.stacks.propagation import PropagationResult

#: Key that propagates the current object (napari binds neither Ctrl+P nor Cmd+P).
PROPAGATE_KEY = "Control-P"
#: Axis labels that mean time: their stacks are time-lapses.
TIME_LABELS = ("t", "time", "frame", "frames", "timepoint")


# ------------------------------------------------------------------ axes and planes
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


# ------------------------------------------------------------------ the job
@dataclass(frozen=True)
class PropagationRequest:
    """Everything a run needs, captured on the GUI thread when it is started."""

    image: Image
    plane: Plane
    axis: int
    prompts: dict[int, dict[str, Any]]
    contrast_limits: tuple[float, float] | None
    rgb: bool


class PropagationJob:
    """One propagation run in a thread worker with a cancelable progress bar.

    Parameters
    ----------
    controller : SegAnyController
        Whose output layer, overwrite setting and prompts are used.
    request : PropagationRequest
    predictor : callable
        Returns the predictor to use (called in the worker; may load the model).
    on_finished : callable
        Called on the GUI thread with the job once it has ended in any way.
    """

    def __init__(
        self,
        controller: SegAnyController,
        request: PropagationRequest,
        predictor: Callable[[], SegAnyPredictor],
        on_finished: Callable[[PropagationJob], None],
    ) -> None:
        self.controller = controller
        self.request = request
        self.state = "running"  # then "done", "empty", "cancelled" or "failed"
        self.message = ""
        self.label: int | None = None
        self.result: PropagationResult | None = None
        self._predictor = predictor
        self._on_finished = on_finished
        self._cancel = threading.Event()
        self._bar: cancelable_progress | None = None
        self._worker: Any = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def start(self) -> None:
        """Start the run; the object is written when it ends (nothing if cancelled)."""
        request = self.request
        self._bar = cancelable_progress(
            total=request.plane.shape[request.axis],
            desc=f"SegAny: propagating through {request.image.name}",
            cancel_callback=self.cancel,
        )
        self._worker = create_worker(self._run, _ignore_errors=True)
        self._worker.returned.connect(self._on_returned)
        self._worker.errored.connect(self._on_errored)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the run at the next slice; the labels layer is left as it was."""
        self._cancel.set()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> PropagationResult | str | None:
        prepare_torch_import()
        from napari_mobilesam.stacks.propagation import propagate_mask

        request = self.request
        try:
            self._check_cancel(0, 0)
            result = propagate_mask(
                self._predictor(),
                AxisStack(request.image.data, request.plane, request.axis),
                request.prompts,
                axis=0,
                rgb=request.rgb,
                contrast_limits=request.contrast_limits,
                progress=self._check_cancel,
            )
        except Cancelled:
            return None
        except expected_errors() as exc:
            return str(exc)
        return result

    def _check_cancel(self, done: int, total: int) -> None:
        if self._cancel.is_set() or (self._bar is not None and self._bar.is_canceled):
            raise Cancelled
        self._show_progress(done, total)

    @ensure_main_thread
    def _show_progress(self, done: int, total: int) -> None:
        bar = self._bar
        if bar is not None and total:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

    # --------------------------------------------------------------- GUI thread
    def _on_returned(self, outcome: PropagationResult | str | None) -> None:
        if outcome is None or self._cancel.is_set():
            self._finish("cancelled", "Propagation was cancelled; the labels were not changed.")
        elif isinstance(outcome, str):
            self._finish("failed", f"Propagation failed: {outcome}")
        elif not layer_in_viewer(self.controller.viewer, self.request.image):
            self._finish("cancelled", "The image was removed; nothing was written.")
        else:
            self.result = outcome
            self._write(outcome)

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker has already shown the error with its traceback.
        self._finish("failed", f"Propagation failed: {exc}")

    def _write(self, result: PropagationResult) -> None:
        controller, request = self.controller, self.request
        output = controller._output_layer(request.image)
        if output is None:
            self._finish("failed", controller.status)
            return
        parts = [
            slice_plane(request.plane, request.axis, z).data_indices(result.mask[z])
            for z in result.slices
        ]
        if not parts:
            self._finish("empty", "Propagation found no object: nothing was written.")
            return
        indices = tuple(np.concatenate(axis_indices) for axis_indices in zip(*parts, strict=True))
        if not controller.overwrite:
            free = np.asarray(output.data[indices]) == 0
            indices = tuple(axis_indices[free] for axis_indices in indices)
        if len(indices[0]) == 0:
            self._finish(
                "empty",
                "Nothing was written: the object only covers pixels that are already "
                "labelled (tick 'overwrite existing labels' to replace them).",
            )
            return
        label = int(output.data.max()) + 1
        output.data_setitem(indices, label)  # one step of the layer's undo history
        self.label = label
        written = np.unique(indices[request.axis])
        self._remove_prompts()
        name = axis_label(controller.viewer, request.image, request.axis)
        stops = "; ".join(f"{end}: {why}" for end, why in result.stops.items())
        self._finish(
            "done",
            f"Propagated id {label} into {output.name!r} on {len(written)} slice(s) of axis "
            f"{name} ({int(written.min())}-{int(written.max())}). Stopped {stops or 'nowhere'}."
            " Undo: Ctrl+Z on the labels layer.",
        )

    def _remove_prompts(self) -> None:
        """Remove the prompts of the annotated slices (as they are now), as Accept does."""
        from napari_mobilesam._widgets._segany_decoding import Prompts

        controller, request = self.controller, self.request
        found = [
            controller.collect_prompts(slice_plane(request.plane, request.axis, z))
            for z in request.prompts
        ]
        none = np.zeros(0, dtype=int)
        controller._remove_prompts(
            Prompts(
                np.zeros((0, 2)),
                none,
                np.zeros((0, 4)),
                np.concatenate([none, *(f.point_rows for f in found)]).astype(int),
                np.concatenate([none, *(f.box_rows for f in found)]).astype(int),
            )
        )
        controller._clear_preview()

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._on_finished(self)
        if state == "failed":
            show_error(f"SegAny: {message}")
        else:
            show_info(f"SegAny: {message}")


# ------------------------------------------------------------------ the controller part
class Propagator:
    """The Propagate action of a :class:`SegAnyController`.

    Keeps its own predictor on the shared model (its embedding cache makes a second run on
    the same slices cheap) and at most one running :class:`PropagationJob`.
    """

    def __init__(self, controller: SegAnyController) -> None:
        self.controller = controller
        self.job: PropagationJob | None = None
        self._predictor: SegAnyPredictor | None = None
        self._predictor_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def predictor(self) -> SegAnyPredictor:
        """The predictor of propagation runs, made on first use (call in a worker)."""
        with self._predictor_lock:
            if self._predictor is None:
                self._predictor = new_predictor()
            return self._predictor

    def request(self, axis: int | None = None) -> PropagationRequest:
        """The prompts of the object along ``axis`` (default :func:`default_stack_axis`).

        Raises
        ------
        PlaneError
            No image, a 2-D image, an axis that is not a stack axis, or no prompts.
        """
        controller = self.controller
        image = controller.image
        if image is None or not layer_in_viewer(controller.viewer, image):
            raise PlaneError("Choose an image layer to propagate through.")
        viewer = controller.viewer
        if axis is None:
            axis = controller.stack_axis
            if axis is None or axis not in stack_axes(viewer, image):
                axis = default_stack_axis(viewer, image)
            if axis is None:
                stack_plane(viewer, image, -1)  # raises the 2-D error
        plane = stack_plane(viewer, image, int(axis))
        prompts: dict[int, dict[str, Any]] = {}
        preview = controller.preview
        for z in range(plane.shape[axis]):
            on_slice = slice_plane(plane, axis, z)
            found = controller.collect_prompts(on_slice)
            if (
                preview is not None
                and controller.preview_ready
                and preview.request.image is image
                and preview.request.level == 0
                and preview.request.plane == on_slice
            ):
                prompts[z] = {"mask": self._preview_mask(preview)}
            elif not found.empty:
                prompts[z] = _prompt_of(found, z)
        if not prompts:
            name = axis_label(viewer, image, axis)
            raise PlaneError(
                f"There are prompts on no slice of axis {name} of {image.name!r}: click on "
                "the object (or draw a rectangle) on one slice, then Propagate."
            )
        return PropagationRequest(
            image=image,
            plane=plane,
            axis=int(axis),
            prompts=prompts,
            contrast_limits=model_contrast_limits(image),
            rgb=bool(image.rgb),
        )

    @staticmethod
    def _preview_mask(preview: Any) -> np.ndarray:
        decoded = preview.decoded
        if decoded.separate_objects:
            raise PlaneError(
                "Propagate follows one object: the slice on screen has several rectangles "
                "(several objects). Keep one rectangle, or accept them first."
            )
        mask = np.zeros(preview.request.plane.size, dtype=bool)
        y0, y1, x0, x1 = decoded.region
        mask[y0:y1, x0:x1] = decoded.object_masks(preview.candidate)[0]
        if not mask.any():
            raise PlaneError(
                "The preview on screen is empty: move or add prompts before propagating."
            )
        return mask

    def start(self, axis: int | None = None) -> PropagationJob | None:
        """Propagate the object along ``axis``; None (and an error notification) if it
        cannot start."""
        controller = self.controller
        if self.running:
            show_info("SegAny: a propagation is already running; cancel it first.")
            return None
        try:
            request = self.request(axis)
        except PlaneError as exc:
            controller._set_status(str(exc))
            show_error(f"SegAny: {exc}")
            return None
        job = PropagationJob(controller, request, self.predictor, self._on_finished)
        self.job = job
        name = axis_label(controller.viewer, request.image, request.axis)
        controller._set_status(
            f"Propagating from slice(s) {sorted(request.prompts)} along axis {name}..."
        )
        controller.events.propagation(value=True)
        job.start()
        return job

    def cancel(self) -> None:
        """Cancel the running propagation, if any (nothing is written)."""
        if self.running:
            self.job.cancel()
            self.controller._set_status("Cancelling the propagation...")

    def _on_finished(self, job: PropagationJob) -> None:
        self.controller._set_status(job.message)
        self.controller.events.propagation(value=False)


def _prompt_of(prompts: Prompts, z: int) -> dict[str, Any]:
    """The prompt of one slice for propagate_mask: its points and (one) box."""
    if len(prompts.boxes) > 1:
        raise PlaneError(
            f"Propagate follows one object: slice {z} has {len(prompts.boxes)} rectangles. "
            "Keep one rectangle per slice."
        )
    prompt: dict[str, Any] = {}
    if len(prompts.point_coords):
        prompt["point_coords"] = prompts.point_coords
        prompt["point_labels"] = prompts.point_labels
    if len(prompts.boxes):
        prompt["box"] = prompts.boxes[0]
    return prompt
