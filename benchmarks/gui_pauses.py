"""How long napari's GUI thread is kept from running while the widgets work (issue 19).

A 5 ms ``QTimer`` on the GUI thread records the time between its ticks while SegAny's
Propagate runs through a Z stack (``--slices`` x ``--side``², one ellipsoid;
``iou_threshold=0``: every slice is visited whatever the weights) and while
SegEvery runs on all its slices (grid prompts). The longest gap (minus the 5 ms) is the
longest pause a user feels; the median gap is the same clock with nothing in the way,
the peer the pauses are read against. ``--profile`` adds the GUI thread's functions with
the most cumulative time during the runs (cProfile of the main thread only).

The propagated object and the SegEvery labels are measured against the ellipsoid's truth
(Cellpose's AP at IoU 0.5, via ``napari_mobilesam.evaluation``); with the random-weight
default they say nothing about quality, only that the runs did their work.

Run under a display (``xvfb-run -a python benchmarks/gui_pauses.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def ellipsoid(slices: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, side, side) float32 volume of one bright ellipsoid on noise, and its truth."""
    z, y, x = np.ogrid[:slices, :side, :side]
    c = side / 2
    truth = (((z - slices / 2) / (slices / 2)) ** 2 + ((y - c) / (side / 4)) ** 2) + (
        (x - c) / (side / 5)
    ) ** 2 < 1
    rng = np.random.default_rng(0)
    image = rng.normal(20, 5, truth.shape) + 180 * truth
    return image.astype(np.float32), truth.astype(np.int32)


class GapClock:
    """Ticks every ``interval_ms`` on the GUI thread; records the gaps between ticks."""

    def __init__(self, interval_ms: int = 5) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> dict[str, float]:
        self._timer.stop()
        gaps = np.asarray(self.gaps[1:] or [0.0])
        return {
            "max_pause_s": round(float(gaps.max()), 3),
            "p99_gap_s": round(float(np.percentile(gaps, 99)), 3),
            "median_gap_s": round(float(np.median(gaps)), 4),
            "pauses_over_0.2s": int((gaps > 0.2).sum()),
        }


def wait(app, until, timeout: float = 1800) -> None:
    start = time.perf_counter()
    while not until():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the run did not end")


def ap50(truth: np.ndarray, labels: np.ndarray) -> float:
    from napari_mobilesam.evaluation import match_objects

    return round(float(match_objects(truth, labels).ap50), 3)


def propagate(viewer, app, image, truth, clock) -> dict:
    from napari_mobilesam._widgets import SegAnyWidget

    widget = SegAnyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegAny")
    controller = widget.controller
    slices, side = image.shape[0], image.shape[1]
    viewer.dims.set_current_step(0, slices // 2)
    controller.points.add([slices // 2, side / 2, side / 2])
    wait(app, lambda: controller.preview_ready and not controller.busy)
    clock.start()
    start = time.perf_counter()
    controller.propagate()
    wait(app, lambda: not controller.propagator.running)
    figures = clock.stop()
    job = controller.propagator.job
    labels = viewer.layers[f"{viewer.layers[0].name} labels"].data if job.label else None
    figures.update(
        wall_s=round(time.perf_counter() - start, 1),
        state=job.state,
        ap50=ap50(truth, labels) if labels is not None else 0.0,
    )
    return figures


def segevery(viewer, app, image, truth, clock) -> dict:
    from napari_mobilesam._widgets import SegEveryWidget

    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    widget._detector.value = "grid"
    widget._points_per_side.value = 4
    widget._scope.value = "all slices"
    clock.start()
    start = time.perf_counter()
    job = widget.run()
    wait(app, lambda: job.outcome is not None)
    figures = clock.stop()
    labels = job.result_layer.data if job.result_layer is not None else np.zeros_like(truth)
    figures.update(
        wall_s=round(time.perf_counter() - start, 1),
        state=job.outcome.state,
        ap50=ap50(truth, labels),
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "parity" / "mobile_sam_seed0.pt"))
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--only", choices=["propagate", "segevery"])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ["NAPARI_MOBILESAM_WEIGHTS"] = args.weights

    import functools

    import napari

    from napari_mobilesam.stacks import propagation

    # Every slice is visited whatever the weights (random weights stop a walk at once).
    propagation.propagate_mask = functools.partial(propagation.propagate_mask, iou_threshold=0)
    from qtpy.QtWidgets import QApplication

    image, truth = ellipsoid(args.slices, args.side)
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="volume")
    app = QApplication.instance()
    clock = GapClock()
    profiler = cProfile.Profile() if args.profile else None
    results = {"slices": args.slices, "side": args.side}
    for name, run in (("propagate", propagate), ("segevery", segevery)):
        if args.only in (None, name):
            if profiler is not None:
                profiler.enable()
            results[name] = run(viewer, app, image, truth, clock)
            if profiler is not None:
                profiler.disable()
    print(json.dumps(results, indent=2))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    viewer.close()


if __name__ == "__main__":
    main()
