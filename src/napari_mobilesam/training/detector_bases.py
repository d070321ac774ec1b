"""What detector training starts from: a small YOLOv8 from scratch, a user's YOLO file, or
MobileSAMv2's ObjectAwareModel.pt.

MobileSAMv2's ``ObjectAwareModel.pt`` (ultralytics 8.0.120, a pickled ``SegmentationModel``
whose Detect head has ``reg_max = 26`` and whose Segment head has no ``proto``) cannot be
trained as it is by current ultralytics: the segmentation trainer needs mask prototypes and
mask labels. It is converted to a one-class **detection** model of the same architecture:
the same backbone and neck, and a Detect head with ``reg_max = 26`` that takes over the box
and class branches (``cv2``, ``cv3``, ``dfl``) of the Segment head; the mask-coefficient
branch (``cv4``) is dropped. Every other weight is kept, so training starts from what
MobileSAMv2 learnt on SA-1B. The trained file is an ordinary ultralytics detection
checkpoint, which SegEvery's loader reads like any YOLO file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from napari_mobilesam.errors import InvalidValueError

__all__ = ["SCRATCH_DEPTH", "SCRATCH_WIDTH", "base_kind", "prepare_base"]

#: The from-scratch model: YOLOv8's detection architecture at this depth and width
#: multiple (YOLOv8n: 0.33, 0.25), chosen by measurement (README, "The detector").
SCRATCH_DEPTH = 0.33
SCRATCH_WIDTH = 0.25
SCRATCH_FAMILY = "yolov8.yaml"


def base_kind(base: str | os.PathLike[str]) -> str:
    """``"scratch"``, ``"object_aware"`` (MobileSAMv2's format), ``"yaml"`` or ``"yolo"``.

    Raises
    ------
    FileNotFoundError
        ``base`` is a path that does not exist.
    """
    if isinstance(base, str) and base.strip().lower() == "scratch":
        return "scratch"
    path = Path(base)
    if not path.is_file():
        raise FileNotFoundError(
            f"base {str(base)!r} is neither 'scratch' nor an existing YOLO .pt or .yaml file"
        )
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yaml"
    if path.suffix.lower() != ".pt":
        raise InvalidValueError(f"base {path} is not a YOLO .pt or .yaml file")
    return "object_aware" if _is_object_aware(path) else "yolo"


def prepare_base(base: str | os.PathLike[str], folder: Path) -> tuple[str, str]:
    """The model file ultralytics trains from, written to ``folder`` when made here.

    Returns
    -------
    path : str
        A ``.yaml`` (from scratch) or ``.pt`` file for ``ultralytics.YOLO``.
    kind : str
        See :func:`base_kind`.
    """
    kind = base_kind(base)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "scratch":
        return str(_scratch_yaml(folder)), kind
    if kind == "object_aware":
        return str(_object_aware_as_detector(Path(base), folder)), kind
    return str(Path(base).resolve()), kind


def _scratch_yaml(folder: Path) -> Path:
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    config = yaml_model_load(SCRATCH_FAMILY)
    config = {k: v for k, v in config.items() if k not in ("scales", "scale", "yaml_file")}
    config.update(nc=1, depth_multiple=SCRATCH_DEPTH, width_multiple=SCRATCH_WIDTH)
    path = folder / "scratch_detector.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _is_object_aware(path: Path) -> bool:
    """Whether a .pt file holds a segmentation model whose Segment head has no ``proto``."""
    model = _load_model(path)
    head = model.model[-1] if hasattr(model, "model") else None
    return type(head).__name__ == "Segment" and not hasattr(head, "proto")


def _load_model(path: Path) -> Any:
    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics, yolo_class

    yolo_class()  # ultralytics imported with the package's environment defaults
    from ultralytics.nn.tasks import load_checkpoint

    with quiet_ultralytics():
        model, _ = load_checkpoint(str(path), device="cpu")
    return model


def _object_aware_as_detector(path: Path, folder: Path) -> Path:
    """Convert MobileSAMv2's ObjectAwareModel to a one-class detection checkpoint."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics

    source = _load_model(path).float()
    head = source.model[-1]
    config = copy.deepcopy(source.yaml)
    config.pop("yaml_file", None)
    sources, repeats, _, _ = config["head"][-1]
    config["head"][-1] = [sources, repeats, "Detect", ["nc"]]
    config.update(nc=1, reg_max=int(head.reg_max))
    with quiet_ultralytics():
        model = DetectionModel(config, nc=1, verbose=False)
    wanted = model.state_dict()
    state = {
        name: value
        for name, value in source.state_dict().items()
        if name in wanted and value.shape == wanted[name].shape
    }
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise InvalidValueError(
            f"{path}: {len(missing)} weights of the detection model have no counterpart in "
            f"the ObjectAwareModel (e.g. {missing[0]}); is it MobileSAMv2's file?"
        )
    model.load_state_dict(state)
    model.names = {0: "object"}
    target = folder / "object_aware_detector.pt"
    torch.save({"model": model.half(), "train_args": {}, "epoch": -1}, target)
    return target
