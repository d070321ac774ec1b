"""One training run of the Train widget, in a napari thread worker.

:class:`TrainJob` turns the chosen annotations (Labels layers painted over Image layers,
or a folder pair) into :class:`~napari_mobilesam.training.annotations.AnnotatedImage`
objects, splits them by image, and runs
:func:`napari_mobilesam.training.detector.train_detector` or
:func:`napari_mobilesam.training.decoder.train_decoder` off the GUI thread. Every epoch's
report comes back to the GUI thread (``on_epoch``); :meth:`TrainJob.cancel` sets the flag
training polls between batches, and the run stops keeping the best weights so far.

The label images are copied when the job is made: painting during training changes
neither the run nor the layers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from superqt.utils import ensure_main_thread

from napari_mobilesam._torch_guard import prepare_torch_import
from napari_mobilesam._widgets._errors import expected_errors, report_bug

if TYPE_CHECKING:
    from napari_mobilesam.training.annotations import AnnotatedImage
    from napari_mobilesam.training.reports import EpochReport, TrainingResult

__all__ = [
    "BOX_DECODER",
    "DETECTOR",
    "POINT_DECODER",
    "LayerPair",
    "TrainJob",
    "TrainOutcome",
    "TrainRequest",
    "split_note",
]

DETECTOR = "detector"
BOX_DECODER = "box_decoder"
POINT_DECODER = "point_decoder"
#: Share of the annotated images kept for validation (at least one of two or more).
VALIDATION_FRACTION = 0.2
#: The bases named in the registry, fetched (or downloaded once) when the run starts.
OFFICIAL_BASES = {"object_aware", "prompt_guided", "mobile_sam"}


@dataclass(frozen=True)
class LayerPair:
    """An image and its label image, read from two layers when the job was made."""

    name: str
    image: Any
    labels: np.ndarray
    contrast_limits: tuple[float, float] | None = None


@dataclass(frozen=True)
class TrainRequest:
    """What to train on, what to train and where to write it.

    ``base`` is ``"scratch"`` (detector only), a registry name of
    :data:`OFFICIAL_BASES`, or a file path. ``folders`` is ``(images, labels)`` or None;
    with folders, ``pairs`` is empty. ``epochs`` None is the training function's default.
    """

    kind: str
    output: Path
    base: str | Path
    pairs: tuple[LayerPair, ...] = ()
    folders: tuple[Path, Path] | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """The end of a run: ``result`` when training ran (finished or stopped)."""

    state: str  # "done", "stopped" or "failed"
    message: str
    result: TrainingResult | None = None
    kind: str | None = None  # what was trained (a decoder's kind is read from its file)


def trained_kind(result: TrainingResult, asked: str) -> str:
    """What a run trained: a decoder's kind is in its sidecar (the base file decides it)."""
    if asked == DETECTOR:
        return DETECTOR
    try:
        kind = json.loads(Path(result.sidecar).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return asked
    return {"prompt_guided": BOX_DECODER, "mobile_sam": POINT_DECODER}.get(kind, asked)


def split_note(images: int) -> str:
    """What the split by image will do with ``images`` annotated images."""
    if images == 0:
        return "No annotated image yet: paint objects in a Labels layer over the image."
    if images == 1:
        return (
            "1 image: validation is on the training image (the score is optimistic; "
            "add a second image for a fair one)."
        )
    validation = max(1, round(VALIDATION_FRACTION * images))
    return f"{images} images: {validation} for validation, {images - validation} for training."


class TrainJob:
    """One training run in a thread worker.

    Parameters
    ----------
    request : TrainRequest
        The annotations, what to train, the base, the epochs and the output file.
    on_epoch : callable, optional
        Called on the GUI thread with each :class:`EpochReport`.
    on_finished : callable, optional
        Called on the GUI thread with the job once it has ended in any way.
    on_status : callable, optional
        Called on the GUI thread with a line saying what the run is doing.
    """

    def __init__(
        self,
        request: TrainRequest,
        on_epoch: Callable[[EpochReport], None] | None = None,
        on_finished: Callable[[TrainJob], None] | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.request = request
        self.outcome: TrainOutcome | None = None
        self.reports: list[EpochReport] = []
        self._on_epoch = on_epoch
        self._on_finished = on_finished
        self._on_status = on_status
        self._stop = threading.Event()
        self._worker: Any = None

    @property
    def running(self) -> bool:
        return self._worker is not None and self.outcome is None

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._worker = create_worker(self._run, _ignore_errors=True)
        self._worker.returned.connect(self._finish)
        self._worker.errored.connect(self._on_errored)
        self._worker.start()

    def cancel(self) -> None:
        """Stop at the next batch; the best weights so far are kept."""
        self._stop.set()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> TrainOutcome:
        what = {DETECTOR: "detector", BOX_DECODER: "box decoder", POINT_DECODER: "point decoder"}
        name = what[self.request.kind]
        try:
            train, validation = self._split(self._annotations())
            on_train = " (the training image)" if validation is train else ""
            self._status(
                f"Training the {name} on {len(train)} image(s), validating on "
                f"{len(validation)}{on_train}..."
            )
            result = self._train(train, validation, self._base())
        except expected_errors() as exc:
            return TrainOutcome("failed", f"Training the {name} failed: {exc}")
        path, best, kind = Path(result.path), result.best, trained_kind(result, self.request.kind)
        score = f"; best validation score {best.score:.3g} (epoch {best.epoch})" if best else ""
        if kind != self.request.kind:
            name = what[kind]
            score += f". The base file made this a {name} (its kind is read from the file)"
        if result.stopped:
            kept = f"the best so far is in {path}" if path.is_file() else "no epoch finished"
            return TrainOutcome("stopped", f"Training stopped: {kept}{score}.", result, kind)
        return TrainOutcome("done", f"Trained {name} saved to {path}{score}.", result, kind)

    def _annotations(self) -> list[AnnotatedImage]:
        from napari_mobilesam.errors import InvalidValueError
        from napari_mobilesam.training.sources import (
            annotations_from_arrays,
            annotations_from_folders,
        )

        request = self.request
        if request.folders is not None:
            items = list(annotations_from_folders(*request.folders))
        else:
            items = []
            for pair in request.pairs:
                items.extend(
                    annotations_from_arrays(
                        pair.image, pair.labels, pair.name, contrast_limits=pair.contrast_limits
                    )
                )
        if not items:
            raise InvalidValueError(
                "the labels hold no object: paint at least one object (label > 0) in the "
                "Labels layer over the image"
            )
        return items

    def _split(self, items: list[AnnotatedImage]) -> tuple[list, list]:
        from napari_mobilesam.training.annotations import split_by_image

        train, validation = split_by_image(items, VALIDATION_FRACTION, seed=0)
        return train, (validation or train)

    def _base(self) -> str | Path:
        base = self.request.base
        if isinstance(base, str) and base in OFFICIAL_BASES:
            prepare_torch_import()
            from napari_mobilesam.weights.fetch import fetch_checkpoint

            self._status(f"Finding the base weights ({base})...")
            return fetch_checkpoint(base, progress=False)
        return base

    def _train(self, train: list, validation: list, base: str | Path) -> TrainingResult:
        prepare_torch_import()
        request = self.request
        options = {
            "base": base,
            "epochs": request.epochs,
            "on_epoch": self._epoch_done,
            "should_stop": self._stop.is_set,
        }
        if request.kind == DETECTOR:
            from napari_mobilesam.training.detector import train_detector

            return train_detector(train, validation, request.output, **options)
        from napari_mobilesam.training.decoder import train_decoder

        return train_decoder(train, validation, request.output, **options)

    def _epoch_done(self, report: EpochReport) -> None:
        self._show_epoch(report)

    # ------------------------------------------------------------ GUI thread
    @ensure_main_thread
    def _status(self, line: str) -> None:
        if self._on_status is not None and self.outcome is None:
            self._on_status(line)

    @ensure_main_thread
    def _show_epoch(self, report: EpochReport) -> None:
        self.reports.append(report)
        if self._on_epoch is not None:
            self._on_epoch(report)

    def _on_errored(self, exc: Exception) -> None:
        self._finish(TrainOutcome("failed", report_bug("Training", exc)))

    def _finish(self, outcome: TrainOutcome) -> None:
        self.outcome = outcome
        if self._on_finished is not None:
            self._on_finished(self)
