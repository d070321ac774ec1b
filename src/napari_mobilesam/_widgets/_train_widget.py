"""The Train dock widget: train SegEvery's detector or a mask decoder on your annotations.

The loop it serves: run SegEvery (or SegAny) on an image, correct the labels by painting,
train on the corrected images here, hand the trained file to SegEvery with one click, and
run it on the next image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from napari_mobilesam._widgets._learning_curve import LearningCurve
from napari_mobilesam._widgets._plane import unproxied
from napari_mobilesam._widgets._segevery_widget import YOLO_FILE_TOOLTIP
from napari_mobilesam._widgets._train_handoff import segany_instructions, use_in_segevery
from napari_mobilesam._widgets._train_job import (
    BOX_DECODER,
    DETECTOR,
    POINT_DECODER,
    TrainJob,
    TrainRequest,
)
from napari_mobilesam._widgets._train_sources import TrainingData

if TYPE_CHECKING:
    import napari

    from napari_mobilesam.training.reports import EpochReport

WHAT = {
    "Detector (SegEvery prompts)": DETECTOR,
    "Box decoder (SegEvery masks)": BOX_DECODER,
    "Point decoder (SegAny clicks)": POINT_DECODER,
}
FILE = "file"
#: The bases each kind can start from: (shown name, base), FILE for the file field.
BASES = {
    DETECTOR: [
        ("from scratch", "scratch"),
        ("MobileSAMv2 ObjectAwareModel.pt", "object_aware"),
        ("a YOLO file (.pt / .yaml)", FILE),
    ],
    BOX_DECODER: [
        ("MobileSAMv2 Prompt_guided_Mask_Decoder.pt", "prompt_guided"),
        ("a decoder file (.pt)", FILE),
    ],
    POINT_DECODER: [
        ("MobileSAM mobile_sam.pt (the weights SegAny uses)", "mobile_sam"),
        ("a mobile_sam.pt-format file", FILE),
    ],
}
BASE_FILTERS = {DETECTOR: "*.pt *.yaml *.yml", BOX_DECODER: "*.pt", POINT_DECODER: "*.pt"}


class TrainWidget(Container):
    """Dock widget "Train (detector / decoder)".

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose Image and Labels layers are trained on.

    Examples
    --------
    >>> widget = TrainWidget(viewer)  # doctest: +SKIP
    >>> cell, objects = viewer.layers["cell"], viewer.layers["cell objects"]  # doctest: +SKIP
    >>> widget.data.add_pair(cell, objects)  # doctest: +SKIP
    >>> job = widget.train()  # the learning curve grows epoch by epoch  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = unproxied(viewer)
        self.job: TrainJob | None = None
        self.trained: tuple[str, Path] | None = None  # (kind, file) of the last run
        self.data = TrainingData(viewer)
        self._make_settings()
        self._train = PushButton(text="Train")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._cancel.tooltip = "Stop after the current batch; the best weights so far are kept."
        self._progress = ProgressBar(label="Epochs", value=0, max=1, visible=False)
        self._status = Label(value="")
        self._use = PushButton(text="Use it in SegEvery", visible=False)
        super().__init__(
            widgets=[
                self.data,
                self._what,
                self._start_from,
                self._base_file,
                self._epochs,
                self._output,
                Container(widgets=[self._train, self._cancel], layout="horizontal", labels=False),
                self._progress,
                self._status,
                self._use,
            ]
        )
        self.curve = LearningCurve()
        self.native.layout().addWidget(self.curve)
        self._status.native.setWordWrap(True)
        self._what.changed.connect(self._on_what)
        self._start_from.changed.connect(self._on_base)
        self._train.changed.connect(self.train)
        self._cancel.changed.connect(self.cancel)
        self._use.changed.connect(self.use_trained)
        self._on_what(self._what.value)

    def _make_settings(self) -> None:
        self._what = ComboBox(label="Train", choices=list(WHAT.items()), value=DETECTOR)
        self._what.tooltip = (
            "Detector: the YOLO model whose boxes prompt SegEvery (which objects are found). "
            "Box decoder: turns SegEvery's boxes into masks (object outlines). Point "
            "decoder: turns SegAny's clicks into masks."
        )
        self._start_from = ComboBox(label="Start from", choices=self._base_choices)
        self._base_file = FileEdit(label="Base file", mode="r", nullable=True, visible=False)
        self._epochs = SpinBox(label="Epochs", min=0, max=10_000, value=0)
        self._epochs.native.setSpecialValueText("default")
        self._epochs.tooltip = "Passes over the training images; 'default' lets training choose."
        self._output = FileEdit(label="Save as", mode="w", filter="*.pt", nullable=True)
        self._output.tooltip = "The trained weights (.pt); a JSON sidecar is written beside it."

    def _base_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        what = getattr(self, "_what", None)
        return BASES[what.value if what is not None else DETECTOR]

    def _on_what(self, kind: str) -> None:
        self._start_from.reset_choices()
        self._start_from.value = BASES[kind][0][1]
        self._base_file.filter = BASE_FILTERS[kind]
        self._base_file.tooltip = YOLO_FILE_TOOLTIP if kind == DETECTOR else ""
        self._on_base(self._start_from.value)

    def _on_base(self, base: str | None) -> None:
        self._base_file.visible = base == FILE

    # ------------------------------------------------------------ running
    def request(self) -> TrainRequest:
        """What the widget asks for; ValueError saying what to choose when it cannot."""
        kind = self._what.value
        base: str | Path = self._start_from.value
        if base == FILE:
            path = self._base_file.value
            if path is None or not str(path).strip() or not Path(path).is_file():
                raise ValueError("Choose the file to start training from (Base file).")
            base = Path(path)
        output = self._output.value
        if output is None or str(output).strip() in ("", ".") or Path(output).is_dir():
            raise ValueError("Choose the file to save the trained weights to (Save as).")
        output = Path(output).expanduser()
        if output.suffix != ".pt":
            output = output.with_name(output.name + ".pt")
        if isinstance(base, Path) and base.resolve() == output.resolve():
            raise ValueError("Save as must be another file than the base file it starts from.")
        epochs = int(self._epochs.value) or None
        if self.data.uses_folders:
            return TrainRequest(kind, output, base, folders=self.data.folders(), epochs=epochs)
        return TrainRequest(kind, output, base, pairs=self.data.layer_pairs(), epochs=epochs)

    def train(self) -> TrainJob | None:
        """Start training; None (and the reason in the widget) if it cannot start."""
        if self.job is not None and self.job.running:
            show_info("Training is already running; cancel it first.")
            return None
        try:
            request = self.request()
        except ValueError as exc:
            self._status.value = str(exc)
            show_error(str(exc))
            return None
        self.job = TrainJob(
            request,
            on_epoch=self._on_epoch,
            on_finished=self._on_finished,
            on_status=self._status.set_value,
        )
        self.trained = None
        self._use.visible = False
        self.curve.clear()
        self._progress.max, self._progress.value = 0, 0  # busy until the first epoch
        self._progress.visible = True
        self._train.enabled, self._cancel.enabled = False, True
        self._status.value = "Reading the annotations..."
        self.job.start()
        return self.job

    def cancel(self) -> None:
        """Stop the running training after its current batch (the best so far is kept)."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._status.value = "Stopping after the current batch..."

    def _on_epoch(self, report: EpochReport) -> None:
        self._progress.max = max(int(report.epochs), 1)
        self._progress.value = min(max(int(report.epoch), 0), self._progress.max)
        self.curve.add(report)
        if report.epoch == 0:
            self._status.value = f"Before training: validation score {report.score:.3g}."
            return
        best = " (best so far)" if report.best else ""
        self._status.value = (
            f"Epoch {report.epoch} of {report.epochs}: validation score "
            f"{report.score:.3g}{best}, {report.seconds:.0f} s."
        )

    def _on_finished(self, job: TrainJob) -> None:
        self._train.enabled, self._cancel.enabled = True, False
        outcome = job.outcome
        self._status.value = outcome.message
        if self._progress.max == 0:
            self._progress.max = 1
        result = outcome.result
        if result is not None and Path(result.path).is_file():
            self.trained = (outcome.kind or job.request.kind, Path(result.path))
            segany = self.trained[0] == POINT_DECODER
            self._use.text = "Use it in SegAny" if segany else "Use it in SegEvery"
            self._use.visible = True
        if outcome.state == "failed":
            show_error(outcome.message)
        else:
            show_info(outcome.message)

    def use_trained(self, _value: Any = None) -> str:
        """Hand the file of the last run to SegEvery (or say how SegAny uses it)."""
        if self.trained is None:
            return self._say("Nothing trained yet.")
        kind, path = self.trained
        if not path.is_file():
            return self._say(f"The trained file {path} is gone.")
        if kind == POINT_DECODER:
            return self._say(segany_instructions(path))
        return self._say(use_in_segevery(self.viewer, kind, path))

    def _say(self, text: str) -> str:
        self._status.value = text
        show_info(text)
        return text
