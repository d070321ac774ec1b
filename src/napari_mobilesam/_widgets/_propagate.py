"""SegAny's Propagate action: one object through a Z or T stack, in a napari thread worker.

The prompts of the object (points and boxes on one or more slices along the stack axis, or
the preview of the slice on screen) are handed to
:func:`napari_mobilesam.stacks.propagation.propagate_mask`, which segments the object on those
slices and then slice by slice outwards. The result is written into the output labels
layer under one new id, as one step of its undo history; a run that is cancelled or fails
writes nothing.

Which slices, which axis: see :mod:`~napari_mobilesam._widgets._stack_axes`. In 3-D display
prompts are found on every slice along the stack axis, so a propagation can be started (or
redone) while looking at the volume.

The action works on a :class:`PropagationHost` (the SegAny controller) through its public
interface only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from napari_mobilesam._progress import Cancelled
from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import expected_errors, report_bug
from napari_mobilesam._widgets._label_ids import NextLabelId
from napari_mobilesam._widgets._model import new_predictor
from napari_mobilesam._widgets._plane import (
    Plane,
    PlaneError,
    layer_in_viewer,
    model_contrast_limits,
)
from napari_mobilesam._widgets._prompt_layers import PlanePrompts
from napari_mobilesam._widgets._stack_axes import (
    AxisStack,
    axis_label,
    default_stack_axis,
    slice_plane,
    stack_axes,
    stack_plane,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels
    from napari.utils.events import EmitterGroup

    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.stacks.propagation import PropagationResult


class PropagationHost(Protocol):
    """What propagation needs of the SegAny controller (its public interface)."""

    viewer: napari.Viewer
    image: Image | None
    stack_axis: int | None
    overwrite: bool
    status: str
    events: EmitterGroup
    label_ids: NextLabelId

    @property
    def preview(self) -> Any: ...

    @property
    def preview_ready(self) -> bool: ...

    def collect_prompts(self, plane: Plane) -> PlanePrompts: ...

    def output_layer(self, image: Image, level: int = 0) -> Labels | None: ...

    def remove_prompts(self, prompts: PlanePrompts) -> None: ...

    def clear_preview(self) -> None: ...

    def set_status(self, text: str) -> None: ...


#: Key that propagates the current object (napari binds neither Ctrl+P nor Cmd+P).
PROPAGATE_KEY = "Control-P"


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
    controller : PropagationHost
        Whose output layer, overwrite setting and prompts are used.
    request : PropagationRequest
    predictor : callable
        Returns the predictor to use (called in the worker; may load the model).
    on_finished : callable
        Called on the GUI thread with the job once it has ended in any way.
    """

    def __init__(
        self,
        controller: PropagationHost,
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
        self._finish("failed", report_bug("Propagation", exc))

    def _write(self, result: PropagationResult) -> None:
        controller, request = self.controller, self.request
        output = controller.output_layer(request.image)
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
        existing = np.asarray(output.data[indices])
        if not controller.overwrite:
            indices = tuple(axis_indices[existing == 0] for axis_indices in indices)
        if len(indices[0]) == 0:
            self._finish(
                "empty",
                "Nothing was written: the object only covers pixels that are already "
                "labelled (tick 'overwrite existing labels' to replace them).",
            )
            return
        label = self._write_label(output, indices, existing)
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

    def _write_label(self, output: Labels, indices: tuple, existing: np.ndarray) -> int:
        """Write a new id at ``indices`` as one undo step; returns the id."""
        ids = self.controller.label_ids
        label = ids.next_id(output, existing)
        with ids.writing(output):
            output.data_setitem(indices, label)  # one step of the layer's undo history
        ids.used(output, label)
        self.label = label
        return label

    def _remove_prompts(self) -> None:
        """Remove the prompts of the annotated slices (as they are now), as Accept does."""
        controller, request = self.controller, self.request
        found = [
            controller.collect_prompts(slice_plane(request.plane, request.axis, z))
            for z in request.prompts
        ]
        controller.remove_prompts(
            PlanePrompts.rows_only(
                np.concatenate([np.zeros(0, int), *(f.point_rows for f in found)]),
                np.concatenate([np.zeros(0, int), *(f.box_rows for f in found)]),
            )
        )
        controller.clear_preview()

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


class Propagator:
    """The Propagate action of a :class:`PropagationHost`.

    Keeps its own predictor on the shared model (its embedding cache makes a second run on
    the same slices cheap) and at most one running :class:`PropagationJob`.
    """

    def __init__(self, controller: PropagationHost) -> None:
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
                prompts[z] = _object_prompt(found, z)
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
            controller.set_status(str(exc))
            show_error(f"SegAny: {exc}")
            return None
        job = PropagationJob(controller, request, self.predictor, self._on_finished)
        self.job = job
        name = axis_label(controller.viewer, request.image, request.axis)
        controller.set_status(
            f"Propagating from slice(s) {sorted(request.prompts)} along axis {name}..."
        )
        controller.events.propagation(value=True)
        job.start()
        return job

    def cancel(self) -> None:
        """Cancel the running propagation, if any (nothing is written)."""
        if self.running:
            self.job.cancel()
            self.controller.set_status("Cancelling the propagation...")

    def _on_finished(self, job: PropagationJob) -> None:
        self.controller.set_status(job.message)
        self.controller.events.propagation(value=False)


def _object_prompt(prompts: PlanePrompts, z: int) -> dict[str, Any]:
    """The prompt of one slice for propagate_mask: its points and (one) box."""
    if prompts.separate_objects:
        raise PlaneError(
            f"Propagate follows one object: slice {z} has {len(prompts.boxes)} rectangles. "
            "Keep one rectangle per slice."
        )
    return prompts.one_object()
