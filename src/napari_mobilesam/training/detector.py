"""Train the object detector that prompts SegEvery, on your annotated images.

The annotated images are cut into crops at the scale SegEvery's detector sees them
(:mod:`napari_mobilesam.training.detector_dataset`) and written as a YOLO dataset in a
work folder; ultralytics' own trainer trains a one-class detector on them, from scratch,
from a user's YOLO file, or from MobileSAMv2's ObjectAwareModel
(:mod:`napari_mobilesam.training.detector_bases`). The best epoch by ultralytics' validation
fitness on the validation images is written to ``output``, an ultralytics checkpoint that
``segment_everything(detector=output)``, ``napari-mobilesam segment --detector output`` and
the SegEvery widget load; ``output`` with a ``.json`` suffix records what it was trained on.

ultralytics never downloads anything here: no plots (they fetch a font), no AMP check (it
fetches a model), no pretrained weights unless given as ``base``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam.errors import InvalidTypeError, InvalidValueError
from napari_mobilesam.training.annotations import AnnotatedImage
from napari_mobilesam.training.detector_bases import (
    SCRATCH_DEPTH,
    SCRATCH_FAMILY,
    SCRATCH_WIDTH,
    prepare_base,
)
from napari_mobilesam.training.detector_dataset import write_yolo_dataset
from napari_mobilesam.training.detector_progress import TrainingRun, sidecar_record
from napari_mobilesam.training.reports import EpochCallback, StopCheck, TrainingResult

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_CROP_PASSES",
    "DEFAULT_TRAIN_IMGSZ",
    "default_epochs",
    "train_detector",
]

#: Epochs when none are given: enough to show the detector about this many training crops
#: (10 images of 512² give 250 crops: 8 epochs, about 4 minutes on 2 free CPU cores), within
#: :data:`EPOCH_RANGE`. Measurements in the README ("The detector").
DEFAULT_CROP_PASSES = 2000
EPOCH_RANGE = (6, 100)
#: Fraction of the epochs trained last without mosaic augmentation.
CLOSE_MOSAIC_FRACTION = 0.2
#: Side of the training crops and of the network input while training.
DEFAULT_TRAIN_IMGSZ = 256
DEFAULT_BATCH = 4
#: ultralytics training settings chosen by measurement on small microscopy-like data.
TRAIN_SETTINGS: dict[str, Any] = {
    "optimizer": "AdamW",
    "lr0": 0.002,
    "warmup_epochs": 1.0,
    "mosaic": 1.0,
    "scale": 0.3,
    "translate": 0.1,
    "fliplr": 0.5,
    "flipud": 0.5,
    "hsv_h": 0.0,
    "hsv_s": 0.3,
    "hsv_v": 0.3,
    "max_det": 300,
}
#: Settings that keep ultralytics offline, quiet and in the work folder.
_FIXED_SETTINGS: dict[str, Any] = {
    "plots": False,
    "amp": False,
    "val": True,
    "verbose": False,
    "exist_ok": True,
    "patience": 1000,
    "deterministic": False,
}
_WORK_FOLDER_SUFFIX = "_training"
#: ultralytics' last.pt with its optimizer state, copied after every epoch (ultralytics
#: strips the optimizer from last.pt when training ends, stopped or not).
RESUME_FILE = Path("run", "weights", "resume.pt")


def train_detector(
    train: Sequence[AnnotatedImage],
    validation: Sequence[AnnotatedImage],
    output: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] = "scratch",
    epochs: int | None = None,
    imgsz: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    resume: bool = False,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> TrainingResult:
    """Train a one-class object detector for SegEvery on annotated images.

    Parameters
    ----------
    train, validation : sequence of AnnotatedImage
        Training images and the held-out images that choose the best epoch (see
        :func:`napari_mobilesam.training.annotations.split_by_image`). Without validation
        images the training images are validated on, with a warning.
    output : path
        The ``.pt`` file to write; ``output`` with a ``.json`` suffix is its sidecar.
    base : str or path
        ``"scratch"`` (a small YOLOv8 detector, random weights), MobileSAMv2's
        ``ObjectAwareModel.pt`` (converted to a detector with its ``reg_max`` 26 head; see
        :mod:`napari_mobilesam.training.detector_bases`), or a YOLO ``.pt`` / ``.yaml``.
    epochs : int, optional
        None: :func:`default_epochs` of the number of training crops.
    imgsz : int, optional
        Side of the training crops (a multiple of 32). None: :data:`DEFAULT_TRAIN_IMGSZ`.
        The trained detector still runs at SegEvery's 1024; crops are cut at that scale.
    batch : int, optional
        Crops per batch. None: :data:`DEFAULT_BATCH`.
    device : str, optional
        ``"cpu"``, ``"cuda:0"``, ... None: CUDA when available, else the CPU.
    resume : bool
        Continue an interrupted run of the same ``output`` (and ``workdir``) where its last
        finished epoch left off.
    seed : int
        Seed of ultralytics' training.
    on_epoch : callable, optional
        Called with an :class:`~napari_mobilesam.training.reports.EpochReport` after each
        epoch; its metrics are validation box ``"val/AP50"``, ``"val/mAP50-95"``,
        ``"val/recall"``, ``"val/precision"`` and the training ``"loss"``.
    should_stop : callable, optional
        Polled after every batch; True ends training after validating the weights so far,
        and the best epoch so far is written to ``output``. Ctrl+C (KeyboardInterrupt) does
        the same once an epoch has finished.
    workdir : path, optional
        Where the dataset and ultralytics' run go. None: ``<output stem>_training`` beside
        ``output``, removed after a run that finished (kept after a stop, for ``resume``).

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
    >>> from napari_mobilesam.training import annotated_image
    >>> items = [annotated_image(*synthetic_nuclei((512, 512), seed=s), f"im{s}")
    ...          for s in range(10)]
    >>> result = train_detector(items[:8], items[8:], "nuclei.pt")  # doctest: +SKIP
    >>> result.best.metrics["val/AP50"]  # doctest: +SKIP
    """
    output = Path(output)
    settings = _settings(epochs, imgsz, batch, device, seed)
    train, validation = _checked_items(train, validation)
    work = Path(workdir) if workdir is not None else _default_workdir(output)
    model_path, kind = prepare_base(base, work / "base")
    if resume and not (work / RESUME_FILE).is_file():
        raise InvalidValueError(f"nothing to resume: {work / RESUME_FILE} is not there")
    for stale in ("dataset",) if resume else ("dataset", "run"):
        shutil.rmtree(work / stale, ignore_errors=True)
    dataset = write_yolo_dataset(train, validation, work / "dataset", crop=settings["imgsz"])
    if not dataset.counts("train")["crops"]:
        raise InvalidValueError("no training crop has an object box; are the objects tiny?")
    if settings["epochs"] is None:
        settings["epochs"] = default_epochs(dataset.counts("train")["crops"])
    settings["close_mosaic"] = round(CLOSE_MOSAIC_FRACTION * settings["epochs"])
    run = TrainingRun(settings["epochs"], on_epoch, should_stop)
    interrupted = False
    try:
        trainer = _fit(model_path, dataset.data_yaml, work, settings, run, resume)
    except KeyboardInterrupt:
        interrupted = True
        trainer = None
    best = work / "run" / "weights" / "best.pt"
    if not best.is_file() or not run.history:
        if interrupted:
            raise KeyboardInterrupt
        raise RuntimeError(f"ultralytics finished without writing {best}")
    if interrupted:
        _strip(best)
    with atomic_path(output) as tmp:
        shutil.copyfile(best, tmp)
    sidecar = output.with_suffix(".json")
    finished = not (interrupted or run.stopped)
    record = sidecar_record(
        output, str(base), kind, settings, TRAIN_SETTINGS, dataset, run, resume, not finished
    )
    if kind == "scratch":
        record["scratch_model"] = {
            "family": SCRATCH_FAMILY,
            "depth_multiple": SCRATCH_DEPTH,
            "width_multiple": SCRATCH_WIDTH,
        }
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    if finished and workdir is None and trainer is not None:
        shutil.rmtree(work, ignore_errors=True)
    return TrainingResult(output, sidecar, run.history, stopped=not finished)


def _fit(
    model_path: str, data_yaml: Path, work: Path, settings: dict, run: TrainingRun, resume: bool
) -> Any:
    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics, yolo_class

    yolo = yolo_class()
    resume_file = work / RESUME_FILE
    model = yolo(str(resume_file) if resume else model_path, task="detect")
    model.add_callback("on_train_batch_end", run.batch_end)
    model.add_callback("on_train_epoch_start", run.epoch_start)
    model.add_callback("on_fit_epoch_end", run.fit_epoch_end)
    model.add_callback("on_model_save", lambda trainer: _keep_resumable(trainer, resume_file))
    arguments = {**TRAIN_SETTINGS, **_FIXED_SETTINGS, **settings}
    arguments.update(data=str(data_yaml), project=str(work), name="run")
    if resume:
        arguments = {"resume": str(resume_file), "data": str(data_yaml), "workers": 0}
    with quiet_ultralytics():
        model.train(**arguments)
    return model.trainer


def _keep_resumable(trainer: Any, target: Path) -> None:
    """Copy last.pt (with its optimizer state) aside: ultralytics strips it when it ends."""
    shutil.copyfile(trainer.last, target)


def _strip(best: Path) -> None:
    from ultralytics.utils.torch_utils import strip_optimizer

    from napari_mobilesam.segevery.detectors.yolo import quiet_ultralytics

    with quiet_ultralytics():
        strip_optimizer(best)


def default_epochs(crops: int) -> int:
    """Epochs that show the detector about :data:`DEFAULT_CROP_PASSES` training crops.

    Examples
    --------
    >>> default_epochs(250), default_epochs(25), default_epochs(1000)
    (8, 80, 6)
    """
    low, high = EPOCH_RANGE
    return int(min(high, max(low, round(DEFAULT_CROP_PASSES / max(crops, 1)))))


def _checked_items(
    train: Sequence[AnnotatedImage], validation: Sequence[AnnotatedImage]
) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    train, validation = list(train), list(validation)
    for item in (*train, *validation):
        if not isinstance(item, AnnotatedImage):
            raise InvalidTypeError(
                f"expected AnnotatedImage items (napari_mobilesam.training.annotated_image), "
                f"got {type(item).__name__}"
            )
    if not train:
        raise InvalidValueError("no training image: give at least one annotated image")
    if not any(item.n_objects for item in train):
        raise InvalidValueError("the training images have no annotated object")
    if not validation:
        warnings.warn(
            "no validation images: the best epoch is chosen on the training images, which "
            "overrates it; annotate a second image to hold out",
            UserWarning,
            stacklevel=3,
        )
        validation = list(train)
    return train, validation


def _settings(
    epochs: int | None, imgsz: int | None, batch: int | None, device: str | None, seed: int
) -> dict[str, Any]:
    values = {
        "epochs": epochs,
        "imgsz": DEFAULT_TRAIN_IMGSZ if imgsz is None else imgsz,
        "batch": DEFAULT_BATCH if batch is None else batch,
        "seed": seed,
    }
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (name != "seed"):
            raise InvalidValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if values["imgsz"] % 32:
        raise InvalidValueError(f"imgsz must be a multiple of 32, got {values['imgsz']}")
    values["nbs"] = values["batch"]  # a step per batch: small data needs many steps
    values["device"] = _device(device)
    values["workers"] = 0 if values["device"] == "cpu" else 2
    return values


def _device(device: str | None) -> str:
    if device is None:
        from napari_mobilesam.model.device import default_device

        return "0" if default_device().type == "cuda" else "cpu"
    if not isinstance(device, str):
        raise InvalidTypeError(f"device must be a string such as 'cuda:0', not {device!r}")
    return device.removeprefix("cuda:") if device.startswith("cuda:") else device


def _default_workdir(output: Path) -> Path:
    return output.with_name(output.stem + _WORK_FOLDER_SUFFIX)
