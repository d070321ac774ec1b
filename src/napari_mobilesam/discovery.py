"""Object discovery for segment-everything: propose one box per object before SAM decodes them.

MobileSAMv2 replaces SAM's dense grid of point prompts by the boxes of an object detector, its
"object-aware model" ``ObjectAwareModel.pt``: an ultralytics YOLOv8 segmentation model trained
on SA-1B, run at ``imgsz=1024, conf=0.4, iou=0.9`` with class-agnostic NMS. Only its boxes are
used. Any ultralytics YOLO detection or segmentation checkpoint can take its place, such as
FastSAM-x or a user's own nucleus detector, and so can any Python callable that returns boxes.

Importing this module is cheap: torch, torchvision and ultralytics are imported by the functions
that need them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from ultralytics import YOLO

__all__ = [
    "BORDER_SNAP_PIXELS",
    "DETECTOR_NAMES",
    "FASTSAM_FILENAME",
    "MAX_DETECTIONS",
    "Detector",
    "DetectorUnavailableError",
    "InvalidDetectorError",
    "YoloDetector",
    "cap_by_confidence",
    "clean_boxes",
    "discover_objects",
    "load_detector",
    "nms_boxes",
    "snap_to_border",
]

BORDER_SNAP_PIXELS = 20
"""Box edges closer than this to the image border, in the detector's input frame, are snapped."""

MAX_DETECTIONS = 1000
"""The most boxes a YOLO detector returns per image (ultralytics' ``max_det``)."""

DETECTOR_NAMES = ("auto", "object_aware", "fastsam")
FASTSAM_FILENAME = "FastSAM-x.pt"
SUPPORTED_TASKS = ("detect", "segment")

# Set before the first ultralytics import, without overriding a user's own choice.
# YOLO_OFFLINE: skip the DNS probe at import and the analytics, crash reports and pip update
#   checks that depend on it; a failed download is then reported at once instead of retried
#   for half a minute. Downloads themselves still work.
# YOLO_AUTOINSTALL: never pip-install a module that a checkpoint file asks for.
_ULTRALYTICS_ENV_DEFAULTS = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
# From this release on, ultralytics' DetectionPredictor gives the NMS the class count, which
# lets it decode a segmentation model's boxes without computing masks.
_BOXES_ONLY_MIN_VERSION = "8.3.70"


class Detector(Protocol):
    """A callable that proposes object boxes in an RGB image.

    It takes an ``(H, W, 3)`` uint8 RGB image and returns ``(boxes, scores)``: ``boxes`` an
    ``(N, 4)`` float32 array of x0, y0, x1, y1 in image pixels and ``scores`` an ``(N,)``
    float32 array of confidences.
    """

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]: ...


class DetectorUnavailableError(RuntimeError):
    """No detector checkpoint could be found or downloaded; the message lists what to do."""


class InvalidDetectorError(ValueError):
    """A detector file or callable is not usable, e.g. not an ultralytics YOLO checkpoint."""


class YoloDetector:
    """An ultralytics YOLO detection or segmentation model used as a :class:`Detector`.

    Made by :func:`load_detector`; models are loaded once and shared between detectors with
    the same file and device.

    Parameters
    ----------
    model : ultralytics.YOLO
        The loaded model.
    path : pathlib.Path
        The checkpoint file.
    conf, iou, imgsz, max_det, device
        See :func:`load_detector`.
    """

    def __init__(
        self,
        model: YOLO,
        path: Path,
        *,
        conf: float,
        iou: float,
        imgsz: int,
        max_det: int,
        device: str,
    ) -> None:
        self.model = model
        self.path = path
        self.task = str(model.task)
        self.conf = conf
        self.iou = iou
        self.imgsz = imgsz
        self.max_det = max_det
        self.device = device
        self._lock = _model_lock(model)

    def __repr__(self) -> str:
        return (
            f"YoloDetector({str(self.path)!r}, task={self.task!r}, conf={self.conf}, "
            f"iou={self.iou}, imgsz={self.imgsz}, max_det={self.max_det}, "
            f"device={self.device!r})"
        )

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]:
        """Detect objects in an ``(H, W, 3)`` uint8 RGB image.

        Returns
        -------
        boxes : numpy.ndarray
            ``(N, 4)`` float32 x0, y0, x1, y1 in image pixels, sorted by decreasing score.
            Box edges closer than :data:`BORDER_SNAP_PIXELS` pixels of the detector's input
            (``BORDER_SNAP_PIXELS * max(H, W) / imgsz`` image pixels) to the image border
            are moved onto it, as MobileSAMv2 does.
        scores : numpy.ndarray
            ``(N,)`` float32 confidences in [0, 1].
        """
        image = _check_rgb_uint8(image)
        predict_options: dict[str, Any] = {}
        if _is_plain_yolo_segmenter(self.model) and (predictor := _boxes_only_predictor()):
            predict_options["predictor"] = predictor
        # ultralytics reads numpy images as OpenCV BGR, so the channels are reversed.
        bgr = np.ascontiguousarray(image[..., ::-1])
        with self._lock, _quiet_ultralytics():
            results = self.model.predict(
                bgr,
                imgsz=self.imgsz,
                conf=self.conf,
                iou=self.iou,
                agnostic_nms=True,
                max_det=self.max_det,
                device=self.device,
                verbose=False,
                **predict_options,
            )
        found = results[0].boxes
        boxes = found.xyxy.cpu().numpy().astype(np.float32)
        scores = found.conf.cpu().numpy().astype(np.float32)
        height, width = image.shape[:2]
        # MobileSAMv2 snaps in the letterboxed input frame; the threshold is scaled back to
        # image pixels here, and the letterbox padding (under one stride) is left out.
        threshold = BORDER_SNAP_PIXELS * max(height, width) / self.imgsz
        return snap_to_border(boxes, (height, width), threshold), scores


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
    imgsz: int = 1024,
    device: str | None = None,
    max_det: int = MAX_DETECTIONS,
) -> Detector:
    """Turn a detector name, checkpoint path or callable into a :class:`Detector`.

    Parameters
    ----------
    detector : str, os.PathLike or callable
        One of:

        - ``"object_aware"``: MobileSAMv2's ``ObjectAwareModel.pt``, found or downloaded
          with :func:`napari_mobilesam.weights.fetch_checkpoint` (a folder named by
          ``NAPARI_MOBILESAM_WEIGHTS``, then the cache, then a download).
        - ``"fastsam"``: ultralytics' ``FastSAM-x.pt``, looked for in the
          ``NAPARI_MOBILESAM_WEIGHTS`` folder, the napari-mobilesam cache, the working
          folder and ultralytics' weights folder, else downloaded by ultralytics into the
          cache.
        - ``"auto"``: ``"object_aware"`` if it is there or can be downloaded, else
          ``"fastsam"``; :class:`DetectorUnavailableError` if neither.
        - The path of an ultralytics YOLO detection or segmentation ``.pt`` checkpoint,
          e.g. a nucleus detector trained with ultralytics.
        - A callable ``image -> (boxes, scores)`` (see :class:`Detector`). It is wrapped so
          that its output is checked: ``(N, 4)`` boxes and ``(N,)`` scores, all finite.
          A detector returned by this function is returned unchanged.
    conf : float
        Minimum confidence of a YOLO detection, in [0, 1].
    iou : float
        IoU above which ultralytics' class-agnostic NMS drops the weaker of two boxes.
    imgsz : int
        Side of the square the image is letterboxed into for the YOLO model; a multiple of
        the model's stride (32 for YOLOv8).
    device : str, optional
        Torch device of the YOLO model, e.g. ``"cpu"`` or ``"cuda:0"``. None: CUDA if
        available, then Apple MPS, then the CPU.
    max_det : int
        The most boxes a YOLO model returns per image.

    Returns
    -------
    Detector
        For names and paths a :class:`YoloDetector`; otherwise a checking wrapper.

    Raises
    ------
    FileNotFoundError
        If ``detector`` is neither a known name nor an existing file.
    InvalidDetectorError
        If the file is not an ultralytics YOLO ``.pt`` checkpoint, or its task is not
        detection or segmentation (classification, pose and OBB models are refused).
    DetectorUnavailableError
        If a named checkpoint is neither on this computer nor downloadable.
    TypeError, ValueError
        If an argument has the wrong type or value.

    Notes
    -----
    ultralytics is imported on first use, with ``YOLO_OFFLINE=1`` and
    ``YOLO_AUTOINSTALL=False`` as defaults (environment variables already set are kept):
    no network check at import, no usage analytics, no automatic pip installs. Loading a
    ``.pt`` file unpickles it, which can run code stored in it: load only files you trust.

    Examples
    --------
    >>> detect = load_detector("/data/models/nuclei-yolov8n.pt", conf=0.25)  # doctest: +SKIP
    >>> boxes, scores = detect(rgb_image)  # doctest: +SKIP
    """
    _check_fraction(conf, "conf")
    _check_fraction(iou, "iou")
    _check_positive_int(imgsz, "imgsz")
    _check_positive_int(max_det, "max_det")
    if isinstance(detector, YoloDetector | _CheckedDetector):
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
            f"YOLO .pt checkpoint, or a callable; received {type(detector).__name__}."
        )
    resolved_device = _resolve_device(device)
    model = _load_yolo(str(path.resolve()), _file_signature(path), resolved_device)
    stride = int(max(model.model.stride))
    if imgsz % stride:
        raise ValueError(
            f"Expected imgsz to be a multiple of the model's stride {stride}; received {imgsz}."
        )
    return YoloDetector(
        model,
        path,
        conf=float(conf),
        iou=float(iou),
        imgsz=int(imgsz),
        max_det=int(max_det),
        device=resolved_device,
    )


def discover_objects(
    image_rgb: np.ndarray,
    detector: str | os.PathLike[str] | Callable[[np.ndarray], Any] = "auto",
    *,
    conf: float = 0.4,
    iou: float = 0.9,
    max_objects: int = 320,
    imgsz: int = 1024,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Propose one box per object in an RGB image, MobileSAMv2 style.

    The detector is loaded if needed (see :func:`load_detector`) and run; its boxes are
    clipped to the image, degenerate ones dropped (:func:`clean_boxes`), overlapping ones
    suppressed by class-agnostic NMS at ``iou`` (:func:`nms_boxes`; for a YOLO detector
    this repeats ultralytics' own NMS, which changes little), and the ``max_objects`` most
    confident kept (:func:`cap_by_confidence`).

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
    imgsz : int
        Input size of a YOLO detector loaded here.
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
    image = _check_rgb_uint8(image_rgb)
    _check_positive_int(max_objects, "max_objects")
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
    keep = nms_boxes(boxes, scores, iou)
    return cap_by_confidence(boxes[keep], scores[keep], max_objects)


def snap_to_border(
    boxes: ArrayLike, frame_shape: Sequence[int], threshold: float = BORDER_SNAP_PIXELS
) -> np.ndarray:
    """Move box edges that are closer than ``threshold`` to the frame border onto the border.

    ``x0 < threshold`` becomes 0, ``y0 < threshold`` becomes 0, ``x1 > W - threshold``
    becomes W and ``y1 > H - threshold`` becomes H, as MobileSAMv2 (and FastSAM) do with
    detector boxes, so that objects cut by the border are prompted up to it.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` x0, y0, x1, y1.
    frame_shape : sequence of int
        ``(H, W)`` or ``(H, W, C)`` of the frame the boxes are in.
    threshold : float
        Distance to the border, in the boxes' pixels; 0 changes nothing.

    Returns
    -------
    numpy.ndarray
        A new ``(N, 4)`` float32 array.

    Examples
    --------
    >>> snap_to_border([[5, 30, 90, 95]], (100, 100), threshold=20)
    array([[  0.,  30., 100., 100.]], dtype=float32)
    """
    snapped = _as_box_array(boxes, "boxes").astype(np.float32)
    height, width = _frame_size(frame_shape)
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"Expected threshold to be a number >= 0; received {threshold!r}.")
    snapped[snapped[:, 0] < threshold, 0] = 0
    snapped[snapped[:, 1] < threshold, 1] = 0
    snapped[snapped[:, 2] > width - threshold, 2] = width
    snapped[snapped[:, 3] > height - threshold, 3] = height
    return snapped


def clean_boxes(boxes: ArrayLike, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Make boxes usable as prompts: order corners, clip to the image, drop empty boxes.

    Inverted coordinates (``x1 < x0`` or ``y1 < y0``) are swapped, boxes are clipped to
    ``[0, W] x [0, H]``, and boxes with a non-finite coordinate or without area after
    clipping (entirely outside the image, or zero width or height) are dropped.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` x0, y0, x1, y1 in image pixels; an empty sequence means no boxes.
    image_shape : sequence of int
        ``(H, W)`` or ``(H, W, C)`` of the image.

    Returns
    -------
    boxes : numpy.ndarray
        ``(M, 4)`` float32, the boxes that were kept, in their input order.
    valid : numpy.ndarray
        ``(N,)`` bool, True for the input rows that were kept; use it to select their
        scores.

    Examples
    --------
    >>> kept, valid = clean_boxes([[30, 20, 10, 5], [-5, 0, 40, 200], [50, 50, 50, 60]],
    ...                           (100, 100))
    >>> kept
    array([[ 10.,   5.,  30.,  20.],
           [  0.,   0.,  40., 100.]], dtype=float32)
    >>> valid
    array([ True,  True, False])
    """
    array = _as_box_array(boxes, "boxes")
    height, width = _frame_size(image_shape)
    finite = np.isfinite(array).all(axis=1)
    x = np.clip(np.sort(array[:, 0::2], axis=1), 0, width)
    y = np.clip(np.sort(array[:, 1::2], axis=1), 0, height)
    valid = finite & (x[:, 1] > x[:, 0]) & (y[:, 1] > y[:, 0])
    cleaned = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    return cleaned[valid].astype(np.float32), valid


def nms_boxes(boxes: ArrayLike, scores: ArrayLike, iou: float) -> np.ndarray:
    """Class-agnostic non-maximum suppression (:func:`torchvision.ops.nms`).

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` finite x0, y0, x1, y1 with ``x0 <= x1`` and ``y0 <= y1``.
    scores : array_like
        ``(N,)`` finite scores.
    iou : float
        Of two boxes overlapping with an IoU above this, in [0, 1], the lower-scoring one
        is dropped. 1 keeps every box.

    Returns
    -------
    numpy.ndarray
        int64 indices of the kept boxes, by decreasing score.

    Examples
    --------
    >>> nms_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], [0.5, 0.9, 0.7], 0.5)
    array([1, 2])
    """
    import torch
    import torchvision

    array = _as_box_array(boxes, "boxes")
    values = _as_scores(scores, len(array))
    _check_fraction(iou, "iou")
    if not np.isfinite(array).all():
        raise ValueError("Expected finite boxes; use clean_boxes to drop non-finite ones.")
    if len(array) == 0:
        return np.empty(0, dtype=np.int64)
    keep = torchvision.ops.nms(
        torch.from_numpy(array.astype(np.float32)),
        torch.from_numpy(values.astype(np.float32)),
        float(iou),
    )
    return keep.numpy().astype(np.int64)


def cap_by_confidence(
    boxes: ArrayLike, scores: ArrayLike, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort boxes by decreasing score and keep the first ``max_objects``.

    Equal scores keep their input order.

    Parameters
    ----------
    boxes : array_like
        ``(N, 4)`` boxes.
    scores : array_like
        ``(N,)`` finite scores.
    max_objects : int
        The most boxes kept, at least 1.

    Returns
    -------
    boxes : numpy.ndarray
        ``(min(N, max_objects), 4)`` float32.
    scores : numpy.ndarray
        ``(min(N, max_objects),)`` float32, non-increasing.

    Examples
    --------
    >>> cap_by_confidence([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], [0.2, 0.9, 0.5], 2)
    (array([[2., 2., 3., 3.],
           [4., 4., 5., 5.]], dtype=float32), array([0.9, 0.5], dtype=float32))
    """
    array = _as_box_array(boxes, "boxes")
    values = _as_scores(scores, len(array))
    _check_positive_int(max_objects, "max_objects")
    order = np.argsort(-values, kind="stable")[:max_objects]
    return array[order].astype(np.float32), values[order].astype(np.float32)


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
    from napari_mobilesam import weights

    try:
        return weights.fetch_checkpoint("object_aware"), ""
    except weights.WeightsError as error:
        if raise_error:
            raise DetectorUnavailableError(f"{error}\n{_detector_options()}") from error
        return None, str(error)


def _fetch_fastsam(*, raise_error: bool = True) -> tuple[Path | None, str]:
    from napari_mobilesam import weights

    _yolo_class()  # sets ultralytics' environment defaults before its first import
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
        with _quiet_ultralytics(), contextlib.redirect_stdout(sys.stderr):
            attempt_download_asset(str(target))
    except OSError as error:
        reason = f"{type(error).__name__}: {_first_line(error)}"
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
    from napari_mobilesam import weights

    object_aware = weights.CHECKPOINTS["object_aware"]
    return (
        "Options:\n"
        "  - detector='/path/to/model.pt': any ultralytics YOLO detection or segmentation "
        "checkpoint, e.g. your own nucleus detector;\n"
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
            f"YOLO .pt file, or one of the names {names}."
        )
    if not path.is_file():
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint: it is a folder, expected a .pt file."
        )
    if path.suffix.lower() != ".pt":
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint: expected a PyTorch .pt file, "
            f"received a {path.suffix or 'suffix-less'} file. Exported models (ONNX, "
            "TensorRT, ...) are not supported; use the .pt file they were exported from."
        )
    return path


@functools.lru_cache(maxsize=2)
def _load_yolo(path: str, signature: tuple[int, int], device: str) -> YOLO:
    """Load a YOLO checkpoint once per file version (``signature``) and device."""
    del signature, device  # cache keys only: a rewritten file or another device reloads
    yolo_class = _yolo_class()
    try:
        with _quiet_ultralytics():
            model = yolo_class(path)
    # ultralytics reports a bad file with many exception types (TypeError, AttributeError,
    # pickle, zip and EOF errors, ModuleNotFoundError for foreign pickles).
    except Exception as error:
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint ({type(error).__name__}: "
            f"{_first_line(error)}). Expected a .pt file saved by ultralytics, such as a "
            "trained model's weights/best.pt, FastSAM-x.pt or MobileSAMv2's "
            "ObjectAwareModel.pt."
        ) from error
    if model.task not in SUPPORTED_TASKS:
        raise InvalidDetectorError(
            f"{path} is an ultralytics {model.task!r} model; only detection and segmentation "
            "models propose object boxes (classification, pose and oriented-box models do "
            "not fit)."
        )
    return model


@functools.cache
def _yolo_class() -> type[YOLO]:
    for name, value in _ULTRALYTICS_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    omp_was_set = "OMP_NUM_THREADS" in os.environ
    # ultralytics sets OMP_NUM_THREADS=1 at import, which makes a torch imported after it
    # single-threaded; importing torch first keeps its thread count.
    import torch  # noqa: F401
    from ultralytics import YOLO

    if not omp_was_set:
        os.environ.pop("OMP_NUM_THREADS", None)
    return YOLO


@functools.cache
def _boxes_only_predictor() -> type | None:
    """A predictor that decodes only the boxes of a segmentation model, skipping its masks.

    ultralytics' segmentation predictor builds one full-size mask per detection (gigabytes
    for hundreds of detections at imgsz=1024) and drops boxes whose mask is empty.
    None on ultralytics releases whose detection predictor cannot decode segmentation outputs.
    """
    from ultralytics import __version__
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.utils.checks import check_version

    if not check_version(__version__, f">={_BOXES_ONLY_MIN_VERSION}"):
        return None

    class BoxesOnlySegmentationPredictor(DetectionPredictor):
        def postprocess(self, preds: Any, img: Any, orig_imgs: Any, **kwargs: Any) -> Any:
            # A segmentation model outputs (detections, mask prototypes) as preds[0], preds[1].
            return super().postprocess(preds[0], img, orig_imgs, **kwargs)

    return BoxesOnlySegmentationPredictor


def _is_plain_yolo_segmenter(model: YOLO) -> bool:
    """A segmentation model run by ultralytics' stock YOLO class (not YOLOE, RT-DETR...)."""
    return model.task == "segment" and type(model) is _yolo_class()


_model_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def _model_lock(model: YOLO) -> threading.Lock:
    """One lock per loaded model: an ultralytics predictor must not run in two threads."""
    with _model_locks_guard:
        return _model_locks.setdefault(model, threading.Lock())


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """Silence ultralytics' logger, which writes to stdout, and undo its torch thread change.

    Setting up a predictor on the CPU calls ``torch.set_num_threads`` with ultralytics' own
    count; the caller's count is restored so that SAM is not slowed down afterwards.
    """
    import torch

    logger = logging.getLogger("ultralytics")
    level = logger.level
    threads = torch.get_num_threads()
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
        torch.set_num_threads(threads)


def _resolve_device(device: str | None) -> str:
    if device is not None:
        if not isinstance(device, str):
            raise TypeError(
                f"Expected device to be None or a string such as 'cpu' or 'cuda:0'; "
                f"received {type(device).__name__}."
            )
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _file_signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


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


def _check_rgb_uint8(image: Any) -> np.ndarray:
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


def _as_box_array(boxes: ArrayLike, what: str) -> np.ndarray:
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected {what} as an (N, 4) array of numbers x0, y0, x1, y1; "
            f"received {type(boxes).__name__} that is not numeric ({error})."
        ) from error
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"Expected {what} of shape (N, 4) as x0, y0, x1, y1; received shape {array.shape}."
        )
    return array


def _as_scores(scores: ArrayLike, count: int) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (count,):
        raise ValueError(
            f"Expected one score per box, shape ({count},); received shape {values.shape}."
        )
    if not np.isfinite(values).all():
        raise ValueError("Expected finite scores; received NaN or infinite values.")
    return values


def _frame_size(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) not in (2, 3) or not all(int(side) > 0 for side in shape[:2]):
        raise ValueError(
            f"Expected an image shape (H, W) or (H, W, C) with H, W > 0; received {shape!r}."
        )
    return int(shape[0]), int(shape[1])


def _check_fraction(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"Expected {name} to be a number in [0, 1]; received {value!r}.")
    if not 0 <= value <= 1:
        raise ValueError(f"Expected {name} in [0, 1]; received {value}.")


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"Expected {name} to be a positive integer; received {value!r}.")
    if value < 1:
        raise ValueError(f"Expected {name} to be a positive integer; received {value}.")


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
