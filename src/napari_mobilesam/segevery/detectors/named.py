"""Detectors known by name: MobileSAMv2's object-aware model and FastSAM, found on this
computer or downloaded.

Importing this module is cheap: ultralytics and the download machinery are imported on first
use.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from napari_mobilesam.segevery.detectors.base import DetectorUnavailableError, first_line
from napari_mobilesam.weights.registry import CHECKPOINTS, WeightsError

__all__ = ["DETECTOR_NAMES", "FASTSAM_FILENAME", "resolve_named_detector"]

DETECTOR_NAMES = ("auto", "object_aware", "fastsam")
FASTSAM_FILENAME = "FastSAM-x.pt"


def resolve_named_detector(name: str) -> Path:
    """Find or download the checkpoint of a named detector.

    Parameters
    ----------
    name : {"object_aware", "fastsam", "auto"}
        See :func:`napari_mobilesam.segevery.discovery.load_detector`.

    Returns
    -------
    pathlib.Path
        The checkpoint file.

    Raises
    ------
    DetectorUnavailableError
        If it is neither on this computer nor downloadable; the message lists the options.
    """
    if name == "object_aware":
        return _fetch_object_aware()[0]
    if name == "fastsam":
        return _fetch_fastsam()[0]
    object_aware, object_aware_problem = _fetch_object_aware(raise_error=False)
    if object_aware is not None:
        return object_aware
    fastsam, fastsam_problem = _fetch_fastsam(raise_error=False)
    if fastsam is not None:
        return fastsam
    raise DetectorUnavailableError(
        "No object detector for segment-everything could be found or downloaded "
        "(detector='auto').\n"
        f"ObjectAwareModel.pt (MobileSAMv2):\n{_indent(object_aware_problem)}\n"
        f"{FASTSAM_FILENAME} (FastSAM):\n{_indent(fastsam_problem)}\n"
        f"{_detector_options()}"
    )


def _fetch_object_aware(*, raise_error: bool = True) -> tuple[Path | None, str]:
    from napari_mobilesam.weights import fetch as weights

    try:
        return weights.fetch_checkpoint("object_aware"), ""
    except WeightsError as error:
        if raise_error:
            raise DetectorUnavailableError(f"{error}\n{_detector_options()}") from error
        return None, str(error)


def _fetch_fastsam(*, raise_error: bool = True) -> tuple[Path | None, str]:
    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics, yolo_class
    from napari_mobilesam.weights import fetch as weights

    yolo_class()  # sets ultralytics' environment defaults before its first import
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import attempt_download_asset

    env_value = os.environ.get(weights.WEIGHTS_ENV, "").strip()
    folders = [Path(env_value).expanduser()] if env_value else []
    # ultralytics itself looks in the working folder, then in its weights folder.
    ultralytics_weights = Path(SETTINGS["weights_dir"]).expanduser().absolute()
    folders += [weights.cache_dir(), Path.cwd(), ultralytics_weights]
    for folder in folders:
        if (folder / FASTSAM_FILENAME).is_file():
            return folder / FASTSAM_FILENAME, ""

    target = weights.cache_dir() / FASTSAM_FILENAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # ultralytics draws its download progress bar on stdout; keep stdout clean.
        with quiet_ultralytics(), contextlib.redirect_stdout(sys.stderr):
            attempt_download_asset(str(target))
    except OSError as error:
        reason = f"{type(error).__name__}: {first_line(error)}"
    else:
        if target.is_file():
            return target, ""
        reason = "ultralytics did not find it among its release assets"
    searched = ", ".join(str(folder) for folder in folders)
    problem = (
        f"Not found in {searched}, and the download by ultralytics failed ({reason}). "
        f"Without internet access, download {FASTSAM_FILENAME} from ultralytics' GitHub "
        f"release assets on another computer and copy it to {target}."
    )
    if raise_error:
        raise DetectorUnavailableError(f"{problem}\n{_detector_options()}")
    return None, problem


def _detector_options() -> str:
    from napari_mobilesam.weights import fetch as weights

    object_aware = CHECKPOINTS["object_aware"]
    return (
        "Options:\n"
        "  - detector='/path/to/model.pt': any ultralytics YOLO detection or segmentation "
        "checkpoint, e.g. your own nucleus detector, or its ONNX export (model.onnx);\n"
        "  - detector='grid': prompts on a regular grid of points, no detector needed;\n"
        "  - boxes=...: pass your own (N, 4) x0, y0, x1, y1 boxes instead of detecting them;\n"
        f"  - put {object_aware.filename} (from {object_aware.url}) into "
        f"{weights.cache_dir()}, or into a folder and set {weights.WEIGHTS_ENV} to that "
        "folder."
    )


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
