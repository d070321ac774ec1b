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
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info

from napari_mobilesam._widgets._model import new_predictor
from napari_mobilesam._widgets._plane import (
    PlaneError,
    layer_in_viewer,
    model_contrast_limits,
)
from napari_mobilesam._widgets._prompt_layers import PlanePrompts
from napari_mobilesam._widgets._propagation_job import (
    PropagationHost,
    PropagationJob,
    PropagationRequest,
)
from napari_mobilesam._widgets._stack_axes import (
    axis_label,
    default_stack_axis,
    slice_plane,
    stack_axes,
    stack_plane,
)

if TYPE_CHECKING:
    from napari_mobilesam.segany.predictor import SegAnyPredictor


#: Key that propagates the current object (napari binds neither Ctrl+P nor Cmd+P).
PROPAGATE_KEY = "Control-P"


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

    def close(self) -> None:
        """napari (or the widget) is closing: cancel the running propagation quietly."""
        if self.job is not None:
            self.job.close()

    def cancel(self) -> None:
        """Cancel the running propagation, if any (nothing is written)."""
        if self.running:
            self.job.cancel()
            self.controller.set_status("Cancelling the propagation...")

    def _on_finished(self, job: PropagationJob) -> None:
        self.controller.set_status(job.message, job.details)
        self.controller.events.propagation(value=False)


def _object_prompt(prompts: PlanePrompts, z: int) -> dict[str, Any]:
    """The prompt of one slice for propagate_mask: its points and (one) box."""
    if prompts.separate_objects:
        raise PlaneError(
            f"Propagate follows one object: slice {z} has {len(prompts.boxes)} rectangles. "
            "Keep one rectangle per slice."
        )
    return prompts.one_object()
