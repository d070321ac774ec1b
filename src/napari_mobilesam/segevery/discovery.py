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

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from napari_mobilesam.segevery.boxes import (
    MAX_DETECTIONS,
    cap_by_confidence,
    check_fraction,
    check_positive_int,
    clean_boxes,
    nms_boxes,
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

DETECTOR_NAMES = ("auto", "object_aware", "fastsam")
FASTSAM_FILENAME = "FastSAM-x.pt"
#: MobileSAMv2's YOLO input size, the default for ``.pt`` files and dynamic ONNX exports.
DEFAULT_IMGSZ = 1024
#: File types a YOLO detector is loaded from: ultralytics checkpoints and ONNX exports.
_DETECTOR_SUFFIXES = (".pt", ".onnx")


class Detector(Protocol):
    """A callable that proposes object boxes in an RGB image.

    It takes an ``(H, W, 3)`` uint8 RGB image and returns ``(boxes, scores)``: ``boxes`` an
    ``(N, 4)`` float32 array of x0, y0, x1, y1 in image pixels and ``scores`` an ``(N,)``
    float32 array of confidences.
    """

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]: ...


class DetectorUnavailableError(RuntimeError):
    """No detector checkpoint could be found or downloaded, or what runs it is not installed;
    the message lists what to do."""


class InvalidDetectorError(ValueError):
    """A detector file or callable is not usable, e.g. not an ultralytics YOLO checkpoint."""


class _CheckedDetector:
    """Wrap a user's detector callable so that what it returns is checked and made float32."""

    def __init__(self, function: Callable[[np.ndarray], Any]) -> None:
        self.function = function

    def __repr__(self) -> str:
        return f"_CheckedDetector({self.function!r})"

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]:
        return _check_detector_output(self.function(image), self.function)


def load_detector(
    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any],
    *,
    conf: float = 0.4,
    iou: float = 0.9,
    imgsz: int | None = None,
    device: str | None = None,
    max_det: int = MAX_DETECTIONS,
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
    if isinstance(detector, _CheckedDetector) or _is_yolo_detector(detector):
        return detector
    if isinstance(detector, str) and detector.strip().lower() in DETECTOR_NAMES:
        path = _resolve_named_detector(detector.strip().lower())
    elif isinstance(detector, str | os.PathLike):
        path = _existing_checkpoint(detector)
    elif callable(detector):
        return _CheckedDetector(detector)
    else:
        raise TypeError(
            "Expected detector to be a name among "
            f"{', '.join(repr(name) for name in DETECTOR_NAMES)}, the path of an ultralytics "
            f"YOLO .pt checkpoint or .onnx export, or a callable; received "
            f"{type(detector).__name__}."
        )
    from napari_mobilesam.segevery.detectors.yolo import load_yolo_detector

    return load_yolo_detector(
        path, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, device=device
    )


def discover_objects(
    image_rgb: np.ndarray,
    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any] = "auto",
    *,
    conf: float = 0.4,
    iou: float = 0.9,
    max_objects: int = MAX_DETECTIONS,
    imgsz: int | None = None,
    device: str | None = None,
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


def _resolve_named_detector(name: str) -> Path:
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
    except weights.WeightsError as error:
        if raise_error:
            raise DetectorUnavailableError(f"{error}\n{_detector_options()}") from error
        return None, str(error)


def _fetch_fastsam(*, raise_error: bool = True) -> tuple[Path | None, str]:
    from napari_mobilesam.segevery.detectors.yolo import first_line, quiet_ultralytics, yolo_class
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

    object_aware = weights.CHECKPOINTS["object_aware"]
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


def _check_detector_output(output: Any, detector: object) -> tuple[np.ndarray, np.ndarray]:
    name = getattr(detector, "__name__", type(detector).__name__)
    if not isinstance(output, tuple | list) or len(output) != 2:
        raise InvalidDetectorError(
            f"Detector {name} must return a pair (boxes, scores); received "
            f"{type(output).__name__}."
        )
    try:
        boxes = np.asarray(output[0], dtype=np.float32)
        scores = np.asarray(output[1], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidDetectorError(
            f"Detector {name} must return numeric arrays (boxes, scores): {error}"
        ) from error
    if boxes.size == 0 and scores.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidDetectorError(
            f"Detector {name} must return boxes of shape (N, 4) as x0, y0, x1, y1; "
            f"received shape {boxes.shape}."
        )
    if scores.shape != (len(boxes),):
        raise InvalidDetectorError(
            f"Detector {name} must return one score per box, shape ({len(boxes)},); "
            f"received shape {scores.shape}."
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise InvalidDetectorError(f"Detector {name} returned NaN or infinite values.")
    return boxes, scores


def check_rgb_uint8(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Expected the image as a numpy array; received {type(image).__name__}. "
            "Convert it with napari_mobilesam.to_rgb_uint8."
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "Expected an (H, W, 3) uint8 RGB image; received shape "
            f"{image.shape} and dtype {image.dtype}. Convert it with "
            "napari_mobilesam.to_rgb_uint8."
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Expected a non-empty image; received shape {image.shape}.")
    return image


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
