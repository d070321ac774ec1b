"""The SegEvery widget on large and multiscale image layers: tiles, levels, cancel.

The SAM model and the YOLO detector have random weights (see
``tests/test_widgets_segevery.py``): the tests check the structure of the result, the
per-tile progress and cancelling, not the shapes of objects. Tiles are kept few (large
tiles, at most two objects per tile) so that the module runs in about a minute on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import skimage.draw
import skimage.measure

from napari_mobilesam._widgets import SegEveryWidget
from napari_mobilesam._widgets._plane import PlaneArray
from napari_mobilesam._widgets._segevery import SegEveryJob
from napari_mobilesam._widgets._segevery_settings import HALO, TILE_SIZE
from napari_mobilesam.segevery import pipeline as segevery

pytestmark = pytest.mark.usefixtures("random_weights")

TIMEOUT_MS = 600_000


def ellipses(side: int, count: int, seed: int = 0) -> np.ndarray:
    """A (side, side) uint16 image: ``count`` bright ellipses of 6-10 px radii on noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(400, 60, (side, side)).clip(0, None)
    for _ in range(count):
        r, c = rng.integers(12, side - 12, 2)
        rr, cc = skimage.draw.ellipse(
            r, c, *rng.uniform(6, 10, 2), shape=image.shape, rotation=rng.uniform(0, np.pi)
        )
        image[rr, cc] = rng.uniform(2500, 4000)
    return image.astype(np.uint16)


@pytest.fixture(scope="module")
def large() -> np.ndarray:
    return ellipses(4096, 400)


def bright_boxes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A perfect detector for :func:`ellipses`: the (x0, y0, x1, y1) box of each bright blob.

    Boxes nearer the middle of the image score higher, so that ``max_objects`` keeps the
    ones a tile owns rather than those in its halo.
    """
    regions = skimage.measure.regionprops(skimage.measure.label(rgb[..., 0] > 128))
    boxes = np.array([(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions], float)
    boxes = boxes.reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.hypot(*(centres - np.array(rgb.shape[1::-1]) / 2).T)
    return boxes, 1 - distance / (1 + np.hypot(*rgb.shape[:2]))


def open_widget(make_napari_viewer, qtbot, data, **image_kwargs):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(data, name="big", **image_kwargs)
    widget = SegEveryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SegEvery")
    qtbot.waitUntil(lambda: widget.visible)
    return viewer, widget


def use_yolo(widget: SegEveryWidget, path: Path, max_objects: int = 2) -> None:
    widget._detector.value = "file"
    widget._detector_file.value = path
    widget._conf.value = 0.0  # an untrained detector scores everything low
    widget._max_objects.value = max_objects
    widget._decoder.value = "mobile_sam"


def wait_until_finished(qtbot, job: SegEveryJob) -> None:
    qtbot.waitUntil(lambda: job.outcome is not None, timeout=TIMEOUT_MS)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every (plane, done, total) progress report of the core, from the worker thread."""
    seen: list[tuple[int, int, int]] = []
    report = SegEveryJob._report

    def record(self: SegEveryJob, number: int, done: int, total: int) -> None:
        seen.append((number, done, total))
        report(self, number, done, total)

    monkeypatch.setattr(SegEveryJob, "_report", record)
    return seen


@pytest.fixture
def images_segmented(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The image argument of each ``segment_everything`` call the job makes.

    The detector the widget chose is swapped for :func:`bright_boxes`, so that every
    tile has objects (the random YOLO detector proposes boxes in much the same place of
    each tile, which leaves most tiles empty; its route through the widget is tested in
    ``test_widgets_segevery.py`` and by the cancel test here).
    """
    seen: list[object] = []
    segment = segevery.segment_everything

    def record(image, **kwargs):
        seen.append(image)
        return segment(image, **{**kwargs, "detector": bright_boxes})

    monkeypatch.setattr(segevery, "segment_everything", record)
    return seen


def test_tile_settings_are_shown_with_defaults(make_napari_viewer, qtbot):
    # Shown for planes that are tiled (larger than 1024 px), hidden for smaller ones.
    _viewer, widget = open_widget(make_napari_viewer, qtbot, np.zeros((2048, 2048), np.uint8))
    assert widget._tiling.value == "auto"
    assert (widget._tile_size.value, widget._halo.value) == (TILE_SIZE, HALO) == (768, 128)
    assert widget._tile_size.visible and widget._halo.visible
    assert not widget._level.visible, "the level choice is for multiscale images only"
    settings = widget.settings()
    assert (settings.tiling, settings.tile_shape, settings.halo, settings.level) == (
        True,
        768,
        128,
        0,
    )
    widget._tiling.value = "off"
    assert not widget._tile_size.visible and widget.settings().tiling is False
    widget._tiling.value = "auto"
    widget._halo.value = 512  # more than half the tile
    assert widget.run() is None
    assert "halo" in widget._status.value


def test_large_dask_layer_is_segmented_tile_by_tile(
    make_napari_viewer, qtbot, large, yolo_file, reports, images_segmented
):
    data = da.from_array(large, chunks=1024)
    _viewer, widget = open_widget(make_napari_viewer, qtbot, data, scale=(0.5, 0.5))
    use_yolo(widget, yolo_file, max_objects=8)
    widget._tile_size.value = 2048  # 2 x 2 tiles keep the test short
    widget._halo.value = 128

    shown: list[str] = []  # the widget's own progress row, fed on the GUI thread
    job = widget.run()
    assert job._tiles == [4]
    show = job._on_progress
    job._on_progress = lambda text, done, total: (shown.append(text), show(text, done, total))
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message

    plane = images_segmented[0]
    assert isinstance(plane, PlaneArray) and plane.data is data, "read tile by tile"
    assert isinstance(plane[:100, :100], da.Array), "a region of it stays lazy"
    layer = job.result_layer
    assert layer.data.shape == large.shape and layer.data.dtype == np.int32
    np.testing.assert_array_equal(layer.scale, [0.5, 0.5])
    assert job.tiles_encoded > 1
    assert f"{job.tiles_encoded} tile embeddings" in job.outcome.message
    features = layer.features
    assert 0 < len(features) <= 8 * 4, "at most max_objects per tile"
    np.testing.assert_array_equal(sorted(features["index"]), np.unique(layer.data[layer.data > 0]))
    # One progress step per tile: 4 for discovery; then the decoding total, announced once
    # (the count repeated), and one step per tile (or view) decoded.
    steps = [done for _, done, _ in reports]
    assert steps[:4] == [1, 2, 3, 4] and all(total >= 4 for _, _, total in reports[:4])
    assert steps[4:] == list(range(4, len(steps)))
    assert len({total for _, _, total in reports[4:]}) == 1, "one total while decoding"
    assert steps[-1] == reports[-1][2] > 4
    assert any("finding objects, tile 2 of 4" in text for text in shown)
    assert any("decoding, tile" in text for text in shown)


def test_multiscale_layer_at_a_coarser_level(
    make_napari_viewer, qtbot, yolo_file, images_segmented
):
    full = ellipses(2048, 100, seed=1)
    pyramid = [full, full[::2, ::2]]
    viewer, widget = open_widget(
        make_napari_viewer, qtbot, pyramid, multiscale=True, scale=(0.25, 0.25), translate=(5, 6)
    )
    assert widget._level.visible
    assert widget._level.choices == (0, 1)
    names = [widget._level.native.itemText(i) for i in range(2)]
    assert names == ["0: 2048 x 2048", "1: 1024 x 1024"]
    assert widget._level.value == 0, "full resolution by default"
    use_yolo(widget, yolo_file, max_objects=3)
    widget._level.value = 1

    job = widget.run()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "done", job.outcome.message
    assert images_segmented[0].shape[:2] == (1024, 1024)
    layer = job.result_layer
    assert layer.data.shape == (1024, 1024)
    np.testing.assert_array_equal(layer.scale, [0.5, 0.5])
    np.testing.assert_array_equal(layer.translate, [5, 6])
    # A labelled pixel of level 1 lies over the same world point as its level-0 pixels.
    y, x = np.argwhere(layer.data > 0)[0]
    world = layer.data_to_world((y, x))
    np.testing.assert_allclose(
        viewer.layers["big"].world_to_data(world), (2 * y, 2 * x), atol=1e-6
    )


def test_cancel_between_tiles_adds_nothing(make_napari_viewer, qtbot, large, yolo_file, reports):
    viewer, widget = open_widget(make_napari_viewer, qtbot, large[:2048, :2048])
    use_yolo(widget, yolo_file)
    layers_before = list(viewer.layers)

    job = widget.run()
    assert job._tiles == [9]
    qtbot.waitUntil(
        lambda: job._plane_bar is not None and job._plane_bar.n >= 1, timeout=TIMEOUT_MS
    )
    widget._cancel.clicked.emit()
    wait_until_finished(qtbot, job)
    assert job.outcome.state == "cancelled"
    assert list(viewer.layers) == layers_before
    assert max(done for _, done, _ in reports) < 9, "stopped between discovery tiles"
    assert job._plane_bar is None and widget._run.enabled
