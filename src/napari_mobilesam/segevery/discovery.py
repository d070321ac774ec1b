"""Object discovery for segment-everything: propose one box per object before SAM decodes them.

MobileSAMv2 replaces SAM's dense grid of point prompts by the boxes of an object detector, its
"object-aware model" ``ObjectAwareModel.pt``: an ultralytics YOLOv8 segmentation model trained
on SA-1B, run at ``imgsz=1024, conf=0.4, iou=0.9`` with class-agnostic NMS. Only its boxes are
used. Any ultralytics YOLO detection or segmentation checkpoint can take its place, such as
FastSAM-x or a user's own nucleus detector, or its ONNX export (which, unlike a ``.pt`` file,
cannot run code when loaded), and so can any Python callable that returns boxes.

Importing this module is cheap: torch, torchvision and ultralytics are imported by the functions
that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.errors import InvalidTypeError
from napari_mobilesam.segevery.boxes import (
    MAX_DETECTIONS,
    cap_by_confidence,
    check_fraction,
    check_positive_int,
    clean_boxes,
    nms_boxes,
)
from napari_mobilesam.segevery.detectors.base import (
    DEFAULT_IMGSZ,
    CheckedDetector,
    Detector,
    DetectorUnavailableError,
    InvalidDetectorError,
    check_rgb_uint8,
)
from napari_mobilesam.segevery.detectors.named import (
    DETECTOR_NAMES,
    FASTSAM_FILENAME,
    resolve_named_detector,
)

__all__ = [
    "DEFAULT_IMGSZ",
    "DETECTOR_NAMES",
    "FASTSAM_FILENAME",
    "Detector",
    "DetectorUnavailableError",
    "InvalidDetectorError",
    "check_rgb_uint8",
    "discover_objects",
    "load_detector",
]

#: File types a YOLO detector is loaded from: ultralytics checkpoints and ONNX exports.
_DETECTOR_SUFFIXES = (".pt", ".onnx")


def load_detector(
    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any],
    *,
    conf: float = 0.4,
    iou: float = 0.9,
    imgsz: int | None = None,
    device: str | None = None,
    max_det: int = MAX_DETECTIONS,
    engine: str = "torch",
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> Detector:
    """Turn a detector name, checkpoint path or callable into a :class:`Detector`.

    Parameters
    ----------
    detector : str, os.PathLike or callable
        One of:

        - ``"object_aware"``: MobileSAMv2's ``ObjectAwareModel.pt``, found or downloaded
          with :func:`napari_mobilesam.weights.fetch.fetch_checkpoint` (a folder named by
          ``NAPARI_MOBILESAM_WEIGHTS``, then the cache, then a download).
        - ``"fastsam"``: ultralytics' ``FastSAM-x.pt``, looked for in the
          ``NAPARI_MOBILESAM_WEIGHTS`` folder, the napari-mobilesam cache, the working
          folder and ultralytics' weights folder, else downloaded by ultralytics into the
          cache.
        - ``"auto"``: ``"object_aware"`` if it is there or can be downloaded, else
          ``"fastsam"``; :class:`DetectorUnavailableError` if neither.
        - The path of an ultralytics YOLO detection or segmentation ``.pt`` checkpoint,
          e.g. a nucleus detector trained with ultralytics.
        - The path of an ONNX export of such a model (``.onnx``, from
          ``YOLO("best.pt").export(format="onnx", imgsz=1024)``), run with onnxruntime
          (``pip install "napari-mobilesam[onnx]"``). Unlike a ``.pt`` file, it holds no
          Python code, so loading it cannot run code.
        - A callable ``image -> (boxes, scores)`` (see :class:`Detector`). It is wrapped so
          that its output is checked: ``(N, 4)`` boxes and ``(N,)`` scores, all finite.
          A detector returned by this function is returned unchanged.
    conf : float
        Minimum confidence of a YOLO detection, in [0, 1].
    iou : float
        IoU above which ultralytics' class-agnostic NMS drops the weaker of two boxes.
    imgsz : int, optional
        Side of the square the image is letterboxed into for the YOLO model; a multiple of
        the model's stride (32 for YOLOv8). None: the input size of a fixed-size ONNX
        export (which accepts no other), else 1024, MobileSAMv2's.
    device : str, optional
        Torch device of the YOLO model, e.g. ``"cpu"`` or ``"cuda:0"``. None: CUDA if
        available, then Apple MPS, then the CPU.
    max_det : int
        The most boxes a YOLO model returns per image (ultralytics' and MobileSAMv2's
        default: 300).
    engine : {"torch", "auto", "openvino", "openvino-int8"}
        What runs a YOLO ``.pt`` detector (the names of
        :class:`~napari_mobilesam.segany.predictor.SegAnyPredictor`'s ``engine``).
        "openvino" and "openvino-int8" run its OpenVINO export on the CPU (``pip install
        "napari-mobilesam[cpu]"``), exported once per weights file with ultralytics into
        the cache folder; "auto" takes the fastest engine that passed its checks against
        torch on this machine (measured once, remembered), and torch on a GPU. See
        :mod:`napari_mobilesam.segevery.detectors.engine_choice`. ONNX exports run in
        ONNX Runtime and callables as they are, whatever the engine.
    calibration : sequence of images, optional
        Images to calibrate the int8 export on (default: the encoder's calibration set,
        :mod:`napari_mobilesam.engines.calibration`).
    progress : callable, optional
        ``progress(done, total)`` while an OpenVINO export is made or measured.

    Returns
    -------
    Detector
        For names and paths a :class:`napari_mobilesam.segevery.detectors.yolo.YoloDetector`,
        which applies
        MobileSAMv2's box post-processing (one class-agnostic NMS at ``iou``, then box
        edges within 20 px of the border of the letterboxed ``imgsz`` frame snapped onto
        it); otherwise a checking wrapper.

    Raises
    ------
    FileNotFoundError
        If ``detector`` is neither a known name nor an existing file.
    InvalidDetectorError
        If the file is not an ultralytics YOLO ``.pt`` checkpoint or ONNX export, or its
        task is not detection or segmentation (classification, pose and OBB models are
        refused).
    DetectorUnavailableError
        If a named checkpoint is neither on this computer nor downloadable, or an ONNX
        file is given and onnxruntime is not installed.
    TypeError, ValueError
        If an argument has the wrong type or value, e.g. an ``imgsz`` other than the
        fixed input size of an ONNX export.

    Notes
    -----
    ultralytics is imported on first use, with ``YOLO_OFFLINE=1`` and
    ``YOLO_AUTOINSTALL=False`` as defaults (environment variables already set are kept):
    no network check at import, no usage analytics, no automatic pip installs. Loading a
    ``.pt`` file unpickles it, which can run code stored in it: load only files you trust,
    or use an ONNX export of the model, which cannot run code.

    Examples
    --------
    >>> detect = load_detector("/data/models/nuclei-yolov8n.pt", conf=0.25)  # doctest: +SKIP
    >>> boxes, scores = detect(rgb_image)  # doctest: +SKIP
    """
    check_fraction(conf, "conf")
    check_fraction(iou, "iou")
    if imgsz is not None:
        check_positive_int(imgsz, "imgsz")
    check_positive_int(max_det, "max_det")
    if isinstance(detector, CheckedDetector) or _is_yolo_detector(detector):
        return detector
    if isinstance(detector, str) and detector.strip().lower() in DETECTOR_NAMES:
        path = resolve_named_detector(detector.strip().lower())
    elif isinstance(detector, str | os.PathLike):
        path = _existing_checkpoint(detector)
    elif callable(detector):
        return CheckedDetector(detector)
    else:
        raise InvalidTypeError(
            "Expected detector to be a name among "
            f"{', '.join(repr(name) for name in DETECTOR_NAMES)}, the path of an ultralytics "
            f"YOLO .pt checkpoint or .onnx export, or a callable; received "
            f"{type(detector).__name__}."
        )
    engine = _checked_engine(engine, device)
    if engine != "torch" and path.suffix.lower() == ".pt":
        from napari_mobilesam.segevery.detectors.engine_choice import detector_for_engine

        return detector_for_engine(
            path,
            engine,
            conf=conf,
            iou=iou,
            imgsz=DEFAULT_IMGSZ if imgsz is None else imgsz,
            max_det=max_det,
            calibration=calibration,
            progress=progress,
        )
    from napari_mobilesam.segevery.detectors.yolo import load_yolo_detector

    return load_yolo_detector(
        path, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, device=device
    )


def _checked_engine(engine: str, device: str | None) -> str:
    """``engine`` checked for the detector's device: "auto" is torch on a GPU or without
    openvino; an OpenVINO name runs on the CPU (the device None means the CPU then)."""
    if engine == "torch":
        return engine
    import torch

    from napari_mobilesam.engines.choice import check_engine
    from napari_mobilesam.model.device import default_device

    if device is None:
        where = default_device() if engine == "auto" else torch.device("cpu")
    else:
        where = torch.device(device)
    return check_engine(engine, where)


def discover_objects(
    image_rgb: np.ndarray,
    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any] = "auto",
    *,
    conf: float = 0.4,
    iou: float = 0.9,
    max_objects: int = MAX_DETECTIONS,
    imgsz: int | None = None,
    device: str | None = None,
    engine: str = "torch",
) -> tuple[np.ndarray, np.ndarray]:
    """Propose one box per object in an RGB image, MobileSAMv2 style.

    The detector is loaded if needed (see :func:`load_detector`) and run; its boxes are
    clipped to the image and degenerate ones dropped
    (:func:`~napari_mobilesam.segevery.boxes.clean_boxes`); overlapping boxes of a callable
    detector are suppressed by class-agnostic NMS at ``iou``
    (:func:`~napari_mobilesam.segevery.boxes.nms_boxes`; a YOLO detector has applied its NMS
    already, once, as MobileSAMv2 does); and the ``max_objects`` most confident are kept
    (:func:`~napari_mobilesam.segevery.boxes.cap_by_confidence`).

    Parameters
    ----------
    image_rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB image, e.g. from :func:`napari_mobilesam.to_rgb_uint8`.
    detector : str, os.PathLike or callable
        A name, checkpoint path, callable or loaded detector; see :func:`load_detector`.
    conf : float
        Minimum confidence of a YOLO detection. Used when the detector is loaded here;
        a detector returned by :func:`load_detector` keeps its own.
    iou : float
        IoU above which the weaker of two overlapping boxes is dropped, in [0, 1].
    max_objects : int
        The most boxes returned.
    imgsz : int, optional
        Input size of a YOLO detector loaded here; None: 1024, or the input size of a
        fixed-size ONNX export.
    device : str, optional
        Device of a YOLO detector loaded here; None: CUDA, then MPS, then CPU.
    engine : {"torch", "auto", "openvino", "openvino-int8"}
        What runs a YOLO ``.pt`` detector loaded here; see :func:`load_detector`.

    Returns
    -------
    boxes : numpy.ndarray
        ``(N, 4)`` float32 x0, y0, x1, y1 inside the image, ``N <= max_objects``, sorted by
        decreasing score.
    scores : numpy.ndarray
        ``(N,)`` float32, non-increasing.

    Raises
    ------
    ValueError, TypeError
        If the image is not ``(H, W, 3)`` uint8, an argument is out of range, or a
        callable detector returns something else than ``(boxes, scores)``.
    FileNotFoundError, InvalidDetectorError, DetectorUnavailableError
        See :func:`load_detector`.

    Examples
    --------
    >>> boxes, scores = discover_objects(rgb_image, "object_aware")  # doctest: +SKIP
    >>> boxes.shape  # doctest: +SKIP
    (212, 4)

    A callable works as a detector too:

    >>> def one_box(image):
    ...     return np.array([[10, 10, 50, 40]], np.float32), np.array([0.9], np.float32)
    >>> boxes, scores = discover_objects(np.zeros((64, 64, 3), np.uint8), one_box)
    >>> boxes, scores
    (array([[10., 10., 50., 40.]], dtype=float32), array([0.9], dtype=float32))
    """
    image = check_rgb_uint8(image_rgb)
    check_positive_int(max_objects, "max_objects")
    detect = load_detector(
        detector,
        conf=conf,
        iou=iou,
        imgsz=imgsz,
        device=device,
        max_det=max(MAX_DETECTIONS, int(max_objects)),
        engine=engine,
    )
    boxes, scores = detect(image)
    boxes, valid = clean_boxes(boxes, image.shape)
    scores = scores[valid]
    if not getattr(detect, "applies_nms", False):
        keep = nms_boxes(boxes, scores, iou)
        boxes, scores = boxes[keep], scores[keep]
    return cap_by_confidence(boxes, scores, max_objects)


def _is_yolo_detector(detector: object) -> bool:
    # Checked by name so that ultralytics is not imported for a callable detector.
    yolo = sys.modules.get("napari_mobilesam.segevery.detectors.yolo")
    return yolo is not None and isinstance(detector, yolo.YoloDetector)


def _existing_checkpoint(path_like: str | os.PathLike[str]) -> Path:
    path = Path(path_like).expanduser()
    if not path.exists():
        names = ", ".join(repr(name) for name in DETECTOR_NAMES)
        raise FileNotFoundError(
            f"Detector checkpoint {path} does not exist. Expected the path of an ultralytics "
            f"YOLO .pt or .onnx file, or one of the names {names}."
        )
    if not path.is_file():
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint: it is a folder, expected a .pt or "
            ".onnx file."
        )
    if path.suffix.lower() not in _DETECTOR_SUFFIXES:
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint: expected a PyTorch .pt file or "
            f"an ONNX export (.onnx), received a {path.suffix or 'suffix-less'} file. Other "
            "exports (TensorRT, OpenVINO, ...) are not supported; use the .pt file they were "
            'exported from, or export it to ONNX: YOLO("best.pt").export(format="onnx").'
        )
    return path
