"""MobileSAM's image encoder in OpenVINO, float32 or int8, converted once per weights file.

The torch encoder is converted with ``openvino.convert_model`` and saved as OpenVINO IR
(``.xml`` + ``.bin``) in the engine cache (see :mod:`napari_mobilesam.engines.cache`); the
int8 variant is quantized from it with NNCF's post-training quantization on a small
calibration set (:mod:`napari_mobilesam.engines.calibration`). Later predictors of the same
weights read the saved file instead of converting again. Models are compiled for the CPU
in float32 (``INFERENCE_PRECISION_HINT``: OpenVINO's default on CPUs with AVX512-BF16 is
bfloat16, which is slower there than float32 and less exact).

openvino and nncf are an optional dependency: ``pip install "napari-mobilesam[cpu]"``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines.cache import engine_path, weights_fingerprint
from napari_mobilesam.engines.calibration import calibration_inputs
from napari_mobilesam.errors import InvalidValueError, UserInputError

__all__ = [
    "COMPILE_CONFIG",
    "CPU_INSTALL",
    "OPENVINO_PRECISIONS",
    "EngineUnavailableError",
    "OpenVINOEncoder",
    "calibration_key",
    "compiled_model",
    "openvino_available",
    "openvino_encoder",
    "openvino_module",
    "quantized_model",
    "save_model",
]

#: How to install what the OpenVINO engine needs.
CPU_INSTALL = 'pip install "napari-mobilesam[cpu]"'
OPENVINO_PRECISIONS = ("float32", "int8")
#: How every OpenVINO model here is compiled (the decoders' and the detector's too).
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


class EngineUnavailableError(UserInputError, RuntimeError):
    """An engine was asked for whose library is not installed, or that cannot run here."""


def openvino_available() -> bool:
    """Whether openvino and nncf can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def openvino_module():
    """The openvino module, imported on first use with its telemetry switched off."""
    if not openvino_available():
        raise EngineUnavailableError(
            "engine='openvino' needs the openvino and nncf packages; install them with "
            f"{CPU_INSTALL}, or use engine='torch'"
        )
    _decline_telemetry()
    import openvino

    return openvino


def _decline_telemetry() -> None:
    """OpenVINO's and NNCF's tools send usage statistics unless a consent file says no;
    this process declines without writing the user's consent file."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # pragma: no cover - telemetry is an optional part of openvino
        return
    declined = opt_in_checker.ConsentCheckResult.DECLINED
    opt_in_checker.OptInChecker.check = lambda *args, **kwargs: declined


class OpenVINOEncoder:
    """A compiled OpenVINO image encoder: (1, 3, 1024, 1024) float32 -> (1, 256, 64, 64).

    Called like the torch encoder, with the preprocessed (normalised, padded) image tensor.
    One inference at a time (calls from several threads are serialised by OpenVINO's
    infer request being created per call).
    """

    def __init__(self, path: Path, precision: str) -> None:
        self.path = Path(path)
        self.precision = precision
        self._compiled = compiled_model(str(self.path))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self._compiled.create_infer_request().infer([array])
        return torch.from_numpy(np.array(next(iter(out.values())), dtype=np.float32))

    def __repr__(self) -> str:
        return f"OpenVINOEncoder({self.precision}, {self.path.name})"


@cache
def compiled_model(path: str):
    """The model at ``path`` compiled for the CPU in float32, once per process."""
    ov = openvino_module()
    return ov.Core().compile_model(path, "CPU", COMPILE_CONFIG)


def openvino_encoder(
    model: torch.nn.Module,
    precision: str = "float32",
    *,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> OpenVINOEncoder:
    """The OpenVINO version of ``model``'s image encoder, converted once and then reused.

    Parameters
    ----------
    model : MobileSAM
        From :func:`napari_mobilesam.build_mobile_sam`. The converted file is kept under
        the fingerprint of its encoder weights, so another weights file converts again.
    precision : {"float32", "int8"}
        int8 is quantized from the float32 model with NNCF on ``calibration``.
    calibration : sequence of images, optional
        Images to calibrate int8 on (any array :func:`napari_mobilesam.to_rgb_uint8`
        takes); default :func:`napari_mobilesam.engines.calibration.calibration_images`.
        Another set gives another int8 file.
    progress : callable, optional
        ``progress(done, total)`` over the conversion steps.

    Returns
    -------
    OpenVINOEncoder

    Examples
    --------
    >>> fast = openvino_encoder(build_mobile_sam(), "int8")  # doctest: +SKIP
    >>> embedding = fast(model.preprocess(image_tensor))  # doctest: +SKIP
    """
    if precision not in OPENVINO_PRECISIONS:
        raise InvalidValueError(
            f"precision must be one of {OPENVINO_PRECISIONS}, got {precision!r}"
        )
    ov = openvino_module()
    fingerprint = weights_fingerprint(model.image_encoder)
    key = "" if precision == "float32" else f"-{calibration_key(calibration)}"
    path = engine_path(fingerprint, f"image_encoder-{precision}{key}", "openvino", ov.__version__)
    total = 2 if precision == "float32" else 3
    if not path.is_file():
        if precision == "float32":
            converted = _convert(model.image_encoder)
        else:
            fp32 = openvino_encoder(model, "float32")
            if progress is not None:
                progress(1, total)
            converted = quantized_model(fp32, calibration_inputs(model, calibration))
        save_model(converted, path)
    if progress is not None:
        progress(total - 1, total)
    engine = OpenVINOEncoder(path, precision)
    if progress is not None:
        progress(total, total)
    return engine


def calibration_key(images: Sequence[np.ndarray] | None) -> str:
    """ "default", or a hash of the user's calibration images."""
    if images is None:
        return "default"
    digest = hashlib.blake2b(digest_size=6)
    for image in images:
        array = np.ascontiguousarray(image)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_model(model, path: Path) -> None:
    """Write the IR's folder under a temporary name, renamed into place when complete."""
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path.parent) as folder:
        openvino_module().save_model(model, str(folder / path.name), compress_to_fp16=False)


def _convert(encoder: torch.nn.Module):
    """The float32 OpenVINO model of the torch ``encoder`` (fixed 1024² input)."""
    ov = openvino_module()
    side = encoder.img_size
    example = torch.zeros(1, 3, side, side)
    with torch.no_grad():
        return ov.convert_model(encoder.cpu().eval(), example_input=example)


def quantized_model(fp32: OpenVINOEncoder, inputs: list[np.ndarray]):
    """NNCF post-training int8 quantization of the float32 model ``fp32``."""
    import nncf

    model = openvino_module().Core().read_model(str(fp32.path))
    return nncf.quantize(
        model,
        nncf.Dataset(inputs),
        subset_size=len(inputs),
        model_type=nncf.ModelType.TRANSFORMER,
    )
