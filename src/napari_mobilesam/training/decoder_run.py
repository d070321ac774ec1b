"""The record of a decoder fine-tuning run: its JSON sidecar, its resume checkpoint, and
the image encoder that makes its embeddings."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_mobilesam._atomic_files import atomic_path
from napari_mobilesam.errors import InvalidValueError
from napari_mobilesam.training.annotations import AnnotatedImage
from napari_mobilesam.training.decoder_files import (
    MOBILE_SAM,
    BaseWeights,
    sidecar_path,
    write_json,
)
from napari_mobilesam.training.reports import EpochReport

__all__ = ["SIDECAR_FORMAT", "RunRecord", "encoder_predictor"]

SIDECAR_FORMAT = "napari-mobilesam decoder fine-tuning 1"


def encoder_predictor(
    weights: BaseWeights, image_encoder: str | os.PathLike | None, device: str | None
) -> tuple[Any, str]:
    """A predictor whose image encoder makes the run's embeddings, and that encoder's file.

    A ``mobile_sam.pt`` base brings its own encoder; ``image_encoder`` may only name the
    same file.
    """
    from napari_mobilesam.segany.predictor import SegAnyPredictor
    from napari_mobilesam.weights.build import build_mobile_sam
    from napari_mobilesam.weights.fetch import resolve_checkpoint

    if weights.kind == MOBILE_SAM:
        if image_encoder is not None and (
            Path(image_encoder).expanduser().resolve() != weights.path.resolve()
        ):
            raise InvalidValueError(
                f"The base {weights.path} is a whole mobile_sam.pt: its own image encoder "
                f"makes the embeddings and is saved unchanged; leave image_encoder unset "
                f"(got {image_encoder})."
            )
        path = weights.path
    else:
        path = resolve_checkpoint(image_encoder)
    return SegAnyPredictor(build_mobile_sam(path), device), str(path)


def _item_summary(item: AnnotatedImage) -> dict[str, Any]:
    return {"name": item.name, "shape": list(item.labels.shape), "objects": item.n_objects}


@dataclass
class RunRecord:
    """What a run has done so far, written to the sidecar and checkpoint after each epoch."""

    output: Path
    checkpoint: Path
    weights: BaseWeights
    settings: dict[str, Any]
    train: list[AnnotatedImage]
    validation: list[AnnotatedImage]
    history: list[EpochReport] = field(default_factory=list)
    best_score: float = float("-inf")

    @property
    def last_epoch(self) -> int:
        """The last finished epoch (0: only the base weights were measured)."""
        return self.history[-1].epoch if self.history else 0

    def add(
        self,
        report: EpochReport,
        decoder: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> None:
        """Record a finished epoch: sidecar and resume checkpoint."""
        self.history.append(report)
        if report.best:
            self.best_score = report.score
        self.write_sidecar(stopped=False)
        state = {
            "base": str(self.weights.path.resolve()),
            "kind": self.weights.kind,
            "decoder": decoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "history": [dataclasses.asdict(entry) for entry in self.history],
            "best_score": self.best_score,
        }
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def resume(
        self,
        decoder: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> None:
        """Restore the last finished epoch of this output's run."""
        if not self.checkpoint.is_file():
            raise InvalidValueError(
                f"Nothing to resume for {self.output}: there is no checkpoint at "
                f"{self.checkpoint}. Run without resume to start."
            )
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        if state["base"] != str(self.weights.path.resolve()):
            raise InvalidValueError(
                f"The run of {self.output} started from {state['base']}, not from "
                f"{self.weights.path}; resume with the same base or choose another output."
            )
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        self.history = [EpochReport(**entry) for entry in state["history"]]
        self.best_score = float(state["best_score"])

    def finish(self, stopped: bool) -> None:
        """Write the sidecar of the finished or stopped run."""
        self.write_sidecar(stopped)

    def write_sidecar(self, stopped: bool) -> None:
        """``OUTPUT.json``: what was trained on, the settings, every epoch and the best."""
        kept = [report for report in self.history if report.best]
        best = kept[-1] if kept else None
        write_json(
            sidecar_path(self.output),
            {
                "format": SIDECAR_FORMAT,
                "weights": str(self.output),
                "kind": self.weights.kind,
                "base": str(self.weights.path),
                "loads_with": _loads_with(self.weights.kind, self.output),
                "settings": self.settings,
                "trained_on": [_item_summary(item) for item in self.train],
                "validated_on": [_item_summary(item) for item in self.validation]
                or "the training images (no validation images were given)",
                "history": [dataclasses.asdict(report) for report in self.history],
                "best": dataclasses.asdict(best) if best is not None else None,
                "stopped": stopped,
            },
        )


def _loads_with(kind: str, output: Path) -> str:
    if kind == MOBILE_SAM:
        return f"build_mobile_sam({str(output)!r}) or NAPARI_MOBILESAM_WEIGHTS={output}"
    return f"segment_everything(..., decoder={str(output)!r}) or --decoder {output}"
