"""ONNX exports of ultralytics YOLO models as detectors: checking the file, reading its size.

ONNX exports of ultralytics detection and segmentation models (``.onnx``, e.g.
``YOLO("best.pt").export(format="onnx", imgsz=1024)``) run through ultralytics' ONNX Runtime
backend (see :mod:`napari_mobilesam.segevery.detectors.yolo`). They hold a graph and weights
but no Python code, so loading one cannot run code, unlike a ``.pt`` file, which ultralytics
unpickles. onnxruntime is an optional dependency (``pip install "napari-mobilesam[onnx]"``).
A segmentation export computes its mask prototypes, which are not used. An export has a fixed
input size unless exported with ``dynamic=True``; ``imgsz`` must then be that size (it is the
default).
"""

from __future__ import annotations

import ast
import importlib.util

from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.segevery.detectors.base import (
    DEFAULT_IMGSZ,
    DetectorUnavailableError,
    InvalidDetectorError,
    first_line,
)

__all__ = ["ONNX_INSTALL", "ONNX_SUFFIX", "OnnxExport", "read_onnx_export"]

ONNX_SUFFIX = ".onnx"
#: How to install what ONNX detectors need.
ONNX_INSTALL = 'pip install "napari-mobilesam[onnx]"'


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
            raise InvalidValueError(
                f"{self.path} is an ONNX export with a fixed input size of {height} (it was "
                f"exported with imgsz={height}); received imgsz={imgsz}. Pass imgsz={height} "
                f"(the default for this file), or export it again with imgsz={imgsz}, or "
                "with dynamic=True to allow any size."
            )
        return height


def read_onnx_export(path: str) -> OnnxExport:
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
