"""The README's "Correct and curate" screenshots, and AP of a label image as it is corrected.

Draws synthetic nuclei with known truth, spoils their labels the way automatic results go
wrong (two touching nuclei under one id, one nucleus cut in two, small debris), opens the
Correct and curate widget on them, fixes each error with the widget (delete, filters, merge,
split, edit), saves a screenshot of each step into ``out`` and prints Cellpose's AP of the
labels against the truth after each step. SAM has the random test weights unless
``NAPARI_MOBILESAM_WEIGHTS`` points at ``mobile_sam.pt``: split and edit then follow the
random model, while filters, delete and merge do not use it.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24"``)::

    NAPARI_MOBILESAM_WEIGHTS=../shared/fixtures/parity/mobile_sam_seed0.pt \\
        python benchmarks/curate_screenshots.py docs/images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def touching_pair(labels: np.ndarray) -> tuple[int, int]:
    """Two ids whose objects touch (the largest such pair by area)."""
    from scipy.ndimage import binary_dilation

    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    for label in ids[np.argsort(counts)[::-1]]:
        around = labels[binary_dilation(labels == label) & (labels != label)]
        around = around[around > 0]
        if around.size:
            return int(label), int(np.bincount(around).argmax())
    raise SystemExit("no touching nuclei: try another --seed")


def spoil(truth: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, object]]:
    """Labels with a merge error, a split error and four debris specks; and where they are."""
    from skimage.draw import disk

    labels = truth.copy()
    merged = touching_pair(truth)
    labels[labels == merged[1]] = merged[0]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    cut = int(next(i for i in ids[np.argsort(counts)[::-1]] if i not in merged))
    rows, cols = np.nonzero(labels == cut)
    new = int(labels.max()) + 1
    labels[rows[cols > cols.mean()], cols[cols > cols.mean()]] = new
    rng = np.random.default_rng(seed)
    specks = []
    while len(specks) < 4:
        y, x = rng.integers(8, np.array(labels.shape) - 8)
        if not labels[y - 4 : y + 5, x - 4 : x + 5].any():
            labels[disk((y, x), 2.5, shape=labels.shape)] = labels.max() + 1
            specks.append((int(y), int(x)))
    return labels, {"merged": merged, "cut": (cut, new), "specks": specks}


def centre(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    k = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return int(rows[k]), int(cols[k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_mobilesam._widgets import CurateWidget
    from napari_mobilesam.evaluation import match_objects, synthetic_nuclei

    image, truth = synthetic_nuclei((args.side, args.side), seed=args.seed)
    spoilt, where = spoil(truth, args.seed)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(image, name="nuclei")
    layer = viewer.add_labels(spoilt, name="nuclei labels", opacity=0.6)
    widget = CurateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct and curate")
    viewer.reset_view()
    controller = widget.controller
    app = QApplication.instance()

    def settle() -> None:
        app.processEvents()
        while controller.busy:
            app.processEvents()
            time.sleep(0.05)
        app.processEvents()

    def report(step: str) -> None:
        result = match_objects(layer.data, truth)
        print(
            f"{step:<28} objects {len(np.unique(layer.data)) - 1:>3}  AP50 {result.ap50:.3f}  "
            f"AP75 {result.ap75:.3f}  mean AP 0.5:0.95 {result.msa:.3f}"
        )

    def shot(name: str) -> None:
        settle()
        viewer.reset_view()
        app.processEvents()
        viewer.screenshot(str(args.out / f"curate_{name}.png"), canvas_only=False, flash=False)

    report("spoilt labels")
    widget._click_mode.value = "delete"
    controller.click(where["specks"][0])
    shot("delete")
    report("delete a speck by click")

    widget._click_mode.value = "off"
    panel = widget.filters
    panel.measure()
    panel.sliders["area"].value = (30.0, panel.sliders["area"].max)
    shot("filters")
    panel.apply()
    report("filters: area >= 30")

    widget._click_mode.value = "merge"
    cut, new = where["cut"]
    controller.click(centre(layer.data == cut))
    controller.click(centre(layer.data == new))
    shot("merge")
    controller.accept()
    report("merge the cut nucleus")

    widget._click_mode.value = "split"
    first, second = where["merged"]
    controller.click(centre(truth == first))
    controller.click(centre(truth == second))
    shot("split")
    report("split the merged pair")

    widget._click_mode.value = "edit"
    target = where["merged"][0]
    y, x = centre(layer.data == target)
    controller.click((y, x))
    settle()
    controller.click((y + 3, x + 3))
    shot("edit")
    controller.accept()
    report("edit: one foreground click")


if __name__ == "__main__":
    main()
