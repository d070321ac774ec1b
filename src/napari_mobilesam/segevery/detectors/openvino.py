"""OpenVINO exports of YOLO detectors (made by
:mod:`napari_mobilesam.segevery.detectors.openvino_export`): what their folder says about
them, and compiling them for the CPU in float32.

ultralytics runs an OpenVINO folder with its OpenVINO backend, compiled with OpenVINO's
defaults; on CPUs with bfloat16 units (AVX512-BF16, AMX) that default is bfloat16, whose
boxes differ from torch's far beyond a float32 tolerance. :func:`compile_in_float32`
compiles it again as the encoder engine is compiled
(:mod:`napari_mobilesam.engines.openvino_engine`); an int8 model keeps its int8 layers.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from napari_mobilesam.segevery.detectors.base import InvalidDetectorError
from napari_mobilesam.segevery.detectors.onnx import OnnxExport

__all__ = ["compile_in_float32", "read_openvino_export"]


def read_openvino_export(folder: str | Path) -> OnnxExport:
    """The stride and input size of an ultralytics OpenVINO export folder.

    Returns an :class:`~napari_mobilesam.segevery.detectors.onnx.OnnxExport` (the same
    facts an ONNX export gives): input size None for a ``dynamic=True`` export.
    """
    import yaml

    folder = Path(folder)
    metadata = folder / "metadata.yaml"
    if not metadata.is_file() or not any(folder.glob("*.xml")):
        raise InvalidDetectorError(
            f"{folder} is not an ultralytics OpenVINO export (no metadata.yaml and .xml file)."
        )
    meta = yaml.safe_load(metadata.read_text()) or {}
    args = meta.get("args") or {}
    imgsz = meta.get("imgsz") or [None]
    fixed = None if args.get("dynamic") else (int(imgsz[0]), int(imgsz[-1]))
    return OnnxExport(str(folder), int(meta.get("stride", 32)), fixed)


def compile_in_float32(backend: Any, folder: str | Path) -> None:
    """Compile ultralytics' OpenVINO ``backend`` of the export ``folder`` again, for the
    CPU in float32 (and so every recompile it makes later for a new input shape)."""
    from napari_mobilesam.engines.openvino_engine import COMPILE_CONFIG

    core = backend.ov.Core()
    backend.compile_model = functools.partial(
        core.compile_model, device_name="CPU", config=COMPILE_CONFIG
    )
    xml = next(Path(folder).glob("*.xml"))
    backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml)))
