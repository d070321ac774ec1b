"""What a training run reports while it runs and what it leaves behind.

Shared by detector training and decoder fine-tuning, their command-line commands and the
napari "Train" widget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EpochCallback", "EpochReport", "StopCheck", "TrainingResult"]


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    epochs : int
        Epochs planned in this run.
    metrics : dict of str to float
        Training loss and validation figures of this epoch (e.g. ``"loss"``,
        ``"val/AP50"``, ``"val/box_mIoU"``).
    score : float
        The validation figure the best checkpoint is chosen by (higher is better).
    best : bool
        Whether this epoch's weights are the best so far (and were saved).
    seconds : float
        Wall time of the epoch, validation included.
    """

    epoch: int
    epochs: int
    metrics: dict[str, float]
    score: float
    best: bool
    seconds: float


#: Called after every epoch with its report.
EpochCallback = Callable[[EpochReport], None]
#: Polled between batches; returning True stops training and keeps the best so far.
StopCheck = Callable[[], bool]


@dataclass
class TrainingResult:
    """A finished (or stopped) training run.

    Attributes
    ----------
    path : pathlib.Path
        The trained weights, in the format of the file training started from.
    sidecar : pathlib.Path
        JSON next to it: what it was trained on, the settings and the validation figures.
    history : list of EpochReport
        Every finished epoch.
    stopped : bool
        True when training was stopped (Cancel, Ctrl+C) before its last epoch.
    """

    path: Path
    sidecar: Path
    history: list[EpochReport] = field(default_factory=list)
    stopped: bool = False

    @property
    def best(self) -> EpochReport | None:
        """The report of the epoch whose weights were kept."""
        kept = [report for report in self.history if report.best]
        return kept[-1] if kept else None
