"""The Train widget's live learning curve: the validation score (and the training loss,
when the run reports one) per epoch, drawn with matplotlib inside the widget.

matplotlib is imported when the curve is made, not when the plugin is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from napari_mobilesam.training.reports import EpochReport

#: Metric keys read as the training loss, first found wins.
LOSS_KEYS = ("loss", "train/loss", "train_loss")


def epoch_loss(report: EpochReport) -> float | None:
    """The training loss of an epoch's report, if it has one."""
    for key in LOSS_KEYS:
        if key in report.metrics:
            return float(report.metrics[key])
    return None


def score_name(report: EpochReport) -> str:
    """The metric the score is (e.g. "val/mAP50-95"), when one of the metrics equals it."""
    for key, value in report.metrics.items():
        if key.startswith("val") and float(value) == float(report.score):
            return key
    return "validation score"


class LearningCurve(QWidget):
    """A small plot: validation score per epoch (left axis), loss (right axis, if any).

    The best epoch kept so far is marked. :meth:`add` one report per epoch; :meth:`clear`
    before a new run.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.2), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(170)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.score_axes = self.figure.add_subplot()
        self.loss_axes = self.score_axes.twinx()
        self.reports: list[EpochReport] = []
        self._draw()

    @property
    def scores(self) -> list[tuple[int, float]]:
        """(epoch, validation score) of every epoch drawn."""
        return [(report.epoch, float(report.score)) for report in self.reports]

    @property
    def losses(self) -> list[tuple[int, float]]:
        """(epoch, training loss) of every epoch that reported one."""
        found = [(report.epoch, epoch_loss(report)) for report in self.reports]
        return [(epoch, loss) for epoch, loss in found if loss is not None]

    def clear(self) -> None:
        """Forget the points of the previous run."""
        self.reports = []
        self._draw()

    def add(self, report: EpochReport) -> None:
        """Draw one more epoch (call on the GUI thread)."""
        self.reports.append(report)
        self._draw()

    def _draw(self) -> None:
        score, loss = self.score_axes, self.loss_axes
        score.clear()
        loss.clear()
        loss.yaxis.tick_right()  # clear() puts a twin's axis back on the left
        loss.yaxis.set_label_position("right")
        score.set_xlabel("epoch", fontsize=8)
        name = score_name(self.reports[-1]) if self.reports else "validation score"
        score.set_ylabel(name, fontsize=8, color="tab:blue")
        score.tick_params(labelsize=7)
        loss.tick_params(labelsize=7)
        if self.reports:
            epochs, values = zip(*self.scores, strict=True)
            score.plot(epochs, values, "o-", color="tab:blue", markersize=3, label="score")
            best = [report for report in self.reports if report.best]
            if best:
                score.plot(best[-1].epoch, best[-1].score, "*", color="tab:orange", ms=10)
            # epoch 0, when reported, is the base weights before training
            score.set_xlim(min(1, *epochs) - 0.5, max(self.reports[-1].epochs, *epochs) + 0.5)
            score.xaxis.get_major_locator().set_params(integer=True)
        else:
            score.text(
                0.5,
                0.5,
                "learning curve",
                ha="center",
                va="center",
                alpha=0.4,
                transform=score.transAxes,
            )
        if self.losses:
            epochs, values = zip(*self.losses, strict=True)
            loss.plot(epochs, values, "s--", color="tab:red", markersize=3, label="loss")
            loss.set_ylabel("training loss", fontsize=8, color="tab:red")
        else:
            loss.set_yticks([])
        self.canvas.draw_idle()
