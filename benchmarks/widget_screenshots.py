"""The README's SegAny and SegEvery screenshots (``docs/images/segany.png``,
``segevery_progress.png`` and ``segevery.png``), taken from a real session under a display.

SegAny: two prompt points (foreground and background) on the ``cell`` sample and the live
preview. SegEvery: a run with a YOLO detector, shot while the widget's own progress row
counts the prompts. Both use the random test weights (``--weights``, default the
repository's parity fixture) and, for SegEvery, a random-weight YOLOv8n built from
ultralytics' yaml: the masks are noise, the screenshots show the widgets. The SegEvery
run's AP against ``synthetic_nuclei`` truth is printed (random weights: near 0).

Run: ``xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/widget_screenshots.py OUT``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def wait(app, until, timeout: float = 600) -> None:
    start = time.perf_counter()
    while not until():
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("gave up waiting")


def shoot(viewer, path: Path) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(10):
        QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(path))
    print("wrote", path)


def segany(out: Path, app) -> None:
    import napari
    import skimage.data

    from napari_mobilesam._widgets import SegAnyWidget
    from napari_mobilesam._widgets._prompt_layers import BACKGROUND, PROMPT_FEATURE

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(skimage.data.cell(), name="cell")
    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny (MobileSAM)")
    controller = widget.controller
    controller.points.add([500, 140])
    controller.points.feature_defaults[PROMPT_FEATURE] = BACKGROUND
    controller.points.add([540, 180])
    wait(app, lambda: controller.preview_ready and not controller.busy)
    shoot(viewer, out / "segany.png")
    viewer.close()


def segevery_progress(out: Path, app) -> None:
    import napari

    from napari_mobilesam._widgets import SegEveryWidget
    from napari_mobilesam.evaluation import match_objects, synthetic_nuclei

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_yolo_checkpoint

    image, truth = synthetic_nuclei((512, 512), n_objects=30, seed=0)
    yolo = build_yolo_checkpoint(Path(tempfile.mkdtemp()), "yolov8n.yaml")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(image, name="nuclei")
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery (MobileSAMv2)")
    widget._detector.value = "file"
    widget._detector_file.value = yolo
    widget._conf.value = 0.0
    widget._max_objects.value = 40
    job = widget.run()
    wait(app, lambda: "decoding" in widget._status.progress_text or job.outcome is not None)
    shoot(viewer, out / "segevery_progress.png")
    wait(app, lambda: job.outcome is not None)
    if job.result_layer is not None:
        print("AP50 against the truth:", match_objects(truth, job.result_layer.data).ap50)
    viewer.close()


def segevery_result(out: Path, app) -> None:
    """SegEvery finished on the ``cell`` sample; the status bar shows the features of the
    object under the cursor."""
    import napari
    import skimage.data

    from napari_mobilesam._widgets import SegEveryWidget

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_yolo_checkpoint

    yolo = build_yolo_checkpoint(Path(tempfile.mkdtemp()), "yolov8n.yaml")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(skimage.data.cell(), name="cell")
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery (MobileSAMv2)")
    widget._detector.value = "file"
    widget._detector_file.value = yolo
    widget._conf.value = 0.0
    widget._max_objects.value = 40
    job = widget.run()
    wait(app, lambda: job.outcome is not None)
    layer = job.result_layer
    if layer is not None:
        ys, xs = np.nonzero(np.asarray(layer.data) > 0)
        viewer.cursor.position = (float(ys[len(ys) // 2]), float(xs[len(xs) // 2]))
        viewer.update_status_from_cursor()
    shoot(viewer, out / "segevery.png")
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", choices=["segany", "segevery", "segevery_result"])
    parser.add_argument("--weights", default=str(SHARED / "parity" / "mobile_sam_seed0.pt"))
    args = parser.parse_args()
    os.environ["NAPARI_MOBILESAM_WEIGHTS"] = args.weights
    from napari.qt import get_qapp
    from qtpy.QtWidgets import QApplication

    app = get_qapp()
    assert app is QApplication.instance()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "segany"):
        segany(args.out, app)
    if args.only in (None, "segevery"):
        segevery_progress(args.out, app)
    if args.only in (None, "segevery_result"):
        segevery_result(args.out, app)


if __name__ == "__main__":
    main()
