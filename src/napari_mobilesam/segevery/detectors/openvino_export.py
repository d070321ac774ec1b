"""SegEvery's YOLO detector in OpenVINO, float32 or int8, exported once per weights file.

The detector is exported with ultralytics' own OpenVINO export
(``YOLO(...).export(format="openvino", dynamic=True, quantize=8, data=...)``) into the
engine cache (:mod:`napari_mobilesam.engines.cache`), keyed by the fingerprint of the
detector's weights, and run through ultralytics' OpenVINO backend like a ``.pt`` file.
The export has a dynamic input size, so each image is letterboxed into the same frame as
for the ``.pt`` file and the boxes are post-processed alike. int8 is calibrated by
ultralytics and NNCF on a small dataset written to a temporary folder: the images of
:func:`napari_mobilesam.engines.calibration.calibration_images`, or the user's own.

Offline by construction: nothing is downloaded and nothing installed (ultralytics runs with
``YOLO_OFFLINE`` and without auto-install, see
:func:`napari_mobilesam.segevery.detectors.yolo.yolo_class`; the font check of its dataset
reader, which would probe the internet, is skipped during the export).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines.cache import engine_path, weights_fingerprint
from napari_mobilesam.engines.calibration import calibration_images
from napari_mobilesam.engines.openvino_engine import (
    OPENVINO_PRECISIONS,
    calibration_key,
    openvino_module,
)
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import to_rgb_uint8

__all__ = ["detector_fingerprint", "openvino_detector_folder"]

#: The name of the exported model's files; ultralytics knows an OpenVINO export by its
#: folder's name, ``<name>_openvino_model``.
_MODEL_NAME = "model"
_EXPORT_FOLDER = f"{_MODEL_NAME}_openvino_model"


def detector_fingerprint(path: str | Path) -> str:
    """The fingerprint of the weights of the YOLO ``.pt`` file at ``path`` (loaded once).

    Examples
    --------
    >>> detector_fingerprint("ObjectAwareModel.pt")  # doctest: +SKIP
    '3f0c9a5e1b2d4c6a'
    """
    from napari_mobilesam.segevery.detectors.yolo import load_yolo_detector

    loaded = load_yolo_detector(
        Path(path), conf=0.25, iou=0.9, imgsz=None, max_det=300, device="cpu"
    )
    return weights_fingerprint(loaded.model.model)


def openvino_detector_folder(
    path: str | Path,
    precision: str = "float32",
    *,
    imgsz: int = 1024,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """The folder of the OpenVINO export of the YOLO detector ``path``, exported once.

    Parameters
    ----------
    path : str or Path
        An ultralytics YOLO detection or segmentation ``.pt`` file.
    precision : {"float32", "int8"}
        int8 is quantized by ultralytics' export with NNCF, calibrated on ``calibration``.
    imgsz : int
        The input size int8 is calibrated at (the export itself takes any size).
    calibration : sequence of images, optional
        Images to calibrate int8 on (any array :func:`napari_mobilesam.to_rgb_uint8`
        takes); default :func:`napari_mobilesam.engines.calibration.calibration_images`.
    progress : callable, optional
        ``progress(done, total)`` over the steps (fingerprint, export).

    Returns
    -------
    Path
        A folder ``model_openvino_model`` with ``model.xml``, ``model.bin`` and
        ultralytics' ``metadata.yaml``, which ultralytics' ``YOLO`` loads.

    Examples
    --------
    >>> folder = openvino_detector_folder("ObjectAwareModel.pt", "int8")  # doctest: +SKIP
    """
    if precision not in OPENVINO_PRECISIONS:
        raise InvalidValueError(
            f"precision must be one of {OPENVINO_PRECISIONS}, got {precision!r}"
        )
    ov = openvino_module()  # declines OpenVINO's and NNCF's telemetry before ultralytics uses them
    fingerprint = detector_fingerprint(path)
    if progress is not None:
        progress(1, 2)
    key = "" if precision == "float32" else f"-{imgsz}-{calibration_key(calibration)}"
    name = f"detector-{precision}{key}"
    variant = engine_path(fingerprint, name, "openvino", ov.__version__).parent
    exported = variant / _EXPORT_FOLDER
    if not (exported / f"{_MODEL_NAME}.xml").is_file():
        variant.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(variant) as folder:
            _export(Path(path), folder, precision, imgsz, calibration)
    if progress is not None:
        progress(2, 2)
    return exported


def _export(
    path: Path,
    folder: Path,
    precision: str,
    imgsz: int,
    calibration: Sequence[np.ndarray] | None,
) -> None:
    """Export ``path`` with ultralytics into ``folder`` (files ``model.xml``, ...)."""
    from napari_mobilesam.segevery.detectors.yolo import boxes_only_model, quiet_ultralytics

    with tempfile.TemporaryDirectory(prefix="napari-mobilesam-export-") as scratch:
        work = Path(scratch)
        model = boxes_only_model(path)
        # ultralytics writes the export beside the file the model came from: here.
        model.model.pt_path = str(work / f"{_MODEL_NAME}.pt")
        options = {"format": "openvino", "imgsz": imgsz, "dynamic": True, "device": "cpu"}
        if precision == "int8":
            options.update(quantize=8, data=str(_calibration_dataset(work, calibration)))
        with quiet_ultralytics(), _offline_and_quiet():
            exported = Path(model.export(**options))
        folder.mkdir()
        shutil.move(str(exported), folder / _EXPORT_FOLDER)


def _calibration_dataset(work: Path, images: Sequence[np.ndarray] | None) -> Path:
    """An ultralytics dataset of the calibration images (no labels) and its yaml file."""
    import cv2

    found = calibration_images() if images is None else [to_rgb_uint8(i) for i in images]
    folder = work / "calibration" / "images"
    folder.mkdir(parents=True)
    for number, rgb in enumerate(found):
        cv2.imwrite(str(folder / f"{number:03d}.png"), np.ascontiguousarray(rgb[..., ::-1]))
    data = work / "calibration" / "data.yaml"
    data.write_text(f"path: {folder.parent}\ntrain: images\nval: images\nnames:\n  0: object\n")
    return data


@contextlib.contextmanager
def _offline_and_quiet() -> Iterator[None]:
    """ultralytics' dataset reader looks for a plotting font and downloads it when missing
    (a network probe even offline); the export plots nothing, so the check is skipped.
    NNCF's log lines (one per layer left unquantized) are held back too."""
    from ultralytics.data import utils as data_utils

    check_font = data_utils.check_font
    logger = logging.getLogger("nncf")
    level = logger.level
    data_utils.check_font = lambda *args, **kwargs: None
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        data_utils.check_font = check_font
        logger.setLevel(level)
