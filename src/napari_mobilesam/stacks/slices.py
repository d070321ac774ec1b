"""Slices of a Z or T stack as model inputs, with one contrast range and cached embeddings.

:class:`StackSlices` reads the 2-D slices of an N-D array along one axis and turns them into
RGB model inputs with one display range for the whole stack (so slices look alike);
:class:`SliceEmbeddings` makes a predictor's current image a given slice, encoding slices
when first needed, optionally ahead in a background thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import (
    display_range,
    has_contrast,
    uses_own_range,
    validate_contrast_limits,
)
from napari_mobilesam.imaging.prepared_input import ModelInput, model_input

__all__ = ["SliceEmbeddings", "StackSlices", "stack_contrast_limits"]


# ------------------------------------------------------------------------ stack access
class StackSlices:
    """Read 2-D slices of an N-D image stack along one axis, with one contrast range.

    Parameters
    ----------
    stack : array-like
        (..., H, W) or, with ``rgb``, (..., H, W, C) with C in 1..4; numpy, dask or zarr.
        The two trailing (non-channel) axes are Y, X. Every leading axis other than
        ``axis`` must have size 1 (select a time point or plane first: ``stack[t:t+1]``).
    axis : int
        The leading axis to walk along (Z or T).
    rgb : bool or None
        Whether the last axis holds channels; None guesses True for a 4-D stack whose
        last axis has 3 or 4 entries.
    contrast_limits : (lo, hi), optional
        One display range for every slice; None computes the 0.1st-99.9th percentiles
        over the whole stack (sampled), so that all slices are rendered alike. uint8 and
        bool stacks are used as they are.

    Examples
    --------
    >>> slices = StackSlices(np.random.rand(5, 32, 32), axis=0)
    >>> len(slices), slices.shape_yx, slices.mask_shape
    (5, (32, 32), (5, 32, 32))
    """

    def __init__(
        self,
        stack: Any,
        axis: int = 0,
        *,
        rgb: bool | None = None,
        contrast_limits: Sequence[float] | None = None,
    ) -> None:
        shape = tuple(int(n) for n in np.shape(stack))
        if rgb is None:
            rgb = len(shape) == 4 and shape[-1] in (3, 4)
        spatial = 3 if rgb else 2
        if len(shape) < spatial + 1:
            raise InvalidValueError(
                "Expected a stack of 2-D slices, shape (S, H, W)"
                + (" or (S, H, W, C)" if rgb else "")
                + f"; received an array of shape {shape} with no axis to walk along. "
                "Propagation and linking need a Z or T stack; for one 2-D image use SegAny "
                "or segment_everything."
            )
        leading = len(shape) - spatial
        if isinstance(axis, bool) or int(axis) != axis:
            raise InvalidValueError(f"axis must be an integer, got {axis!r}")
        axis = int(axis)
        if axis < 0:
            axis += len(shape)
        if not 0 <= axis < leading:
            raise InvalidValueError(
                f"axis {axis if axis >= 0 else axis - len(shape)} is not a stack axis of an "
                f"array of shape {shape}: the stack axes are 0..{leading - 1}; the last "
                f"{spatial} axes are {'Y, X, channels' if rgb else 'Y, X'}."
            )
        others = [i for i in range(leading) if i != axis and shape[i] != 1]
        if others:
            raise InvalidValueError(
                f"The stack of shape {shape} has more than one axis to walk along: axis "
                f"{axis} was chosen, so axes {others} must have size 1. Select one position "
                "on them first, e.g. stack[t:t+1] for a Z walk at time point t."
            )
        if rgb and not 1 <= shape[-1] <= 4:
            raise InvalidValueError(f"rgb stacks need 1-4 channels last, got shape {shape}")
        self.stack = stack
        self.axis = axis
        self.rgb = bool(rgb)
        self.full_shape = shape
        self.leading = leading
        self.shape_yx = (shape[leading], shape[leading + 1])
        self.mask_shape = shape[: leading + 2]
        self.n = shape[axis]
        if min(self.shape_yx) < 2:
            raise InvalidValueError(f"slices must be at least 2 x 2 pixels, got {self.shape_yx}")
        self.contrast_limits = (
            validate_contrast_limits(contrast_limits)
            if contrast_limits is not None
            else stack_contrast_limits(self)
        )

    def __len__(self) -> int:
        return self.n

    def index(self, z: int) -> tuple:
        """The index tuple of slice ``z`` into the stack (other leading axes at 0)."""
        return tuple(z if i == self.axis else 0 for i in range(self.leading))

    def raw(self, z: int) -> np.ndarray:
        """Slice ``z`` as read, (H, W) or (H, W, C)."""
        part = self.stack[self.index(z)]
        if hasattr(part, "compute"):
            part = part.compute()
        return np.asarray(part)

    def is_blank(self, image: np.ndarray) -> bool:
        """True if a slice has no contrast (it cannot be segmented: nothing is there)."""
        return not has_contrast(image)

    def rgb_slice(self, z: int) -> ModelInput | None:
        """Slice ``z`` as the model's input, converted and hashed once; None for a blank
        slice."""
        image = self.raw(z)
        if self.is_blank(image):
            return None
        return model_input(image, self.contrast_limits)

    def to_stack_layout(self, masks: np.ndarray) -> np.ndarray:
        """(S, H, W) -> the stack's own layout without channels (``mask_shape``)."""
        out_shape = [self.n if i == self.axis else 1 for i in range(self.leading)]
        return masks.reshape(out_shape + list(self.shape_yx))


def stack_contrast_limits(
    slices: StackSlices, max_slices: int = 16, max_samples: int = 2**22
) -> tuple[float, float] | None:
    """One (lo, hi) display range for a whole stack: 0.1st-99.9th percentiles of a sample.

    Up to ``max_slices`` evenly spaced slices, each subsampled to share ``max_samples``
    values. None for uint8 and bool stacks (used as they are), as
    :func:`napari_mobilesam.to_rgb_uint8` does for one image.
    """
    dtype = np.dtype(getattr(slices.stack, "dtype", np.asarray(slices.stack).dtype))
    if uses_own_range(dtype):
        return None
    picks = np.unique(np.linspace(0, slices.n - 1, min(slices.n, max_slices)).round())
    h, w = slices.shape_yx
    step = max(1, int(np.ceil(np.sqrt(h * w * len(picks) / max_samples))))
    sample = np.concatenate([slices.raw(int(z))[::step, ::step] for z in picks.astype(int)])
    try:
        return display_range(sample, max_samples=sample.size)
    except ValueError as exc:
        raise InvalidValueError(
            "Expected a stack with some contrast; every sampled pixel has the same value, "
            "so there is nothing to segment."
        ) from exc


# ---------------------------------------------------------------------- embeddings
class SliceEmbeddings:
    """Makes a predictor's current image a given slice, encoding slices when first needed.

    Without prefetch, slices are set with ``predictor.set_image`` (its LRU cache keeps
    them). With ``prefetch > 0`` a background thread encodes requested slices ahead with
    a second predictor on the same model, and the main thread installs them with
    ``predictor.set_embedding``; embeddings are kept for the lifetime of this object.

    Attributes
    ----------
    timings : dict
        "embedding": seconds the main thread spent encoding or waiting for an embedding;
        "background": seconds the background thread spent encoding; "wait": the part of
        "embedding" spent waiting for the background thread.
    """

    def __init__(self, predictor: Any, slices: StackSlices, prefetch: int = 0) -> None:
        if isinstance(prefetch, bool) or int(prefetch) != prefetch or prefetch < 0:
            raise InvalidValueError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        self.predictor = predictor
        self.slices = slices
        self.prefetch = int(prefetch)
        self.timings = {"embedding": 0.0, "background": 0.0, "wait": 0.0}
        self._ready: dict[int, Any] = {}
        self._events: dict[int, threading.Event] = {}
        self._errors: dict[int, BaseException] = {}
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ----------------------------------------------------------- background thread
    def request(self, indices: Sequence[int]) -> None:
        """Ask the background thread to encode these slices (no-op without prefetch)."""
        if self.prefetch == 0 or self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True)
            self._thread.start()
        with self._lock:
            for z in indices:
                z = int(z)
                if 0 <= z < self.slices.n and z not in self._events:
                    self._events[z] = threading.Event()
                    self._queue.put(z)

    def _work(self) -> None:
        from napari_mobilesam.segany.predictor import SegAnyPredictor

        main = self.predictor
        helper = SegAnyPredictor(main.model, main.device, cache_size=1, precision=main.precision)
        while True:
            z = self._queue.get()
            if z is None or self._closed:
                return
            start = time.perf_counter()
            try:
                rgb = self.slices.rgb_slice(z)
                if rgb is not None:
                    helper.set_image(rgb)
                    self._ready[z] = helper.get_image_embedding()
                else:
                    self._ready[z] = None
            except BaseException as exc:  # reported to the main thread on use
                self._errors[z] = exc
            self.timings["background"] += time.perf_counter() - start
            self._events[z].set()

    def close(self) -> None:
        """Stop the background thread (a slice being encoded is finished first)."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        with self._lock:  # requests never served are forgotten (encoded on use instead)
            for z in [z for z, event in self._events.items() if not event.is_set()]:
                del self._events[z]

    # ----------------------------------------------------------------- main thread
    def activate(self, z: int) -> bool:
        """Make slice ``z`` the predictor's current image; False for a blank slice."""
        start = time.perf_counter()
        try:
            event = self._events.get(z) if self.prefetch else None
            if event is not None:
                wait_start = time.perf_counter()
                event.wait()
                self.timings["wait"] += time.perf_counter() - wait_start
                if z in self._errors:
                    raise self._errors[z]
                embedding = self._ready[z]
                if embedding is None:
                    return False
                self.predictor.set_embedding(embedding, self.slices.shape_yx)
                return True
            rgb = self.slices.rgb_slice(z)
            if rgb is None:
                return False
            self.predictor.set_image(rgb)
            if self.prefetch:
                self._ready[z] = self.predictor.get_image_embedding()
                self._events[z] = _set_event()
            return True
        finally:
            self.timings["embedding"] += time.perf_counter() - start


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event
