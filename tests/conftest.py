"""Fixtures shared by the test modules.

The parity fixtures live in ``../shared/fixtures/parity`` beside the checkout (CI has them;
a user's clone may not, and then the tests that need them fail and say where they belong:
they are part of the test suite, not optional hardware). napari's own
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


V2 = SHARED / "fixtures" / "v2"
REAL = SHARED / "fixtures" / "real"
OBJECT_AWARE_CHECKPOINT = V2 / "ObjectAwareModel_seed0.pt"
REAL_PROMPT_GUIDED = REAL / "Prompt_guided_Mask_Decoder.pt"


@pytest.fixture(autouse=True)
def offline_registry(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
):
    """No test reaches the internet or the user's cache.

    Every registered checkpoint URL points at a closed port on this machine (a download
    fails at once), and the napari-mobilesam cache is an empty folder of the session.
    Tests marked ``official_registry`` (the download tests, which read the official URLs
    and serve files from their own local server) keep the registry as it is.
    """
    import dataclasses
    import socket

    from napari_mobilesam.weights import fetch as weights

    if request.node.get_closest_marker("official_registry"):
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, checkpoint in list(weights.CHECKPOINTS.items()):
        url = f"http://127.0.0.1:{port}/{checkpoint.filename}"
        monkeypatch.setitem(weights.CHECKPOINTS, name, dataclasses.replace(checkpoint, url=url))
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))


def _require_parity() -> None:
    if not PARITY_CHECKPOINT.is_file() or not PARITY_CASES.is_file():
        pytest.fail(
            f"parity fixtures not found at {PARITY} (they sit in ../shared beside the "
            "checkout, as in CI)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def parity_checkpoint() -> Path:
    """The random-weight checkpoint in the official mobile_sam.pt format."""
    _require_parity()
    return PARITY_CHECKPOINT


def require_shared(*paths: Path) -> None:
    """Fail with where they belong when fixtures of ../shared are missing (CI has them)."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        pytest.fail(
            f"needs {', '.join(missing)} (../shared beside the checkout, as in CI)",
            pytrace=False,
        )


def write_prompt_guided_file(state_dict_path: Path, target: Path) -> Path:
    """Write the prompt encoder and mask decoder of a mobile_sam.pt-format file in
    MobileSAMv2's Prompt_guided_Mask_Decoder.pt format ({"PromtEncoder", "MaskDecoder"})."""
    import torch

    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    parts = {"PromtEncoder": "prompt_encoder.", "MaskDecoder": "mask_decoder."}
    torch.save(
        {
            key: {
                name[len(prefix) :]: value
                for name, value in state.items()
                if name.startswith(prefix)
            }
            for key, prefix in parts.items()
        },
        target,
    )
    return target


@pytest.fixture(scope="session")
def seed0_prompt_guided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 decoder of ../shared/fixtures/parity in the prompt-guided file format,
    as the fixtures in ../shared/fixtures/v2 were made."""
    require_shared(PARITY_CHECKPOINT)
    folder = tmp_path_factory.mktemp("prompt_guided")
    return write_prompt_guided_file(PARITY_CHECKPOINT, folder / "seed0_prompt_guided.pt")


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
        require_shared(RANDOM_WEIGHTS)
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


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (H, W) of every image the encoder runs on, in order."""
    from napari_mobilesam.segany.predictor import SegAnyPredictor

    calls: list[tuple[int, int]] = []
    original = SegAnyPredictor._encode

    def counting(self, rgb):
        calls.append(rgb.shape[:2])
        return original(self, rgb)

    monkeypatch.setattr(SegAnyPredictor, "_encode", counting)
    return calls


@pytest.fixture
def notifications():
    """napari notifications shown while the test runs: (severity, message) pairs."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[object, str]] = []

    def record(notification) -> None:
        seen.append((notification.severity, str(notification.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def conversions_and_hashes(monkeypatch) -> dict[str, int]:
    """How often an image is converted to the model's input, and how often one is hashed."""
    import hashlib

    from napari_mobilesam.imaging import convert, prepared_input

    counts = {"converted": 0, "hashed": 0}
    to_rgb_uint8, blake2b = convert.to_rgb_uint8, hashlib.blake2b

    def counting_to_rgb_uint8(*args, **kwargs):
        counts["converted"] += 1
        return to_rgb_uint8(*args, **kwargs)

    def counting_blake2b(*args, **kwargs):
        counts["hashed"] += 1
        return blake2b(*args, **kwargs)

    monkeypatch.setattr(convert, "to_rgb_uint8", counting_to_rgb_uint8)
    monkeypatch.setattr(prepared_input, "to_rgb_uint8", counting_to_rgb_uint8)
    monkeypatch.setattr(hashlib, "blake2b", counting_blake2b)
    return counts


@pytest.fixture(scope="session")
def yolo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class YOLOv8n detector with random weights, built from ultralytics' yaml."""
    return build_yolo_checkpoint(tmp_path_factory.mktemp("yolo"), "yolov8n.yaml")


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One engine cache for the session (tests/test_engines*.py point the cache there), so
    each weights file is converted once."""
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="session")
def own_calibration() -> list[np.ndarray]:
    """A small user calibration set: two synthetic fluorescence fields (keeps NNCF short)."""
    from napari_mobilesam.evaluation.synthetic import synthetic_nuclei

    return [synthetic_nuclei((512, 512), seed=seed)[0] for seed in (1, 2)]
