"""What a detector training run reports: per-epoch reports from ultralytics' trainer, and
the JSON sidecar beside the trained file."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_mobilesam.segevery.detectors.base import DEFAULT_IMGSZ
from napari_mobilesam.training.reports import EpochCallback, EpochReport, StopCheck

__all__ = ["TrainingRun", "sidecar_record"]


@dataclass
class TrainingRun:
    """State shared with ultralytics' callbacks during one training: the reports of the
    finished epochs, and whether ``should_stop`` stopped it."""

    epochs: int
    on_epoch: EpochCallback | None
    should_stop: StopCheck | None
    history: list[EpochReport] = field(default_factory=list)
    stopped: bool = False
    epoch_started: float | None = None

    def batch_end(self, trainer: Any) -> None:
        if self.should_stop is not None and self.should_stop():
            self.stopped = trainer.stop = True

    def epoch_start(self, trainer: Any) -> None:
        self.epoch_started = time.perf_counter()

    def fit_epoch_end(self, trainer: Any) -> None:
        if self.epoch_started is None:  # the final validation of the best weights
            return
        seconds = time.perf_counter() - self.epoch_started
        self.epoch_started = None
        report = EpochReport(
            epoch=int(trainer.epoch) + 1,
            epochs=int(trainer.epochs),
            metrics=_epoch_metrics(trainer),
            score=float(trainer.fitness or 0.0),
            best=trainer.fitness is not None and trainer.fitness == trainer.best_fitness,
            seconds=seconds,
        )
        self.history.append(report)
        if self.on_epoch is not None:
            self.on_epoch(report)


def _epoch_metrics(trainer: Any) -> dict[str, float]:
    metrics = trainer.metrics or {}
    names = {
        "val/AP50": "metrics/mAP50(B)",
        "val/mAP50-95": "metrics/mAP50-95(B)",
        "val/recall": "metrics/recall(B)",
        "val/precision": "metrics/precision(B)",
    }
    figures = {name: float(metrics.get(key, 0.0)) for name, key in names.items()}
    losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss else {}
    figures.update({name: float(value) for name, value in losses.items()})
    figures["loss"] = float(sum(losses.values()))
    return figures


def sidecar_record(
    output: Path,
    base: str,
    kind: str,
    settings: dict,
    train_settings: dict,
    dataset: Any,
    run: TrainingRun,
    resumed: bool,
    stopped: bool,
) -> dict[str, Any]:
    """The sidecar's content: data, settings, split, every epoch's figures and the best."""
    best = [report for report in run.history if report.best]
    return {
        "detector": output.name,
        "trained_with": "napari-mobilesam train_detector (ultralytics)",
        "base": base,
        "base_kind": kind,
        "inference_imgsz": DEFAULT_IMGSZ,
        "settings": {**train_settings, **settings},
        "resumed": resumed,
        "stopped": stopped,
        "split": {split: dataset.counts(split) for split in ("train", "val")},
        "images": dataset.images,
        "epochs": [asdict(report) for report in run.history],
        "best": asdict(best[-1]) if best else None,
    }
