"""The models of a batch run, loaded once per process; offline, every missing file named.

:func:`load_models` loads the predictor, detector and box decoder of a
:class:`~napari_mobilesam.batch.settings.BatchSettings` once per (worker) process. When
loading fails for want of a checkpoint file, the error lists every official file the run
needs that is not on this computer (:func:`needed_checkpoints`), with URL and path.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from napari_mobilesam.batch.settings import BatchSettings

__all__ = ["load_models", "model_loads", "needed_checkpoints"]

_MODELS: dict[tuple, tuple[Any, Any, Any]] = {}
_LOADS = [0]
_LOCK = threading.Lock()


def load_models(settings: BatchSettings) -> tuple[Any, Any, Any]:
    """``(predictor, detector, box_decoder)`` for ``settings``, loaded once per process.

    Every task that a (worker) process runs reuses them; :func:`model_loads` counts loads.
    """
    key = (
        settings.weights,
        settings.device,
        settings.engine,
        settings.detector,
        settings.conf,
        settings.iou,
        settings.max_objects,
        settings.decoder,
        os.environ.get("NAPARI_MOBILESAM_WEIGHTS"),
    )
    with _LOCK:
        if key not in _MODELS:
            try:
                _MODELS[key] = _load(settings)
            except Exception as error:
                listed = _listing_missing_files(error, settings)
                if listed is error:
                    raise
                raise listed from error
            _LOADS[0] += 1
        return _MODELS[key]


def _load(settings: BatchSettings) -> tuple[Any, Any, Any]:
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.segevery.box_decoders import load_box_decoder
    from napari_mobilesam.segevery.options import LazyDetector
    from napari_mobilesam.weights.build import build_mobile_sam

    predictor = SegAnyPredictor(
        build_mobile_sam(settings.weights), settings.device, engine=settings.engine
    )
    detector: Any = settings.detector
    if not settings.grid:
        detector = LazyDetector(settings, settings.device).load()
    return predictor, detector, load_box_decoder(settings.decoder)


def needed_checkpoints(settings: BatchSettings) -> tuple[list[str], list[str]]:
    """The official checkpoints that ``settings`` use, and those of them it can do without
    (the prompt-guided decoder of ``decoder="auto"``)."""
    names = []
    if settings.weights in (None, "mobile_sam"):
        names.append("mobile_sam")
    if settings.detector in ("auto", "object_aware"):
        names.append("object_aware")
    if settings.decoder in ("auto", "prompt_guided"):
        names.append("prompt_guided")
    return names, ["prompt_guided"] if settings.decoder == "auto" else []


def _listing_missing_files(error: Exception, settings: BatchSettings) -> Exception:
    """``error``, its message followed by every file ``settings`` need that is missing."""
    from napari_mobilesam.weights.needed import missing_checkpoints, missing_files_message

    names, optional = needed_checkpoints(settings)
    missing = missing_checkpoints(names)
    if not missing or not isinstance(error, RuntimeError):  # WeightsError, no detector
        return error
    listed = type(error)(f"{error}\n\n{missing_files_message(missing, optional)}")
    return listed


def model_loads() -> int:
    """How many times this process has loaded models (for any settings)."""
    return _LOADS[0]
