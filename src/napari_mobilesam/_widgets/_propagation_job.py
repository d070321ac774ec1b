"""One propagation run: the request captured on the GUI thread, and the thread worker that
runs :func:`napari_mobilesam.stacks.propagation.propagate_mask` and writes its result as one
undo step.

The job works on a :class:`PropagationHost` (the SegAny controller) through its public
interface only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from napari_mobilesam._progress import Cancelled
from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import error_line, expected_errors, report_bug
from napari_mobilesam._widgets._label_ids import NextLabelId
from napari_mobilesam._widgets._plane import (
    Plane,
    layer_in_viewer,
)
from napari_mobilesam._widgets._prompt_layers import PlanePrompts
from napari_mobilesam._widgets._stack_axes import (
    AxisStack,
    axis_label,
    slice_plane,
)
from napari_mobilesam._widgets._workers import stoppable_worker

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

    def set_status(self, text: str, details: str = "") -> None: ...


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
        #: The full text behind a short failure ``message``, or "".
        self.details = ""
        self.label: int | None = None
        self.result: PropagationResult | None = None
        self._predictor = predictor
        self._on_finished = on_finished
        self._cancel = threading.Event()
        self._closed = False
        self._indices: tuple[np.ndarray, ...] | None = None
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
        self._worker = stoppable_worker(self._run, on_quit=self.close, _ignore_errors=True)
        self._worker.returned.connect(self._on_returned)
        self._worker.errored.connect(self._on_errored)
        self._worker.finished.connect(self._on_worker_finished)
        self._worker.start()

    def cancel(self) -> None:
        """Stop the run at the next slice; the labels layer is left as it was."""
        self._cancel.set()

    def close(self) -> None:
        """napari (or the widget) is closing: cancel, and say nothing when the run ends."""
        self._closed = True
        self._on_finished = _nothing
        self.cancel()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> PropagationResult | Exception | None:
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
            return exc
        # The object's pixel indices in the layer, computed here, off the GUI thread.
        self._indices = self._object_indices(result)
        return result

    def _object_indices(self, result: PropagationResult) -> tuple[np.ndarray, ...] | None:
        """The layer indices of the object's pixels on every slice it spans (None: none)."""
        request = self.request
        parts = [
            slice_plane(request.plane, request.axis, z).data_indices(result.mask[z])
            for z in result.slices
        ]
        if not parts:
            return None
        return tuple(np.concatenate(axis_indices) for axis_indices in zip(*parts, strict=True))

    def _check_cancel(self, done: int, total: int) -> None:
        if self._cancel.is_set() or (self._bar is not None and self._bar.is_canceled):
            raise Cancelled
        self._show_progress(done, total)

    @ensure_main_thread
    def _show_progress(self, done: int, total: int) -> None:
        bar = self._bar
        if bar is not None and total and not self._closed:
            # First: napari's bar processes Qt events, so the run may end inside its calls.
            name = axis_label(self.controller.viewer, self.request.image, self.request.axis)
            line = f"Propagating along {name}: slice {done} of {total}"
            self.controller.events.progress(value=(line, done, total))
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

    # --------------------------------------------------------------- GUI thread
    def _on_returned(self, outcome: PropagationResult | Exception | None) -> None:
        if outcome is None or self._cancel.is_set():
            self._finish("cancelled", "Propagation was cancelled; the labels were not changed.")
        elif isinstance(outcome, Exception):
            self._finish("failed", error_line("Propagation", outcome), str(outcome))
        elif not layer_in_viewer(self.controller.viewer, self.request.image):
            self._finish("cancelled", "The image was removed; nothing was written.")
        else:
            self.result = outcome
            self._write(outcome)

    def _on_worker_finished(self) -> None:
        """A worker napari stopped (its window closed) ends without a result."""
        if self.running:
            self._finish("cancelled", "napari was closed; nothing was written.")

    def _on_errored(self, exc: Exception) -> None:
        self._finish("failed", report_bug("Propagation", exc), str(exc))

    def _write(self, result: PropagationResult) -> None:
        controller, request = self.controller, self.request
        output = controller.output_layer(request.image)
        if output is None:
            self._finish("failed", controller.status)
            return
        indices = self._indices
        if indices is None:
            self._finish("empty", "Propagation found no object: nothing was written.")
            return
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
        # Ctrl+Z undoes the propagation at once: it is the labels layer's shortcut.
        controller.viewer.layers.selection.active = output
        name = axis_label(controller.viewer, request.image, request.axis)
        stops = "; ".join(f"{end}: {why}" for end, why in result.stops.items())
        self._finish(
            "done",
            f"Propagated id {label} into {output.name!r} on {len(written)} slice(s) of axis "
            f"{name} ({int(written.min())}-{int(written.max())}). Stopped {stops or 'nowhere'}."
            f" Undo: Ctrl+Z ({output.name!r} is selected).",
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

    def _finish(self, state: str, message: str, details: str = "") -> None:
        self.state, self.message, self.details = state, message, details
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._on_finished(self)
        if self._closed:
            return
        if state == "failed":
            show_error("\n\n".join(part for part in (f"SegAny: {message}", details) if part))
        else:
            show_info(f"SegAny: {message}")


def _nothing(_job: PropagationJob) -> None:
    """What a closed job calls when it ends."""
