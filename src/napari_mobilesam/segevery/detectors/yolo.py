"""ultralytics YOLO models as box detectors, with MobileSAMv2's box post-processing.

MobileSAMv2's object-aware model ``ObjectAwareModel.pt`` is a YOLOv8 segmentation model
saved by a modified ultralytics 8.0.120: its Detect head has ``reg_max = 26`` and its Segment
head has no ``proto`` module, since only the boxes are used. Any segmentation head is run
here as a detection head (its mask prototypes are never computed, so no full-size YOLO masks
are built), which makes such files run on current ultralytics releases.

ONNX exports (``.onnx``) run through ultralytics' ONNX Runtime backend; the file is checked
first (:mod:`napari_mobilesam.segevery.detectors.onnx`). Boxes get MobileSAMv2's
post-processing (:mod:`napari_mobilesam.segevery.detectors.letterbox`).

Importing this module is cheap: torch and ultralytics are imported on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.segevery.detectors.base import (
    DEFAULT_IMGSZ,
    InvalidDetectorError,
    check_rgb_uint8,
    first_line,
)
from napari_mobilesam.segevery.detectors.letterbox import frame_boxes_to_image
from napari_mobilesam.segevery.detectors.onnx import ONNX_SUFFIX, OnnxExport, read_onnx_export
from napari_mobilesam.segevery.detectors.openvino import compile_in_float32, read_openvino_export

if TYPE_CHECKING:
    from ultralytics import YOLO

__all__ = ["SUPPORTED_TASKS", "YoloDetector", "boxes_only_model", "load_yolo_detector"]


SUPPORTED_TASKS = ("detect", "segment")

# Set before the first ultralytics import, without overriding a user's own choice.
# YOLO_OFFLINE: skip the DNS probe at import and the analytics, crash reports and pip update
#   checks that depend on it; a failed download is then reported at once instead of retried
#   for half a minute. Downloads themselves still work.
# YOLO_AUTOINSTALL: never pip-install a module that a checkpoint file asks for.
_ULTRALYTICS_ENV_DEFAULTS = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


class YoloDetector:
    """An ultralytics YOLO detection or segmentation model used as a box detector.

    Made by :func:`load_yolo_detector` (or
    :func:`napari_mobilesam.segevery.discovery.load_detector`);
    models are loaded once and shared between detectors with the same file and device.

    Parameters
    ----------
    model : ultralytics.YOLO
        The loaded model.
    path : pathlib.Path
        The checkpoint (``.pt``) or ONNX export (``.onnx``) file.
    conf, iou, imgsz, max_det, device
        See :func:`napari_mobilesam.segevery.discovery.load_detector`.
    engine : str
        What runs the network: "torch", or the OpenVINO variant ("openvino",
        "openvino-int8") whose export ``model`` was loaded from.

    Attributes
    ----------
    applies_nms : bool
        True: the boxes returned have been through class-agnostic NMS at ``iou`` already.
    """

    applies_nms = True

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
        engine: str = "torch",
    ) -> None:
        self.model = model
        self.path = path
        self.task = str(model.task)
        self.conf = conf
        self.iou = iou
        self.imgsz = imgsz
        self.max_det = max_det
        self.device = device
        self.engine = engine
        self._lock = _model_lock(model)

    def __repr__(self) -> str:
        return (
            f"YoloDetector({str(self.path)!r}, task={self.task!r}, conf={self.conf}, "
            f"iou={self.iou}, imgsz={self.imgsz}, max_det={self.max_det}, "
            f"device={self.device!r}, engine={self.engine!r})"
        )

    def __call__(self, image: np.ndarray, /) -> tuple[np.ndarray, np.ndarray]:
        """Detect objects in an ``(H, W, 3)`` uint8 RGB image.

        Returns
        -------
        boxes : numpy.ndarray
            ``(N, 4)`` float32 x0, y0, x1, y1 in image pixels, sorted by decreasing score,
            after one class-agnostic NMS; edges within ``BORDER_SNAP_PIXELS`` of the border
            of the letterboxed ``imgsz`` input frame are on the image border.
        scores : numpy.ndarray
            ``(N,)`` float32 confidences in [0, 1].
        """
        image = check_rgb_uint8(image)
        # ultralytics reads numpy images as OpenCV BGR and hands its models RGB, the order
        # they are trained in; so the channels are reversed here.
        bgr = np.ascontiguousarray(image[..., ::-1])
        with self._lock, quiet_ultralytics():
            results = self.model.predict(
                bgr,
                imgsz=self.imgsz,
                conf=self.conf,
                iou=self.iou,
                agnostic_nms=True,
                max_det=self.max_det,
                device=self.device,
                verbose=False,
                predictor=_box_predictor_class(),
            )
        found = results[0].boxes
        boxes = found.xyxy.cpu().numpy().astype(np.float32)
        scores = found.conf.cpu().numpy().astype(np.float32)
        return boxes, scores


def load_yolo_detector(
    path: Path,
    *,
    conf: float,
    iou: float,
    imgsz: int | None,
    max_det: int,
    device: str | None,
    engine: str = "torch",
) -> YoloDetector:
    """Load an ultralytics YOLO ``.pt`` or ``.onnx`` file, or an OpenVINO export folder made
    for ``engine`` (once per file version and device).

    See :func:`napari_mobilesam.segevery.discovery.load_detector` for the parameters and errors.
    """
    resolved_device = _resolve_device(device)
    stat = path.stat()
    model, export = _load_yolo(
        str(path.resolve()), (stat.st_mtime_ns, stat.st_size), resolved_device
    )
    if export is None:
        stride = int(max(model.model.stride))
        imgsz = DEFAULT_IMGSZ if imgsz is None else imgsz
    else:
        stride, imgsz = export.stride, export.check_imgsz(imgsz)
    if imgsz % stride:
        raise InvalidValueError(
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
        engine=engine,
    )


@functools.lru_cache(maxsize=2)
def _load_yolo(
    path: str, signature: tuple[int, int], device: str
) -> tuple[YOLO, OnnxExport | None]:
    """Load a YOLO checkpoint or ONNX export once per file version (``signature``) and device.

    Returns the model and, for an ONNX export, what its file says about it.
    """
    del signature, device  # cache keys only: a rewritten file or another device reloads
    if Path(path).is_dir():
        export = read_openvino_export(path)
    elif path.lower().endswith(ONNX_SUFFIX):
        export = read_onnx_export(path)
    else:
        export = None
    yolo = yolo_class()
    try:
        with quiet_ultralytics():
            model = yolo(path)
    # ultralytics reports a bad file with many exception types (TypeError, AttributeError,
    # pickle, zip and EOF errors, ModuleNotFoundError for foreign pickles).
    except Exception as error:
        raise InvalidDetectorError(
            f"{path} is not an ultralytics YOLO checkpoint ({type(error).__name__}: "
            f"{first_line(error)}). Expected a .pt file saved by ultralytics, such as a "
            "trained model's weights/best.pt, FastSAM-x.pt or MobileSAMv2's "
            "ObjectAwareModel.pt."
        ) from error
    if model.task not in SUPPORTED_TASKS:
        raise InvalidDetectorError(
            f"{path} is an ultralytics {model.task!r} model; only detection and segmentation "
            "models propose object boxes (classification, pose and oriented-box models do "
            "not fit)."
        )
    if export is None:  # an exported graph is run as exported
        _detect_boxes_only(model)
    return model, export


def boxes_only_model(path: Path) -> YOLO:
    """A new ultralytics model of the ``.pt`` file ``path``, its segmentation heads run as
    detection heads (to export: the exported graph is then the one run here)."""
    with quiet_ultralytics():
        model = yolo_class()(str(path))
    _detect_boxes_only(model)
    return model


def _detect_boxes_only(model: YOLO) -> None:
    """Run every segmentation head of ``model`` as the detection head it extends.

    A Segment head adds mask prototypes (its ``proto`` module) to its Detect outputs; the
    prototypes are dropped here, so they are never computed, and heads saved without a
    ``proto`` (MobileSAMv2's ObjectAwareModel) run. The mask coefficients stay in the
    outputs, where ultralytics' NMS expects them after the class scores.
    """
    from ultralytics.nn.modules.head import Detect, Segment

    for module in model.model.modules():
        if isinstance(module, Segment):
            module.forward = types.MethodType(Detect.forward, module)


@functools.cache
def yolo_class() -> type[YOLO]:
    """ultralytics' ``YOLO``, imported with this package's environment defaults."""
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
def _box_predictor_class() -> type:
    """ultralytics' detection predictor with MobileSAMv2's border snapping before scaling."""
    from ultralytics.models.yolo.detect import DetectionPredictor

    class BoxPredictor(DetectionPredictor):
        def setup_model(self, model: Any, verbose: bool = True) -> None:
            super().setup_model(model, verbose)
            if getattr(self.model, "format", None) == "openvino":
                compile_in_float32(self.model.backend, model)

        def construct_result(self, pred: Any, img: Any, orig_img: Any, img_path: Any) -> Any:
            from ultralytics.engine.results import Results

            # pred[:, :4] is in the letterboxed input frame, (H, W) = img.shape[2:].
            boxes = frame_boxes_to_image(
                pred[:, :4].cpu().numpy(),
                tuple(img.shape[2:]),
                orig_img.shape[:2],
                stride=int(getattr(self.model, "stride", 32)),
                fixed_input=_fixed_input_size(self.model),
            )
            pred[:, :4] = pred.new_tensor(boxes)
            return Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6])

    return BoxPredictor


def _fixed_input_size(backend: Any) -> bool:
    """Whether ultralytics letterboxes into the full ``imgsz`` square for ``backend``.

    It pads an image only up to the next multiple of the stride (a "rect" frame) for
    PyTorch models and dynamic exports; a fixed-size export gets the whole square.
    """
    model_format = getattr(backend, "format", None)  # ultralytics >= 8.4
    if model_format is None:
        pytorch = bool(getattr(backend, "pt", False))
    else:
        pytorch = model_format == "pt"
    return not (pytorch or bool(getattr(backend, "dynamic", False)))


_model_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def _model_lock(model: YOLO) -> threading.Lock:
    """One lock per loaded model: an ultralytics predictor must not run in two threads."""
    with _model_locks_guard:
        return _model_locks.setdefault(model, threading.Lock())


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """Silence ultralytics' logger, which writes to stdout, and keep torch's thread count.

    Setting up a predictor on the CPU (in the first ``predict`` of a model) calls
    ``torch.set_num_threads`` with ultralytics' own count (``NUM_THREADS``, at most 8). That
    count is made the caller's for the block, so the first detection of a process runs with
    the same threads as every later one (other threads can change the last bits of the
    boxes, and so of the scores); the caller's count is restored afterwards as well.
    """
    import torch

    yolo_class()  # ultralytics imported with this package's environment defaults
    from ultralytics.utils import torch_utils

    logger = logging.getLogger("ultralytics")
    level = logger.level
    threads = torch.get_num_threads()
    theirs = torch_utils.NUM_THREADS
    logger.setLevel(logging.CRITICAL + 1)
    torch_utils.NUM_THREADS = threads
    try:
        yield
    finally:
        torch_utils.NUM_THREADS = theirs
        logger.setLevel(level)
        torch.set_num_threads(threads)


def _resolve_device(device: str | None) -> str:
    if device is not None:
        if not isinstance(device, str):
            raise InvalidTypeError(
                f"Expected device to be None or a string such as 'cpu' or 'cuda:0'; "
                f"received {type(device).__name__}."
            )
        return device
    from napari_mobilesam.model.device import default_device

    device = default_device()
    return "cuda:0" if device.type == "cuda" else device.type
