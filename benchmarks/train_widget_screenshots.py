"""The README's Train widget screenshots, from a real training run on synthetic nuclei.

Opens napari, adds four synthetic-nuclei images of ``side``² with their true labels, trains
a detector from scratch for ``epochs`` epochs through the Train widget, and saves the whole
window after training, and the widget alone half-way, into ``out``. Prints the run's
outcome and each epoch's figures (the figures quoted under the README's screenshot).

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24"``)::

    python benchmarks/train_widget_screenshots.py /tmp/shots --epochs 15 --side 384
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--side", type=int, default=384)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_mobilesam._widgets import TrainWidget
    from napari_mobilesam.evaluation import synthetic_nuclei

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    for i in range(4):
        image, labels = synthetic_nuclei((args.side, args.side), seed=i)
        viewer.add_image(image, name=f"nuclei {i}", visible=i == 0)
        viewer.add_labels(labels, name=f"nuclei {i} labels", visible=i == 0, opacity=0.4)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train (detector / decoder)")
    for i in range(4):
        widget.data.add_pair(viewer.layers[f"nuclei {i}"], viewer.layers[f"nuclei {i} labels"])
    widget._output.value = args.out / "nuclei-detector.pt"
    widget._epochs.value = args.epochs

    app = QApplication.instance()
    start = time.time()
    job = widget.train()
    half_way_saved = False
    while job.running:
        app.processEvents()
        time.sleep(0.05)
        if not half_way_saved and len(job.reports) >= max(2, args.epochs // 2):
            widget.native.grab().save(str(args.out / "widget_during.png"))
            half_way_saved = True
    app.processEvents()
    print(job.outcome.message, f"({time.time() - start:.0f} s)")
    for report in job.reports:
        print(report.epoch, {name: round(value, 3) for name, value in report.metrics.items()})
    viewer.screenshot(str(args.out / "after.png"), canvas_only=False)


if __name__ == "__main__":
    main()
