"""ultralytics YOLO models as box detectors, with MobileSAMv2's box post-processing.

MobileSAMv2's object-aware model ``ObjectAwareModel.pt`` is a YOLOv8 segmentation model
saved by a modified ultralytics 8.0.120: its Detect head has ``reg_max = 26`` and its Segment
head has no ``proto`` module, since only the boxes are used. Any segmentation head is run
here as a detection head (its mask prototypes are never computed, so no full-size YOLO masks
are built), which makes such files run on current ultralytics releases.

Boxes are post-processed as MobileSAMv2's ``PromptModelPredictor`` does: class-agnostic NMS
once, then box edges within :data:`~napari_mobilesam.boxes.BORDER_SNAP_PIXELS` of the border
of the detector's letterboxed input frame are snapped onto it, then the boxes are scaled to
the image.

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

from napari_mobilesam.boxes import BORDER_SNAP_PIXELS, snap_to_border
from napari_mobilesam.discovery import InvalidDetectorError, check_rgb_uint8

if TYPE_CHECKING:
    from ultralytics import YOLO

__all__ = ["MAX_DETECTIONS", "SUPPORTED_TASKS", "YoloDetector", "load_yolo_detector"]

MAX_DETECTIONS = 300
"""The most boxes a YOLO detector returns per image (ultralytics' and MobileSAMv2's
``max_det``)."""

SUPPORTED_TASKS = ("detect", "segment")

# Set before the first ultralytics import, without overriding a user's own choice.
# YOLO_OFFLINE: skip the DNS probe at import and the analytics, crash reports and pip update
#   checks that depend on it; a failed download is then reported at once instead of retried
#   for half a minute. Downloads themselves still work.
# YOLO_AUTOINSTALL: never pip-install a module that a checkpoint file asks for.
_ULTRALYTICS_ENV_DEFAULTS = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}


class YoloDetector:
    """An ultralytics YOLO detection or segmentation model used as a box detector.

    Made by :func:`load_yolo_detector` (or :func:`napari_mobilesam.discovery.load_detector`);
    models are loaded once and shared between detectors with the same file and device.

    Parameters
    ----------
    model : ultralytics.YOLO
        The loaded model.
    path : pathlib.Path
        The checkpoint file.
    conf, iou, imgsz, max_det, device
        See :func:`napari_mobilesam.discovery.load_detector`.

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
    path: Path, *, conf: float, iou: float, imgsz: int, max_det: int, device: str | None
) -> YoloDetector:
    """Load an ultralytics YOLO ``.pt`` file (once per file version and device) as a detector.

    See :func:`napari_mobilesam.discovery.load_detector` for the parameters and errors.
    """
    resolved_device = _resolve_device(device)
    stat = path.stat()
    model = _load_yolo(str(path.resolve()), (stat.st_mtime_ns, stat.st_size), resolved_device)
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


@functools.lru_cache(maxsize=2)
def _load_yolo(path: str, signature: tuple[int, int], device: str) -> YOLO:
    """Load a YOLO checkpoint once per file version (``signature``) and device."""
    del signature, device  # cache keys only: a rewritten file or another device reloads
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
        def construct_result(self, pred: Any, img: Any, orig_img: Any, img_path: Any) -> Any:
            from ultralytics.engine.results import Results

            # pred[:, :4] is in the letterboxed input frame, (H, W) = img.shape[2:].
            frame = tuple(img.shape[2:])
            boxes = snap_to_border(pred[:, :4].cpu().numpy(), frame, BORDER_SNAP_PIXELS)
            boxes = letterbox_to_image(boxes, frame, orig_img.shape[:2])
            pred[:, :4] = pred.new_tensor(boxes)
            return Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6])

    return BoxPredictor


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
    array([[  0.     ,   0.     , 600.     , 400.     ]], dtype=float32)
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
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message, shortened to ``limit`` characters."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
