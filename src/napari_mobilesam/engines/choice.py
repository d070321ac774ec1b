"""Which engine runs the image encoder: the names, their checks, and ``engine="auto"``.

"auto" converts both OpenVINO variants once per weights file, checks them against torch
(:mod:`napari_mobilesam.engines.gates`), times torch and each variant that passed on this
machine (alternating, median of a few rounds) and keeps the fastest; torch is kept unless
a variant is faster. The decision is remembered in ``choice-<openvino version>.json`` next
to the converted files, with the figures behind it, so it is measured once. Without
openvino, on a GPU, or with a non-float32 ``precision``, "auto" is torch.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam._progress import ProgressCallback
from napari_mobilesam.engines import gates
from napari_mobilesam.engines.cache import engine_dir, library_tag, weights_fingerprint
from napari_mobilesam.engines.calibration import calibration_images, encoder_input
from napari_mobilesam.engines.names import ENGINES
from napari_mobilesam.engines.openvino_engine import (
    CPU_INSTALL,
    EngineUnavailableError,
    openvino_available,
    openvino_encoder,
)
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.imaging.convert import to_rgb_uint8

__all__ = [
    "ENGINES",
    "check_engine",
    "choice_record_name",
    "choose_engine",
    "image_encoder",
    "measure_engines",
    "remember_choice",
    "remembered_choice",
]

_PRECISIONS = {"openvino": "float32", "openvino-int8": "int8"}
Encoder = Callable[[torch.Tensor], torch.Tensor]


def check_engine(engine: str, device: torch.device, precision: str = "float32") -> str:
    """``engine`` checked against the device and precision it is to run with.

    Returns the name to use: "auto" becomes "torch" where no other engine can run (no
    openvino installed, a GPU, or a ``precision`` other than float32).

    Raises
    ------
    InvalidValueError
        An unknown name, or an OpenVINO engine on a GPU or with another precision.
    EngineUnavailableError
        An OpenVINO engine without openvino and nncf installed (names the extra).
    """
    if engine not in ENGINES:
        raise InvalidValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    runnable = device.type == "cpu" and precision == "float32"
    if engine == "auto":
        return "auto" if runnable and openvino_available() else "torch"
    if engine != "torch":
        if not runnable:
            raise InvalidValueError(
                f"engine={engine!r} runs on the CPU in float32 (its int8 is its own); got "
                f"device={device.type!r}, precision={precision!r}: use engine='torch'"
            )
        if not openvino_available():
            raise EngineUnavailableError(
                f"engine={engine!r} needs the openvino and nncf packages; install them "
                f"with {CPU_INSTALL}, or use engine='torch' (or 'auto')"
            )
    return engine


def choose_engine(timings: Mapping[str, float], passed: Mapping[str, bool]) -> str:
    """The fastest engine that passed its gate; torch (the reference) always qualifies and
    wins ties.

    Examples
    --------
    >>> choose_engine({"torch": 0.6, "openvino": 0.4, "openvino-int8": 0.2},
    ...               {"openvino": True, "openvino-int8": False})
    'openvino'
    """
    best = "torch"
    for name, seconds in timings.items():
        if name != "torch" and passed.get(name, False) and seconds < timings[best]:
            best = name
    return best


def choice_record_name(network: str, calibrated: bool, *parts: object) -> str:
    """File name of the remembered "auto" record of one network: which network, default or
    own calibration images, any ``parts`` that set it apart, and the OpenVINO version."""
    import openvino

    tag = library_tag("openvino", openvino.__version__)
    fields = [network, "own" if calibrated else "default", *map(str, parts), tag]
    return "choice-" + "-".join(field for field in fields if field) + ".json"


def remembered_choice(path: Path) -> dict | None:
    """The record at ``path`` when it was measured with this process's torch thread count
    (timings depend on it), else None."""
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("threads") == torch.get_num_threads():
            return record
    return None


def remember_choice(path: Path, record: dict, seconds: Mapping[str, float]) -> dict:
    """``record`` (its gate figures, with ``passed``) completed with ``seconds``, the
    ``choice`` they make and the thread count, written atomically to ``path``."""
    record["seconds"] = dict(seconds)
    record["choice"] = choose_engine(record["seconds"], record["passed"])
    record["threads"] = torch.get_num_threads()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(record, indent=1))
    return record


def image_encoder(
    model: torch.nn.Module,
    engine: str,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[str, Encoder]:
    """``(name, encoder)``: the engine ``engine`` resolves to and its encoder callable,
    ``(1, 3, 1024, 1024)`` preprocessed input -> ``(1, 256, 64, 64)`` embedding.

    ``engine`` is a name checked by :func:`check_engine`; "auto" reads the remembered
    choice or measures it (:func:`measure_engines`), converting once.
    """
    if engine == "auto":
        engine = measure_engines(model, calibration=calibration, progress=progress)["choice"]
    if engine == "torch":
        return engine, model.image_encoder
    return engine, openvino_encoder(
        model, _PRECISIONS[engine], calibration=calibration, progress=progress
    )


def _choice_path(model: torch.nn.Module, calibrated: bool) -> Path:
    name = choice_record_name("", calibrated)
    return engine_dir(weights_fingerprint(model.image_encoder)) / name


def measure_engines(
    model: torch.nn.Module,
    *,
    calibration: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    rounds: int = 3,
) -> dict:
    """Convert, check and time every engine on this machine once; the remembered record.

    Returns
    -------
    dict
        ``choice`` (the engine "auto" uses), ``seconds`` (median per engine),
        ``passed`` (per OpenVINO variant), ``float32_max_abs_diff``, ``int8_min_iou``,
        ``threads``. Read from the JSON file when it was measured before with the same
        thread count.
    """
    path = _choice_path(model, calibration is not None)
    remembered = remembered_choice(path)
    if remembered is not None:
        return remembered
    encoders = {"torch": model.image_encoder}
    for step, name in enumerate(_PRECISIONS, start=1):
        encoders[name] = openvino_encoder(model, _PRECISIONS[name], calibration=calibration)
        if progress is not None:
            progress(step, len(_PRECISIONS) + 1)
    images = calibration_images() if calibration is None else map(to_rgb_uint8, calibration)
    images = list(images)
    record = _gate_record(model, encoders, gates.gate_images(images))
    inputs = [encoder_input(model, image)[0] for image in gates.gate_images(images)[:1]]
    record = remember_choice(path, record, time_encoders(encoders, inputs[0], rounds))
    if progress is not None:
        progress(len(_PRECISIONS) + 1, len(_PRECISIONS) + 1)
    return record


def _gate_record(model, encoders: dict[str, Encoder], images: list[np.ndarray]) -> dict:
    gap, min_iou = 0.0, 1.0
    boxes = gates.box_prompts(model.image_size)
    for image in images:
        x, _ = encoder_input(model, image)
        with torch.inference_mode():
            reference = model.image_encoder(x)
        fp32 = encoders["openvino"](x)
        gap = max(gap, gates.embedding_gap(reference, fp32))
        ious = gates.mask_ious(model, fp32, encoders["openvino-int8"](x), boxes)
        min_iou = min(min_iou, float(ious.min()))
    return {
        "float32_max_abs_diff": gap,
        "int8_min_iou": min_iou,
        "passed": {
            "openvino": gap <= gates.FLOAT32_TOLERANCE,
            "openvino-int8": gap <= gates.FLOAT32_TOLERANCE and min_iou >= gates.INT8_MIN_IOU,
        },
    }


def time_encoders(encoders: Mapping[str, Encoder], x: torch.Tensor, rounds: int) -> dict:
    """Median seconds per call of each encoder on ``x``, called in turn each round after
    one warm-up call each (so a load change hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    with torch.inference_mode():
        for encoder in encoders.values():
            encoder(x)
        for _ in range(rounds):
            for name, encoder in encoders.items():
                start = time.perf_counter()
                encoder(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
