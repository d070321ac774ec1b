"""Fixtures shared by the test modules.

The parity fixtures live in ``../shared/fixtures/parity`` beside the checkout (CI has them;
a user's clone may not, and then the tests that need them skip and say why). napari's own
``make_napari_viewer`` comes from its pytest plugin.

(Lead and widget developers both add fixtures here: edit, do not overwrite.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY = SHARED / "fixtures" / "parity"
PARITY_CHECKPOINT = PARITY / "mobile_sam_seed0.pt"
PARITY_CASES = PARITY / "cases_seed0.npz"
PARITY_IMAGES = ("ihc", "coins", "cell")
RANDOM_WEIGHTS = PARITY_CHECKPOINT


def _require_parity() -> None:
    if not PARITY_CHECKPOINT.is_file() or not PARITY_CASES.is_file():
        pytest.skip(
            f"parity fixtures not found at {PARITY} (they sit in ../shared beside the "
            "checkout in CI; a plain clone does not have them)"
        )


@pytest.fixture(scope="session")
def parity_checkpoint() -> Path:
    """The random-weight checkpoint in the official mobile_sam.pt format."""
    _require_parity()
    return PARITY_CHECKPOINT


@pytest.fixture(scope="session")
def parity_cases() -> dict[str, np.ndarray]:
    """Inputs and reference outputs of the original MobileSAM, keyed ``IMAGE/CASE/...``."""
    _require_parity()
    with np.load(PARITY_CASES) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def mobile_sam(parity_checkpoint: Path):
    """MobileSAM with the parity weights, built once per test session."""
    from napari_mobilesam import build_mobile_sam

    return build_mobile_sam(parity_checkpoint)


@pytest.fixture
def predictor(mobile_sam):
    """A fresh predictor (empty cache) on the shared model, on the CPU."""
    from napari_mobilesam import SegAnyPredictor

    return SegAnyPredictor(mobile_sam, device="cpu")


@pytest.fixture
def random_weights(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point NAPARI_MOBILESAM_WEIGHTS at the random-weight checkpoint in ../shared.

    Random weights give noise-like masks, so tests using them check structure, not shapes.
    """
    if not RANDOM_WEIGHTS.is_file():
        pytest.skip(f"needs the random-weight checkpoint {RANDOM_WEIGHTS} (../shared is absent)")
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(RANDOM_WEIGHTS))
    return RANDOM_WEIGHTS


def build_yolo_checkpoint(folder: Path, base_yaml: str = "yolov8n-seg.yaml", nc: int = 1) -> Path:
    """Save a random-weight ultralytics YOLOv8 model built from a yaml that ultralytics ships.

    The model scale (n, s, x, ...) is read from the file name, so the copy keeps it.
    """
    import os

    import torch
    import yaml

    from napari_mobilesam._torch_guard import prepare_torch_import

    prepare_torch_import()  # a napari viewer may already have loaded OpenGL's LLVM
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    config = yaml_model_load(base_yaml)
    config["nc"] = nc
    name = f"{nc}-class-{Path(base_yaml).stem}"
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "yaml_file"}))
    torch.manual_seed(0)
    checkpoint = folder / f"{name}.pt"
    YOLO(str(config_path)).save(checkpoint)
    return checkpoint


@pytest.fixture(scope="session")
def yolo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class YOLOv8n segmentation checkpoint with random weights (the kind of model
    MobileSAMv2's ObjectAwareModel is)."""
    return build_yolo_checkpoint(tmp_path_factory.mktemp("yolo"))
