"""ultralytics YOLO models as box detectors, with MobileSAMv2's box post-processing.

MobileSAMv2's object-aware model ``ObjectAwareModel.pt`` is a YOLOv8 segmentation model
saved by a modified ultralytics 8.0.120: its Detect head has ``reg_max = 26`` and its Segment
head has no ``proto`` module, since only the boxes are used. Any segmentation head is run
here as a detection head (its mask prototypes are never computed, so no full-size YOLO masks
are built), which makes such files run on current ultralytics releases.

ONNX exports of ultralytics detection and segmentation models (``.onnx``, e.g.
``YOLO("best.pt").export(format="onnx", imgsz=1024)``) run through ultralytics' ONNX Runtime
backend. They hold a graph and weights but no Python code, so loading one cannot run code,
unlike a ``.pt`` file, which ultralytics unpickles. onnxruntime is an optional dependency
(``pip install "napari-mobilesam[onnx]"``). A segmentation export computes its mask
prototypes, which are not used. An export has a fixed input size unless exported with
``dynamic=True``; ``imgsz`` must then be that size (it is the default).

Boxes are post-processed as MobileSAMv2's ``PromptModelPredictor`` does: class-agnostic NMS
once, then box edges within :data:`~napari_mobilesam.segevery.boxes.BORDER_SNAP_PIXELS` of the
border
of the detector's letterboxed input frame are snapped onto it, then the boxes are scaled to
the image.

Importing this module is cheap: torch and ultralytics are imported on first use.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import logging
import os
import threading
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mobilesam.segevery.boxes import BORDER_SNAP_PIXELS, snap_to_border
from napari_mobilesam.segevery.discovery import (
    DEFAULT_IMGSZ,
    DetectorUnavailableError,
    InvalidDetectorError,
    check_rgb_uint8,
)

if TYPE_CHECKING:
    from ultralytics import YOLO

__all__ = ["SUPPORTED_TASKS", "YoloDetector", "load_yolo_detector"]


SUPPORTED_TASKS = ("detect", "segment")

ONNX_SUFFIX = ".onnx"
#: How to install what ONNX detectors need.
ONNX_INSTALL = 'pip install "napari-mobilesam[onnx]"'

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
) -> YoloDetector:
    """Load an ultralytics YOLO ``.pt`` or ``.onnx`` file (once per file version and device).

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


class OnnxExport:
    """What an ultralytics ONNX export says about itself: its stride and input size.

    Parameters
    ----------
    path : str
        The ``.onnx`` file.
    stride : int
        The model's largest stride.
    input_shape : tuple of int or None
        ``(height, width)`` of the fixed input, None for a ``dynamic=True`` export.
    """

    def __init__(self, path: str, stride: int, input_shape: tuple[int, int] | None) -> None:
        self.path = path
        self.stride = stride
        self.input_shape = input_shape

    def check_imgsz(self, imgsz: int | None) -> int:
        """The input size to run at: ``imgsz``, or the export's own size by default."""
        if self.input_shape is None:
            return DEFAULT_IMGSZ if imgsz is None else imgsz
        height, width = self.input_shape
        if height != width:
            raise InvalidDetectorError(
                f"{self.path} is an ONNX export with a fixed {height}x{width} input; images "
                "are letterboxed into squares here. Export it again with one imgsz "
                "(e.g. imgsz=1024), or with dynamic=True."
            )
        if imgsz is not None and imgsz != height:
            raise ValueError(
                f"{self.path} is an ONNX export with a fixed input size of {height} (it was "
                f"exported with imgsz={height}); received imgsz={imgsz}. Pass imgsz={height} "
                f"(the default for this file), or export it again with imgsz={imgsz}, or "
                "with dynamic=True to allow any size."
            )
        return height


@functools.lru_cache(maxsize=2)
def _load_yolo(
    path: str, signature: tuple[int, int], device: str
) -> tuple[YOLO, OnnxExport | None]:
    """Load a YOLO checkpoint or ONNX export once per file version (``signature``) and device.

    Returns the model and, for an ONNX export, what its file says about it.
    """
    del signature, device  # cache keys only: a rewritten file or another device reloads
    export = _read_onnx_export(path) if path.lower().endswith(ONNX_SUFFIX) else None
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
    if export is None:  # an ONNX graph is run as exported
        _detect_boxes_only(model)
    return model, export


def _read_onnx_export(path: str) -> OnnxExport:
    """Check that ``path`` is an ultralytics ONNX export that onnxruntime can load.

    The file is opened with onnxruntime once here (no optimisation, CPU), so that a bad file
    or a missing onnxruntime is reported now, and its input shape is read from the graph.
    ultralytics builds its own session for the device on the first detection.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        raise DetectorUnavailableError(
            f"The ONNX detector {path} needs onnxruntime, which is not installed. Install it "
            f"with: {ONNX_INSTALL} (or pip install onnxruntime-gpu for CUDA)."
        )
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own pybind11 error types
        raise InvalidDetectorError(
            f"{path} is not a loadable ONNX model ({type(error).__name__}: "
            f"{first_line(error)}). Export it again with ultralytics, e.g. "
            'YOLO("best.pt").export(format="onnx", imgsz=1024).'
        ) from error
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    shape = session.get_inputs()[0].shape
    del session
    if "task" not in metadata or "names" not in metadata:
        raise InvalidDetectorError(
            f"{path} is not an ONNX export of an ultralytics YOLO model: it has no ultralytics "
            "metadata (task, class names). Export it with ultralytics, e.g. "
            'YOLO("best.pt").export(format="onnx", imgsz=1024).'
        )
    try:
        args = ast.literal_eval(metadata.get("args", "{}"))
        stride = int(metadata.get("stride", 32))
    except (ValueError, SyntaxError, TypeError) as error:
        raise InvalidDetectorError(
            f"{path} has unreadable ultralytics metadata ({first_line(error)})."
        ) from error
    if isinstance(args, dict) and args.get("nms"):
        raise InvalidDetectorError(
            f"{path} was exported with nms=True, which fixes its confidence and NMS "
            "thresholds in the graph. Export it again without nms, so that conf and iou "
            "apply."
        )
    fixed = len(shape) == 4 and all(isinstance(side, int) and side > 0 for side in shape[2:])
    input_shape = (int(shape[2]), int(shape[3])) if fixed else None
    return OnnxExport(path, stride, input_shape)


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
        def construct_result(self, pred: Any, img: Any, orig_img: Any, img_path: Any) -> Any:
            from ultralytics.engine.results import Results

            # pred[:, :4] is in the letterboxed input frame, (H, W) = img.shape[2:].
            frame = tuple(img.shape[2:])
            boxes = pred[:, :4].cpu().numpy()
            if _fixed_input_size(self.model):
                stride = int(getattr(self.model, "stride", 32))
                boxes, frame = square_to_rect_frame(boxes, frame, orig_img.shape[:2], stride)
            boxes = snap_to_border(boxes, frame, BORDER_SNAP_PIXELS)
            boxes = letterbox_to_image(boxes, frame, orig_img.shape[:2])
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


def square_to_rect_frame(
    boxes: np.ndarray, frame_shape: tuple[int, int], image_shape: tuple[int, int], stride: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Move boxes from a fixed-size letterboxed frame into the frame a ``.pt`` model gets.

    ultralytics pads an image for a PyTorch model only up to a multiple of ``stride``, and
    MobileSAMv2 snaps box edges onto the border of that frame; a fixed-size ONNX export is
    padded to its full input instead. Shifting the boxes into the smaller frame makes the
    border snapping the same for both.

    Examples
    --------
    >>> boxes = np.array([[0.0, 256.0, 1024.0, 768.0]])
    >>> square_to_rect_frame(boxes, (1024, 1024), (500, 1000), 32)
    (array([[   0.,    0., 1024.,  512.]]), (512, 1024))
    """
    height, width = image_shape
    gain = min(frame_shape[0] / height, frame_shape[1] / width)
    rect: list[int] = []
    shifts: list[int] = []
    for side, size in zip(frame_shape, image_shape, strict=True):
        resized = max(round(size * gain), 1)
        rect_side = resized + (side - resized) % stride
        rect.append(rect_side)
        # Pads as letterbox_to_image takes them (MobileSAMv2's rounding).
        shifts.append(
            round((side - size * gain) / 2 - 0.1) - round((rect_side - size * gain) / 2 - 0.1)
        )
    shift_y, shift_x = shifts
    moved = np.asarray(boxes, dtype=np.float64) - [shift_x, shift_y, shift_x, shift_y]
    return moved, (rect[0], rect[1])


def letterbox_to_image(
    boxes: np.ndarray, frame_shape: tuple[int, int], image_shape: tuple[int, int]
) -> np.ndarray:
    """Map ``(N, 4)`` boxes from a letterboxed detector frame to image pixels, clipped.

    The image was resized by ``gain = min(frame / image)`` per side and padded equally on
    both sides. The padding is taken as MobileSAMv2's ultralytics 8.0.120 computes it,
    ``round((frame - image * gain) / 2 - 0.1)``, so that boxes equal the official
    pipeline's (current ultralytics rounds the resized side first, which moves boxes by up
    to one frame pixel when the padding is odd).

    Examples
    --------
    >>> letterbox_to_image(np.array([[0.0, 10.0, 1024.0, 694.0]]), (704, 1024), (400, 600))
    array([[  0.,   0., 600., 400.]], dtype=float32)
    """
    frame_h, frame_w = frame_shape
    height, width = image_shape
    gain = min(frame_h / height, frame_w / width)
    pad_x = round((frame_w - width * gain) / 2 - 0.1)
    pad_y = round((frame_h - height * gain) / 2 - 0.1)
    scaled = (np.asarray(boxes, dtype=np.float64) - [pad_x, pad_y, pad_x, pad_y]) / gain
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    return scaled.astype(np.float32)


_model_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def _model_lock(model: YOLO) -> threading.Lock:
    """One lock per loaded model: an ultralytics predictor must not run in two threads."""
    with _model_locks_guard:
        return _model_locks.setdefault(model, threading.Lock())


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
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
    from napari_mobilesam.model.device import default_device

    device = default_device()
    return "cuda:0" if device.type == "cuda" else device.type


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message, shortened to ``limit`` characters."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
